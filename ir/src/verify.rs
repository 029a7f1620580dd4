//! The verifier: the structural and type invariants every graph holds.
//!
//! A graph is valid when it is acyclic; every node has exactly one incoming
//! edge per input slot `0..n` with `n` within its op's arity, each from an
//! existing output; every stored type equals what inference gives; value names
//! are unique; graph inputs are `Input` nodes and graph outputs exist. Passes
//! must leave graphs valid: a verifier failure is a compiler bug.

use std::collections::HashSet;

use crate::graph::Graph;
use crate::infer::infer_output_types;
use crate::op::Op;

/// The first invariant a graph breaks, naming the node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid graph at `{node}`: {problem}")]
pub struct VerifyError {
    pub node: String,
    pub problem: String,
}

/// Checks every invariant of the module docs.
pub fn verify(graph: &Graph) -> Result<(), VerifyError> {
    let error = |node: &str, problem: String| Err(VerifyError { node: node.to_string(), problem });
    let order = graph.topological_order();
    if order.len() != graph.node_count() {
        let on_cycle = graph.node_indices().find(|n| !order.contains(n)).expect("a node is missing");
        return error(&graph.node(on_cycle).name, "the node is on a cycle".into());
    }
    let mut names = HashSet::new();
    for &index in &order {
        let node = graph.node(index);
        let slots = graph.input_slots_of(index);
        if slots.iter().enumerate().any(|(i, &slot)| i != slot) {
            return error(&node.name, format!("input slots {slots:?} are not 0..{}", slots.len()));
        }
        let arity = node.op.input_arity();
        if slots.len() < arity.minimum || slots.len() > arity.maximum {
            return error(&node.name, format!("{} inputs for {}", slots.len(), node.op.name()));
        }
        let inputs = graph.inputs_of(index);
        if let Some(bad) = inputs.iter().find(|v| graph.value(**v).is_none()) {
            return error(&node.name, format!("input from missing output {} of a node", bad.output));
        }
        if let Some(group) = node.group {
            if !graph.groups().contains_key(&group) {
                return error(&node.name, format!("group g{group} is not in the group table"));
            }
        }
        for value in &node.outputs {
            if !names.insert(value.name.as_str()) {
                return error(&node.name, format!("value name `{}` is used twice", value.name));
            }
        }
        let expected = match &node.op {
            Op::Input => {
                if node.outputs.len() != 1 {
                    return error(&node.name, "an input has one output".into());
                }
                continue;
            }
            op => infer_output_types(graph, op, &inputs)
                .map_err(|e| VerifyError { node: node.name.clone(), problem: e.to_string() })?,
        };
        let found: Vec<_> = node.outputs.iter().map(|v| v.ty.clone()).collect();
        if found != expected {
            let show = |types: &[crate::tensor::TensorType]| {
                types.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
            };
            return error(&node.name, format!("types ({}) differ from inferred ({})", show(&found), show(&expected)));
        }
    }
    for &input in graph.inputs() {
        if !graph.contains(input) || graph.node(input).op != Op::Input {
            return error("<graph inputs>", "a graph input is not an input node".into());
        }
    }
    for output in graph.outputs() {
        if graph.value(output.value).is_none() {
            return error(&output.name, "the graph output refers to a missing value".into());
        }
    }
    Ok(())
}
