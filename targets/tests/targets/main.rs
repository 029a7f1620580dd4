//! kiln-targets' integration tests: one test binary, one module per concern.

#![allow(clippy::unwrap_used)]

mod lowering;
mod toolchain;
