//! Shares nodes that compute the same thing: the same op and attributes on
//! the same inputs, and constants with the same contents.
//!
//! Establishes: no two nodes of the graph are interchangeable.

use std::collections::HashMap;

use kiln_ir::graph::ValueRef;
use kiln_ir::{Graph, Op};

use crate::pass::{Pass, PassError};

pub struct EliminateCommonSubexpressions;

impl Pass for EliminateCommonSubexpressions {
    fn name(&self) -> &'static str {
        "eliminate_common_subexpressions"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        let mut seen: HashMap<String, kiln_ir::graph::NodeIndex> = HashMap::new();
        let mut changed = false;
        for node in graph.topological_order() {
            let key = match &graph.node(node).op {
                Op::Input => continue,
                Op::Constant(constant) => format!("constant {}", constant.content_hash()),
                op => format!("{op:?} {:?}", graph.inputs_of(node)),
            };
            match seen.get(&key) {
                Some(&first) => {
                    for output in 0..graph.node(node).outputs.len() {
                        graph.replace_all_uses(ValueRef::new(node, output), ValueRef::new(first, output));
                    }
                    graph.remove_node(node);
                    changed = true;
                }
                None => {
                    seen.insert(key, node);
                }
            }
        }
        Ok(changed)
    }
}
