//! Partitions the graph into fusion groups, each of which becomes one kernel
//! of one kind: matmul (with its epilogue: bias, activation, residual add),
//! attention (with its RoPE/elementwise prologue), row reduction (a norm or
//! softmax, with an elementwise prologue), gather (embedding gathers, their
//! sums and the norm after them), or elementwise chains.
//!
//! Views — reshapes, transposes, squeezes, slices, expands, position
//! generators (`range`/`constant_of_shape` of compile-time dims) and
//! constant-index gathers — belong to no group: they are folded into the
//! indexing of the groups that read them. Constants, dims and inputs belong
//! to no group either. The group graph stays acyclic.
//!
//! Establishes: every other node belongs to exactly one group; each group has
//! at most one matmul, attention or row-reduction anchor.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use kiln_ir::graph::{NodeIndex, ValueRef};
use kiln_ir::{FusionGroup, Graph, KernelKind, Op};

use crate::pass::{Pass, PassError};
use crate::util::is_compile_time;

pub struct FormFusionGroups;

/// How a node takes part in fusion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Inputs, constants, dims: data that exists before any kernel runs.
    Source,
    /// Folded into the indexing of the groups that read it.
    View,
    /// Computes; becomes part of a group of this kind.
    Compute(KernelKind),
}

/// The role of `node` in fusion.
pub fn role(graph: &Graph, node: NodeIndex) -> Role {
    let inputs = graph.inputs_of(node);
    let rest_compile_time = || inputs.iter().skip(1).all(|v| is_compile_time(graph, *v));
    let all_compile_time = || inputs.iter().all(|v| is_compile_time(graph, *v));
    match &graph.node(node).op {
        Op::Input | Op::Constant(_) | Op::Dims { .. } => Role::Source,
        Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Flatten { .. }
        | Op::Slice
        | Op::Expand
            if rest_compile_time() =>
        {
            Role::View
        }
        Op::Range | Op::ConstantOfShape { .. } if all_compile_time() => Role::View,
        Op::Gather { .. } if !is_compile_time(graph, inputs[0]) && is_compile_time(graph, inputs[1]) => Role::View,
        Op::Gather { .. } | Op::GatherNd { .. } => Role::Compute(KernelKind::Gather),
        Op::MatMul { .. } => Role::Compute(KernelKind::Matmul),
        Op::Attention { .. } => Role::Compute(KernelKind::Attention),
        Op::LayerNorm { .. } | Op::RmsNorm { .. } | Op::Softmax { .. } | Op::Reduce { .. } => {
            Role::Compute(KernelKind::RowReduction)
        }
        _ => Role::Compute(KernelKind::Elementwise),
    }
}

/// Union-find over compute nodes, with each set's anchor kinds.
struct Groups {
    parent: HashMap<NodeIndex, NodeIndex>,
    members: HashMap<NodeIndex, Vec<NodeIndex>>,
    kinds: HashMap<NodeIndex, Vec<KernelKind>>,
}

impl Groups {
    fn find(&self, mut node: NodeIndex) -> NodeIndex {
        while let Some(&parent) = self.parent.get(&node) {
            if parent == node {
                return node;
            }
            node = parent;
        }
        node
    }

    fn add(&mut self, node: NodeIndex, kind: KernelKind) {
        self.parent.insert(node, node);
        self.members.insert(node, vec![node]);
        self.kinds.insert(node, vec![kind]);
    }

    fn union(&mut self, a: NodeIndex, b: NodeIndex) -> NodeIndex {
        let (a, b) = (self.find(a), self.find(b));
        if a == b {
            return a;
        }
        self.parent.insert(b, a);
        let moved = self.members.remove(&b).unwrap_or_default();
        self.members.entry(a).or_default().extend(moved);
        let kinds = self.kinds.remove(&b).unwrap_or_default();
        self.kinds.entry(a).or_default().extend(kinds);
        a
    }

    /// The kind a set of anchors makes, or `None` when they cannot share a kernel.
    fn combined_kind(kinds: &[KernelKind]) -> Option<KernelKind> {
        let heavy: Vec<KernelKind> = kinds
            .iter()
            .copied()
            .filter(|k| matches!(k, KernelKind::Matmul | KernelKind::Attention | KernelKind::RowReduction))
            .collect();
        let gathers = kinds.contains(&KernelKind::Gather);
        match (heavy.as_slice(), gathers) {
            ([], false) => Some(KernelKind::Elementwise),
            ([], true) | ([KernelKind::RowReduction], true) => Some(KernelKind::Gather),
            ([kind], false) => Some(*kind),
            _ => None,
        }
    }

