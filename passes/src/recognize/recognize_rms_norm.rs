//! Recognizes the decomposed RMSNorm of current exporters,
//! `x · 1/sqrt(mean(x²) + ε) · w` (reciprocal or division form) over the
//! last axis, as one `rms_norm`.
//!
//! Establishes: no such decomposition is left over the last axis.

use kiln_ir::graph::ValueRef;
use kiln_ir::{BinaryOp, Constant, Graph, Op, ReduceKind, Tensor, UnaryOp};

use super::patterns::{
    binary, is_last_axis, replace_with, rewrite_each, row_of, trailing_row_parameter, unary, with_scalar,
};
use crate::pass::{Pass, PassError};

pub struct RecognizeRmsNorm;

/// `(x, ε)` when `value` is `sqrt(mean(x²) + ε)`.
fn root_mean_square(graph: &Graph, value: ValueRef) -> Option<(ValueRef, f64)> {
    let inner = unary(graph, value, UnaryOp::Sqrt)?;
    let (mean, epsilon) = with_scalar(graph, inner, BinaryOp::Add)?;
    let Op::Reduce { kind: ReduceKind::Mean, axes, keep_dims: true } = &graph.node(mean.node).op else { return None };
    let squared = graph.inputs_of(mean.node)[0];
    let x = match with_scalar(graph, squared, BinaryOp::Pow) {
        Some((x, 2.0)) => x,
        _ => {
            let (a, b) = binary(graph, squared, BinaryOp::Mul)?;
            (a == b).then_some(a)?
        }
    };
    is_last_axis(axes, graph.value_type(x).rank()).then_some((x, epsilon))
}

/// `(x, ε)` when `value` is `x / rms(x)` or `x · (1 / rms(x))`.
fn normalized(graph: &Graph, value: ValueRef) -> Option<(ValueRef, f64)> {
    if let Some((x, denominator)) = binary(graph, value, BinaryOp::Div) {
        let (y, epsilon) = root_mean_square(graph, denominator)?;
        return (x == y).then_some((x, epsilon));
    }
    let (a, b) = binary(graph, value, BinaryOp::Mul)?;
    for (x, other) in [(a, b), (b, a)] {
        let reciprocal = unary(graph, other, UnaryOp::Reciprocal).or_else(|| {
            let (one, denominator) = binary(graph, other, BinaryOp::Div)?;
            crate::util::is_scalar(graph, one, 1.0).then_some(denominator)
        });
        if let Some((y, epsilon)) = reciprocal.and_then(|r| root_mean_square(graph, r)) {
            if y == x {
                return Some((x, epsilon));
            }
        }
    }
    None
}

impl Pass for RecognizeRmsNorm {
    fn name(&self) -> &'static str {
        "recognize_rms_norm"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        rewrite_each(graph, |graph, value| {
            let Some((x, epsilon)) = normalized(graph, value) else { return Ok(false) };
            let Some((dtype, columns)) = row_of(graph, x) else { return Ok(false) };
            let (scale_tensor, end) = match trailing_row_parameter(graph, value, BinaryOp::Mul, columns) {
                Some((scale, output)) => {
                    let tensor = graph.as_constant(scale).expect("matched a constant").to_tensor();
                    (Tensor { shape: vec![columns], ..tensor }, output)
                }
                None => (Tensor::from_f32(dtype, vec![columns], vec![1.0; columns]), value),
            };
            let name = graph.fresh_value_name("rms_norm.scale");
            let scale = graph.add_constant(&name, Constant::from_tensor(&scale_tensor));
            replace_with(
                graph,
                "recognize_rms_norm",
                end,
                Op::RmsNorm { axis: -1, epsilon: epsilon as f32 },
                &[x, scale],
            )?;
            Ok(true)
        })
    }
}
