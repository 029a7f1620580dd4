//! The graph: ops as nodes of a petgraph `StableGraph`, values as node outputs.
//!
//! A node produces one or more named, typed values; an edge carries output
//! `output` of its source node into input slot `input` of its target node.
//! Every input slot `0..n` of a node has exactly one incoming edge. Graph
//! inputs are [`Op::Input`] nodes in `inputs` order; graph outputs name values.
//!
//! Building a node infers its output types right away ([`crate::infer`]), so a
//! graph built through [`Graph::add_node`] is always typed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

pub use petgraph::stable_graph::NodeIndex;
use petgraph::stable_graph::StableGraph;
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::constant::Constant;
use crate::group::{FusionGroup, GroupId};
use crate::infer::{infer_output_types, InferError};
use crate::op::Op;
use crate::tensor::TensorType;

/// One output of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueRef {
    pub node: NodeIndex,
    pub output: usize,
}

impl ValueRef {
    pub fn new(node: NodeIndex, output: usize) -> ValueRef {
        ValueRef { node, output }
    }
}

/// A named, typed value produced by a node.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub name: String,
    pub ty: TensorType,
}

/// An op with its name (from the model, for error messages) and its outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub outputs: Vec<Value>,
    /// The fusion group the node belongs to, once the fuse phase has run.
    pub group: Option<GroupId>,
}

/// Carries output `output` of the source node into input slot `input`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    pub output: usize,
    pub input: usize,
}

/// A named graph output.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphOutput {
    pub name: String,
    pub value: ValueRef,
}

/// A node could not be added.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraphError {
    #[error("node `{node}` ({op}) takes {expected} inputs, got {found}")]
    Arity { node: String, op: &'static str, expected: String, found: usize },
    #[error("node `{node}` ({op}): {source}")]
    Inference {
        node: String,
        op: &'static str,
        #[source]
        source: InferError,
    },
    #[error("node `{node}` uses a value that is not in the graph")]
    DanglingInput { node: String },
}

