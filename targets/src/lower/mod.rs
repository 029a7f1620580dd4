//! Lowering kernel IR through MLIR to GPU code.

pub mod mlir;
pub mod nvptx;
