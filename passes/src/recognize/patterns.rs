//! Matching helpers for the recognizers: look through a producer, peel
//! scalar constants, and replace a matched value with a new op.

use kiln_ir::graph::ValueRef;
use kiln_ir::{BinaryOp, DType, Graph, Op, UnaryOp};

use crate::pass::PassError;
use crate::util::constant_scalar;

/// `(a, b)` when `value` is `a <op> b`.
pub fn binary(graph: &Graph, value: ValueRef, op: BinaryOp) -> Option<(ValueRef, ValueRef)> {
    match graph.node(value.node).op {
        Op::Binary(found) if found == op => {
            let inputs = graph.inputs_of(value.node);
            Some((inputs[0], inputs[1]))
        }
        _ => None,
    }
}

/// The input of `value` when it is `op(input)`.
pub fn unary(graph: &Graph, value: ValueRef, op: UnaryOp) -> Option<ValueRef> {
    match graph.node(value.node).op {
        Op::Unary(found) if found == op => Some(graph.inputs_of(value.node)[0]),
        _ => None,
    }
}

/// For a commutative `a <op> b` with one side a scalar constant: `(other side, scalar)`.
pub fn with_scalar(graph: &Graph, value: ValueRef, op: BinaryOp) -> Option<(ValueRef, f64)> {
    let (a, b) = binary(graph, value, op)?;
    if let Some(s) = constant_scalar(graph, b) {
        return Some((a, s));
    }
    if matches!(op, BinaryOp::Add | BinaryOp::Mul) {
        if let Some(s) = constant_scalar(graph, a) {
            return Some((b, s));
        }
    }
    None
}

/// Whether `a ≈ b` relatively.
/// The dtype of `value` and its last dim, when that dim is a constant: the
/// row a normalization runs over.
pub fn row_of(graph: &Graph, value: ValueRef) -> Option<(DType, usize)> {
    let ty = graph.value_type(value);
    let columns = ty.shape.last()?.as_constant()?;
    Some((ty.dtype, columns as usize))
}

pub fn near(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-4 * b.abs().max(1e-12)
}

/// The leaves of a tree of multiplications rooted at `value` (at most `depth` deep).
pub fn product_leaves(graph: &Graph, value: ValueRef, depth: usize) -> Vec<ValueRef> {
    match binary(graph, value, BinaryOp::Mul) {
        Some((a, b)) if depth > 0 => {
            let mut leaves = product_leaves(graph, a, depth - 1);
            leaves.extend(product_leaves(graph, b, depth - 1));
            leaves
        }
        _ => vec![value],
    }
}

/// Whether `axes` of a reduction over a rank-`rank` input name only the last axis.
pub fn is_last_axis(axes: &[i64], rank: usize) -> bool {
    axes.len() == 1 && (axes[0] == -1 || axes[0] == rank as i64 - 1)
}

/// Calls `rewrite` with the first output of every node, in topological
/// order, skipping nodes that earlier rewrites removed; returns whether any
/// call rewrote something.
pub fn rewrite_each(
    graph: &mut Graph,
    mut rewrite: impl FnMut(&mut Graph, ValueRef) -> Result<bool, PassError>,
) -> Result<bool, PassError> {
    let mut changed = false;
    for node in graph.topological_order() {
        if graph.contains(node) {
            changed |= rewrite(graph, ValueRef::new(node, 0))?;
        }
    }
    Ok(changed)
}

/// When the single use of `end` is `end <op> p` (either order) with `p` a
/// constant of `columns` elements along the last axis (a norm's γ or β):
/// `(p, that use's output)`.
pub fn trailing_row_parameter(
    graph: &Graph,
    end: ValueRef,
    op: BinaryOp,
    columns: usize,
) -> Option<(ValueRef, ValueRef)> {
    let [(consumer, _)] = graph.consumers(end)[..] else { return None };
    let output = ValueRef::new(consumer, 0);
    let (a, b) = binary(graph, output, op)?;
    let parameter = if a == end { b } else { a };
    let constant = graph.as_constant(parameter)?;
    let along_last_axis = constant.element_count() == columns && constant.shape().iter().rev().skip(1).all(|&d| d == 1);
    along_last_axis.then_some((parameter, output))
}

/// Adds `op(inputs)` named after `old` and points every use of `old` at it.
pub fn replace_with(
    graph: &mut Graph,
    pass: &'static str,
    old: ValueRef,
    op: Op,
    inputs: &[ValueRef],
) -> Result<ValueRef, PassError> {
    let name = graph.fresh_value_name(graph.value_name(old));
    let node_name = graph.node(old.node).name.clone();
    let new = graph.add_node(&name, op, inputs).map_err(|e| PassError::new(pass, e.to_string()))?;
    if graph.value_type(new) != graph.value_type(old) {
        let message =
            format!("`{}` would change type from {} to {}", node_name, graph.value_type(old), graph.value_type(new));
        graph.remove_node(new.node);
        return Err(PassError::new(pass, message));
    }
    graph.node_mut(new.node).name = node_name;
    graph.replace_all_uses(old, new);
    Ok(new)
}
