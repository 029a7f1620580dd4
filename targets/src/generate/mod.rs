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
//! - matmuls: shared-memory tiles with 4×4 register blocking per thread, the
//!   epilogue applied to each accumulator; with few rows against an n-by-k
//!   weight, also skinny variants that stream the weight once from global
//!   memory (see [`generate_variants`]);
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
mod skinny_matmul;
pub mod tensor_core_matmul;

use kiln_ir::graph::ValueRef;
use kiln_ir::{Dim, Graph, GroupId, KernelKind, Op};
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
    /// The shape bucket this variant is for: each dim expression within its
    /// inclusive range. Empty: every shape (the group's general kernel).
    pub when: Vec<(Dim, i64, i64)>,
}

/// Row buckets of the skinny matmul variants: one row (a single decode
/// step), and two to four (a few sequences decoding together).
const SKINNY_BUCKETS: [(i64, i64); 2] = [(1, 1), (2, 4)];

/// The kernels of fusion group `group`, most specialized first, general
/// last: the runtime launches the first whose bucket holds the bound dims.
/// A matmul against an n-by-k weight gets a skinny variant per row bucket
/// of [`SKINNY_BUCKETS`]; when its rows are a constant, only the one kernel
/// that fits is generated.
pub fn generate_variants(graph: &Graph, group: GroupId) -> Result<Vec<GeneratedKernel>, GenerateError> {
    let contract = GroupContract::of(graph, group);
    let anchor = contract.as_ref().filter(|c| c.kind == KernelKind::Matmul).and_then(|c| c.anchor);
    let Some(anchor) = anchor else { return Ok(vec![generate_kernel(graph, group)?]) };
    let mut variants = Vec::new();
    // Rows already covered by the variants before (a constant row count needs one).
    let mut covered_up_to = 0;
    if let Some(rows) = skinny_matmul::rows_dim(graph, anchor) {
        for (low, high) in SKINNY_BUCKETS {
            let fits = rows.as_constant().map(|r| (low..=high).contains(&r));
            if fits == Some(false) {
                continue;
            }
            let name = format!("g{group}_matmul_rows{high}");
            let mut variant =
                generate_with(graph, group, &name, &mut |context| skinny_matmul::generate(context, anchor, high))?;
            if fits.is_none() {
                variant.when = vec![(rows.clone(), low, high)];
            }
            variants.push(variant);
            if fits == Some(true) {
                return Ok(variants);
            }
            covered_up_to = high;
        }
    }
    let contract = contract.expect("a matmul group has a contract");
    // 16-byte chunks: 8 elements of 16 bits, 4 of f32 (tf32).
    let chunk = 16 / graph.value_type(graph.inputs_of(anchor)[0]).dtype.size_in_bytes().max(1) as i64;
    let stored = |value: ValueRef| tensor_core_matmul::stored_source(graph, &contract, value, chunk).is_some();
    if let Some(shape) =
        tensor_core_matmul::applies(graph, anchor, &stored, tensor_core_matmul::allows_tf32(graph, group))
    {
        for (tile, low, high) in tensor_core_buckets(&shape, covered_up_to + 1) {
            let name = format!("g{group}_matmul_{}", tile.name());
            let mut variant =
                generate_with(graph, group, &name, &mut |context| tensor_core_matmul::generate(context, anchor, tile))?;
            if shape.rows.as_constant().is_none() {
                variant.when = vec![(shape.rows.clone(), low, high)];
            }
            variants.push(variant);
        }
    }
    // The SIMT kernel: every shape, and every device (tensor-core variants need sm_80+).
    variants.push(generate_kernel(graph, group)?);
    Ok(variants)
}

/// Representative row counts of the tensor-core row buckets: a bucket
/// `(previous + 1)..=upper` takes the tile the cost model estimates fastest at
/// its upper bound (the last is unbounded).
const ROW_BUCKET_UPPER: [i64; 6] = [64, 256, 1024, 4096, 16384, i64::MAX];

