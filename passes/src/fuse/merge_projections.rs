//! Merges matmuls that read the same activation with constant weights (Q, K
//! and V projections; gate and up) into one matmul over concatenated weights,
//! with their constant biases concatenated too. Each original output becomes
//! a slice (a view) of the merged one. A gate/up pair that feeds one
//! `swiglu` is merged with its columns interleaved (`g₀ u₀ g₁ u₁ …`), so
//! gate and up are stride-2 slices and a SwiGLU epilogue finds both halves of
//! an output element in one tile.
//!
//! Establishes: no two weight matmuls read the same activation.

use std::collections::BTreeMap;

use kiln_ir::graph::{NodeIndex, ValueRef};
use kiln_ir::{BinaryOp, Constant, Graph, Op, Tensor};

use crate::pass::{Pass, PassError};
use crate::util::has_single_use;

pub struct MergeProjections;

/// One projection: its matmul, weight `[k, n]` (already un-transposed), and bias.
struct Projection {
    matmul: NodeIndex,
    weight: Tensor,
    bias: Option<(NodeIndex, Tensor)>,
}

fn error(e: impl ToString) -> PassError {
    PassError::new("merge_projections", e.to_string())
}

/// The weight of a `x · W` matmul as a `[k, n]` tensor, if constant.
fn weight_of(graph: &Graph, matmul: NodeIndex) -> Option<Tensor> {
    let Op::MatMul { transpose_a: false, transpose_b } = graph.node(matmul).op else { return None };
    let weight = graph.as_constant(graph.inputs_of(matmul)[1])?;
    if weight.shape().len() != 2 {
        return None;
    }
    let tensor = weight.to_tensor();
    if transpose_b {
        kiln_ir::eval::evaluate_op(&Op::Transpose { permutation: vec![1, 0] }, &[&tensor], &Default::default()).ok()
    } else {
        Some(tensor)
    }
}

/// The constant `[n]` bias added to the matmul's output, when that add is its only use.
fn bias_of(graph: &Graph, matmul: NodeIndex, columns: usize) -> Option<(NodeIndex, Tensor)> {
    let output = ValueRef::new(matmul, 0);
    if !has_single_use(graph, output) {
        return None;
    }
    let (add, _) = graph.consumers(output)[0];
    if graph.node(add).op != Op::Binary(BinaryOp::Add) {
        return None;
    }
    let inputs = graph.inputs_of(add);
    let other = if inputs[0] == output { inputs[1] } else { inputs[0] };
    let bias = graph.as_constant(other)?;
    (bias.shape() == [columns] && graph.value_type(ValueRef::new(add, 0)) == graph.value_type(output))
        .then(|| (add, bias.to_tensor()))
}

/// Concatenates `[k, nᵢ]` weights along columns, or interleaves two of them.
fn merge_columns(parts: &[&Tensor], interleave: bool) -> Tensor {
    let rows = parts[0].shape[0];
    let widths: Vec<usize> = parts.iter().map(|t| t.shape[1]).collect();
    let total: usize = widths.iter().sum();
    let values: Vec<&[f32]> = parts.iter().map(|t| t.as_floats().expect("float weights")).collect();
    let mut merged = Vec::with_capacity(rows * total);
    for r in 0..rows {
        if interleave {
            for c in 0..widths[0] {
                merged.push(values[0][r * widths[0] + c]);
                merged.push(values[1][r * widths[1] + c]);
            }
        } else {
            for (part, &width) in values.iter().zip(&widths) {
                merged.extend_from_slice(&part[r * width..(r + 1) * width]);
            }
        }
    }
    Tensor::from_f32(parts[0].dtype, vec![rows, total], merged)
}

/// Whether the two projections feed exactly one `swiglu(first, second)`.
fn feeds_one_swiglu(graph: &Graph, outputs: &[ValueRef]) -> bool {
    if outputs.len() != 2 || !outputs.iter().all(|o| has_single_use(graph, *o)) {
        return false;
    }
    let (gate_user, gate_slot) = graph.consumers(outputs[0])[0];
    let (up_user, up_slot) = graph.consumers(outputs[1])[0];
    gate_user == up_user && graph.node(gate_user).op == Op::SwiGlu && gate_slot == 0 && up_slot == 1
}

