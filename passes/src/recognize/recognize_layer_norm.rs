//! Recognizes the decomposed LayerNorm exporters write,
//! `(x − mean(x)) / sqrt(mean((x − mean(x))²) + ε) · γ + β` over the last
//! axis (with or without γ and β), as one `layer_norm`.
//!
//! Establishes: no such decomposition is left over the last axis.

use kiln_ir::graph::ValueRef;
use kiln_ir::{BinaryOp, Constant, Graph, Op, ReduceKind, Tensor, UnaryOp};

use super::patterns::{binary, is_last_axis, replace_with, rewrite_each, row_of, trailing_row_parameter, with_scalar};
use crate::pass::{Pass, PassError};

pub struct RecognizeLayerNorm;

/// `x` when `value` is `reduce_mean[last axis, keep_dims](x)`.
fn mean_of(graph: &Graph, value: ValueRef) -> Option<ValueRef> {
    match &graph.node(value.node).op {
        Op::Reduce { kind: ReduceKind::Mean, axes, keep_dims: true } => {
            let x = graph.inputs_of(value.node)[0];
            is_last_axis(axes, graph.value_type(x).rank()).then_some(x)
        }
        _ => None,
    }
}

/// `d` when `value` is `d²` (as `pow(d, 2)` or `d · d`).
fn square_of(graph: &Graph, value: ValueRef) -> Option<ValueRef> {
    if let Some((d, exponent)) = with_scalar(graph, value, BinaryOp::Pow) {
        return (exponent == 2.0).then_some(d);
    }
    let (a, b) = binary(graph, value, BinaryOp::Mul)?;
    (a == b).then_some(a)
}

/// `(x, ε)` when `value` is the normalized `(x − mean) / sqrt(var + ε)`.
fn normalized(graph: &Graph, value: ValueRef) -> Option<(ValueRef, f64)> {
    let (centered, denominator) = binary(graph, value, BinaryOp::Div)?;
    let (x, mean) = binary(graph, centered, BinaryOp::Sub)?;
    if mean_of(graph, mean)? != x {
        return None;
    }
    let root = match graph.node(denominator.node).op {
        Op::Unary(UnaryOp::Sqrt) => graph.inputs_of(denominator.node)[0],
        _ => return None,
    };
    let (variance, epsilon) = with_scalar(graph, root, BinaryOp::Add)?;
    (square_of(graph, mean_of(graph, variance)?)? == centered).then_some((x, epsilon))
}

impl Pass for RecognizeLayerNorm {
    fn name(&self) -> &'static str {
        "recognize_layer_norm"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        rewrite_each(graph, |graph, value| {
            let Some((x, epsilon)) = normalized(graph, value) else { return Ok(false) };
            let Some((dtype, columns)) = row_of(graph, x) else { return Ok(false) };
            // Extend over `· γ`, then `+ β`, when they follow.
            let mut end = value;
            let scale = trailing_row_parameter(graph, end, BinaryOp::Mul, columns).map(|(scale, output)| {
                end = output;
                scale
            });
            let bias = scale.and(trailing_row_parameter(graph, end, BinaryOp::Add, columns)).map(|(bias, output)| {
                end = output;
                bias
            });
            // γ and β as `[columns]` constants named after the originals.
            let as_row = |graph: &mut Graph, parameter: ValueRef| -> ValueRef {
                let tensor = graph.as_constant(parameter).expect("matched a constant").to_tensor();
                let name = graph.fresh_value_name(&format!("{}.row", graph.value_name(parameter)));
                graph.add_constant(&name, Constant::from_tensor(&Tensor { shape: vec![columns], ..tensor }))
            };
            let scale = match scale {
                Some(s) => as_row(graph, s),
                None => {
                    let name = graph.fresh_value_name("layer_norm.unit_scale");
                    let ones = Tensor::from_f32(dtype, vec![columns], vec![1.0; columns]);
                    graph.add_constant(&name, Constant::from_tensor(&ones))
                }
            };
            let mut inputs = vec![x, scale];
            if let Some(b) = bias {
                inputs.push(as_row(graph, b));
            }
            replace_with(
                graph,
                "recognize_layer_norm",
                end,
                Op::LayerNorm { axis: -1, epsilon: epsilon as f32 },
                &inputs,
            )?;
            Ok(true)
        })
    }
}