/// The tile for each row bucket from `first_row` on, adjacent buckets with
/// the same tile merged: `(tile, low, high)`. A constant row count gets the
/// one tile for it.
fn tensor_core_buckets(
    shape: &tensor_core_matmul::Shape,
    first_row: i64,
) -> Vec<(tensor_core_matmul::TileConfig, i64, i64)> {
    use crate::cost_model::{estimate, GpuSpec, MatmulProblem};
    let gpu = GpuSpec::for_choosing_variants();
    let n = shape.n.as_constant().unwrap_or(4096);
    let batches = shape.batches.as_constant().unwrap_or(1);
    let element_bytes = if shape.kind == kiln_runtime::kernel::MmaKind::Tf32M16N8K8 { 4 } else { 2 };
    let best = |rows: i64| {
        let problem = MatmulProblem { rows, n, k: shape.k, batches, element_bytes, output_bytes: element_bytes };
        tensor_core_matmul::TileConfig::ALL
            .into_iter()
            .min_by(|a, b| {
                let cost =
                    |tile: tensor_core_matmul::TileConfig| estimate(&gpu, &tile.model(element_bytes), &problem).seconds;
                cost(*a).total_cmp(&cost(*b))
            })
            .expect("tiles")
    };
    if let Some(rows) = shape.rows.as_constant() {
        return vec![(best(rows), rows, rows)];
    }
    let mut buckets: Vec<(tensor_core_matmul::TileConfig, i64, i64)> = Vec::new();
    let mut low = first_row;
    for upper in ROW_BUCKET_UPPER {
        if upper < low {
            continue;
        }
        // The unbounded bucket is judged at a large batch.
        let tile = best(if upper == i64::MAX { 65536 } else { upper });
        match buckets.last_mut() {
            Some(last) if last.0 == tile => last.2 = upper,
            _ => buckets.push((tile, low, upper)),
        }
        low = upper.saturating_add(1);
    }
    buckets
}

/// Why a group has no kernel.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("group g{group} ({kind}): {message}")]
pub struct GenerateError {
    pub group: GroupId,
    pub kind: KernelKind,
    pub message: String,
}

/// Generates the general kernel of fusion group `group` (every shape).
pub fn generate_kernel(graph: &Graph, group: GroupId) -> Result<GeneratedKernel, GenerateError> {
    let contract = GroupContract::of(graph, group).ok_or_else(|| GenerateError {
        group,
        kind: KernelKind::Elementwise,
        message: "no such group".into(),
    })?;
    let name = format!("g{group}_{}", contract.kind);
    generate_with(graph, group, &name, &mut |context| {
        let contract = context.contract.clone();
        let anchor_op = contract.anchor.map(|a| &graph.node(a).op);
        let norm = contract.prologue.iter().chain(&contract.epilogue).copied().chain(contract.anchor).find(|&n| {
            matches!(
                graph.node(n).op,
                Op::LayerNorm { .. } | Op::RmsNorm { .. } | Op::Softmax { .. } | Op::Reduce { .. }
            )
        });
        match (contract.kind, anchor_op) {
            (KernelKind::Matmul, Some(Op::MatMul { .. })) => {
                matmul::generate(context, contract.anchor.expect("anchor"))
            }
            (KernelKind::Attention, Some(Op::Attention { .. })) => {
                attention::generate(context, contract.anchor.expect("anchor"))
            }
            (KernelKind::RowReduction, _) | (KernelKind::Gather, _) if norm.is_some() => {
                row_reduction::generate(context, norm.expect("checked"))
            }
            (KernelKind::Elementwise, _) | (KernelKind::Gather, _) => elementwise::generate(context),
            (kind, _) => Err(format!("no generator for a {kind} group with this anchor")),
        }
    })
}

/// The kernel `name` of group `group` whose body `body` generates, verified in debug builds.
fn generate_with(
    graph: &Graph,
    group: GroupId,
    name: &str,
    body: &mut dyn FnMut(&mut KernelContext) -> Result<Vec<kiln_runtime::kernel::Stmt>, String>,
) -> Result<GeneratedKernel, GenerateError> {
    let contract = GroupContract::of(graph, group).ok_or_else(|| GenerateError {
        group,
        kind: KernelKind::Elementwise,
        message: "no such group".into(),
    })?;
    let fail = |message: String| GenerateError { group, kind: contract.kind, message };
    let mut context = KernelContext::new(graph, &contract, name);
    let body = body(&mut context).map_err(fail)?;
    let (kernel, bindings) = context.finish(body).map_err(fail)?;
    if cfg!(debug_assertions) {
        kiln_runtime::kernel::verify_kernel(&kernel).map_err(|e| fail(e.to_string()))?;
    }
    Ok(GeneratedKernel { group, kernel, bindings, when: Vec::new() })
}
