//! kiln's runtime foundation.
//!
//! This crate is the bottom of the workspace: the types both a compiled plan
//! and the compiler speak — element types ([`DType`]), symbolic dimensions
//! ([`Dim`]), the kernel IR and its simulator — and everything a serving
//! machine needs: the artifact format ([`artifact`]), [`Model`] and
//! [`Session`], and the CUDA and simulator executors ([`device`]). It never
//! links LLVM or MLIR (a test in `tests/` enforces this), so a serving machine
//! needs nothing but this crate and a GPU driver.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod artifact;
pub mod device;
pub mod dim;
pub mod dtype;
pub mod kernel;
pub mod machine;
pub mod npy;
pub mod session;
pub mod sim;
pub mod tensor;

pub use artifact::{Artifact, ArtifactError};
pub use device::cuda::DeviceTensor;
pub use dim::{Dim, DimError, DimNode, DimParseError, SymbolBindings};
pub use dtype::DType;
pub use session::{Device, Model, RunError, Session};
pub use tensor::HostTensor;

/// The README's Rust example, compiled (not run) as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeExample;
