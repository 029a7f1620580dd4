//! The reference evaluator: the meaning of every op.
//!
//! Evaluation is exact-by-construction rather than fast: float values of any
//! float dtype are computed in f32 (sums and statistics accumulate in f64) and
//! rounded to the value's dtype after each op; integers compute in i64 and wrap
//! to their dtype. Every pass, kernel and target is tested against it.

mod compute;
mod elementwise;
mod movement;

use std::collections::HashMap;

use kiln_runtime::SymbolBindings;

use crate::graph::{Graph, ValueRef};
use crate::op::Op;
use crate::tensor::Tensor;

pub use elementwise::broadcast_shape;

/// Why evaluation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    #[error("input `{name}`: {problem}")]
    Input { name: String, problem: String },
    #[error("node `{node}` ({op}): {problem}")]
    Node { node: String, op: &'static str, problem: String },
    #[error("the graph is not valid: {0}")]
    Graph(String),
}

/// An op-level failure, before the driver adds the node's name.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OpError(pub String);

pub(crate) fn op_error<T>(message: impl Into<String>) -> Result<T, OpError> {
    Err(OpError(message.into()))
}

/// The most elements one evaluated tensor may hold (16 GiB of f32): larger
/// results are an error, not an allocation failure.
pub const MAX_ELEMENTS: usize = 1 << 32;

pub(crate) fn checked_element_count(shape: &[usize]) -> Result<usize, OpError> {
    crate::tensor::element_count(shape)
        .filter(|&count| count <= MAX_ELEMENTS)
        .ok_or_else(|| OpError(format!("a tensor of shape {shape:?} is larger than the evaluator's limit")))
}

/// Evaluates `graph` on named inputs and returns its outputs in order, named.
///
/// Every graph input must be given, with its dtype and a shape that matches
/// its symbolic shape under one binding of the symbols (e.g. every `seq` the
/// same number).
pub fn evaluate(graph: &Graph, inputs: &HashMap<String, Tensor>) -> Result<Vec<(String, Tensor)>, EvalError> {
    let bindings = bind_inputs(graph, inputs)?;
    let order = graph.topological_order();
    if order.len() != graph.node_count() {
        return Err(EvalError::Graph("the graph has a cycle".into()));
    }
    // How many reads of each value remain, so tensors are freed after their last use.
    let mut remaining_uses: HashMap<ValueRef, usize> = HashMap::new();
    for &node in &order {
        for input in graph.inputs_of(node) {
            *remaining_uses.entry(input).or_default() += 1;
        }
    }
    for output in graph.outputs() {
        *remaining_uses.entry(output.value).or_default() += 1;
    }
    let mut values: HashMap<ValueRef, Tensor> = HashMap::new();
    for &index in &order {
        let node = graph.node(index);
        let input_refs = graph.inputs_of(index);
        let results = match &node.op {
            Op::Input => vec![inputs[&node.outputs[0].name].clone()],
            Op::Constant(constant) => vec![constant.to_tensor()],
            op => {
                let arguments: Vec<&Tensor> = input_refs.iter().map(|v| &values[v]).collect();
                let result = evaluate_op(op, &arguments, &bindings).map_err(|problem| EvalError::Node {
                    node: node.name.clone(),
                    op: op.name(),
                    problem,
                })?;
                vec![result]
            }
        };
        for input in &input_refs {
            let count = remaining_uses.get_mut(input).expect("counted above");
            *count -= 1;
            if *count == 0 {
                values.remove(input);
            }
        }
        for (output, tensor) in results.into_iter().enumerate() {
            let value = ValueRef::new(index, output);
            if remaining_uses.get(&value).copied().unwrap_or(0) > 0 {
                values.insert(value, tensor);
            }
        }
    }
    Ok(graph.outputs().iter().map(|output| (output.name.clone(), values[&output.value].clone())).collect())
}