    fn kind(&self, node: NodeIndex) -> KernelKind {
        Groups::combined_kind(&self.kinds[&self.find(node)]).expect("only compatible sets are formed")
    }
}

/// The compute nodes a value comes from, looking through views.
fn compute_producers(graph: &Graph, roles: &HashMap<NodeIndex, Role>, value: ValueRef, found: &mut Vec<NodeIndex>) {
    match roles[&value.node] {
        Role::Compute(_) => found.push(value.node),
        Role::View => {
            for input in graph.inputs_of(value.node) {
                compute_producers(graph, roles, input, found);
            }
        }
        Role::Source => {}
    }
}

/// Whether every input of `node` reads `producer`'s results as they are or
/// through slices only. The epilogue of a matmul, attention or row reduction
/// reads its anchor's results as the kernel computes them (tile by tile, row
/// by row), or a column range of them (the halves of a merged projection); a
/// view that reshapes, transposes or broadcasts them would index them in
/// another shape.
fn reads_through_slices_only(
    graph: &Graph,
    roles: &HashMap<NodeIndex, Role>,
    node: NodeIndex,
    producer: NodeIndex,
) -> bool {
    fn through_slices(graph: &Graph, roles: &HashMap<NodeIndex, Role>, value: ValueRef, producer: NodeIndex) -> bool {
        if value.node == producer || roles[&value.node] != Role::View {
            return true;
        }
        if graph.node(value.node).op == Op::Slice {
            return through_slices(graph, roles, graph.inputs_of(value.node)[0], producer);
        }
        let mut found = Vec::new();
        compute_producers(graph, roles, value, &mut found);
        !found.contains(&producer)
    }
    graph.inputs_of(node).into_iter().all(|input| through_slices(graph, roles, input, producer))
}

/// Compute successors of every compute node, looking through views.
fn compute_successors(graph: &Graph, roles: &HashMap<NodeIndex, Role>) -> HashMap<NodeIndex, Vec<NodeIndex>> {
    let mut successors: HashMap<NodeIndex, Vec<NodeIndex>> = HashMap::new();
    for (&node, role) in roles {
        if !matches!(role, Role::Compute(_)) {
            continue;
        }
        let mut producers = Vec::new();
        for input in graph.inputs_of(node) {
            compute_producers(graph, roles, input, &mut producers);
        }
        for producer in producers {
            successors.entry(producer).or_default().push(node);
        }
    }
    successors
}

/// Whether merging the sets of `a` and `b` would make the group graph cyclic:
/// a path leaves one set, passes a third group, and enters the other.
fn would_cycle(groups: &Groups, successors: &HashMap<NodeIndex, Vec<NodeIndex>>, a: NodeIndex, b: NodeIndex) -> bool {
    let (root_a, root_b) = (groups.find(a), groups.find(b));
    let inside = |n: NodeIndex| {
        let root = groups.find(n);
        root == root_a || root == root_b
    };
    for (from, to) in [(root_a, root_b), (root_b, root_a)] {
        let mut queue: VecDeque<NodeIndex> = VecDeque::new();
        let mut seen = HashSet::new();
        for &member in &groups.members[&from] {
            for &next in successors.get(&member).into_iter().flatten() {
                if !inside(next) && seen.insert(next) {
                    queue.push_back(next);
                }
            }
        }
        while let Some(node) = queue.pop_front() {
            for &next in successors.get(&node).into_iter().flatten() {
                if groups.find(next) == to {
                    return true;
                }
                if !inside(next) && seen.insert(next) {
                    queue.push_back(next);
                }
            }
        }
    }
    false
}

fn try_merge(groups: &mut Groups, successors: &HashMap<NodeIndex, Vec<NodeIndex>>, a: NodeIndex, b: NodeIndex) -> bool {
    if groups.find(a) == groups.find(b) {
        return true;
    }
    let mut kinds = groups.kinds[&groups.find(a)].clone();
    kinds.extend(groups.kinds[&groups.find(b)].iter().copied());
    if Groups::combined_kind(&kinds).is_none() || would_cycle(groups, successors, a, b) {
        return false;
    }
    groups.union(a, b);
    true
}

