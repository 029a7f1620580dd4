//! Recognizes SiLU, `x · sigmoid(x)`, as `silu`, and the SwiGLU gate
//! `silu(g) · u` as `swiglu(g, u)`.
//!
//! Establishes: no `x · sigmoid(x)` and no product with a SiLU is left.

use kiln_ir::graph::ValueRef;
use kiln_ir::{BinaryOp, Graph, Op, UnaryOp};

use super::patterns::{binary, replace_with, unary};
use crate::pass::{Pass, PassError};

pub struct RecognizeSilu;

impl Pass for RecognizeSilu {
    fn name(&self) -> &'static str {
        "recognize_silu"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        let mut changed = false;
        for node in graph.topological_order() {
            if !graph.contains(node) {
                continue;
            }
            let value = ValueRef::new(node, 0);
            let Some((a, b)) = binary(graph, value, BinaryOp::Mul) else { continue };
            let is_silu_of = |g: &Graph, candidate: ValueRef| match g.node(candidate.node).op {
                Op::Unary(UnaryOp::Silu) => Some(g.inputs_of(candidate.node)[0]),
                _ => None,
            };
            if unary(graph, b, UnaryOp::Sigmoid) == Some(a) || unary(graph, a, UnaryOp::Sigmoid) == Some(b) {
                let x = if unary(graph, b, UnaryOp::Sigmoid) == Some(a) { a } else { b };
                replace_with(graph, self.name(), value, Op::Unary(UnaryOp::Silu), &[x])?;
                changed = true;
            } else if let Some(gate) = is_silu_of(graph, a) {
                if graph.value_type(a) == graph.value_type(b) {
                    replace_with(graph, self.name(), value, Op::SwiGlu, &[gate, b])?;
                    changed = true;
                }
            } else if let Some(gate) = is_silu_of(graph, b) {
                if graph.value_type(a) == graph.value_type(b) {
                    replace_with(graph, self.name(), value, Op::SwiGlu, &[gate, a])?;
                    changed = true;
                }
            }
        }
        Ok(changed)
    }
}