/// Evaluates every node and returns every value (for checking the kernels of
/// fusion groups against their slice of the graph).
pub fn evaluate_all(graph: &Graph, inputs: &HashMap<String, Tensor>) -> Result<HashMap<ValueRef, Tensor>, EvalError> {
    let bindings = bind_inputs(graph, inputs)?;
    let mut values: HashMap<ValueRef, Tensor> = HashMap::new();
    for index in graph.topological_order() {
        let node = graph.node(index);
        let result = match &node.op {
            Op::Input => inputs[&node.outputs[0].name].clone(),
            Op::Constant(constant) => constant.to_tensor(),
            op => {
                let arguments: Vec<&Tensor> = graph.inputs_of(index).iter().map(|v| &values[v]).collect();
                evaluate_op(op, &arguments, &bindings).map_err(|problem| EvalError::Node {
                    node: node.name.clone(),
                    op: op.name(),
                    problem,
                })?
            }
        };
        values.insert(ValueRef::new(index, 0), result);
    }
    Ok(values)
}

/// Evaluates only what `targets` depend on, with the symbols bound to
/// `bindings`; `inputs` must hold every graph input those values read.
pub fn evaluate_values(
    graph: &Graph,
    inputs: &HashMap<String, Tensor>,
    bindings: &SymbolBindings,
    targets: &[ValueRef],
) -> Result<Vec<Tensor>, EvalError> {
    let mut needed = std::collections::HashSet::new();
    let mut stack: Vec<_> = targets.iter().map(|v| v.node).collect();
    while let Some(node) = stack.pop() {
        if needed.insert(node) {
            stack.extend(graph.inputs_of(node).into_iter().map(|v| v.node));
        }
    }
    let mut values: HashMap<ValueRef, Tensor> = HashMap::new();
    for index in graph.topological_order().into_iter().filter(|n| needed.contains(n)) {
        let node = graph.node(index);
        let result = match &node.op {
            Op::Input => inputs
                .get(&node.outputs[0].name)
                .cloned()
                .ok_or_else(|| EvalError::Input { name: node.outputs[0].name.clone(), problem: "missing".into() })?,
            Op::Constant(constant) => constant.to_tensor(),
            op => {
                let arguments: Vec<&Tensor> = graph.inputs_of(index).iter().map(|v| &values[v]).collect();
                evaluate_op(op, &arguments, bindings).map_err(|problem| EvalError::Node {
                    node: node.name.clone(),
                    op: op.name(),
                    problem,
                })?
            }
        };
        values.insert(ValueRef::new(index, 0), result);
    }
    Ok(targets.iter().map(|v| values[v].clone()).collect())
}

/// Checks inputs against the graph's signature and binds its symbols.
pub fn bind_inputs(graph: &Graph, inputs: &HashMap<String, Tensor>) -> Result<SymbolBindings, EvalError> {
    let mut bindings = SymbolBindings::new();
    let input_nodes: Vec<_> = graph.inputs().iter().map(|&n| &graph.node(n).outputs[0]).collect();
    for given in inputs.keys() {
        if !input_nodes.iter().any(|v| &v.name == given) {
            let expected: Vec<_> = input_nodes.iter().map(|v| v.name.as_str()).collect();
            return Err(EvalError::Input {
                name: given.clone(),
                problem: format!("the model has no such input (it has {})", expected.join(", ")),
            });
        }
    }
    // Plain symbols bind first, then every dim is checked under the bindings.
    for value in &input_nodes {
        let problem = |problem: String| EvalError::Input { name: value.name.clone(), problem };
        let tensor = inputs.get(&value.name).ok_or_else(|| problem("missing".into()))?;
        if tensor.dtype != value.ty.dtype {
            return Err(problem(format!("dtype {} where the model wants {}", tensor.dtype, value.ty.dtype)));
        }
        if tensor.shape.len() != value.ty.rank() {
            return Err(problem(format!("shape {:?} where the model wants {}", tensor.shape, value.ty)));
        }
        for (dim, &size) in value.ty.shape.iter().zip(&tensor.shape) {
            if let Some(symbol) = dim.as_symbol() {
                let bound = *bindings.entry(symbol.to_string()).or_insert(size as i64);
                if bound != size as i64 {
                    return Err(problem(format!(
                        "shape {:?} gives `{symbol}` = {size}, but another input gave {bound}",
                        tensor.shape
                    )));
                }
            }
        }
    }
    for value in &input_nodes {
        let tensor = &inputs[&value.name];
        for (dim, &size) in value.ty.shape.iter().zip(&tensor.shape) {
            let expected = dim.evaluate(&bindings).ok();
            if expected != Some(size as i64) {
                return Err(EvalError::Input {
                    name: value.name.clone(),
                    problem: format!("shape {:?} where the model wants {}", tensor.shape, value.ty),
                });
            }
        }
    }
    Ok(bindings)
}

