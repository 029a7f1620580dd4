//! The contract of a fusion group: what its kernel reads and writes, through
//! which views, and which ops run before and after its anchor.
//!
//! - **inputs**: values the group reads that other groups, graph inputs or
//!   constants produce — each with the chain of views (reshape, transpose,
//!   slice, …) between the stored tensor and what the group's ops see. Views
//!   are strided indexing, never copies; a view of the group's own values
//!   (the column slices of a merged projection) is internal indexing.
//! - **outputs**: values the group writes that other groups or the graph's
//!   outputs read.
//! - **anchor**: the one matmul, attention, row reduction or (first) gather
//!   the kernel is built around; elementwise groups have none.
//! - **prologue / epilogue**: the group's other ops, before and after the anchor.
//! - **scratch**: bytes of workspace the kernel needs besides its outputs
//!   (none for the kernels of this phase; split-K and split-KV kernels will).

use std::collections::HashSet;

use kiln_ir::graph::{NodeIndex, ValueRef};
use kiln_ir::{Dim, Graph, GroupId, KernelKind, Op};

use super::form_fusion_groups::{role, Role};

/// A value a group reads, and the views between it and the group.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupInput {
    /// The stored tensor: an input, a constant, or another group's output.
    pub source: ValueRef,
    /// View nodes applied to it, source side first.
    pub views: Vec<NodeIndex>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GroupContract {
    pub id: GroupId,
    pub kind: KernelKind,
    pub inputs: Vec<GroupInput>,
    pub outputs: Vec<ValueRef>,
    pub anchor: Option<NodeIndex>,
    pub prologue: Vec<NodeIndex>,
    pub epilogue: Vec<NodeIndex>,
    pub scratch_bytes: Dim,
}

/// Walks from `value` back through views to a stored tensor.
fn resolve(graph: &Graph, value: ValueRef, views: &mut Vec<NodeIndex>) -> ValueRef {
    if role(graph, value.node) == Role::View {
        let inputs = graph.inputs_of(value.node);
        let source = resolve(graph, inputs[0], views);
        views.push(value.node);
        return source;
    }
    value
}

impl GroupContract {
    pub fn of(graph: &Graph, id: GroupId) -> Option<GroupContract> {
        let kind = graph.groups().get(&id)?.kind;
        let nodes = graph.group_nodes(id);
        let members: HashSet<NodeIndex> = nodes.iter().copied().collect();
        let mut inputs: Vec<GroupInput> = Vec::new();
        for &node in &nodes {
            for value in graph.inputs_of(node) {
                if members.contains(&value.node) {
                    continue;
                }
                let mut views = Vec::new();
                let source = resolve(graph, value, &mut views);
                if members.contains(&source.node) {
                    continue;
                }
                let input = GroupInput { source, views };
                if !inputs.contains(&input) {
                    inputs.push(input);
                }
            }
        }
        // Read outside: by a graph output, or by a node of another group
        // (directly or through views); views leading back into this group are
        // its own indexing.
        let read_outside = |value: ValueRef| {
            let mut stack = vec![value];
            while let Some(current) = stack.pop() {
                if graph.outputs().iter().any(|o| o.value == current) {
                    return true;
                }
                for (consumer, _) in graph.consumers(current) {
                    if members.contains(&consumer) {
                        continue;
                    }
                    if role(graph, consumer) != Role::View {
                        return true;
                    }
                    stack.push(ValueRef::new(consumer, 0));
                }
            }
            false
        };
        let outputs: Vec<ValueRef> = nodes
            .iter()
            .flat_map(|&n| (0..graph.node(n).outputs.len()).map(move |o| ValueRef::new(n, o)))
            .filter(|v| read_outside(*v))
            .collect();
        let anchor = nodes.iter().copied().find(|&n| match graph.node(n).op {
            Op::MatMul { .. } | Op::Attention { .. } => true,
            Op::LayerNorm { .. } | Op::RmsNorm { .. } | Op::Softmax { .. } | Op::Reduce { .. } => {
                kind == KernelKind::RowReduction
            }
            Op::Gather { .. } | Op::GatherNd { .. } => kind == KernelKind::Gather,
            _ => false,
        });
        let (prologue, epilogue) = match anchor {
            Some(anchor) => {
                let position = nodes.iter().position(|&n| n == anchor).expect("a member");
                (nodes[..position].to_vec(), nodes[position + 1..].to_vec())
            }
            None => (Vec::new(), nodes.clone()),
        };
        Some(GroupContract { id, kind, inputs, outputs, anchor, prologue, epilogue, scratch_bytes: Dim::constant(0) })
    }
}
