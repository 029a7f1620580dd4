//! Stores every constant matmul weight as `[n, k]` with `k` contiguous (the
//! operand layout tensor-core GEMMs load with `ldmatrix`), transposed at
//! compile time, and records the layout on the matmul's fusion group
//! (`weights = "n_by_k"`).
//!
//! Establishes: every weight matmul reads a constant `[n, k]` weight
//! (`transpose_b`), and no weight is transposed at run time.

use kiln_ir::graph::ValueRef;
use kiln_ir::{Graph, Op};

use crate::pass::{Pass, PassError};

pub struct PackMatmulWeights;

pub const WEIGHT_LAYOUT_NOTE: &str = "weights";

impl Pass for PackMatmulWeights {
    fn name(&self) -> &'static str {
        "pack_matmul_weights"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        let mut changed = false;
        for node in graph.topological_order() {
            let Op::MatMul { transpose_a: false, transpose_b } = graph.node(node).op else { continue };
            let inputs = graph.inputs_of(node);
            let Some(weight) = graph.as_constant(inputs[1]).filter(|c| c.shape().len() == 2).cloned() else { continue };
            let group = graph.node(node).group;
            let mut note_changed = false;
            if let Some(group) = group.and_then(|g| graph.groups_mut().get_mut(&g)) {
                note_changed =
                    group.notes.insert(WEIGHT_LAYOUT_NOTE.into(), "n_by_k".into()).as_deref() != Some("n_by_k");
            }
            changed |= note_changed;
            if transpose_b {
                continue;
            }
            let packed = weight.transposed_2d().expect("a rank-2 weight");
            let name = graph.fresh_value_name(&format!("{}.n_by_k", graph.value_name(inputs[1])));
            let packed = graph.add_constant(&name, packed);
            let old = ValueRef::new(node, 0);
            let new_name = graph.fresh_value_name(graph.value_name(old));
            let replacement = graph
                .add_node(&new_name, Op::MatMul { transpose_a: false, transpose_b: true }, &[inputs[0], packed])
                .map_err(|e| PassError::new(self.name(), e.to_string()))?;
            let node_name = graph.node(node).name.clone();
            graph.node_mut(replacement.node).name = node_name;
            graph.node_mut(replacement.node).group = group;
            graph.replace_all_uses(old, replacement);
            graph.remove_node(node);
            changed = true;
        }
        Ok(changed)
    }
}
