//! Kernel generation: one kernel-IR [`Kernel`] per fusion group.
//!
//! Every generator builds on [`context::KernelContext`], which turns the
//! group's ops into per-element expressions: a value at given coordinates is
//! computed from its op's inputs (elementwise ops, RoPE, gathers), mapped
//! through views (reshape, transpose, slice, expand, constant-index gather,
//! position generators) or loaded from a stored tensor. The kinds differ in
//! how they walk the output:
//!
//! - elementwise and gather groups: one thread per output element;
//! - row reductions (norms, softmax, last-axis reductions): one block per row,
//!   statistics in f32 through warp shuffles and shared memory;
//! - matmuls: shared-memory tiles with 2×2 register blocking per thread, the
//!   epilogue applied to each accumulator;
//! - attention: one warp per query row, online softmax over the keys.
//!
//! Parameters are the group's input tensors, then its outputs, then one i64
//! scalar per symbol of the model (sorted by name); [`GeneratedKernel::bindings`]
//! records that calling convention.

mod attention;
mod context;
mod elementwise;
mod matmul;
mod row_reduction;

use kiln_ir::graph::ValueRef;
use kiln_ir::{Graph, GroupId, KernelKind, Op};
use kiln_passes::fuse::contract::GroupContract;
use kiln_runtime::kernel::Kernel;

pub use context::KernelContext;

/// What one kernel parameter is bound to at launch.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamBinding {
    /// A tensor the kernel reads (graph input, constant or another kernel's output).
    Input(ValueRef),
    /// A tensor the kernel writes.
    Output(ValueRef),
    /// The value of a symbol of the model.
    Symbol(String),
}

/// A generated kernel and its calling convention.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratedKernel {
    pub group: GroupId,
    pub kernel: Kernel,
    pub bindings: Vec<ParamBinding>,
}

/// Why a group has no kernel.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("group g{group} ({kind}): {message}")]
pub struct GenerateError {
    pub group: GroupId,
    pub kind: KernelKind,
    pub message: String,
}

/// Generates the kernel of fusion group `group`.
pub fn generate_kernel(graph: &Graph, group: GroupId) -> Result<GeneratedKernel, GenerateError> {
    let contract = GroupContract::of(graph, group).ok_or_else(|| GenerateError {
        group,
        kind: KernelKind::Elementwise,
        message: "no such group".into(),
    })?;
    let fail = |message: String| GenerateError { group, kind: contract.kind, message };
    let name = format!("g{group}_{}", contract.kind);
    let mut context = KernelContext::new(graph, &contract, &name);
    let anchor_op = contract.anchor.map(|a| &graph.node(a).op);
    let norm = contract.prologue.iter().chain(&contract.epilogue).copied().chain(contract.anchor).find(|&n| {
        matches!(graph.node(n).op, Op::LayerNorm { .. } | Op::RmsNorm { .. } | Op::Softmax { .. } | Op::Reduce { .. })
    });
    let body = match (contract.kind, anchor_op) {
        (KernelKind::Matmul, Some(Op::MatMul { .. })) => {
            matmul::generate(&mut context, contract.anchor.expect("anchor"))
        }
        (KernelKind::Attention, Some(Op::Attention { .. })) => {
            attention::generate(&mut context, contract.anchor.expect("anchor"))
        }
        (KernelKind::RowReduction, _) | (KernelKind::Gather, _) if norm.is_some() => {
            row_reduction::generate(&mut context, norm.expect("checked"))
        }
        (KernelKind::Elementwise, _) | (KernelKind::Gather, _) => elementwise::generate(&mut context),
        (kind, _) => Err(format!("no generator for a {kind} group with this anchor")),
    }
    .map_err(fail)?;
    let (kernel, bindings) = context.finish(body).map_err(fail)?;
    if cfg!(debug_assertions) {
        kiln_runtime::kernel::verify_kernel(&kernel).map_err(|e| fail(e.to_string()))?;
    }
    Ok(GeneratedKernel { group, kernel, bindings })
}
