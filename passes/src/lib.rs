//! Graph passes over kiln's IR, run by one pipeline in named phases:
//! `canonicalize → recognize → fuse → layout → precision → plan`.
//!
//! Each pass lives in its own file, named by what it does, with a doc comment
//! stating the invariant it establishes. The pipeline verifies the graph after
//! every pass in tests and debug builds; an error names the pass.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod canonicalize;
pub mod fuse;
pub mod layout;
pub mod pass;
pub mod pipeline;
pub mod plan;
pub mod precision;
pub mod recognize;
pub mod registry;
pub mod util;

pub use pass::{Pass, PassError};
pub use pipeline::{default_bounds, Phase, Pipeline, PipelineOptions};
pub use plan::{plan_memory, MemoryPlan};
pub use precision::lower_precision::Precision;
