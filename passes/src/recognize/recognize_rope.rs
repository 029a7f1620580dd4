//! Recognizes rotate-half RoPE, `x·cos + concat(−x₂, x₁)·sin` where `x₁`,
//! `x₂` are the halves of the last dim, as `rope(x, cos, sin)` — whatever
//! computes the tables (in the graph or as constants).
//!
//! Establishes: no rotate-half product of that form is left.

use kiln_ir::graph::ValueRef;
use kiln_ir::infer::symbolic_value;
use kiln_ir::{BinaryOp, Graph, Op, UnaryOp};

use super::patterns::{binary, replace_with, unary};
use crate::pass::{Pass, PassError};

pub struct RecognizeRope;

/// `(x, start, end)` when `value` is a unit-step slice of the last axis of `x`.
fn last_axis_slice(graph: &Graph, value: ValueRef) -> Option<(ValueRef, i64, i64)> {
    if graph.node(value.node).op != Op::Slice {
        return None;
    }
    let inputs = graph.inputs_of(value.node);
    let x = inputs[0];
    let rank = graph.value_type(x).rank() as i64;
    let single = |index: usize| -> Option<i64> {
        match symbolic_value(graph, inputs[index])?.as_slice() {
            [d] => d.as_constant(),
            _ => None,
        }
    };
    let axis = single(3)?;
    if (axis != -1 && axis != rank - 1) || single(4)? != 1 {
        return None;
    }
    Some((x, single(1)?, single(2)?))
}

/// `x` when `value` is `concat(−x[…, d/2:], x[…, :d/2])` over the last axis.
fn rotate_half_of(graph: &Graph, value: ValueRef) -> Option<ValueRef> {
    let Op::Concat { axis } = graph.node(value.node).op else { return None };
    let inputs = graph.inputs_of(value.node);
    let rank = graph.value_type(value).rank() as i64;
    if inputs.len() != 2 || (axis != -1 && axis != rank - 1) {
        return None;
    }
    let (x, second_start, second_end) = last_axis_slice(graph, unary(graph, inputs[0], UnaryOp::Neg)?)?;
    let (y, first_start, first_end) = last_axis_slice(graph, inputs[1])?;
    let depth = graph.value_type(x).shape.last()?.as_constant()?;
    let half = depth / 2;
    (x == y && depth % 2 == 0 && first_start == 0 && first_end == half && second_start == half && second_end >= depth)
        .then_some(x)
}

/// `(x, table)` when `value` is `x · table` with `x` satisfying `is_x`.
fn product_with(graph: &Graph, value: ValueRef, is_x: impl Fn(ValueRef) -> bool) -> Option<(ValueRef, ValueRef)> {
    let (a, b) = binary(graph, value, BinaryOp::Mul)?;
    if is_x(a) {
        Some((a, b))
    } else if is_x(b) {
        Some((b, a))
    } else {
        None
    }
}

impl Pass for RecognizeRope {
    fn name(&self) -> &'static str {
        "recognize_rope"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        let mut changed = false;
        for node in graph.topological_order() {
            if !graph.contains(node) {
                continue;
            }
            let value = ValueRef::new(node, 0);
            let Some((a, b)) = binary(graph, value, BinaryOp::Add) else { continue };
            for (cos_side, sin_side) in [(a, b), (b, a)] {
                let Some((rotated, sin)) = product_with(graph, sin_side, |v| rotate_half_of(graph, v).is_some()) else {
                    continue;
                };
                let x = rotate_half_of(graph, rotated).expect("matched");
                let Some((_, cos)) = product_with(graph, cos_side, |v| v == x) else { continue };
                let x_type = graph.value_type(x).clone();
                let fits = |table: ValueRef| {
                    let t = graph.value_type(table);
                    t.dtype == x_type.dtype
                        && kiln_ir::infer::broadcast_shapes(&x_type.shape, &t.shape).ok().as_ref()
                            == Some(&x_type.shape)
                };
                if !fits(cos) || !fits(sin) || graph.value_type(value) != &x_type {
                    continue;
                }
                replace_with(graph, self.name(), value, Op::Rope, &[x, cos, sin])?;
                changed = true;
                break;
            }
        }
        Ok(changed)
    }
}
