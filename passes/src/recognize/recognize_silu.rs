//! Recognizes SiLU, `x · sigmoid(x)`, as `silu`, and the SwiGLU gate
//! `silu(g) · u` as `swiglu(g, u)`.
//!
//! Establishes: no `x · sigmoid(x)` and no product with a SiLU is left.

use kiln_ir::graph::ValueRef;
use kiln_ir::{BinaryOp, Graph, Op, UnaryOp};

use super::patterns::{binary, replace_with, rewrite_each, unary};
use crate::pass::{Pass, PassError};

pub struct RecognizeSilu;

impl Pass for RecognizeSilu {
    fn name(&self) -> &'static str {
        "recognize_silu"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        rewrite_each(graph, |graph, value| {
            let Some((a, b)) = binary(graph, value, BinaryOp::Mul) else { return Ok(false) };
            let silu_input = |candidate: ValueRef| match graph.node(candidate.node).op {
                Op::Unary(UnaryOp::Silu) => Some(graph.inputs_of(candidate.node)[0]),
                _ => None,
            };
            let (op, inputs) = if unary(graph, b, UnaryOp::Sigmoid) == Some(a) {
                (Op::Unary(UnaryOp::Silu), vec![a])
            } else if unary(graph, a, UnaryOp::Sigmoid) == Some(b) {
                (Op::Unary(UnaryOp::Silu), vec![b])
            } else if graph.value_type(a) != graph.value_type(b) {
                return Ok(false);
            } else if let Some(gate) = silu_input(a) {
                (Op::SwiGlu, vec![gate, b])
            } else if let Some(gate) = silu_input(b) {
                (Op::SwiGlu, vec![gate, a])
            } else {
                return Ok(false);
            };
            replace_with(graph, "recognize_silu", value, op, &inputs)?;
            Ok(true)
        })
    }
}
