//! The fuse phase: merge projections that share an input, then partition the
//! graph into fusion groups, each of which becomes one kernel.

pub mod contract;
pub mod cost;
pub mod form_fusion_groups;
pub mod merge_projections;