/// Applies one op (not `Input` or `Constant`) to concrete inputs, with the
/// graph's symbols bound to `bindings`. Constant folding uses this too.
pub fn evaluate_op(op: &Op, inputs: &[&Tensor], bindings: &SymbolBindings) -> Result<Tensor, String> {
    evaluate_op_inner(op, inputs, bindings).map_err(|OpError(message)| message)
}

fn evaluate_op_inner(op: &Op, inputs: &[&Tensor], bindings: &SymbolBindings) -> Result<Tensor, OpError> {
    match op {
        Op::Input | Op::Constant(_) => unreachable!("handled by the driver"),
        Op::Unary(unary) => elementwise::unary(*unary, inputs[0]),
        Op::Binary(binary) => elementwise::binary(*binary, inputs[0], inputs[1]),
        Op::Where => elementwise::select(inputs[0], inputs[1], inputs[2]),
        Op::Cast { to } => Ok(elementwise::cast(inputs[0], *to)),
        Op::Gelu { approximation } => elementwise::gelu(*approximation, inputs[0]),
        Op::Shape { start, end } => Ok(movement::shape(inputs[0], *start, *end)),
        Op::Reshape { allow_zero } => movement::reshape(inputs[0], inputs[1], *allow_zero),
        Op::Transpose { permutation } => movement::transpose(inputs[0], permutation),
        Op::Squeeze { axes } => movement::squeeze(inputs[0], axes),
        Op::Unsqueeze { axes } => movement::unsqueeze(inputs[0], axes),
        Op::Flatten { axis } => movement::flatten(inputs[0], *axis),
        Op::Concat { axis } => movement::concat(inputs, *axis),
        Op::Slice => movement::slice(inputs[0], inputs[1], inputs[2], inputs[3], inputs[4]),
        Op::Gather { axis } => movement::gather(inputs[0], inputs[1], *axis),
        Op::GatherNd { batch_dims } => movement::gather_nd(inputs[0], inputs[1], *batch_dims),
        Op::Expand => movement::expand(inputs[0], inputs[1]),
        Op::Range => movement::range(inputs[0], inputs[1], inputs[2]),
        Op::ConstantOfShape { dtype, value } => movement::constant_of_shape(inputs[0], *dtype, *value),
        Op::Trilu { upper, diagonal } => movement::trilu(inputs[0], *upper, *diagonal),
        Op::MatMul { transpose_a, transpose_b } => {
            compute::matmul_transposed(inputs[0], inputs[1], *transpose_a, *transpose_b)
        }
        Op::Dims { values, scalar } => {
            let values = values
                .iter()
                .map(|dim| dim.evaluate(bindings).map_err(|e| OpError(e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            let shape = if *scalar { Vec::new() } else { vec![values.len()] };
            Ok(Tensor::from_i64(kiln_runtime::DType::I64, shape, values))
        }
        Op::SwiGlu => elementwise::swiglu(inputs[0], inputs[1]),
        Op::Rope { interleaved } => elementwise::rope(inputs[0], inputs[1], inputs[2], *interleaved),
        Op::Attention { scale, mask, mask_fill, zero_fully_masked_rows, .. } => compute::attention(
            inputs,
            compute::AttentionSettings {
                scale: *scale,
                mask: *mask,
                mask_fill: *mask_fill,
                zero_fully_masked_rows: *zero_fully_masked_rows,
            },
        ),
        Op::Reduce { kind, axes, keep_dims } => compute::reduce(inputs[0], *kind, axes, *keep_dims),
        Op::Softmax { axis } => compute::softmax(inputs[0], *axis),
        Op::LayerNorm { axis, epsilon } => {
            compute::layer_norm(inputs[0], inputs[1], inputs.get(2).copied(), *axis, *epsilon)
        }
        Op::RmsNorm { axis, epsilon } => compute::rms_norm(inputs[0], inputs[1], *axis, *epsilon),
    }
}
