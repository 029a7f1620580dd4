//! What `kiln inspect` reports about a graph.

use std::collections::BTreeMap;
use std::fmt;

use kiln_ir::{Graph, Op, TensorType};

/// A model's signature, parameters and op histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSummary {
    pub inputs: Vec<(String, TensorType)>,
    pub outputs: Vec<(String, TensorType)>,
    /// Elements of all constants.
    pub parameters: usize,
    /// Bytes of all constants.
    pub parameter_bytes: usize,
    /// Nodes per op name, constants and inputs excluded.
    pub ops: BTreeMap<String, usize>,
    /// Fusion groups (future kernels), once the fuse phase has run.
    pub kernels: usize,
    /// Transformer layers found: attention ops.
    pub layers: usize,
    /// The arena size as an expression of the symbols, once planned.
    pub arena_bytes: Option<String>,
    /// The arena size at the `--bind` values.
    pub peak_arena_bytes: Option<i64>,
}

impl ModelSummary {
    pub fn of(graph: &Graph) -> ModelSummary {
        let inputs = graph
            .inputs()
            .iter()
            .map(|&n| (graph.node(n).outputs[0].name.clone(), graph.node(n).outputs[0].ty.clone()))
            .collect();
        let outputs = graph.outputs().iter().map(|o| (o.name.clone(), graph.value_type(o.value).clone())).collect();
        let (mut parameters, mut parameter_bytes) = (0, 0);
        let mut ops = BTreeMap::new();
        for index in graph.node_indices() {
            match &graph.node(index).op {
                Op::Input => {}
                Op::Constant(constant) => {
                    parameters += constant.element_count();
                    parameter_bytes += constant.bytes().len();
                }
                op => *ops.entry(op.name().to_string()).or_insert(0) += 1,
            }
        }
        let layers = ops.get("attention").copied().unwrap_or(0);
        ModelSummary {
            inputs,
            outputs,
            parameters,
            parameter_bytes,
            ops,
            kernels: graph.groups().len(),
            layers,
            arena_bytes: None,
            peak_arena_bytes: None,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        let signature = |values: &[(String, TensorType)]| -> Vec<serde_json::Value> {
            values
                .iter()
                .map(|(name, ty)| {
                    serde_json::json!({
                        "name": name,
                        "dtype": ty.dtype.name(),
                        "shape": ty.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
                    })
                })
                .collect()
        };
        serde_json::json!({
            "inputs": signature(&self.inputs),
            "outputs": signature(&self.outputs),
            "params": self.parameters,
            "param_bytes": self.parameter_bytes,
            "ops": self.ops,
            "kernels": self.kernels,
            "layers": self.layers,
            "arena_bytes": self.arena_bytes,
            "peak_arena_bytes": self.peak_arena_bytes,
        })
    }
}

impl fmt::Display for ModelSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "inputs:")?;
        for (name, ty) in &self.inputs {
            writeln!(f, "  {name}: {ty}")?;
        }
        writeln!(f, "outputs:")?;
        for (name, ty) in &self.outputs {
            writeln!(f, "  {name}: {ty}")?;
        }
        writeln!(f, "parameters: {} ({} bytes)", self.parameters, self.parameter_bytes)?;
        writeln!(f, "kernels (fusion groups): {}", self.kernels)?;
        writeln!(f, "transformer layers: {}", self.layers)?;
        if let Some(arena) = &self.arena_bytes {
            writeln!(f, "arena bytes: {arena}")?;
        }
        if let Some(peak) = self.peak_arena_bytes {
            writeln!(f, "peak arena bytes at the bindings: {peak}")?;
        }
        writeln!(f, "ops ({} nodes):", self.ops.values().sum::<usize>())?;
        for (op, count) in &self.ops {
            writeln!(f, "  {op:<18} {count}")?;
        }
        Ok(())
    }
}
