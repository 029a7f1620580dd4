//! Recognizes the decomposed LayerNorm exporters write,
//! `(x − mean(x)) / sqrt(mean((x − mean(x))²) + ε) · γ + β` over the last
//! axis (with or without γ and β), as one `layer_norm`.
//!
//! Establishes: no such decomposition is left over the last axis.

use kiln_ir::graph::ValueRef;
use kiln_ir::{BinaryOp, Constant, Graph, Op, ReduceKind, Tensor, UnaryOp};

use super::patterns::{binary, is_last_axis, replace_with, with_scalar};
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

/// A per-column parameter: a constant whose elements all lie along the last axis.
fn is_row_parameter(graph: &Graph, value: ValueRef, columns: usize) -> bool {
    graph
        .as_constant(value)
        .is_some_and(|c| c.element_count() == columns && c.shape().iter().rev().skip(1).all(|&d| d == 1))
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
        let mut changed = false;
        for node in graph.topological_order() {
            if !graph.contains(node) {
                continue;
            }
            let value = ValueRef::new(node, 0);
            let Some((x, epsilon)) = normalized(graph, value) else { continue };
            let ty = graph.value_type(x).clone();
            let Some(columns) = ty.shape.last().and_then(|d| d.as_constant()).map(|d| d as usize) else { continue };
            // Extend over `· γ` and `+ β` when they follow (single use).
            let mut end = value;
            let mut scale = None;
            let mut bias = None;
            if let [(consumer, _)] = graph.consumers(end)[..] {
                if let Some((a, b)) = binary(graph, ValueRef::new(consumer, 0), BinaryOp::Mul) {
                    let other = if a == end { b } else { a };
                    if is_row_parameter(graph, other, columns) {
                        scale = Some(other);
                        end = ValueRef::new(consumer, 0);
                    }
                }
            }
            if scale.is_some() {
                if let [(consumer, _)] = graph.consumers(end)[..] {
                    if let Some((a, b)) = binary(graph, ValueRef::new(consumer, 0), BinaryOp::Add) {
                        let other = if a == end { b } else { a };
                        if is_row_parameter(graph, other, columns) {
                            bias = Some(other);
                            end = ValueRef::new(consumer, 0);
                        }
                    }
                }
            }
            let flatten = |graph: &mut Graph, parameter: ValueRef| -> ValueRef {
                let constant = graph.as_constant(parameter).expect("checked").to_tensor();
                let flat = Tensor { shape: vec![columns], ..constant };
                let name = graph.fresh_value_name(&format!("{}.row", graph.value_name(parameter)));
                graph.add_constant(&name, Constant::from_tensor(&flat))
            };
            let scale = match scale {
                Some(s) => flatten(graph, s),
                None => {
                    let name = graph.fresh_value_name("layer_norm.unit_scale");
                    graph.add_constant(
                        &name,
                        Constant::from_tensor(&Tensor::from_f32(ty.dtype, vec![columns], vec![1.0; columns])),
                    )
                }
            };
            let mut inputs = vec![x, scale];
            if let Some(b) = bias {
                inputs.push(flatten(graph, b));
            }
            replace_with(graph, self.name(), end, Op::LayerNorm { axis: -1, epsilon: epsilon as f32 }, &inputs)?;
            changed = true;
        }
        Ok(changed)
    }
}
