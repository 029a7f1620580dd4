//! Kernel generation and lowering to GPU code.
//!
//! [`generate`] turns each fusion group into a kernel-IR program;
//! [`lower`] lowers kernel IR through MLIR (melior) to PTX for `sm_*` chips
//! (assembled to cubins with ptxas) and to AMDGPU assembly for `gfx*` chips;
//! [`cost_model`] estimates variants on a GPU (and gives rooflines);
//! [`target`] is the seam every target implements; [`toolchain`] holds the MLIR context and pipeline helpers they share.

pub mod cost_model;
pub mod generate;
pub mod lower;
pub mod target;
pub mod toolchain;
