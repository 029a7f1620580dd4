//! Collapses a chain of view ops (reshape, transpose, squeeze, unsqueeze,
//! flatten) into one transpose, or one reshape, when that is what the chain
//! amounts to — e.g. `reshape → transpose → reshape` that only swaps the last
//! two dims of a rank-4 tensor. The equivalence is checked by running the
//! chain on an iota tensor under distinct bindings of the symbols.
//!
//! Establishes: no chain of two or more views equals a single transpose or
//! reshape of its source.

use std::collections::HashMap;

use kiln_ir::eval::evaluate_op;
use kiln_ir::graph::{NodeIndex, ValueRef};
use kiln_ir::{DType, Dim, Graph, Op, SymbolBindings, Tensor};

use crate::pass::{Pass, PassError};
use crate::util::is_compile_time;

pub struct CollapseViewChains;

fn is_view(op: &Op) -> bool {
    matches!(
        op,
        Op::Reshape { .. } | Op::Transpose { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } | Op::Flatten { .. }
    )
}

/// Distinct small values for every symbol of the graph's inputs and dims.
fn probe_bindings(graph: &Graph, shapes: &[&[Dim]]) -> SymbolBindings {
    let primes = [2, 3, 5, 7, 11, 13, 17, 19];
    let mut names: Vec<String> = shapes.iter().flat_map(|s| s.iter().flat_map(|d| d.symbols())).collect();
    for input in graph.input_values() {
        names.extend(graph.value_type(input).shape.iter().flat_map(|d| d.symbols()));
    }
    names.sort();
    names.dedup();
    names.into_iter().zip(primes.iter().cycle()).map(|(name, &p)| (name, p)).collect()
}

/// Runs the view chain `nodes` (source first) on `input`.
fn run_chain(graph: &Graph, nodes: &[NodeIndex], input: Tensor, bindings: &SymbolBindings) -> Option<Tensor> {
    let mut current = input;
    for &node in nodes {
        let mut arguments = vec![current];
        for other in graph.inputs_of(node).into_iter().skip(1) {
            let tensor = match &graph.node(other.node).op {
                Op::Constant(constant) => constant.to_tensor(),
                op @ Op::Dims { .. } => evaluate_op(op, &[], bindings).ok()?,
                _ => return None,
            };
            arguments.push(tensor);
        }
        let references: Vec<&Tensor> = arguments.iter().collect();
        current = evaluate_op(&graph.node(node).op, &references, bindings).ok()?;
    }
    Some(current)
}

fn iota(shape: &[usize]) -> Tensor {
    let count: usize = shape.iter().product();
    Tensor::from_i64(DType::I64, shape.to_vec(), (0..count as i64).collect())
}

fn permutations(rank: usize) -> Vec<Vec<usize>> {
    if rank == 0 {
        return vec![Vec::new()];
    }
    let mut all = Vec::new();
    for rest in permutations(rank - 1) {
        for position in 0..=rest.len() {
            let mut p = rest.clone();
            p.insert(position, rank - 1);
            all.push(p);
        }
    }
    all
}

/// What a view chain amounts to: a reshape of the source to `shape` (skipped
/// when `shape` is `None`), then a transpose by `permutation` (skipped when
/// `None`).
struct CanonicalView {
    shape: Option<Vec<Dim>>,
    permutation: Option<Vec<usize>>,
}

impl CanonicalView {
    fn node_count(&self) -> usize {
        self.shape.is_some() as usize + self.permutation.is_some() as usize
    }
}

/// The reshape-then-transpose equal to the chain from `source` to `end`, if any.
fn equivalent_view(graph: &Graph, source: ValueRef, nodes: &[NodeIndex], end: ValueRef) -> Option<CanonicalView> {
    let (from, to) = (graph.value_type(source).clone(), graph.value_type(end).clone());
    let bindings = probe_bindings(graph, &[&from.shape, &to.shape]);
    let evaluate = |shape: &[Dim]| {
        shape.iter().map(|d| d.evaluate(&bindings).ok().map(|v| v as usize)).collect::<Option<Vec<_>>>()
    };
    let input_shape = evaluate(&from.shape)?;
    if input_shape.iter().product::<usize>() > 1 << 20 || to.rank() > 5 {
        return None;
    }
    let input = iota(&input_shape);
    let result = run_chain(graph, nodes, input.clone(), &bindings)?;
    // The identity permutation first: a plain reshape is the simplest answer.
    let identity: Vec<usize> = (0..to.rank()).collect();
    std::iter::once(identity)
        .chain(permutations(to.rank()))
        .find_map(|permutation| try_permutation(&from, &to, &input, &result, &bindings, &permutation))
}

