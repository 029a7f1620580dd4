//! The verifier: the structural and type invariants every graph holds.
//!
//! A graph is valid when it is acyclic; every node has exactly one incoming
//! edge per input slot `0..n` with `n` within its op's arity, each from an
//! existing output; every stored type equals what inference gives; value names
//! are unique; graph inputs are `Input` nodes and graph outputs exist. Once a
//! graph has fusion groups: every computing op is in one, each group has the
//! one anchor its kernel kind is built around (a gather group at least one
//! gather; an elementwise group none), and the groups' dependencies form no
//! cycle (so they can run one kernel after another). Passes must leave graphs
//! valid: a verifier failure is a compiler bug.

use std::collections::{BTreeMap, HashSet};

use crate::graph::{Graph, NodeIndex};
use crate::group::{GroupId, KernelKind};
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
    if !graph.groups().is_empty() {
        verify_groups(graph, &order)?;
    }
    Ok(())
}

/// Whether `op` computes (rather than being a source, a view or index arithmetic
/// on shapes) and so must run inside a kernel once fusion has run.
fn computes(op: &Op) -> bool {
    !matches!(op, Op::Input | Op::Constant(_) | Op::Dims { .. } | Op::Range | Op::ConstantOfShape { .. })
        && !op.is_data_movement()
}

/// Whether `op` is what a kernel of `kind` is built around.
fn anchors(kind: KernelKind, op: &Op) -> bool {
    match kind {
        KernelKind::Matmul => matches!(op, Op::MatMul { .. }),
        KernelKind::Attention => matches!(op, Op::Attention { .. }),
        KernelKind::RowReduction => op.is_reduction(),
        KernelKind::Gather => matches!(op, Op::Gather { .. } | Op::GatherNd { .. }),
        KernelKind::Elementwise => false,
    }
}

/// The fusion-group invariants of the module docs.
fn verify_groups(graph: &Graph, order: &[NodeIndex]) -> Result<(), VerifyError> {
    let error = |node: &str, problem: String| Err(VerifyError { node: node.to_string(), problem });
    let mut anchor_counts: BTreeMap<GroupId, usize> = graph.groups().keys().map(|&g| (g, 0)).collect();
    for &index in order {
        let node = graph.node(index);
        match node.group {
            None if computes(&node.op) => {
                return error(&node.name, format!("{} computes but belongs to no fusion group", node.op.name()))
            }
            None => {}
            Some(group) => {
                let kind = graph.groups()[&group].kind;
                if anchors(kind, &node.op) {
                    *anchor_counts.entry(group).or_default() += 1;
                } else if matches!(node.op, Op::MatMul { .. } | Op::Attention { .. }) {
                    return error(&node.name, format!("a {} inside {kind} group g{group}", node.op.name()));
                }
            }
        }
    }
    for (&group, &count) in &anchor_counts {
        let kind = graph.groups()[&group].kind;
        let expected = match kind {
            KernelKind::Elementwise => count == 0,
            KernelKind::Gather => count >= 1,
            _ => count == 1,
        };
        if !expected {
            return error(&format!("g{group}"), format!("a {kind} group with {count} anchors"));
        }
    }
    // The group graph: g → h when a node of h reads (through ungrouped nodes) a value of g.
    let mut producers_of: BTreeMap<NodeIndex, Vec<GroupId>> = BTreeMap::new();
    let mut edges: BTreeMap<GroupId, HashSet<GroupId>> = BTreeMap::new();
    for &index in order {
        let mut reached = Vec::new();
        for input in graph.inputs_of(index) {
            match graph.node(input.node).group {
                Some(group) => reached.push(group),
                None => reached.extend(producers_of.get(&input.node).into_iter().flatten().copied()),
            }
        }
        reached.sort_unstable();
        reached.dedup();
        match graph.node(index).group {
            Some(group) => {
                edges.entry(group).or_default().extend(reached.into_iter().filter(|&g| g != group));
            }
            None => {
                producers_of.insert(index, reached);
            }
        }
    }
    // Depth-first search for a cycle among groups (`edges`: group → the groups it reads).
    let mut state: BTreeMap<GroupId, u8> = BTreeMap::new(); // 1: on the stack, 2: done
    for &start in graph.groups().keys() {
        if state.contains_key(&start) {
            continue;
        }
        let mut stack = vec![(start, false)];
        while let Some((group, finished)) = stack.pop() {
            if finished {
                state.insert(group, 2);
                continue;
            }
            match state.get(&group) {
                Some(2) => continue,
                Some(_) => {
                    return error(&format!("g{group}"), "the fusion groups depend on each other in a cycle".into())
                }
                None => {}
            }
            state.insert(group, 1);
            stack.push((group, true));
            for &next in edges.get(&group).into_iter().flatten() {
                match state.get(&next) {
                    Some(1) => {
                        return error(
                            &format!("g{group}"),
                            format!("g{group} and g{next} depend on each other (a cycle)"),
                        )
                    }
                    Some(_) => {}
                    None => stack.push((next, false)),
                }
            }
        }
    }
    Ok(())
}
