//! Lowers a model to f16 or bf16 activations and weights:
//!
//! - weights and activations take the target dtype, so matmul and attention
//!   inputs are f16/bf16 (their kernels accumulate in f32, as the evaluator does);
//! - norms, softmax and reductions read and write the target dtype but compute
//!   their statistics in f32 (their op semantics);
//! - values computed only from integers and constants — positions, RoPE
//!   tables, mask fills — stay f32 until they meet an activation, where a
//!   cast joins the consuming kernel; float graph inputs are cast by the
//!   kernels that read them;
//! - graph outputs are cast back to their f32 type, in the producing kernel.
//!
//! `tf32` changes no dtype: it notes `math = "tf32"` on matmul groups, which
//! allows TF32 tensor-core math. `f32` changes nothing.
//!
//! Establishes: no float activation or weight of the graph is f32 (f16/bf16),
//! and the output signature is unchanged.

use std::collections::HashMap;

use kiln_ir::graph::ValueRef;
use kiln_ir::{Constant, DType, Graph, KernelKind, Op};

use crate::pass::{Pass, PassError};

/// The `--precision` of a compilation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    F32,
    Tf32,
    F16,
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(text: &str) -> Result<Precision, String> {
        Ok(match text {
            "f32" => Precision::F32,
            "tf32" => Precision::Tf32,
            "f16" => Precision::F16,
            "bf16" => Precision::Bf16,
            other => return Err(format!("unknown precision `{other}` (f32, tf32, f16, bf16)")),
        })
    }
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Tf32 => "tf32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }
}

pub struct LowerPrecision {
    pub precision: Precision,
}

/// What a float value of the rebuilt graph is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Not a float value.
    NotFloat,
    /// A model activation, in the target dtype.
    Lowered,
    /// Computed only from integers: kept f32.
    Exact,
    /// A float constant: takes the dtype of whatever uses it.
    Flexible,
    /// A float graph input: an f32 activation that its consumers cast.
    InputActivation,
}

fn error(e: impl ToString) -> PassError {
    PassError::new("lower_precision", e.to_string())
}

impl Pass for LowerPrecision {
    fn name(&self) -> &'static str {
        "lower_precision"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        let target = match self.precision {
            Precision::F32 => return Ok(false),
            Precision::Tf32 => {
                let mut changed = false;
                for group in graph.groups_mut().values_mut().filter(|g| g.kind == KernelKind::Matmul) {
                    changed |= group.notes.insert("math".into(), "tf32".into()).as_deref() != Some("tf32");
                }
                return Ok(changed);
            }
            Precision::F16 => DType::F16,
            Precision::Bf16 => DType::BF16,
        };
        // Without a float value there is nothing to lower (and nothing to cast back).
        let has_floats =
            graph.node_indices().any(|node| graph.node(node).outputs.iter().any(|value| value.ty.dtype.is_float()));
        if !has_floats {
            return Ok(false);
        }
        *graph = rebuild(graph, target)?;
        Ok(true)
    }
}

struct Rebuild {
    new: Graph,
    target: DType,
    values: HashMap<ValueRef, (ValueRef, Mode)>,
    /// Lowered copies: constants once, computed values once per consuming group
    /// (each kernel casts what it reads, so no kernel writes another's cast).
    converted: HashMap<(ValueRef, Option<kiln_ir::GroupId>), ValueRef>,
}

impl Rebuild {
    /// `old` as the target dtype: constants converted at compile time, exact
    /// values cast by a node in `group`.
    fn lowered(&mut self, old: ValueRef, group: Option<kiln_ir::GroupId>) -> Result<ValueRef, PassError> {
        let (value, mode) = self.values[&old];
        if matches!(mode, Mode::Lowered | Mode::NotFloat) {
            return Ok(value);
        }
        let key = (old, if self.new.as_constant(value).is_some() { None } else { group });
        if let Some(&done) = self.converted.get(&key) {
            return Ok(done);
        }
        let name = self.new.fresh_value_name(&format!("{}.{}", self.new.value_name(value), self.target));
        let converted = match self.new.as_constant(value) {
            Some(constant) => {
                let tensor = kiln_ir::eval::evaluate_op(
                    &Op::Cast { to: self.target },
                    &[&constant.to_tensor()],
                    &Default::default(),
                )
                .map_err(error)?;
                self.new.add_constant(&name, Constant::from_tensor(&tensor))
            }
            None => {
                let cast = self.new.add_node(&name, Op::Cast { to: self.target }, &[value]).map_err(error)?;
                self.new.node_mut(cast.node).group = group;
                cast
            }
        };
        self.converted.insert(key, converted);
        Ok(converted)
    }
}

