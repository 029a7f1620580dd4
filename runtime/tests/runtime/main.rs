//! kiln-runtime's integration tests.

#![allow(clippy::unwrap_used)]

mod architecture;
mod artifact;
mod machine;
mod simulator;
