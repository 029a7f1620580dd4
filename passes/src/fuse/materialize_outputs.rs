//! Gives every graph output that no kernel would store a copy that one does.
//! Fusion folds views (slices, reshapes, transposes, …) into the indexing of
//! the kernels that read them, and graph inputs are no kernel's output, so an
//! output that is a view of another value, or a graph input, would be stored
//! by nothing. Such an output becomes `cast(x)` to its own dtype: an
//! elementwise kernel that reads through the views and stores the output.
//! Outputs that are constants stay as they are.
//!
//! Establishes: every graph output that is not a constant is computed by an
//! op that fusion puts in a kernel.

use kiln_ir::{Graph, Op};

use super::form_fusion_groups::{role, Role};
use crate::pass::{Pass, PassError};

pub struct MaterializeOutputs;

impl Pass for MaterializeOutputs {
    fn name(&self) -> &'static str {
        "materialize_outputs"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        let mut changed = false;
        for index in 0..graph.outputs().len() {
            let output = graph.outputs()[index].clone();
            let producer = output.value.node;
            if matches!(role(graph, producer), Role::Compute(_))
                || matches!(graph.node(producer).op, Op::Constant(_) | Op::Dims { .. })
            {
                continue;
            }
            let to = graph.value_type(output.value).dtype;
            let name = graph.fresh_value_name(&output.name);
            let copy = graph
                .add_node(&name, Op::Cast { to }, &[output.value])
                .map_err(|error| PassError::new(self.name(), error.to_string()))?;
            graph.node_mut(copy.node).name = output.name.clone();
            graph.set_output_value(index, copy);
            changed = true;
        }
        Ok(changed)
    }
}
