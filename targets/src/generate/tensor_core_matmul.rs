//! Tensor-core matmuls (sm_80+): `C = A·Bᵀ` for bf16 or f16 `A` (`[.., M, K]`,
//! k contiguous) against `B` stored `[.., N, K]` (a Linear weight, or a batch
//! of k-contiguous operands), accumulated in f32 by `mma.sync` m16n8k16, with
//! the group's epilogue applied to each accumulator. Under `--precision tf32`
//! f32 operands take the same pipeline (stage rows of 16 f32) and m16n8k8
//! tf32, their fragments read by per-lane shared loads (ldmatrix moves 16-bit
//! elements) and rounded to tf32 as `cvt.rna.tf32.f32` does.
//!
//! A block computes a `bm × bn` tile of C ([`TileConfig`]); its warps form a
//! `warps_m × warps_n` grid, each owning a `bm/warps_m × bn/warps_n` warp
//! tile of m16n8 MMA tiles. K streams through shared memory in steps of
//! [`BK`] = 32 (16-bit operands) over a [`STAGES`]-deep `cp.async` pipeline: while the warps
//! multiply stage `kt`, the copies of the next `STAGES − 1` tiles are in
//! flight (`cp.async.wait_group STAGES − 2`, then one barrier per step,
//! which also guarantees that the stage being refilled is no longer read).
//! Operands reach shared memory only by 16-byte `cp.async` and registers
//! only by `ldmatrix` x4.
//!
//! **Shared layout.** A stage row is 32 elements: four 16-byte chunks. Chunk
//! `c` of row `r` is stored at chunk `c ^ ((r >> 1) & 3)`: the eight rows an
//! `ldmatrix` phase reads at one logical chunk, and the eight chunks a
//! quarter-warp of copies writes, then fall in eight distinct 16-byte bank
//! groups, so neither conflicts (the machine's counters check it).
//!
//! **Edges.** Rows of A past M and of B past N, and k past K, are copied as
//! zeros (`cp.async` zero-fill, the source address clamped to element 0);
//! stores are guarded by row < M and column < N. K must be a multiple of 8
//! (so every 16-byte chunk is aligned), which [`applies`] checks. With a
//! 2-D weight the batch dims fold into M: short sequences share row tiles.

use kiln_ir::graph::{NodeIndex, ValueRef};
use kiln_ir::{DType, Dim, Graph, Op};
use kiln_passes::fuse::contract::GroupContract;
use kiln_runtime::kernel::{self, build, Expr, MmaKind, Special, Stmt};

use super::context::{unravel, KernelContext, Value};
use super::matmul::{store_epilogue_element, StoredOutput};

/// The k extent of one pipeline stage of 16-bit operands (two m16n8k16
/// steps): a stage row is 64 bytes, 32 bf16/f16 or 16 tf32 elements
/// ([`Geometry`]).
pub const BK: i64 = 32;
/// Pipeline depth: stages in shared memory.
pub const STAGES: i64 = 3;
/// Bytes of one stage row.
const ROW_BYTES: i64 = 64;

/// A stage's rows for an element size: `bk` elements a row, in 16-byte
/// chunks of `chunk` elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    bk: i64,
    chunk: i64,
}

impl Geometry {
    fn of(element_bytes: i64) -> Geometry {
        Geometry { bk: ROW_BYTES / element_bytes, chunk: 16 / element_bytes }
    }

    /// The element index of element `within` of chunk `chunk` of row `row`
    /// in a stage (chunks swizzled by `(row >> 1) & 3`).
    fn swizzled(self, row: Expr, chunk: Expr, within: Expr) -> Expr {
        row.clone() * self.bk + ((chunk ^ ((row >> 1) & 3)) * self.chunk) + within
    }
}

/// One block tile: `bm × bn` of C over `warps_m × warps_n` warps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileConfig {
    pub bm: i64,
    pub bn: i64,
    pub warps_m: i64,
    pub warps_n: i64,
}

impl TileConfig {
    /// The tiles kiln generates, largest first.
    pub const ALL: [TileConfig; 3] = [
        TileConfig { bm: 128, bn: 128, warps_m: 2, warps_n: 4 },
        TileConfig { bm: 128, bn: 64, warps_m: 2, warps_n: 2 },
        TileConfig { bm: 64, bn: 64, warps_m: 2, warps_n: 2 },
    ];

