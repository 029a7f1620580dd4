//! What a fusion group's kernel must do at the least: its floating-point
//! operations and the bytes it must move through device memory, as dim
//! expressions (so one formula serves every binding).
//!
//! - **bytes**: every stored tensor the group reads, read once (a weight, an
//!   input, another group's output, whole), plus every tensor it writes,
//!   written once. A kernel that re-reads a tile moves more; none moves less.
//! - **flops**: `2·M·N·K` per matmul (`K` the contracted dim), `2·sq·sk·(d + dv)`
//!   per attention head and batch row (scores and the weighted sum), and one
//!   operation per output element of every other op (norms, activations,
//!   softmax and elementwise chains are counted as that: a floor, not an
//!   instruction count).
//!
//! These are what a roofline needs: `max(flops / peak, bytes / bandwidth)`
//! is the least time the kernel can take on a GPU.

use kiln_ir::{Dim, Graph, Op};

use super::contract::GroupContract;
use super::form_fusion_groups::{role, Role};

/// The least work of one launch.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchCost {
    pub flops: Dim,
    pub bytes: Dim,
}

/// Bytes of a tensor of `ty`.
fn bytes_of(ty: &kiln_ir::TensorType) -> Dim {
    &ty.element_count() * &Dim::constant(ty.dtype.size_in_bytes() as i64)
}

impl LaunchCost {
    /// The least work of `contract`'s kernel in `graph`.
    pub fn of(graph: &Graph, contract: &GroupContract) -> LaunchCost {
        let mut bytes = Dim::constant(0);
        for input in &contract.inputs {
            bytes = &bytes + &bytes_of(graph.value_type(input.source));
        }
        for &output in &contract.outputs {
            bytes = &bytes + &bytes_of(graph.value_type(output));
        }
        let mut flops = Dim::constant(0);
        for node in graph.group_nodes(contract.id) {
            let op = &graph.node(node).op;
            let inputs = graph.inputs_of(node);
            let output = || graph.value_type(kiln_ir::graph::ValueRef::new(node, 0)).element_count();
            let term = match op {
                Op::MatMul { transpose_a, .. } => {
                    let a = &graph.value_type(inputs[0]).shape;
                    let contracted = if *transpose_a { a.len().checked_sub(2) } else { a.len().checked_sub(1) };
                    match contracted.and_then(|axis| a.get(axis)) {
                        Some(k) => &(&output() * k) * &Dim::constant(2),
                        None => output(),
                    }
                }
                Op::Attention { .. } => {
                    // q [b, hq, sq, d], k [b, hkv, sk, d], output [b, hq, sq, dv].
                    let q = &graph.value_type(inputs[0]).shape;
                    let k = &graph.value_type(inputs[1]).shape;
                    match (q.len(), k.len()) {
                        (4, 4) => {
                            let queries = &(&q[0] * &q[1]) * &q[2];
                            let depth = &q[3] + graph.value_type(inputs[2]).shape.last().unwrap_or(&q[3]);
                            &(&(&queries * &k[2]) * &depth) * &Dim::constant(2)
                        }
                        _ => output(),
                    }
                }
                _ if matches!(role(graph, node), Role::Source | Role::View) => Dim::constant(0),
                _ => output(),
            };
            flops = &flops + &term;
        }
        LaunchCost { flops, bytes }
    }
}
