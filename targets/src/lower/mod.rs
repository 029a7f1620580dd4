//! Lowering kernel IR through MLIR to GPU code.

pub mod amdgpu;
pub mod mlir;
pub mod nvptx;
pub mod sass;
