//! Executors: where a [`crate::Session`] runs its artifact.
//!
//! - [`cuda`]: NVIDIA GPUs through the CUDA driver (PTX, JIT-compiled by the driver).
//! - [`sim`]: the kernel simulator, on any machine.
//!
//! There is no AMD executor yet: artifacts carry AMDGPU assembly for `gfx*`
//! targets, but nothing in this runtime loads it.

pub mod cuda;
pub mod sim;
