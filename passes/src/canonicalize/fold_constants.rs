//! Evaluates nodes whose inputs are all constants and replaces them with the
//! resulting constant — weight transposes among them, so no weight is
//! transposed at run time. Results larger than their largest input (and
//! than 64 Ki elements) are left unfolded, so folding never bloats the model.
//!
//! Establishes: no node computes only from constants (within that size rule).

use kiln_ir::eval::evaluate_op;
use kiln_ir::{Constant, Graph, Op, SymbolBindings, Tensor};

use crate::pass::{Pass, PassError};

pub struct FoldConstants;

/// Results up to this many elements are always folded.
const ALWAYS_FOLD_ELEMENTS: usize = 1 << 16;

impl Pass for FoldConstants {
    fn name(&self) -> &'static str {
        "fold_constants"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        let mut changed = false;
        for node in graph.topological_order() {
            let op = graph.node(node).op.clone();
            if matches!(op, Op::Input | Op::Constant(_) | Op::Dims { .. }) || graph.node(node).outputs.len() != 1 {
                continue;
            }
            let inputs = graph.inputs_of(node);
            let Some(constants) = inputs.iter().map(|v| graph.as_constant(*v)).collect::<Option<Vec<&Constant>>>()
            else {
                continue;
            };
            let largest_input = constants.iter().map(|c| c.element_count()).max().unwrap_or(0);
            let output_type = &graph.node(node).outputs[0].ty;
            let Some(output_count) = output_type.constant_shape().map(|s| s.iter().product::<usize>()) else {
                continue;
            };
            if output_count > ALWAYS_FOLD_ELEMENTS.max(largest_input) {
                continue;
            }
            let folded = match (&op, constants.as_slice()) {
                // Weight matrices: bytes moved, nothing decoded.
                (Op::Transpose { permutation }, [matrix]) if permutation[..] == [1, 0] && matrix.shape().len() == 2 => {
                    matrix.transposed_2d().expect("rank 2")
                }
                _ => {
                    let tensors: Vec<Tensor> = constants.iter().map(|c| c.to_tensor()).collect();
                    let arguments: Vec<&Tensor> = tensors.iter().collect();
                    let result = evaluate_op(&op, &arguments, &SymbolBindings::new()).map_err(|message| {
                        PassError::new(self.name(), format!("node `{}`: {message}", graph.node(node).name))
                    })?;
                    Constant::from_tensor(&result)
                }
            };
            let value = kiln_ir::ValueRef::new(node, 0);
            let name = graph.fresh_value_name(&format!("{}.folded", graph.value_name(value)));
            let folded = graph.add_constant(&name, folded);
            graph.replace_all_uses(value, folded);
            graph.remove_node(node);
            changed = true;
        }
        Ok(changed)
    }
}
