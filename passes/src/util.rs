//! Small queries and edits shared by the passes.

use kiln_ir::graph::{NodeIndex, ValueRef};
use kiln_ir::{Graph, Op};

/// The op that produces `value`.
pub fn producer(graph: &Graph, value: ValueRef) -> &Op {
    &graph.node(value.node).op
}

/// The single scalar value of a constant (any shape with one element, or all
/// elements equal), as f64.
pub fn constant_scalar(graph: &Graph, value: ValueRef) -> Option<f64> {
    let constant = graph.as_constant(value)?;
    if constant.element_count() == 0 || constant.element_count() > 4096 {
        return None;
    }
    let values = constant.to_tensor().to_f64_vec();
    let first = values[0];
    values.iter().all(|v| *v == first || (v.is_nan() && first.is_nan())).then_some(first)
}

/// Whether `value` is a constant scalar equal to `expected` (within 1e-6 relative).
pub fn is_scalar(graph: &Graph, value: ValueRef, expected: f64) -> bool {
    constant_scalar(graph, value).is_some_and(|v| (v - expected).abs() <= 1e-6 * expected.abs().max(1e-30))
}

/// The nodes that read `value`.
pub fn consumer_nodes(graph: &Graph, value: ValueRef) -> Vec<NodeIndex> {
    let mut nodes: Vec<NodeIndex> = graph.consumers(value).into_iter().map(|(node, _)| node).collect();
    nodes.dedup();
    nodes
}

/// Whether `value` is read by exactly one node (and is not a graph output).
pub fn has_single_use(graph: &Graph, value: ValueRef) -> bool {
    graph.consumers(value).len() == 1 && !graph.outputs().iter().any(|o| o.value == value)
}

/// Whether the value is the output of a constant or a dims node (known at compile time).
pub fn is_compile_time(graph: &Graph, value: ValueRef) -> bool {
    matches!(producer(graph, value), Op::Constant(_) | Op::Dims { .. })
}