    pub fn threads(self) -> i64 {
        32 * self.warps_m * self.warps_n
    }

    /// MMA tiles per warp along M (16 rows each) and N (8 columns each).
    fn mma_tiles(self) -> (i64, i64) {
        (self.bm / self.warps_m / 16, self.bn / self.warps_n / 8)
    }

    /// Shared memory the pipeline holds (both operands, every stage).
    pub fn shared_bytes(self) -> i64 {
        STAGES * (self.bm + self.bn) * BK * 2
    }

    /// The cost model's view of the tile for operands of `element_bytes`
    /// (2, or 4 for tf32), registers estimated (accumulators, fragments —
    /// twice for tf32 — and ~40 for addresses; ptxas's report is the truth,
    /// and the SASS test holds the estimate to it).
    pub fn model(self, element_bytes: i64) -> crate::cost_model::MatmulTile {
        let (mt, nt) = self.mma_tiles();
        crate::cost_model::MatmulTile {
            bm: self.bm,
            bn: self.bn,
            bk: Geometry::of(element_bytes).bk,
            threads: self.threads(),
            shared_bytes: self.shared_bytes(),
            // tf32 fragments hold each element's loaded bits beside its rounded value.
            registers: mt * nt * 4 + (mt * 4 + nt * 2) * (element_bytes / 2) + 40,
        }
    }

    /// The variant name's suffix: `tc128x64`.
    pub fn name(self) -> String {
        format!("tc{}x{}", self.bm, self.bn)
    }
}

/// What a tensor-core matmul needs to know of its group's matmul.
pub struct Shape {
    /// Rows of C: `batch·M` with a 2-D weight, else M (per batch).
    pub rows: Dim,
    pub n: Dim,
    pub k: i64,
    /// Batches run as blocks of their own (B has batch dims), else 1.
    pub batches: Dim,
    pub kind: MmaKind,
}

/// Where a `cp.async` operand's elements come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredOperand {
    /// The stored tensor (a group input).
    pub source: ValueRef,
    /// It is seen through a transpose: a chunk's first element is found
    /// through the views (each chunk still a contiguous run of the source).
    pub through_transpose: bool,
}

/// The stored tensor `value` reads, when each run of `chunk` elements along
/// its last axis (starting at a multiple of `chunk`) is a contiguous run of
/// that tensor — what `cp.async` can copy: a group input, seen through
/// views that keep the element order (reshape, squeeze, unsqueeze,
/// flatten) or transposes that keep the last axis last, every tensor on
/// the way with a last dim that is a constant multiple of `chunk`.
pub fn stored_source(graph: &Graph, contract: &GroupContract, value: ValueRef, chunk: i64) -> Option<StoredOperand> {
    contract.inputs.iter().find_map(|input| {
        let end = input.views.last().map_or(input.source, |&view| ValueRef::new(view, 0));
        if end != value {
            return None;
        }
        let mut through_transpose = false;
        for &view in &input.views {
            let keeps_runs = match &graph.node(view).op {
                Op::Reshape { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } | Op::Flatten { .. } => true,
                Op::Transpose { permutation } => {
                    through_transpose = true;
                    permutation.last() == Some(&(permutation.len() - 1))
                }
                _ => false,
            };
            let input_last = graph.value_type(graph.inputs_of(view)[0]).shape.last().and_then(Dim::as_constant);
            if !keeps_runs || input_last.is_none_or(|last| last % chunk != 0) {
                return None;
            }
        }
        Some(StoredOperand { source: input.source, through_transpose })
    })
}

