//! Replaces shape computations by their values: every small integer tensor
//! whose elements are known functions of the graph's symbols (`Shape →
//! Gather → Concat` chains, `Equal/Where` on shapes, …) becomes one
//! `constant` (all elements known numbers) or one `dims` node (expressions
//! such as `[batch, seq, 12, 32]`). The chains then die (dead-code elimination).
//!
//! Establishes: no op other than `constant`/`dims` produces a value that
//! inference already knows; reshapes, expands and masks take their shapes
//! straight from symbolic dims.

use kiln_ir::graph::ValueRef;
use kiln_ir::infer::symbolic_value;
use kiln_ir::{Constant, DType, Graph, Op, Tensor};

use crate::pass::{Pass, PassError};

pub struct FoldShapes;

impl Pass for FoldShapes {
    fn name(&self) -> &'static str {
        "fold_shapes"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        let mut changed = false;
        for node in graph.topological_order() {
            if matches!(graph.node(node).op, Op::Input | Op::Constant(_) | Op::Dims { .. }) {
                continue;
            }
            for output in 0..graph.node(node).outputs.len() {
                let value = ValueRef::new(node, output);
                let Some(values) = symbolic_value(graph, value) else { continue };
                if graph.consumers(value).is_empty() && !graph.outputs().iter().any(|o| o.value == value) {
                    continue;
                }
                let replacement =
                    replacement(graph, value, values).map_err(|message| PassError::new(self.name(), message))?;
                graph.replace_all_uses(value, replacement);
                changed = true;
            }
        }
        Ok(changed)
    }
}

/// A `constant` or `dims` node (cast to the value's dtype) holding `values`.
fn replacement(graph: &mut Graph, value: ValueRef, values: Vec<kiln_ir::Dim>) -> Result<ValueRef, String> {
    let ty = graph.value_type(value).clone();
    let name = graph.fresh_value_name(graph.value_name(value));
    let shape: Vec<usize> = if ty.rank() == 0 { Vec::new() } else { vec![values.len()] };
    if let Some(numbers) = values.iter().map(|d| d.as_constant()).collect::<Option<Vec<i64>>>() {
        let tensor = match ty.dtype {
            DType::Bool => Tensor::from_bool(shape, numbers.iter().map(|&v| v != 0).collect()),
            dtype => Tensor::from_i64(dtype, shape, numbers),
        };
        return Ok(graph.add_constant(&name, Constant::from_tensor(&tensor)));
    }
    let dims = graph.add_node(&name, Op::Dims { values, scalar: ty.rank() == 0 }, &[]).map_err(|e| e.to_string())?;
    if ty.dtype == DType::I64 {
        return Ok(dims);
    }
    let cast_name = graph.fresh_value_name(&format!("{name}.cast"));
    graph.add_node(&cast_name, Op::Cast { to: ty.dtype }, &[dims]).map_err(|e| e.to_string())
}
