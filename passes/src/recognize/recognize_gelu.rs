//! Recognizes GELU as exporters decompose it: the erf form
//! `x · ½ · (1 + erf(x/√2))` and the tanh form
//! `x · ½ · (1 + tanh(√(2/π)·(x + 0.044715·x³)))`, with the products in any
//! association, as one `gelu`.
//!
//! Establishes: neither decomposition is left.

use std::f64::consts::{FRAC_1_SQRT_2, PI, SQRT_2};

use kiln_ir::graph::ValueRef;
use kiln_ir::{BinaryOp, GeluApproximation, Graph, Op, UnaryOp};

use super::patterns::{binary, near, product_leaves, replace_with, rewrite_each, with_scalar};
use crate::pass::{Pass, PassError};
use crate::util::constant_scalar;

pub struct RecognizeGelu;

/// `x` when `value` is `x/√2` or `x·(1/√2)`.
fn scaled_by_inverse_sqrt2(graph: &Graph, value: ValueRef) -> Option<ValueRef> {
    if let Some((x, c)) = with_scalar(graph, value, BinaryOp::Div) {
        return near(c, SQRT_2).then_some(x);
    }
    let (x, c) = with_scalar(graph, value, BinaryOp::Mul)?;
    near(c, FRAC_1_SQRT_2).then_some(x)
}

/// `x` when `value` is `x³` (`pow(x, 3)` or a product of three `x`).
fn cube_of(graph: &Graph, value: ValueRef) -> Option<ValueRef> {
    if let Some((x, exponent)) = with_scalar(graph, value, BinaryOp::Pow) {
        return (exponent == 3.0).then_some(x);
    }
    let leaves = product_leaves(graph, value, 2);
    (leaves.len() == 3 && leaves.iter().all(|l| *l == leaves[0])).then_some(leaves[0])
}

/// `(x, approximation)` when `value` is `erf(x/√2)` or `tanh(√(2/π)(x + 0.044715x³))`.
fn gelu_core(graph: &Graph, value: ValueRef) -> Option<(ValueRef, GeluApproximation)> {
    match graph.node(value.node).op {
        Op::Unary(UnaryOp::Erf) => {
            let x = scaled_by_inverse_sqrt2(graph, graph.inputs_of(value.node)[0])?;
            Some((x, GeluApproximation::None))
        }
        Op::Unary(UnaryOp::Tanh) => {
            let (inner, c) = with_scalar(graph, graph.inputs_of(value.node)[0], BinaryOp::Mul)?;
            if !near(c, (2.0 / PI).sqrt()) {
                return None;
            }
            let (a, b) = binary(graph, inner, BinaryOp::Add)?;
            for (x, cubic) in [(a, b), (b, a)] {
                if let Some((cube, k)) = with_scalar(graph, cubic, BinaryOp::Mul) {
                    if near(k, 0.044715) && cube_of(graph, cube) == Some(x) {
                        return Some((x, GeluApproximation::Tanh));
                    }
                }
            }
            None
        }
        _ => None,
    }
}

impl Pass for RecognizeGelu {
    fn name(&self) -> &'static str {
        "recognize_gelu"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        rewrite_each(graph, |graph, core| {
            let Some((x, approximation)) = gelu_core(graph, core) else { return Ok(false) };
            let [(add, _)] = graph.consumers(core)[..] else { return Ok(false) };
            let one_plus = ValueRef::new(add, 0);
            if with_scalar(graph, one_plus, BinaryOp::Add) != Some((core, 1.0)) {
                return Ok(false);
            }
            // Walk up at most two single-use multiplications until the leaves are {x, 1 + core, ½}.
            let mut end = one_plus;
            for _ in 0..2 {
                let [(consumer, _)] = graph.consumers(end)[..] else { return Ok(false) };
                if !matches!(graph.node(consumer).op, Op::Binary(BinaryOp::Mul)) {
                    return Ok(false);
                }
                end = ValueRef::new(consumer, 0);
                let leaves = product_leaves(graph, end, 2);
                let halves =
                    leaves.iter().filter(|l| constant_scalar(graph, **l).is_some_and(|v| near(v, 0.5))).count();
                let xs = leaves.iter().filter(|l| **l == x).count();
                let sums = leaves.iter().filter(|l| **l == one_plus).count();
                if leaves.len() == 3 && halves == 1 && xs == 1 && sums == 1 {
                    replace_with(graph, "recognize_gelu", end, Op::Gelu { approximation }, &[x])?;
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }
}
