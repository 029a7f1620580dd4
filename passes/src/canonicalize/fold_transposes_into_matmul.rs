//! Folds a transpose of the last two dims of a matmul input into the matmul
//! (`matmul(transpose(a), b)` → `matmul[transpose_a=true](a, b)`).
//!
//! Establishes: no matmul reads a transpose that only swaps its last two dims.

use kiln_ir::{Graph, Op};

use crate::pass::{Pass, PassError};

pub struct FoldTransposesIntoMatmul;

fn swaps_last_two(permutation: &[usize]) -> bool {
    let rank = permutation.len();
    rank >= 2
        && permutation[..rank - 2].iter().enumerate().all(|(i, &p)| i == p)
        && permutation[rank - 2] == rank - 1
        && permutation[rank - 1] == rank - 2
}

impl Pass for FoldTransposesIntoMatmul {
    fn name(&self) -> &'static str {
        "fold_transposes_into_matmul"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        let mut changed = false;
        for node in graph.topological_order() {
            let Op::MatMul { mut transpose_a, mut transpose_b } = graph.node(node).op else { continue };
            let mut inputs = graph.inputs_of(node);
            let mut folded = false;
            for (slot, flag) in [(0, &mut transpose_a), (1, &mut transpose_b)] {
                if let Op::Transpose { permutation } = &graph.node(inputs[slot].node).op {
                    if swaps_last_two(permutation) {
                        inputs[slot] = graph.inputs_of(inputs[slot].node)[0];
                        *flag = !*flag;
                        folded = true;
                    }
                }
            }
            if !folded {
                continue;
            }
            let old = kiln_ir::ValueRef::new(node, 0);
            let name = graph.fresh_value_name(graph.value_name(old));
            let replacement = graph
                .add_node(&name, Op::MatMul { transpose_a, transpose_b }, &inputs)
                .map_err(|e| PassError::new(self.name(), e.to_string()))?;
            graph.node_mut(replacement.node).name = graph.node(node).name.clone();
            graph.replace_all_uses(old, replacement);
            graph.remove_node(node);
            changed = true;
        }
        Ok(changed)
    }
}
