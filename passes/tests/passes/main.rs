//! kiln-passes' integration tests: one test binary, one module per concern.

#![allow(clippy::unwrap_used)]

mod filetests;
