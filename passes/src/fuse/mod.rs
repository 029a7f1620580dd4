//! The fuse phase: merge projections that share an input, give outputs that
//! no kernel would store a copy, then partition the graph into fusion
//! groups, each of which becomes one kernel.

pub mod contract;
pub mod cost;
pub mod form_fusion_groups;
pub mod materialize_outputs;
pub mod merge_projections;
pub mod reductions_to_last_axis;