/// Whether reshaping the source so that `permutation` yields `to`, then
/// transposing, reproduces `result`.
fn try_permutation(
    from: &kiln_ir::TensorType,
    to: &kiln_ir::TensorType,
    input: &Tensor,
    result: &Tensor,
    bindings: &SymbolBindings,
    permutation: &[usize],
) -> Option<CanonicalView> {
    let rank = to.rank();
    let mut intermediate = vec![Dim::constant(0); rank];
    for (k, &p) in permutation.iter().enumerate() {
        intermediate[p] = to.shape[k].clone();
    }
    let concrete: Vec<i64> = intermediate.iter().map(|d| d.evaluate(bindings).ok()).collect::<Option<_>>()?;
    let shape_tensor = Tensor::from_i64(DType::I64, vec![rank], concrete);
    let reshaped = evaluate_op(&Op::Reshape { allow_zero: true }, &[input, &shape_tensor], bindings).ok()?;
    let identity = permutation.iter().enumerate().all(|(i, &p)| i == p);
    let transposed = if identity {
        reshaped
    } else {
        evaluate_op(&Op::Transpose { permutation: permutation.to_vec() }, &[&reshaped], bindings).ok()?
    };
    if &transposed != result {
        return None;
    }
    Some(CanonicalView {
        shape: (intermediate != from.shape).then_some(intermediate),
        permutation: (!identity).then(|| permutation.to_vec()),
    })
}

impl Pass for CollapseViewChains {
    fn name(&self) -> &'static str {
        "collapse_view_chains"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        let mut changed = false;
        let mut chain_of: HashMap<NodeIndex, (ValueRef, Vec<NodeIndex>)> = HashMap::new();
        for node in graph.topological_order() {
            if !is_view(&graph.node(node).op) {
                continue;
            }
            let inputs = graph.inputs_of(node);
            if !inputs[1..].iter().all(|v| is_compile_time(graph, *v)) {
                continue;
            }
            let (source, mut nodes) = match chain_of.get(&inputs[0].node) {
                Some((source, nodes)) if graph.consumers(inputs[0]).len() == 1 => (*source, nodes.clone()),
                _ => (inputs[0], Vec::new()),
            };
            nodes.push(node);
            chain_of.insert(node, (source, nodes.clone()));
            let end = ValueRef::new(node, 0);
            if nodes.len() < 2 {
                continue;
            }
            let Some(view) = equivalent_view(graph, source, &nodes, end) else { continue };
            if view.node_count() >= nodes.len() {
                continue;
            }
            let error = |e: kiln_ir::GraphError| PassError::new("collapse_view_chains", e.to_string());
            let name = graph.fresh_value_name(graph.value_name(end));
            let mut replacement = source;
            if let Some(values) = view.shape {
                let shape_name = graph.fresh_value_name(&format!("{name}.shape"));
                let shape = graph.add_node(&shape_name, Op::Dims { values, scalar: false }, &[]).map_err(error)?;
                let reshape_name = graph.fresh_value_name(&format!("{name}.reshape"));
                replacement = graph
                    .add_node(&reshape_name, Op::Reshape { allow_zero: false }, &[replacement, shape])
                    .map_err(error)?;
            }
            if let Some(permutation) = view.permutation {
                replacement = graph.add_node(&name, Op::Transpose { permutation }, &[replacement]).map_err(error)?;
            }
            if graph.value_type(replacement) != graph.value_type(end) {
                return Err(PassError::new(
                    self.name(),
                    format!("collapsing `{}` changed its type", graph.value_name(end)),
                ));
            }
            graph.replace_all_uses(end, replacement);
            chain_of.insert(replacement.node, (source, vec![replacement.node]));
            changed = true;
        }
        Ok(changed)
    }
}