/// The tensor-core matmul of `anchor` when one applies: `A·Bᵀ` of two
/// stored bf16 (or two f16) operands of the group (not computed inside
/// it; `stored` finds them, [`stored_source`]), A `[.., M, K]` and B `[N, K]`
/// or of A's batch shape, with a constant K that is a multiple of 8.
/// With `tf32` (the group's `math = "tf32"` note, `--precision tf32`), two
/// f32 operands qualify too, multiplied as tf32 by m16n8k8.
pub fn applies(graph: &Graph, anchor: NodeIndex, stored: &dyn Fn(ValueRef) -> bool, tf32: bool) -> Option<Shape> {
    let Op::MatMul { transpose_a: false, transpose_b: true } = graph.node(anchor).op else { return None };
    let inputs = graph.inputs_of(anchor);
    let (a, b) = (inputs[0], inputs[1]);
    let (a_type, b_type) = (graph.value_type(a), graph.value_type(b));
    let kind = match (a_type.dtype, b_type.dtype) {
        (DType::BF16, DType::BF16) => MmaKind::Bf16M16N8K16,
        (DType::F16, DType::F16) => MmaKind::F16M16N8K16,
        (DType::F32, DType::F32) if tf32 => MmaKind::Tf32M16N8K8,
        _ => return None,
    };
    let chunk = Geometry::of(a_type.dtype.size_in_bytes() as i64).chunk;
    if !stored(a) || !stored(b) || a_type.rank() < 2 || b_type.rank() < 2 {
        return None;
    }
    let out_shape = &graph.value_type(ValueRef::new(anchor, 0)).shape;
    let rank = out_shape.len();
    let k = a_type.shape[a_type.rank() - 1].as_constant().filter(|k| k % chunk == 0 && *k > 0)?;
    let batch_shape = &out_shape[..rank - 2];
    // A must be exactly [batch.., M, K] (no broadcast): its rows are then contiguous.
    let mut a_expected = batch_shape.to_vec();
    a_expected.extend_from_slice(&out_shape[rank - 2..rank - 1]);
    a_expected.push(Dim::constant(k));
    if a_type.shape != a_expected {
        return None;
    }
    let batches = batch_shape.iter().fold(Dim::constant(1), |p, d| &p * d);
    let (m, n) = (out_shape[rank - 2].clone(), out_shape[rank - 1].clone());
    if b_type.rank() == 2 {
        return Some(Shape { rows: &batches * &m, n, k, batches: Dim::constant(1), kind });
    }
    let mut b_expected = batch_shape.to_vec();
    b_expected.push(n.clone());
    b_expected.push(Dim::constant(k));
    (b_type.shape == b_expected).then_some(Shape { rows: m, n, k, batches, kind })
}

