//! Kernel generation and lowering to GPU code.
//!
//! For now this crate holds the proof that the toolchain works on this
//! machine: [`toolchain`] lowers a small MLIR GPU kernel to PTX through melior
//! and emits PTX from an LLVM IR function through inkwell. Kernel generation
//! per fusion group arrives with the kernel IR.

pub mod generate;
pub mod lower;
pub mod toolchain;
