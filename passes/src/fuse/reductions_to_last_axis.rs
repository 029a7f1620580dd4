//! Rewrites reductions over other axes than the last into reductions over
//! the last axis, the one form kiln's row-reduction kernels compute:
//!
//! - `reduce` over any set of axes: the reduced axes are transposed to the
//!   end and flattened into one, reduced there, and the result reshaped to
//!   the op's own output shape (mean pooling over the sequence, `[b, s, h]`
//!   over axis 1, becomes a reduction of `[b, h, s]` rows);
//! - `layer_norm` and `rms_norm` over dims `axis..` (more than the last): x
//!   is flattened to `[…, ∏ dims axis..]` and the scale and bias (one value
//!   per normalized element) to vectors; the result is reshaped back;
//! - `softmax` over another axis: that axis and the last are swapped around a
//!   softmax over the last.
//!
//! Views are free (fusion folds them into indexing). Establishes: every
//! reduce, norm and softmax reduces the last axis alone.

use kiln_ir::graph::ValueRef;
use kiln_ir::op::normalize_axis;
use kiln_ir::{Dim, Graph, Op};

use crate::pass::{Pass, PassError};

pub struct ReductionsToLastAxis;

impl Pass for ReductionsToLastAxis {
    fn name(&self) -> &'static str {
        "reductions_to_last_axis"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        let mut changed = false;
        for node in graph.topological_order() {
            if !graph.contains(node) || graph.node(node).outputs.len() != 1 {
                continue;
            }
            let old = ValueRef::new(node, 0);
            let Some(new) = self.rewrite(graph, old)? else { continue };
            if graph.value_type(new) != graph.value_type(old) {
                return Err(PassError::new(self.name(), format!("`{}` would change type", graph.value_name(old))));
            }
            graph.replace_all_uses(old, new);
            changed = true;
        }
        Ok(changed)
    }
}

impl ReductionsToLastAxis {
    /// The last-axis form of `value`'s op, when it reduces another axis.
    fn rewrite(&self, graph: &mut Graph, value: ValueRef) -> Result<Option<ValueRef>, PassError> {
        let op = graph.node(value.node).op.clone();
        let inputs = graph.inputs_of(value.node);
        let Some(&x) = inputs.first() else { return Ok(None) };
        let shape = graph.value_type(x).shape.clone();
        let rank = shape.len();
        if rank == 0 {
            return Ok(None);
        }
        let base = format!("{}.last_axis", graph.value_name(value));
        let mut emit = Emitter { graph, pass: self.name(), base };
        let rewritten = match op {
            Op::Reduce { kind, axes, keep_dims: _ } => {
                let mut reduced: Vec<usize> = if axes.is_empty() {
                    (0..rank).collect()
                } else {
                    match axes.iter().map(|&a| normalize_axis(a, rank)).collect::<Option<Vec<_>>>() {
                        Some(axes) => axes,
                        None => return Ok(None),
                    }
                };
                reduced.sort_unstable();
                reduced.dedup();
                if reduced == [rank - 1] {
                    return Ok(None);
                }
                let kept: Vec<usize> = (0..rank).filter(|a| !reduced.contains(a)).collect();
                let permutation: Vec<usize> = kept.iter().chain(&reduced).copied().collect();
                let moved = emit.transpose(x, permutation)?;
                let mut rows: Vec<Dim> = kept.iter().map(|&a| shape[a].clone()).collect();
                rows.push(reduced.iter().fold(Dim::constant(1), |product, &a| &product * &shape[a]));
                let flat = emit.reshape(moved, rows)?;
                let total = emit.node(Op::Reduce { kind, axes: vec![-1], keep_dims: false }, &[flat])?;
                let output_shape = emit.graph.value_type(value).shape.clone();
                emit.reshape(total, output_shape)?
            }
            Op::Softmax { axis } => {
                let Some(axis) = normalize_axis(axis, rank) else { return Ok(None) };
                if axis == rank - 1 {
                    return Ok(None);
                }
                let mut swap: Vec<usize> = (0..rank).collect();
                swap.swap(axis, rank - 1);
                let moved = emit.transpose(x, swap.clone())?;
                let normalized = emit.node(Op::Softmax { axis: -1 }, &[moved])?;
                emit.transpose(normalized, swap)?
            }
            Op::LayerNorm { axis, .. } | Op::RmsNorm { axis, .. } => {
                let Some(first) = normalize_axis(axis, rank) else { return Ok(None) };
                if first == rank - 1 {
                    return Ok(None);
                }
                let columns = shape[first..].iter().fold(Dim::constant(1), |product, d| &product * d);
                let mut rows: Vec<Dim> = shape[..first].to_vec();
                rows.push(columns.clone());
                let flat = emit.reshape(x, rows)?;
                let mut flattened = vec![flat];
                for &parameter in &inputs[1..] {
                    flattened.push(emit.reshape(parameter, vec![columns.clone()])?);
                }
                let last_axis = match op {
                    Op::LayerNorm { epsilon, .. } => Op::LayerNorm { axis: -1, epsilon },
                    Op::RmsNorm { epsilon, .. } => Op::RmsNorm { axis: -1, epsilon },
                    _ => unreachable!("matched above"),
                };
                let normalized = emit.node(last_axis, &flattened)?;
                emit.reshape(normalized, shape.clone())?
            }
            _ => return Ok(None),
        };
        Ok(Some(rewritten))
    }
}

/// Adds the nodes of one rewrite, named after the value it replaces.
struct Emitter<'g> {
    graph: &'g mut Graph,
    pass: &'static str,
    base: String,
}

impl Emitter<'_> {
    fn node(&mut self, op: Op, inputs: &[ValueRef]) -> Result<ValueRef, PassError> {
        let name = self.graph.fresh_value_name(&self.base);
        self.graph.add_node(&name, op, inputs).map_err(|e| PassError::new(self.pass, e.to_string()))
    }

    fn dims(&mut self, values: Vec<Dim>) -> Result<ValueRef, PassError> {
        self.node(Op::Dims { values, scalar: false }, &[])
    }

    /// `x` reshaped, or `x` itself when it has that shape already.
    fn reshape(&mut self, x: ValueRef, shape: Vec<Dim>) -> Result<ValueRef, PassError> {
        if self.graph.value_type(x).shape == shape {
            return Ok(x);
        }
        let target = self.dims(shape)?;
        self.node(Op::Reshape { allow_zero: false }, &[x, target])
    }

    /// `x` transposed, or `x` itself for the identity permutation.
    fn transpose(&mut self, x: ValueRef, permutation: Vec<usize>) -> Result<ValueRef, PassError> {
        if permutation.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(x);
        }
        self.node(Op::Transpose { permutation }, &[x])
    }
}