pub fn generate(context: &mut KernelContext, anchor: NodeIndex, tile: TileConfig) -> Result<Vec<Stmt>, String> {
    let graph = context.graph;
    let contract = context.contract.clone();
    let inputs = graph.inputs_of(anchor);
    let (a, b) = (inputs[0], inputs[1]);
    let chunk_of = Geometry::of(graph.value_type(a).dtype.size_in_bytes() as i64).chunk;
    let source = |value| stored_source(graph, &contract, value, chunk_of);
    let shape = applies(graph, anchor, &|value| source(value).is_some(), allows_tf32(graph, contract.id))
        .ok_or("not a bf16/f16 (or tf32) matmul of stored k-contiguous operands")?;
    let operand_buffer = |value| {
        let operand = source(value).ok_or("an operand is not stored")?;
        context.buffer(operand.source).map(|buffer| (buffer, operand.through_transpose)).map_err(|_| "no buffer")
    };
    let ((a_buffer, a_viewed), (b_buffer, b_viewed)) = (operand_buffer(a)?, operand_buffer(b)?);
    let output = ValueRef::new(anchor, 0);
    let out_shape = graph.value_type(output).shape.clone();
    let rank = out_shape.len();
    let (m_dim, n_dim) = (out_shape[rank - 2].clone(), out_shape[rank - 1].clone());
    let batch_shape = out_shape[..rank - 2].to_vec();
    let flatten = shape.batches.as_constant() == Some(1);
    let tiles = |d: &Dim, t: i64| (d + &Dim::constant(t - 1)).floor_div(t).expect("positive");
    let (tiles_m, tiles_n) = (tiles(&shape.rows, tile.bm), tiles(&n_dim, tile.bn));
    context.block_threads = tile.threads() as u32;
    context.grid_blocks = &(&shape.batches * &tiles_m) * &tiles_n;
    let dtype = graph.value_type(a).dtype;
    let geometry = Geometry::of(dtype.size_in_bytes() as i64);
    let Geometry { bk, chunk: chunk_elements } = geometry;
    let a_stages = add_stage_array(context, "a_stages", dtype, STAGES * tile.bm * bk);
    let b_stages = add_stage_array(context, "b_stages", dtype, STAGES * tile.bn * bk);
    let k_tiles = (shape.k + bk - 1) / bk;

    let mut body = Vec::new();
    let i64v = |expr: Expr| Value { expr, dtype: DType::I64 };
    let (m, n, rows) = (context.dim(&m_dim)?, context.dim(&n_dim)?, context.dim(&shape.rows)?);
    let (tm_count, tn_count) = (context.dim(&tiles_m)?, context.dim(&tiles_n)?);
    let block = context.bind(&mut body, i64v(build::cast(DType::I64, build::special(Special::BlockIndex)))).expr;
    let thread = context.bind(&mut body, i64v(build::cast(DType::I64, build::special(Special::ThreadIndex)))).expr;
    let lane = context.bind(&mut body, i64v(thread.clone() % 32)).expr;
    let warp = context.bind(&mut body, i64v(thread.clone() / 32)).expr;
    let warp_m = context.bind(&mut body, i64v(warp.clone() / tile.warps_n)).expr;
    let warp_n = context.bind(&mut body, i64v(warp % tile.warps_n)).expr;
    let tile_n = context.bind(&mut body, i64v(block.clone() % &tn_count)).expr;
    let tile_m = context.bind(&mut body, i64v((block.clone() / &tn_count) % &tm_count)).expr;
    let batch_dims: Vec<Expr> = batch_shape.iter().map(|d| context.dim(d)).collect::<Result<_, _>>()?;
    let (a_base, b_base, block_batch_coords) = if flatten {
        (build::i64(0), build::i64(0), Vec::new())
    } else {
        let batch = context.bind(&mut body, i64v(block.clone() / (tn_count.clone() * tm_count.clone()))).expr;
        let coords =
            unravel(batch.clone(), &batch_dims).into_iter().map(|c| context.bind(&mut body, i64v(c)).expr).collect();
        let a_base = context.bind(&mut body, i64v(batch.clone() * m.clone() * shape.k)).expr;
        let b_base = context.bind(&mut body, i64v(batch * n.clone() * shape.k)).expr;
        (a_base, b_base, coords)
    };
    let constant_multiple = |dim: &Dim, t: i64| dim.as_constant().is_some_and(|d| d % t == 0);
    let (rows_whole, n_whole, k_whole) =
        (constant_multiple(&shape.rows, tile.bm), constant_multiple(&n_dim, tile.bn), shape.k % bk == 0);

    // The copies of k-tile `kt` (an expression) into stage `kt % STAGES`, each
    // thread a fixed set of 16-byte chunks of both operands.
    let threads = tile.threads();
    // The coordinates of element (row, k) of an operand: A's rows through the
    // folded batch dims (or the block's batch), B's with the block's batch.
    let a_coords = |row: Expr, k: Expr| -> Vec<Expr> {
        let mut coords = if flatten { unravel(row.clone() / &m, &batch_dims) } else { block_batch_coords.clone() };
        coords.push(if flatten && !batch_dims.is_empty() { row % &m } else { row });
        coords.push(k);
        coords
    };
    let b_coords = |row: Expr, k: Expr| -> Vec<Expr> {
        let mut coords = if flatten { Vec::new() } else { block_batch_coords.clone() };
        coords.push(row);
        coords.push(k);
        coords
    };
    type Coords<'c> = &'c dyn Fn(Expr, Expr) -> Vec<Expr>;
    let load_tile = |kt: Expr| -> Result<Vec<Stmt>, String> {
        let mut copies = Vec::new();
        let stage = kt.clone() % STAGES;
        let operands: [(usize, usize, &Expr, i64, Expr, &Expr, bool, Option<(ValueRef, Coords)>); 2] = [
            (
                a_stages,
                a_buffer,
                &a_base,
                tile.bm,
                tile_m.clone() * tile.bm,
                &rows,
                rows_whole,
                a_viewed.then_some((a, &a_coords as Coords)),
            ),
            (
                b_stages,
                b_buffer,
                &b_base,
                tile.bn,
                tile_n.clone() * tile.bn,
                &n,
                n_whole,
                b_viewed.then_some((b, &b_coords as Coords)),
            ),
        ];
        for (array, buffer, base, tile_rows, first_row, bound, whole, viewed) in operands {
            let chunks = bk / chunk_elements;
            for part in 0..tile_rows * chunks / threads {
                let id = thread.clone() + part * threads;
                let (row, chunk) = (id.clone() / chunks, id % chunks);
                let global_row = first_row.clone() + row.clone();
                let k = kt.clone() * bk + chunk.clone() * chunk_elements;
                let mut inside: Option<Expr> = None;
                if !whole {
                    inside = Some(global_row.clone().lt(bound));
                }
                if !k_whole {
                    let k_inside = k.clone().lt(shape.k);
                    inside = Some(inside.map_or(k_inside.clone(), |c| c.and(k_inside)));
                }
                let element = match viewed {
                    // Through a transpose: the chunk's first element as the views place it.
                    Some((operand, coords)) => {
                        match context.value_at(&mut copies, operand, &coords(global_row, k))?.expr {
                            Expr::Load { index, .. } => *index,
                            _ => return Err("a viewed operand that is not a load".into()),
                        }
                    }
                    None => base.clone() + global_row * shape.k + k,
                };
                let (index, valid) = match inside {
                    None => (element, build::i64(chunk_elements)),
                    Some(inside) => (
                        Expr::Select(Box::new(inside.clone()), Box::new(element), Box::new(build::i64(0))),
                        Expr::Select(Box::new(inside), Box::new(build::i64(chunk_elements)), Box::new(build::i64(0))),
                    ),
                };
                copies.push(Stmt::AsyncCopy {
                    array,
                    shared_index: stage.clone() * (tile_rows * bk) + geometry.swizzled(row, chunk, build::i64(0)),
                    buffer,
                    index,
                    elements: chunk_elements as u32,
                    source_elements: valid,
                });
            }
        }
        Ok(copies)
    };
    // Prologue: the first STAGES − 1 tiles in flight, one group each.
    for kt in 0..STAGES - 1 {
        if kt < k_tiles {
            body.extend(load_tile(build::i64(kt))?);
        }
        body.push(Stmt::AsyncCommit);
    }

    let (mt, nt) = tile.mma_tiles();
    let accumulators: Vec<kernel::Var> = (0..mt * nt * 4).map(|_| context.fresh_var()).collect();
    for &acc in &accumulators {
        body.push(Stmt::Let { var: acc, dtype: DType::F32, value: build::f32(0.0) });
    }
    let kt = context.fresh_var();
    let mut step = vec![Stmt::AsyncWait { pending: (STAGES - 2) as u32 }, Stmt::Barrier];
    let next = build::var(kt) + (STAGES - 1);
    step.push(Stmt::If { condition: next.clone().lt(k_tiles), then: load_tile(next)?, otherwise: Vec::new() });
    step.push(Stmt::AsyncCommit);
    let stage = context.bind(&mut step, i64v(build::var(kt) % STAGES)).expr;
    let (warp_rows, warp_columns) = (tile.bm / tile.warps_m, tile.bn / tile.warps_n);
    let group = context.bind(&mut step, i64v(lane.clone() / 8)).expr;
    let in_group = context.bind(&mut step, i64v(lane.clone() % 8)).expr;
    let mma_k = shape.kind.k() as i64;
    let view = StageView { geometry, stage: &stage, arrays: (a_stages, b_stages), tile, warp: (&warp_m, &warp_n) };
    for kk in 0..bk / mma_k {
        let (a_registers, b_registers) = if shape.kind == MmaKind::Tf32M16N8K8 {
            tf32_fragments(context, &mut step, &view, &lane, kk)
        } else {
            ldmatrix_fragments(context, &mut step, &view, (&group, &in_group), kk)
        };
        for mi in 0..mt as usize {
            for ni in 0..nt as usize {
                let acc = accumulators[(mi * nt as usize + ni) * 4..][..4].to_vec();
                step.push(Stmt::MatrixMultiplyAccumulate {
                    kind: shape.kind,
                    acc,
                    a: a_registers[mi].iter().map(|&v| build::var(v)).collect(),
                    b: b_registers[ni].iter().map(|&v| build::var(v)).collect(),
                });
            }
        }
    }
    body.push(Stmt::For { var: kt, start: build::i64(0), end: build::i64(k_tiles), step: 1, body: step });

    // Epilogue: accumulator r of MMA tile (mi, ni) is C(g + 8·(r/2), 2t + r%2) of that tile.
    let split_row = |row: Expr| -> (Vec<Expr>, Expr) {
        if flatten {
            (unravel(row.clone() / &m, &batch_dims), row % &m)
        } else {
            (block_batch_coords.clone(), row)
        }
    };
    let coords_at = |row: Expr, column: Expr| {
        let (mut coords, row) = split_row(row);
        coords.push(row);
        coords.push(column);
        coords
    };
    let g = context.bind(&mut body, i64v(lane.clone() / 4)).expr;
    let t2 = context.bind(&mut body, i64v((lane % 4) * 2)).expr;
    let first_row = context.bind(&mut body, i64v(tile_m * tile.bm + warp_m * warp_rows)).expr;
    let first_column = context.bind(&mut body, i64v(tile_n * tile.bn + warp_n * warp_columns)).expr;
    for stored in context.contract.outputs.clone() {
        let StoredOutput { dims, pairs, columns: stored_n } = StoredOutput::of(context, stored, rank, &n_dim)?;
        for mi in 0..mt {
            for ni in 0..nt {
                for r in 0..4 {
                    // A SwiGLU pair (2t, 2t+1) is in this thread: the even accumulator stores it.
                    if pairs && r % 2 == 1 {
                        continue;
                    }
                    let acc = |r: i64| Value::float(build::var(accumulators[((mi * nt + ni) * 4 + r) as usize]));
                    let row = context.bind(&mut body, i64v(first_row.clone() + mi * 16 + g.clone() + 8 * (r / 2))).expr;
                    let column = context.bind(&mut body, i64v(first_column.clone() + ni * 8 + t2.clone() + r % 2)).expr;
                    let mut candidates = vec![(coords_at(row.clone(), column.clone()), acc(r))];
                    let stored_column = if pairs {
                        candidates.push((coords_at(row.clone(), column.clone() + 1), acc(r + 1)));
                        column.clone() / 2
                    } else {
                        column.clone()
                    };
                    let coords = coords_at(row.clone(), stored_column.clone());
                    let inside = row.lt(&rows).and(stored_column.lt(&stored_n));
                    store_epilogue_element(context, &mut body, (output, candidates), (stored, &dims), coords, inside)?;
                }
            }
        }
    }
    Ok(body)
}

