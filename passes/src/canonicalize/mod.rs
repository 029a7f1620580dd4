//! The canonicalize phase: fold what is known at compile time, remove what
//! computes nothing, and share what is computed twice.

pub mod collapse_view_chains;
pub mod eliminate_common_subexpressions;
pub mod eliminate_dead_code;
pub mod fold_constants;
pub mod fold_shapes;
pub mod fold_transposes_into_matmul;
pub mod remove_identities;
