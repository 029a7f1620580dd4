//! Removes every node that no graph output depends on (graph inputs stay).
//!
//! Establishes: every node other than an input contributes to an output.

use kiln_ir::Graph;

use crate::pass::{Pass, PassError};

pub struct EliminateDeadCode;

impl Pass for EliminateDeadCode {
    fn name(&self) -> &'static str {
        "eliminate_dead_code"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        let dead = graph.dead_nodes();
        for node in &dead {
            graph.remove_node(*node);
        }
        Ok(!dead.is_empty())
    }
}
