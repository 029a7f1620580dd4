//! kiln's graph IR.
//!
//! A model is a [`Graph`] of [`Op`]s over typed values ([`TensorType`]: a
//! dtype and a shape of symbolic [`Dim`]s). This crate defines the ops, infers
//! their types ([`infer`]), checks graphs ([`verify`]), prints and parses them
//! ([`text`]), and defines what every op computes ([`eval`]). It knows nothing
//! of ONNX, safetensors, GPUs or MLIR.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod constant;
pub mod eval;
pub mod graph;
pub mod group;
pub mod infer;
pub mod op;
pub mod tensor;
pub mod text;
pub mod verify;

pub use constant::Constant;
pub use eval::{evaluate, EvalError};
pub use graph::{Graph, GraphError, Node, Value, ValueRef};
pub use group::{FusionGroup, GroupId, KernelKind};
pub use kiln_runtime::{DType, Dim, DimError, SymbolBindings};
pub use op::{BinaryOp, GeluApproximation, MaskKind, Op, ReduceKind, SequenceLayout, UnaryOp};
pub use tensor::{Tensor, TensorData, TensorType};
pub use text::{parse_graph, print_graph, print_graph_summary, ParseError};
pub use verify::{verify, VerifyError};
