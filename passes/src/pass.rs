//! The pass interface and its error.

use kiln_ir::Graph;

/// A graph rewrite with a stated invariant (see each pass's module docs).
pub trait Pass {
    /// The pass's name, as in `--dump-ir` file names and error messages.
    fn name(&self) -> &'static str;

    /// Rewrites `graph`; returns whether anything changed. The graph must be
    /// valid afterwards (the pipeline verifies it in tests and debug builds).
    fn run(&self, graph: &mut Graph) -> Result<bool, PassError>;
}

/// A pass failed, or left the graph invalid (a compiler bug).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("pass `{pass}`: {message}")]
pub struct PassError {
    pub pass: &'static str,
    pub message: String,
}

impl PassError {
    pub fn new(pass: &'static str, message: impl Into<String>) -> PassError {
        PassError { pass, message: message.into() }
    }
}