/// Preference of a producer's group for taking an elementwise consumer.
fn epilogue_preference(kind: KernelKind) -> usize {
    match kind {
        KernelKind::Matmul => 0,
        KernelKind::Gather => 1,
        KernelKind::Attention => 2,
        KernelKind::Elementwise => 3,
        KernelKind::RowReduction => 4,
    }
}

impl Pass for FormFusionGroups {
    fn name(&self) -> &'static str {
        "form_fusion_groups"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        if !graph.groups().is_empty() {
            return Ok(false);
        }
        let order = graph.topological_order();
        let roles: HashMap<NodeIndex, Role> = order.iter().map(|&n| (n, role(graph, n))).collect();
        let successors = compute_successors(graph, &roles);
        let position: HashMap<NodeIndex, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let mut groups = Groups { parent: HashMap::new(), members: HashMap::new(), kinds: HashMap::new() };
        for &node in &order {
            let Role::Compute(kind) = roles[&node] else { continue };
            groups.add(node, kind);
            let mut producers = Vec::new();
            for input in graph.inputs_of(node) {
                compute_producers(graph, &roles, input, &mut producers);
            }
            producers.dedup();
            match kind {
                KernelKind::Elementwise | KernelKind::Gather => {
                    // Ops that only feed attention (RoPE) wait to become its prologue.
                    let feeds_only_attention = successors.get(&node).is_some_and(|next| {
                        !next.is_empty() && next.iter().all(|&n| roles[&n] == Role::Compute(KernelKind::Attention))
                    });
                    if feeds_only_attention {
                        continue;
                    }
                    // Join the preferred producer's group (an epilogue); join further
                    // producers only while no heavy anchor is involved (elementwise
                    // chains, embedding sums).
                    // Among equals, the most recently computed producer first.
                    producers.sort_by_key(|&p| (epilogue_preference(groups.kind(p)), std::cmp::Reverse(position[&p])));
                    let light = |k: KernelKind| matches!(k, KernelKind::Elementwise | KernelKind::Gather);
                    let mut joined = false;
                    for producer in producers {
                        if !light(groups.kind(producer)) && !reads_through_slices_only(graph, &roles, node, producer) {
                            continue;
                        }
                        if !joined || (light(groups.kind(producer)) && light(groups.kind(node))) {
                            joined |= try_merge(&mut groups, &successors, producer, node);
                        }
                    }
                }
                KernelKind::RowReduction => {
                    for producer in producers {
                        if matches!(groups.kind(producer), KernelKind::Gather | KernelKind::Elementwise) {
                            try_merge(&mut groups, &successors, producer, node);
                        }
                    }
                }
                KernelKind::Attention => {
                    // A prologue only this attention reads (RoPE); an elementwise group
                    // that other kernels read too (a mask every layer uses), or
                    // whose values are graph outputs (a KV cache's `present`), stays apart.
                    let outputs: HashSet<NodeIndex> = graph.outputs().iter().map(|output| output.value.node).collect();
                    for producer in producers {
                        let root = groups.find(producer);
                        let only_here = groups.members[&root].iter().all(|member| {
                            !outputs.contains(member)
                                && successors
                                    .get(member)
                                    .into_iter()
                                    .flatten()
                                    .all(|&next| next == node || groups.find(next) == root)
                        });
                        if groups.kind(producer) == KernelKind::Elementwise && only_here {
                            try_merge(&mut groups, &successors, producer, node);
                        }
                    }
                }
                KernelKind::Matmul => {}
            }
        }
        // Number the groups in order of their first node.
        let mut ids: BTreeMap<NodeIndex, u32> = BTreeMap::new();
        let mut table = BTreeMap::new();
        for &node in &order {
            if !matches!(roles[&node], Role::Compute(_)) {
                continue;
            }
            let root = groups.find(node);
            let next = ids.len() as u32;
            let id = *ids.entry(root).or_insert(next);
            table.entry(id).or_insert_with(|| FusionGroup::new(groups.kind(root)));
            graph.node_mut(node).group = Some(id);
        }
        let changed = !table.is_empty();
        *graph.groups_mut() = table;
        Ok(changed)
    }
}
