//! Recognizes the decomposed RMSNorm of current exporters,
//! `x · 1/sqrt(mean(x²) + ε) · w` (reciprocal or division form) over the
//! last axis, as one `rms_norm`.
//!
//! Establishes: no such decomposition is left over the last axis.

use kiln_ir::graph::ValueRef;
use kiln_ir::{BinaryOp, Constant, Graph, Op, ReduceKind, Tensor, UnaryOp};

use super::patterns::{binary, is_last_axis, replace_with, unary, with_scalar};
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
        let mut changed = false;
        for node in graph.topological_order() {
            if !graph.contains(node) {
                continue;
            }
            let value = ValueRef::new(node, 0);
            let Some((x, epsilon)) = normalized(graph, value) else { continue };
            let ty = graph.value_type(x).clone();
            let Some(columns) = ty.shape.last().and_then(|d| d.as_constant()).map(|d| d as usize) else { continue };
            let mut end = value;
            let mut scale = None;
            if let [(consumer, _)] = graph.consumers(end)[..] {
                if let Some((a, b)) = binary(graph, ValueRef::new(consumer, 0), BinaryOp::Mul) {
                    let other = if a == end { b } else { a };
                    if graph
                        .as_constant(other)
                        .is_some_and(|c| c.element_count() == columns && c.shape().last() == Some(&columns))
                    {
                        scale = Some(other);
                        end = ValueRef::new(consumer, 0);
                    }
                }
            }
            let scale_tensor = match scale {
                Some(s) => Tensor { shape: vec![columns], ..graph.as_constant(s).expect("checked").to_tensor() },
                None => Tensor::from_f32(ty.dtype, vec![columns], vec![1.0; columns]),
            };
            let name = graph.fresh_value_name("rms_norm.scale");
            let scale = graph.add_constant(&name, Constant::from_tensor(&scale_tensor));
            replace_with(graph, self.name(), end, Op::RmsNorm { axis: -1, epsilon: epsilon as f32 }, &[x, scale])?;
            changed = true;
        }
        Ok(changed)
    }
}
