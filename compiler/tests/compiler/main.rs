//! kiln-compiler's integration tests: one test binary, one module per concern.

#![allow(clippy::unwrap_used)]

mod artifact;
mod cli;
mod common;
mod errors;
mod evaluation;
mod kernels;
mod machine;
mod pipeline;
mod round_trip;
mod snapshots;
