//! The layout phase: weights are stored the way their kernels read them.

pub mod pack_matmul_weights;
