//! Recognizes RoPE in both layouts as `rope(x, cos, sin)` — whatever
//! computes the tables (in the graph or as constants):
//!
//! - rotate-half (Llama, GPT-NeoX): `x·cos + concat(−x₂, x₁)·sin` where `x₁`,
//!   `x₂` are the halves of the last dim;
//! - interleaved (GPT-J's `rotate_every_two`): `x·cos + r·sin` where `r`
//!   stacks `−x[…, 1::2]` and `x[…, 0::2]` along a new last axis and flattens
//!   it back to `x`'s shape (unsqueeze, concat, reshape).
//!
//! Establishes: no rotate product of either form is left.

use kiln_ir::graph::ValueRef;
use kiln_ir::infer::symbolic_value;
use kiln_ir::{BinaryOp, Graph, Op, UnaryOp};

use super::patterns::{binary, replace_with, unary};
use crate::pass::{Pass, PassError};

pub struct RecognizeRope;

/// `(x, start, end, step)` when `value` is a slice of the last axis of `x`.
fn last_axis_slice(graph: &Graph, value: ValueRef) -> Option<(ValueRef, i64, i64, i64)> {
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
    if axis != -1 && axis != rank - 1 {
        return None;
    }
    Some((x, single(1)?, single(2)?, single(4)?))
}

/// `x` when `value` is `concat(−x[…, d/2:], x[…, :d/2])` over the last axis.
fn rotate_half_of(graph: &Graph, value: ValueRef) -> Option<ValueRef> {
    let Op::Concat { axis } = graph.node(value.node).op else { return None };
    let inputs = graph.inputs_of(value.node);
    let rank = graph.value_type(value).rank() as i64;
    if inputs.len() != 2 || (axis != -1 && axis != rank - 1) {
        return None;
    }
    let (x, second_start, second_end, 1) = last_axis_slice(graph, unary(graph, inputs[0], UnaryOp::Neg)?)? else {
        return None;
    };
    let (y, first_start, first_end, 1) = last_axis_slice(graph, inputs[1])? else { return None };
    let depth = graph.value_type(x).shape.last()?.as_constant()?;
    let half = depth / 2;
    (x == y && depth % 2 == 0 && first_start == 0 && first_end == half && second_start == half && second_end >= depth)
        .then_some(x)
}

/// `(x, start)` when `value` is `x[…, start::2]` unsqueezed at a new last
/// axis, negated before or after the unsqueeze exactly when `negated`.
fn strided_pair_half(graph: &Graph, value: ValueRef, negated: bool) -> Option<(ValueRef, i64)> {
    let peel = |value: ValueRef| if negated { unary(graph, value, UnaryOp::Neg) } else { Some(value) };
    let unsqueezed = |value: ValueRef| -> Option<ValueRef> {
        let Op::Unsqueeze { axes } = &graph.node(value.node).op else { return None };
        let input = graph.inputs_of(value.node)[0];
        let rank = graph.value_type(input).rank() as i64;
        (axes[..] == [-1] || axes[..] == [rank]).then_some(input)
    };
    let sliced = match peel(value).and_then(unsqueezed) {
        Some(sliced) => sliced,
        None => peel(unsqueezed(value)?)?,
    };
    let (x, start, end, 2) = last_axis_slice(graph, sliced)? else { return None };
    let depth = graph.value_type(x).shape.last()?.as_constant()?;
    (depth % 2 == 0 && end >= depth).then_some((x, start))
}

/// `x` when `value` is GPT-J's `rotate_every_two(x)`: `[−x₁, x₀, −x₃, x₂, …]`
/// as `reshape(concat(unsqueeze(−x[…, 1::2]), unsqueeze(x[…, 0::2])), shape(x))`.
fn rotate_every_two_of(graph: &Graph, value: ValueRef) -> Option<ValueRef> {
    if !matches!(graph.node(value.node).op, Op::Reshape { .. }) {
        return None;
    }
    let stacked = graph.inputs_of(value.node)[0];
    let Op::Concat { axis } = graph.node(stacked.node).op else { return None };
    let inputs = graph.inputs_of(stacked.node);
    let rank = graph.value_type(stacked).rank() as i64;
    if inputs.len() != 2 || (axis != -1 && axis != rank - 1) {
        return None;
    }
    let (x, 1) = strided_pair_half(graph, inputs[0], true)? else { return None };
    let (y, 0) = strided_pair_half(graph, inputs[1], false)? else { return None };
    (x == y && graph.value_type(value) == graph.value_type(x)).then_some(x)
}

/// `(x, interleaved)` when `value` rotates `x` in either RoPE layout.
fn rotation_of(graph: &Graph, value: ValueRef) -> Option<(ValueRef, bool)> {
    rotate_half_of(graph, value).map(|x| (x, false)).or_else(|| rotate_every_two_of(graph, value).map(|x| (x, true)))
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
                let Some((rotated, sin)) = product_with(graph, sin_side, |v| rotation_of(graph, v).is_some()) else {
                    continue;
                };
                let (x, interleaved) = rotation_of(graph, rotated).expect("matched");
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
                replace_with(graph, self.name(), value, Op::Rope { interleaved }, &[x, cos, sin])?;
                changed = true;
                break;
            }
        }
        Ok(changed)
    }
}
