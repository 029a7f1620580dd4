//! Removes ops that return their input unchanged: casts to the same dtype;
//! reshapes, expands, squeezes, unsqueezes, flattens and full slices to the
//! same shape; identity transposes; single-input concats; `where` on a
//! constant condition; `x + 0`, `x − 0`, `x · 1`, `x / 1`.
//!
//! Establishes: no node of those kinds returns a value equal to one of its inputs.

use kiln_ir::graph::ValueRef;
use kiln_ir::infer::symbolic_value;
use kiln_ir::{BinaryOp, Graph, Op};

use crate::pass::{Pass, PassError};
use crate::util::{constant_scalar, is_scalar};

pub struct RemoveIdentities;

impl Pass for RemoveIdentities {
    fn name(&self) -> &'static str {
        "remove_identities"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        let mut changed = false;
        for node in graph.topological_order() {
            if graph.node(node).outputs.len() != 1 {
                continue;
            }
            let output = ValueRef::new(node, 0);
            let Some(source) = identity_source(graph, output) else { continue };
            if graph.value_type(source) != graph.value_type(output) {
                continue;
            }
            graph.replace_all_uses(output, source);
            changed = true;
        }
        Ok(changed)
    }
}

/// The input that `value` equals, when its node is an identity.
fn identity_source(graph: &Graph, value: ValueRef) -> Option<ValueRef> {
    let inputs = graph.inputs_of(value.node);
    let same_shape = |input: ValueRef| graph.value_type(input) == graph.value_type(value);
    match &graph.node(value.node).op {
        Op::Cast { .. }
        | Op::Reshape { .. }
        | Op::Expand
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Flatten { .. } => same_shape(inputs[0]).then_some(inputs[0]),
        Op::Transpose { permutation } => permutation.iter().enumerate().all(|(i, &p)| i == p).then_some(inputs[0]),
        Op::Concat { .. } if inputs.len() == 1 => Some(inputs[0]),
        Op::Slice => {
            let starts_at_zero = symbolic_value(graph, inputs[1])?.iter().all(|d| d.as_constant() == Some(0));
            let unit_steps = symbolic_value(graph, inputs[4])?.iter().all(|d| d.as_constant() == Some(1));
            (starts_at_zero && unit_steps && same_shape(inputs[0])).then_some(inputs[0])
        }
        Op::Where => {
            let condition = constant_scalar(graph, inputs[0])?;
            Some(if condition != 0.0 { inputs[1] } else { inputs[2] })
        }
        Op::Binary(BinaryOp::Add) if is_scalar(graph, inputs[1], 0.0) => Some(inputs[0]),
        Op::Binary(BinaryOp::Add) if is_scalar(graph, inputs[0], 0.0) => Some(inputs[1]),
        Op::Binary(BinaryOp::Sub) if is_scalar(graph, inputs[1], 0.0) => Some(inputs[0]),
        Op::Binary(BinaryOp::Mul) if is_scalar(graph, inputs[1], 1.0) => Some(inputs[0]),
        Op::Binary(BinaryOp::Mul) if is_scalar(graph, inputs[0], 1.0) => Some(inputs[1]),
        Op::Binary(BinaryOp::Div) if is_scalar(graph, inputs[1], 1.0) => Some(inputs[0]),
        _ => None,
    }
}
