//! The precision phase: the dtype the model computes in.

pub mod lower_precision;