impl Pass for MergeProjections {
    fn name(&self) -> &'static str {
        "merge_projections"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        let mut by_input: BTreeMap<ValueRef, Vec<NodeIndex>> = BTreeMap::new();
        for node in graph.topological_order() {
            if let Some(weight) = weight_of(graph, node) {
                if weight.as_floats().is_some() {
                    by_input.entry(graph.inputs_of(node)[0]).or_default().push(node);
                }
            }
        }
        let mut changed = false;
        for (input, matmuls) in by_input {
            if matmuls.len() < 2 {
                continue;
            }
            let projections: Vec<Projection> = matmuls
                .iter()
                .map(|&matmul| {
                    let weight = weight_of(graph, matmul).expect("collected");
                    let bias = bias_of(graph, matmul, weight.shape[1]);
                    Projection { matmul, weight, bias }
                })
                .collect();
            let rows = projections[0].weight.shape[0];
            if projections.iter().any(|p| p.weight.shape[0] != rows || p.weight.dtype != projections[0].weight.dtype) {
                continue;
            }
            let with_bias = projections.iter().all(|p| p.bias.is_some());
            let outputs: Vec<ValueRef> = projections
                .iter()
                .map(|p| match (&p.bias, with_bias) {
                    (Some((add, _)), true) => ValueRef::new(*add, 0),
                    _ => ValueRef::new(p.matmul, 0),
                })
                .collect();
            let interleave =
                feeds_one_swiglu(graph, &outputs) && projections[0].weight.shape == projections[1].weight.shape;
            let weights: Vec<&Tensor> = projections.iter().map(|p| &p.weight).collect();
            let merged_weight = merge_columns(&weights, interleave);
            let base = graph.value_name(ValueRef::new(projections[0].matmul, 0)).to_string();
            let weight_name = graph.fresh_value_name(&format!("{base}.merged_weight"));
            let weight_value = graph.add_constant(&weight_name, Constant::from_tensor(&merged_weight));
            let merged_name = graph.fresh_value_name(&format!("{base}.merged"));
            let mut merged = graph.add_node(&merged_name, Op::MATMUL, &[input, weight_value]).map_err(error)?;
            if with_bias {
                let biases: Vec<Tensor> = projections
                    .iter()
                    .map(|p| {
                        let bias = &p.bias.as_ref().expect("all have biases").1;
                        Tensor { shape: vec![1, bias.shape[0]], ..bias.clone() }
                    })
                    .collect();
                let merged_bias = merge_columns(&biases.iter().collect::<Vec<_>>(), interleave);
                let bias = Tensor { shape: vec![merged_bias.shape[1]], ..merged_bias };
                let bias_name = graph.fresh_value_name(&format!("{base}.merged_bias"));
                let bias_value = graph.add_constant(&bias_name, Constant::from_tensor(&bias));
                let biased_name = graph.fresh_value_name(&format!("{base}.merged_biased"));
                merged =
                    graph.add_node(&biased_name, Op::Binary(BinaryOp::Add), &[merged, bias_value]).map_err(error)?;
            }
            let mut start = 0i64;
            for (index, (projection, output)) in projections.iter().zip(&outputs).enumerate() {
                let width = projection.weight.shape[1] as i64;
                let (begin, end, step) =
                    if interleave { (index as i64, 2 * width, 2) } else { (start, start + width, 1) };
                start += width;
                let constants = [vec![begin], vec![end], vec![-1], vec![step]];
                let mut slice_inputs = vec![merged];
                for values in constants {
                    let name = graph.fresh_value_name(&format!("{base}.slice"));
                    slice_inputs.push(graph.add_constant(&name, Constant::vector_i64(&values)));
                }
                let name = graph.fresh_value_name(graph.value_name(*output));
                let slice = graph.add_node(&name, Op::Slice, &slice_inputs).map_err(error)?;
                if graph.value_type(slice) != graph.value_type(*output) {
                    return Err(error(format!("slice of `{merged_name}` has the wrong type")));
                }
                graph.replace_all_uses(*output, slice);
            }
            changed = true;
        }
        Ok(changed)
    }
}