/// A shared array of pipeline stages, aligned to 128 bytes (the swizzle's
/// bank groups are offsets within 128-byte lines).
fn add_stage_array(context: &mut KernelContext, name: &str, dtype: DType, elements: i64) -> usize {
    let index = context.add_shared(name, dtype, elements as usize);
    context.shared[index].align = 128;
    index
}

/// Where a k-step's fragments are read: the stage (an expression of the
/// k-tile) of the A and B stage arrays, in the tile's layout, by the warp at
/// `(warp_m, warp_n)` of the block's warp grid.
#[derive(Clone, Copy)]
struct StageView<'e> {
    geometry: Geometry,
    stage: &'e Expr,
    arrays: (usize, usize),
    tile: TileConfig,
    warp: (&'e Expr, &'e Expr),
}

/// The A and B fragments of k-step `kk` of a stage by `ldmatrix` x4 (16-bit
/// operands): per m16 tile four registers, per n8 tile two.
fn ldmatrix_fragments(
    context: &KernelContext,
    step: &mut Vec<Stmt>,
    view: &StageView,
    (group, in_group): (&Expr, &Expr),
    kk: i64,
) -> (Vec<Vec<kernel::Var>>, Vec<Vec<kernel::Var>>) {
    let StageView { geometry, stage, arrays: (a_stages, b_stages), tile, warp: (warp_m, warp_n) } = *view;
    let (mt, nt) = tile.mma_tiles();
    let (warp_rows, warp_columns) = (tile.bm / tile.warps_m, tile.bn / tile.warps_n);
    let bk = geometry.bk;
    // A: matrix q of the x4 is rows (q % 2)·8.. of the m16 tile, k chunk 2kk + q / 2.
    let mut a_registers = Vec::new();
    for mi in 0..mt {
        let row = warp_m.clone() * warp_rows + mi * 16 + (group.clone() % 2) * 8 + in_group.clone();
        let chunk = group.clone() / 2 + 2 * kk;
        let vars: Vec<kernel::Var> = (0..4).map(|_| context.fresh_var()).collect();
        step.push(Stmt::LoadMatrix {
            vars: vars.clone(),
            array: a_stages,
            index: stage.clone() * (tile.bm * bk) + geometry.swizzled(row, chunk, build::i64(0)),
            transpose: false,
        });
        a_registers.push(vars);
    }
    // B: matrix q of the x4 is n8 tile 2p + q / 2 at k chunk 2kk + q % 2 (b0, b1 of two tiles).
    let mut b_registers = Vec::new();
    for pair in 0..nt / 2 {
        let row = warp_n.clone() * warp_columns + (group.clone() / 2 + pair * 2) * 8 + in_group.clone();
        let chunk = group.clone() % 2 + 2 * kk;
        let vars: Vec<kernel::Var> = (0..4).map(|_| context.fresh_var()).collect();
        step.push(Stmt::LoadMatrix {
            vars: vars.clone(),
            array: b_stages,
            index: stage.clone() * (tile.bn * bk) + geometry.swizzled(row, chunk, build::i64(0)),
            transpose: false,
        });
        b_registers.push(vec![vars[0], vars[1]]);
        b_registers.push(vec![vars[2], vars[3]]);
    }
    (a_registers, b_registers)
}