/// A dataflow graph of [`Op`]s. See the module docs.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    graph: StableGraph<Node, Edge>,
    inputs: Vec<NodeIndex>,
    outputs: Vec<GraphOutput>,
    groups: BTreeMap<GroupId, FusionGroup>,
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Adds a graph input named `name`.
    pub fn add_input(&mut self, name: &str, ty: TensorType) -> ValueRef {
        let node = self.graph.add_node(Node {
            name: name.to_string(),
            op: Op::Input,
            outputs: vec![Value { name: name.to_string(), ty }],
            group: None,
        });
        self.inputs.push(node);
        ValueRef::new(node, 0)
    }

    /// Adds a constant whose value is named `name`.
    pub fn add_constant(&mut self, name: &str, constant: Constant) -> ValueRef {
        let ty = constant.tensor_type();
        let node = self.graph.add_node(Node {
            name: name.to_string(),
            op: Op::Constant(constant),
            outputs: vec![Value { name: name.to_string(), ty }],
            group: None,
        });
        ValueRef::new(node, 0)
    }

    /// Adds a node whose outputs are named `output_names` (one name per
    /// output; missing names are derived from `name`), and infers their types.
    pub fn add_node_with_output_names(
        &mut self,
        name: &str,
        op: Op,
        inputs: &[ValueRef],
        output_names: &[String],
    ) -> Result<Vec<ValueRef>, GraphError> {
        let arity = op.input_arity();
        if inputs.len() < arity.minimum || inputs.len() > arity.maximum {
            let expected = if arity.minimum == arity.maximum {
                arity.minimum.to_string()
            } else if arity.maximum == usize::MAX {
                format!("at least {}", arity.minimum)
            } else {
                format!("{}..={}", arity.minimum, arity.maximum)
            };
            return Err(GraphError::Arity { node: name.to_string(), op: op.name(), expected, found: inputs.len() });
        }
        if inputs.iter().any(|v| self.value(*v).is_none()) {
            return Err(GraphError::DanglingInput { node: name.to_string() });
        }
        let types = infer_output_types(self, &op, inputs).map_err(|source| GraphError::Inference {
            node: name.to_string(),
            op: op.name(),
            source,
        })?;
        let outputs = types
            .into_iter()
            .enumerate()
            .map(|(index, ty)| {
                let value_name = output_names.get(index).cloned().unwrap_or_else(|| {
                    if index == 0 {
                        name.to_string()
                    } else {
                        format!("{name}:{index}")
                    }
                });
                Value { name: value_name, ty }
            })
            .collect::<Vec<_>>();
        let count = outputs.len();
        let node = self.graph.add_node(Node { name: name.to_string(), op, outputs, group: None });
        for (slot, input) in inputs.iter().enumerate() {
            self.graph.add_edge(input.node, node, Edge { output: input.output, input: slot });
        }
        Ok((0..count).map(|output| ValueRef::new(node, output)).collect())
    }

    /// Adds a single-output node whose output is named `name`.
    pub fn add_node(&mut self, name: &str, op: Op, inputs: &[ValueRef]) -> Result<ValueRef, GraphError> {
        Ok(self.add_node_with_output_names(name, op, inputs, &[])?[0])
    }

    /// Declares `value` a graph output named `name`.
    pub fn add_output(&mut self, name: &str, value: ValueRef) {
        self.outputs.push(GraphOutput { name: name.to_string(), value });
    }

    /// Points graph output `index` at `value` (its name stays).
    pub fn set_output_value(&mut self, index: usize, value: ValueRef) {
        self.outputs[index].value = value;
    }

    /// The fusion groups, by id.
    pub fn groups(&self) -> &BTreeMap<GroupId, FusionGroup> {
        &self.groups
    }

    pub fn groups_mut(&mut self) -> &mut BTreeMap<GroupId, FusionGroup> {
        &mut self.groups
    }

    /// Nodes of group `group`, in topological order.
    pub fn group_nodes(&self, group: GroupId) -> Vec<NodeIndex> {
        self.topological_order().into_iter().filter(|&n| self.graph[n].group == Some(group)).collect()
    }

    pub fn inputs(&self) -> &[NodeIndex] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[GraphOutput] {
        &self.outputs
    }

    pub fn node(&self, index: NodeIndex) -> &Node {
        &self.graph[index]
    }

    pub fn node_mut(&mut self, index: NodeIndex) -> &mut Node {
        &mut self.graph[index]
    }

    pub fn contains(&self, index: NodeIndex) -> bool {
        self.graph.contains_node(index)
    }

    pub fn node_count(&self) -> usize {
        self.graph.node_count()
    }

    pub fn node_indices(&self) -> impl Iterator<Item = NodeIndex> + '_ {
        self.graph.node_indices()
    }

    /// The value `value` refers to, if its node exists and has that output.
    pub fn value(&self, value: ValueRef) -> Option<&Value> {
        self.graph.node_weight(value.node).and_then(|node| node.outputs.get(value.output))
    }

    /// The type of a value of this graph.
    ///
    /// Panics when `value` is not in the graph: a dangling reference is a
    /// compiler bug, which the verifier reports first.
    pub fn value_type(&self, value: ValueRef) -> &TensorType {
        &self.graph[value.node].outputs[value.output].ty
    }

    pub fn value_name(&self, value: ValueRef) -> &str {
        &self.graph[value.node].outputs[value.output].name
    }

    /// The constant a value is, if it is the output of a constant node.
    pub fn as_constant(&self, value: ValueRef) -> Option<&Constant> {
        match &self.graph.node_weight(value.node)?.op {
            Op::Constant(constant) => Some(constant),
            _ => None,
        }
    }

    /// A node's inputs in slot order. Slots without an edge (only in a
    /// broken graph) are left out; the verifier reports them.
    pub fn inputs_of(&self, node: NodeIndex) -> Vec<ValueRef> {
        let mut edges: Vec<(usize, ValueRef)> = self
            .graph
            .edges_directed(node, Direction::Incoming)
            .map(|edge| (edge.weight().input, ValueRef::new(edge.source(), edge.weight().output)))
            .collect();
        edges.sort_by_key(|(slot, _)| *slot);
        edges.into_iter().map(|(_, value)| value).collect()
    }

    /// Input slot numbers of a node's incoming edges, sorted (for the verifier).
    pub fn input_slots_of(&self, node: NodeIndex) -> Vec<usize> {
        let mut slots: Vec<usize> =
            self.graph.edges_directed(node, Direction::Incoming).map(|edge| edge.weight().input).collect();
        slots.sort_unstable();
        slots
    }

    /// Every (consumer node, input slot) that reads `value`.
    pub fn consumers(&self, value: ValueRef) -> Vec<(NodeIndex, usize)> {
        let mut uses: Vec<(NodeIndex, usize)> = self
            .graph
            .edges_directed(value.node, Direction::Outgoing)
            .filter(|edge| edge.weight().output == value.output)
            .map(|edge| (edge.target(), edge.weight().input))
            .collect();
        uses.sort();
        uses
    }

    /// Nodes in a deterministic topological order: among ready nodes, the
    /// lowest index first (so a graph built in order prints in that order).
    /// Nodes on a cycle are left out; the verifier reports them.
    pub fn topological_order(&self) -> Vec<NodeIndex> {
        let mut pending: HashMap<NodeIndex, usize> = HashMap::new();
        let mut ready = BTreeSet::new();
        for node in self.graph.node_indices() {
            let count = self.graph.edges_directed(node, Direction::Incoming).count();
            if count == 0 {
                ready.insert(node);
            } else {
                pending.insert(node, count);
            }
        }
        let mut order = Vec::with_capacity(self.graph.node_count());
        while let Some(node) = ready.pop_first() {
            order.push(node);
            for edge in self.graph.edges_directed(node, Direction::Outgoing) {
                let count = pending.get_mut(&edge.target()).expect("every target is pending");
                *count -= 1;
                if *count == 0 {
                    ready.insert(edge.target());
                }
            }
        }
        order
    }

    /// Graph inputs in order, then every other node in [`Graph::topological_order`]:
    /// the order of the text form and of graph equality.
    pub fn canonical_order(&self) -> Vec<NodeIndex> {
        let mut order = self.inputs.clone();
        order.extend(self.topological_order().into_iter().filter(|n| !self.inputs.contains(n)));
        order
    }

    /// Points every use of `old` (consumers and graph outputs) at `new`.
    pub fn replace_all_uses(&mut self, old: ValueRef, new: ValueRef) {
        let uses: Vec<_> = self
            .graph
            .edges_directed(old.node, Direction::Outgoing)
            .filter(|edge| edge.weight().output == old.output)
            .map(|edge| (edge.id(), edge.target(), edge.weight().input))
            .collect();
        for (edge, target, slot) in uses {
            self.graph.remove_edge(edge);
            self.graph.add_edge(new.node, target, Edge { output: new.output, input: slot });
        }
        for output in &mut self.outputs {
            if output.value == old {
                output.value = new;
            }
        }
    }

    /// Removes a node and its edges. Graph inputs are never removed.
    pub fn remove_node(&mut self, node: NodeIndex) -> Option<Node> {
        if self.inputs.contains(&node) {
            return None;
        }
        self.graph.remove_node(node)
    }

    /// Nodes that no graph output depends on (excluding graph inputs).
    pub fn dead_nodes(&self) -> Vec<NodeIndex> {
        let mut live: HashSet<NodeIndex> = HashSet::new();
        let mut stack: Vec<NodeIndex> = self.outputs.iter().map(|o| o.value.node).collect();
        while let Some(node) = stack.pop() {
            if live.insert(node) {
                stack.extend(self.graph.neighbors_directed(node, Direction::Incoming));
            }
        }
        self.graph.node_indices().filter(|n| !live.contains(n) && !self.inputs.contains(n)).collect()
    }

    /// A value name not used by any value of the graph, derived from `base`.
    pub fn fresh_value_name(&self, base: &str) -> String {
        let used: HashSet<&str> =
            self.graph.node_weights().flat_map(|node| node.outputs.iter().map(|v| v.name.as_str())).collect();
        if !used.contains(base) {
            return base.to_string();
        }
        (1..).map(|n| format!("{base}_{n}")).find(|name| !used.contains(name.as_str())).expect("unbounded")
    }

    /// Graph inputs as values.
    pub fn input_values(&self) -> Vec<ValueRef> {
        self.inputs.iter().map(|&node| ValueRef::new(node, 0)).collect()
    }
}

