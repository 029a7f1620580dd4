//! kiln-runtime's integration tests.

#![allow(clippy::unwrap_used)]

mod architecture;
mod artifact;
mod kir_files;
mod machine;
mod simulator;
mod tensor_core_layouts;
