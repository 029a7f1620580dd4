//! kiln-compiler's integration tests: one test binary, one module per concern.

mod cli;
mod common;
mod errors;
mod evaluation;
mod round_trip;
mod snapshots;
