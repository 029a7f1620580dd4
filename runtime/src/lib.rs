//! kiln's runtime foundation.
//!
//! This crate is the bottom of the workspace: it defines the types that both a
//! compiled plan and the compiler speak — element types ([`DType`]) and symbolic
//! dimensions ([`Dim`]). Later it holds the kernel IR, the artifact format and the
//! executors. It never links LLVM or MLIR (a test in `tests/` enforces this), so
//! a serving machine needs nothing but this crate and a GPU driver.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod dim;
pub mod dtype;
pub mod kernel;
pub mod sim;

pub use dim::{Dim, DimError, DimNode, DimParseError, SymbolBindings};
pub use dtype::DType;