fn rebuild(old: &Graph, target: DType) -> Result<Graph, PassError> {
    let mut r = Rebuild { new: Graph::new(), target, values: HashMap::new(), converted: HashMap::new() };
    *r.new.groups_mut() = old.groups().clone();
    for node_index in old.canonical_order() {
        let node = old.node(node_index);
        let output = ValueRef::new(node_index, 0);
        let float = |ty: &kiln_ir::TensorType| ty.dtype.is_float();
        let (value, mode) = match &node.op {
            Op::Input => {
                let value = r.new.add_input(&node.outputs[0].name, node.outputs[0].ty.clone());
                (value, if float(&node.outputs[0].ty) { Mode::InputActivation } else { Mode::NotFloat })
            }
            Op::Constant(constant) => {
                let value = r.new.add_constant(&node.outputs[0].name, constant.clone());
                (value, if constant.dtype().is_float() { Mode::Flexible } else { Mode::NotFloat })
            }
            op => {
                let inputs = old.inputs_of(node_index);
                let modes: Vec<Mode> = inputs.iter().map(|v| r.values[v].1).collect();
                let float_modes: Vec<Mode> = modes.iter().copied().filter(|m| *m != Mode::NotFloat).collect();
                let output_is_float = float(&node.outputs[0].ty);
                let mut op = op.clone();
                let lowered = match &mut op {
                    Op::Cast { to } if to.is_float() => {
                        let source_lowered = float_modes
                            .first()
                            .is_some_and(|m| matches!(m, Mode::Lowered | Mode::Flexible | Mode::InputActivation));
                        if source_lowered {
                            *to = target;
                        }
                        source_lowered
                    }
                    Op::ConstantOfShape { .. } => false,
                    _ => {
                        float_modes.iter().any(|m| matches!(m, Mode::Lowered | Mode::InputActivation))
                            || (!float_modes.is_empty() && float_modes.iter().all(|m| *m == Mode::Flexible))
                    }
                };
                let mut new_inputs = Vec::with_capacity(inputs.len());
                for (input, mode) in inputs.iter().zip(&modes) {
                    let value = match (lowered, mode) {
                        (true, Mode::Exact | Mode::Flexible | Mode::InputActivation)
                            if !matches!(op, Op::Cast { .. }) =>
                        {
                            r.lowered(*input, node.group)?
                        }
                        _ => r.values[input].0,
                    };
                    new_inputs.push(value);
                }
                let name = r.new.fresh_value_name(&node.outputs[0].name);
                let value = r.new.add_node(&name, op, &new_inputs).map_err(error)?;
                let new_node = r.new.node_mut(value.node);
                new_node.name = node.name.clone();
                new_node.group = node.group;
                let mode = match (output_is_float, lowered) {
                    (false, _) => Mode::NotFloat,
                    (true, true) => Mode::Lowered,
                    (true, false) if float_modes.iter().all(|m| *m == Mode::Flexible) && !float_modes.is_empty() => {
                        Mode::Flexible
                    }
                    (true, false) => Mode::Exact,
                };
                (value, mode)
            }
        };
        r.values.insert(output, (value, mode));
    }
    for output in old.outputs() {
        let (value, _) = r.values[&output.value];
        let wanted = old.value_type(output.value).dtype;
        let produced = r.new.value_type(value).dtype;
        let value = if produced != wanted {
            let name = r.new.fresh_value_name(&format!("{}.{}", output.name, wanted));
            let group = r.new.node(value.node).group;
            let cast = r.new.add_node(&name, Op::Cast { to: wanted }, &[value]).map_err(error)?;
            r.new.node_mut(cast.node).group = group;
            cast
        } else {
            value
        };
        r.new.add_output(&output.name, value);
    }
    Ok(r.new)
}