/// The tf32 fragments of k-step `kk` (m16n8k8) by one shared load per
/// element, rounded to tf32 (to nearest, ties away from zero, as
/// `cvt.rna.tf32.f32`): lane (g, t) reads rows g and g+8 at k t and t+4,
/// which the swizzle spreads over all 32 banks.
fn tf32_fragments(
    context: &KernelContext,
    step: &mut Vec<Stmt>,
    view: &StageView,
    lane: &Expr,
    kk: i64,
) -> (Vec<Vec<kernel::Var>>, Vec<Vec<kernel::Var>>) {
    let StageView { geometry, stage, arrays: (a_stages, b_stages), tile, warp: (warp_m, warp_n) } = *view;
    let (mt, nt) = tile.mma_tiles();
    let (warp_rows, warp_columns) = (tile.bm / tile.warps_m, tile.bn / tile.warps_n);
    let bk = geometry.bk;
    let (g, t) = (lane.clone() / 4, lane.clone() % 4);
    let mut element = |array: usize, stage_rows: i64, row: Expr, k: i64| -> kernel::Var {
        let k = t.clone() + (kk * 8 + k);
        let chunk = k.clone() / geometry.chunk;
        let within = k % geometry.chunk;
        let index = stage.clone() * (stage_rows * bk) + geometry.swizzled(row, chunk, within);
        let u32 = |value: i64| Expr::Cast(DType::U32, Box::new(build::i64(value)));
        let bits = context.fresh_var();
        let loaded = build::bitcast(DType::U32, Expr::SharedLoad { array, index: Box::new(index) });
        step.push(Stmt::Let { var: bits, dtype: DType::U32, value: loaded });
        let rounded = (build::var(bits) + u32(0x1000)) & u32(0xffff_e000);
        // Infinities keep their bits and NaNs become the canonical NaN, as cvt.rna.tf32 makes
        // them (rounding a payload could carry into the sign, truncating it could make an infinity).
        let finite = (build::var(bits) & u32(0x7f80_0000)).lt(u32(0x7f80_0000));
        let nan = u32(0x7f80_0000).lt(build::var(bits) & u32(0x7fff_ffff));
        let special = Expr::Select(Box::new(nan), Box::new(u32(0x7fff_ffff)), Box::new(build::var(bits)));
        let var = context.fresh_var();
        let value = Expr::Select(Box::new(finite), Box::new(rounded), Box::new(special));
        step.push(Stmt::Let { var, dtype: DType::U32, value });
        var
    };
    let mut a_registers = Vec::new();
    for mi in 0..mt {
        let row = |plus: i64| warp_m.clone() * warp_rows + (mi * 16 + plus) + g.clone();
        a_registers.push(vec![
            element(a_stages, tile.bm, row(0), 0),
            element(a_stages, tile.bm, row(8), 0),
            element(a_stages, tile.bm, row(0), 4),
            element(a_stages, tile.bm, row(8), 4),
        ]);
    }
    let mut b_registers = Vec::new();
    for ni in 0..nt {
        let row = warp_n.clone() * warp_columns + ni * 8 + g.clone();
        b_registers.push(vec![element(b_stages, tile.bn, row.clone(), 0), element(b_stages, tile.bn, row, 4)]);
    }
    (a_registers, b_registers)
}

/// Whether group `group` may multiply f32 as tf32 (`--precision tf32`).
pub fn allows_tf32(graph: &Graph, group: kiln_ir::GroupId) -> bool {
    graph.groups().get(&group).and_then(|g| g.notes.get("math")).is_some_and(|math| math == "tf32")
}