impl PartialEq for Graph {
    /// Two graphs are equal when, walked in topological order, their nodes
    /// are pairwise equal (op, names, types, and inputs by position in that
    /// order), and their inputs and outputs correspond.
    fn eq(&self, other: &Graph) -> bool {
        let order_a = self.canonical_order();
        let order_b = other.canonical_order();
        if order_a.len() != order_b.len() || self.node_count() != other.node_count() {
            return false;
        }
        let position_a: HashMap<NodeIndex, usize> = order_a.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let position_b: HashMap<NodeIndex, usize> = order_b.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let map_a = |v: ValueRef| (position_a[&v.node], v.output);
        let map_b = |v: ValueRef| (position_b[&v.node], v.output);
        for (&a, &b) in order_a.iter().zip(&order_b) {
            if self.node(a) != other.node(b) {
                return false;
            }
            let inputs_a: Vec<_> = self.inputs_of(a).into_iter().map(map_a).collect();
            let inputs_b: Vec<_> = other.inputs_of(b).into_iter().map(map_b).collect();
            if inputs_a != inputs_b {
                return false;
            }
        }
        let graph_inputs_a: Vec<_> = self.inputs.iter().map(|n| position_a[n]).collect();
        let graph_inputs_b: Vec<_> = other.inputs.iter().map(|n| position_b[n]).collect();
        let outputs_a: Vec<_> = self.outputs.iter().map(|o| (&o.name, map_a(o.value))).collect();
        let outputs_b: Vec<_> = other.outputs.iter().map(|o| (&o.name, map_b(o.value))).collect();
        graph_inputs_a == graph_inputs_b && outputs_a == outputs_b && self.groups == other.groups
    }
}
