//! Matmul groups: `C = A·B` (either input transposed) over broadcast batch
//! dims, with the epilogue applied to each accumulator. A block of 256
//! threads computes a 32×128 tile of C, each thread a 4×4 register block; A
//! and B stream through shared memory in 32×16 and 16×128 tiles. This is the
//! f32 path and every target's fallback; tensor-core kernels replace it where
//! the hardware allows.
//!
//! Warp `w` owns rows `w, w+8, w+16, w+24` of the tile and lane `l` the
//! columns `l, l+32, l+64, l+96`: the inner loop's A reads are broadcasts
//! (one address per warp) and its B reads 32 consecutive words, so the loop
//! is free of bank conflicts, and the epilogue's stores are coalesced. A
//! SwiGLU epilogue over interleaved gate/up columns takes each pair's odd
//! column from the next lane by a shuffle; the even lanes store.
//!
//! Tile loads are coalesced whichever way an operand is stored: consecutive
//! threads read consecutive elements of its contiguous dimension (k for A
//! and for a transposed, n-by-k B; m for a transposed A; n for B). Shared
//! rows are padded — A's to 17 words, B's to 130 — so the stores of either
//! mapping conflict at most 2-way (the machine's counters check it:
//! `compiler/tests/compiler/machine.rs`). Bounds guards a constant dim makes
//! always true (K a multiple of 16, N of 128) are left out.

use kiln_ir::graph::{NodeIndex, ValueRef};
use kiln_ir::{DType, Dim, Op};
use kiln_runtime::kernel::{self, build, Expr, Special, Stmt};

use super::context::{broadcast_coords, linear_index, unravel, KernelContext, Value};

/// Rows of C per block.
const TILE_M: i64 = 32;
/// Columns of C per block.
const TILE_N: i64 = 128;
/// The k extent of one shared-memory stage.
const DEPTH: i64 = 16;
/// Rows and columns of C per thread.
const BLOCK: i64 = 4;
/// Threads along M (one warp per row group) and along N (a warp's lanes): `8 × 32 = 256`.
const THREADS_M: i64 = TILE_M / BLOCK;
const THREADS_N: i64 = TILE_N / BLOCK;
const THREADS: u32 = (THREADS_M * THREADS_N) as u32;
/// Words between rows of the A tile (32 rows of `DEPTH`): odd, so 32 rows at one k fall in 32 banks.
const A_STRIDE: i64 = DEPTH + 1;
/// Words between rows of the B tile (`DEPTH` rows of 128): ≡ 2 (mod 32), so 16 rows at
/// two adjacent columns fall in 32 banks.
const B_STRIDE: i64 = TILE_N + 2;

/// The tile row of a thread's `i`-th accumulator row (`row_group` = thread / 32, its warp).
fn tile_row(row_group: &Expr, i: i64) -> Expr {
    row_group.clone() + i * THREADS_M
}

/// The tile column of a thread's `j`-th accumulator column (`column_group` = thread % 32, its lane).
fn tile_column(column_group: &Expr, j: i64) -> Expr {
    column_group.clone() + j * THREADS_N
}

pub fn generate(context: &mut KernelContext, anchor: NodeIndex) -> Result<Vec<Stmt>, String> {
    let graph = context.graph;
    let Op::MatMul { transpose_a, transpose_b } = graph.node(anchor).op else { return Err("not a matmul".into()) };
    let inputs = graph.inputs_of(anchor);
    let (a, b) = (inputs[0], inputs[1]);
    let output = ValueRef::new(anchor, 0);
    let out_shape = graph.value_type(output).shape.clone();
    if graph.value_type(a).rank() < 2 || graph.value_type(b).rank() < 2 {
        return Err("matmul of a vector has no kernel yet".into());
    }
    let rank = out_shape.len();
    let (m_dim, n_dim) = (out_shape[rank - 2].clone(), out_shape[rank - 1].clone());
    let a_shape = &graph.value_type(a).shape;
    let k_dim = if transpose_a { a_shape[a_shape.len() - 2].clone() } else { a_shape[a_shape.len() - 1].clone() };
    let batch_shape = out_shape[..rank - 2].to_vec();
    let batches = batch_shape.iter().fold(Dim::constant(1), |p, d| &p * d);
    // A weight (B without batch dims) shared by every batch: the batch dims
    // fold into M, so short sequences fill whole row tiles and the weight
    // streams once per 32 rows of all sequences, not once per sequence.
    let flatten = !batch_shape.is_empty() && graph.value_type(b).rank() == 2;
    let rows_dim = if flatten { &batches * &m_dim } else { m_dim.clone() };
    let tiles = |d: &Dim, tile: i64| (d + &Dim::constant(tile - 1)).floor_div(tile).expect("positive");
    let (tiles_m, tiles_n) = (tiles(&rows_dim, TILE_M), tiles(&n_dim, TILE_N));
    context.block_threads = THREADS;
    let grid_batches = if flatten { Dim::constant(1) } else { batches.clone() };
    context.grid_blocks = &(&grid_batches * &tiles_m) * &tiles_n;
    let a_tile = context.add_shared("a_tile", DType::F32, (TILE_M * A_STRIDE) as usize);
    let b_tile = context.add_shared("b_tile", DType::F32, (DEPTH * B_STRIDE) as usize);
    // Guards a constant dim makes always true are left out.
    let divides = |dim: &Dim, tile: i64| dim.as_constant().is_some_and(|d| d % tile == 0);
    let (k_whole, n_whole, rows_whole) = (divides(&k_dim, DEPTH), divides(&n_dim, TILE_N), divides(&rows_dim, TILE_M));

    let mut body = Vec::new();
    let i64v = |expr: Expr| Value { expr, dtype: DType::I64 };
    let (m, n, k) = (context.dim(&m_dim)?, context.dim(&n_dim)?, context.dim(&k_dim)?);
    let rows = context.dim(&rows_dim)?;
    let (tm_count, tn_count) = (context.dim(&tiles_m)?, context.dim(&tiles_n)?);
    let block = context.bind(&mut body, i64v(build::cast(DType::I64, build::special(Special::BlockIndex))));
    let thread = context.bind(&mut body, i64v(build::cast(DType::I64, build::special(Special::ThreadIndex))));
    let tile_n = context.bind(&mut body, i64v(block.expr.clone() % &tn_count));
    let tile_m = context.bind(&mut body, i64v((block.expr.clone() / &tn_count) % &tm_count));
    let batch_dims: Vec<Expr> = batch_shape.iter().map(|d| context.dim(d)).collect::<Result<_, _>>()?;
    let block_batch_coords: Vec<Expr> = if flatten {
        Vec::new()
    } else {
        let batch = context.bind(&mut body, i64v(block.expr.clone() / (tn_count * tm_count)));
        unravel(batch.expr.clone(), &batch_dims).into_iter().map(|c| context.bind(&mut body, i64v(c)).expr).collect()
    };
    // A row of the (possibly flattened) M dim as batch coordinates and a row of its matrix.
    let split_row = |row: Expr| -> (Vec<Expr>, Expr) {
        if flatten {
            (unravel(row.clone() / &m, &batch_dims), row % &m)
        } else {
            (block_batch_coords.clone(), row)
        }
    };
    let row_group = context.bind(&mut body, i64v(thread.expr.clone() / THREADS_N)).expr;
    let column_group = context.bind(&mut body, i64v(thread.expr.clone() % THREADS_N)).expr;

    let accumulators: Vec<kernel::Var> = (0..BLOCK * BLOCK).map(|_| context.fresh_var()).collect();
    for &acc in &accumulators {
        body.push(Stmt::Let { var: acc, dtype: DType::F32, value: build::f32(0.0) });
    }
    // The element of an operand at (row, column) of its matrix, through its transposes and batch broadcast.
    let operand = |context: &KernelContext,
                   body: &mut Vec<Stmt>,
                   value: ValueRef,
                   transposed: bool,
                   batch_coords: &[Expr],
                   row: Expr,
                   column: Expr|
     -> Result<Value, String> {
        let shape = &context.graph.value_type(value).shape;
        let mut full = batch_coords.to_vec();
        if transposed {
            full.push(column);
            full.push(row);
        } else {
            full.push(row);
            full.push(column);
        }
        let mut full_shape = batch_shape.clone();
        full_shape.extend_from_slice(&shape[shape.len() - 2..]);
        let coords = broadcast_coords(&full, &full_shape, shape);
        context.value_at(body, value, &coords)
    };
    let k0 = context.fresh_var();
    let mut tile_loop = Vec::new();
    // A tile: 32 rows (m) × 16 columns (k), four elements per thread;
    // threads run along A's contiguous dim.
    for part in 0..(TILE_M * DEPTH) / THREADS as i64 {
        let element = thread.expr.clone() + part * THREADS as i64;
        let (row_in, k_in) = if transpose_a {
            (element.clone() % TILE_M, element.clone() / TILE_M)
        } else {
            (element.clone() / DEPTH, element.clone() % DEPTH)
        };
        let row = tile_m.expr.clone() * TILE_M + row_in.clone();
        let column = build::var(k0) + k_in.clone();
        let (a_batch, a_row) = split_row(row.clone());
        let guard = Guard::new().below(&row, &rows, rows_whole).below(&column, &k, k_whole);
        tile_loop.extend(guarded_tile_load(context, a_tile, row_in * A_STRIDE + k_in, guard, |context, body| {
            operand(context, body, a, transpose_a, &a_batch, a_row, column.clone())
        })?);
    }
    // B tile: 16 rows (k) × 64 columns (n), eight elements per thread;
    // threads run along B's contiguous dim.
    for part in 0..(DEPTH * TILE_N) / THREADS as i64 {
        let element = thread.expr.clone() + part * THREADS as i64;
        let (k_in, column_in) = if transpose_b {
            (element.clone() % DEPTH, element.clone() / DEPTH)
        } else {
            (element.clone() / TILE_N, element.clone() % TILE_N)
        };
        let row = build::var(k0) + k_in.clone();
        let column = tile_n.expr.clone() * TILE_N + column_in.clone();
        let slot = k_in * B_STRIDE + column_in;
        // B's batch coords: the block's (a weight has none).
        let b_batch = if flatten { vec![build::i64(0); batch_dims.len()] } else { block_batch_coords.clone() };
        let guard = Guard::new().below(&row, &k, k_whole).below(&column, &n, n_whole);
        tile_loop.extend(guarded_tile_load(context, b_tile, slot, guard, |context, body| {
            operand(context, body, b, transpose_b, &b_batch, row.clone(), column.clone())
        })?);
    }
    tile_loop.push(Stmt::Barrier);
    let kk = context.fresh_var();
    let mut inner = Vec::new();
    let a_values: Vec<kernel::Var> = (0..BLOCK).map(|_| context.fresh_var()).collect();
    let b_values: Vec<kernel::Var> = (0..BLOCK).map(|_| context.fresh_var()).collect();
    for i in 0..BLOCK {
        let index = tile_row(&row_group, i) * A_STRIDE + build::var(kk);
        let value = Expr::SharedLoad { array: a_tile, index: Box::new(index) };
        inner.push(Stmt::Let { var: a_values[i as usize], dtype: DType::F32, value });
    }
    for j in 0..BLOCK {
        let index = build::var(kk) * B_STRIDE + tile_column(&column_group, j);
        let value = Expr::SharedLoad { array: b_tile, index: Box::new(index) };
        inner.push(Stmt::Let { var: b_values[j as usize], dtype: DType::F32, value });
    }
    for i in 0..BLOCK {
        for j in 0..BLOCK {
            let acc = accumulators[(i * BLOCK + j) as usize];
            let product = build::var(a_values[i as usize]) * build::var(b_values[j as usize]);
            inner.push(Stmt::Assign { var: acc, value: build::var(acc) + product });
        }
    }
    tile_loop.push(Stmt::For { var: kk, start: build::i64(0), end: build::i64(DEPTH), step: 1, body: inner });
    tile_loop.push(Stmt::Barrier);
    body.push(Stmt::For { var: k0, start: build::i64(0), end: k.clone(), step: DEPTH, body: tile_loop });

    // Epilogue: the matmul's result is this thread's accumulator at its (row, column).
    let position = |i: i64, j: i64| {
        let row = tile_m.expr.clone() * TILE_M + tile_row(&row_group, i);
        let column = tile_n.expr.clone() * TILE_N + tile_column(&column_group, j);
        (row, column)
    };
    // A pair's second column (odd) is the next lane's: every lane fetches
    // its neighbour's accumulators, and the even lanes store the pairs.
    let outputs = context.contract.outputs.clone();
    let any_pairs = outputs.iter().any(|&o| StoredOutput::of(context, o, rank, &n_dim).is_ok_and(|s| s.pairs));
    let neighbours: Vec<kernel::Var> = if any_pairs {
        accumulators
            .iter()
            .map(|&acc| {
                let neighbour = context.fresh_var();
                let value = Expr::ShuffleXor { value: Box::new(build::var(acc)), mask: 1 };
                body.push(Stmt::Let { var: neighbour, dtype: DType::F32, value });
                neighbour
            })
            .collect()
    } else {
        Vec::new()
    };
    let coords_at = |row: Expr, column: Expr| {
        let (mut coords, row) = split_row(row);
        coords.push(row);
        coords.push(column);
        coords
    };
    for stored in outputs {
        let StoredOutput { dims, pairs, columns: stored_n } = StoredOutput::of(context, stored, rank, &n_dim)?;
        for i in 0..BLOCK {
            for j in 0..BLOCK {
                let (flat_row, column) = position(i, j);
                let accumulator = Value::float(build::var(accumulators[(i * BLOCK + j) as usize]));
                // The store reads the matmul at its own element, or at both
                // columns of its pair: only those accumulators are candidates.
                let mut candidates = vec![(coords_at(flat_row.clone(), column.clone()), accumulator)];
                let stored_column = if pairs {
                    let neighbour = Value::float(build::var(neighbours[(i * BLOCK + j) as usize]));
                    candidates.push((coords_at(flat_row.clone(), column.clone() + 1), neighbour));
                    column.clone() / 2
                } else {
                    column.clone()
                };
                let coords = coords_at(flat_row.clone(), stored_column.clone());
                let mut inside = flat_row.lt(&rows).and(stored_column.lt(&stored_n));
                if pairs {
                    inside = inside.and((column_group.clone() % 2).equals(0));
                }
                store_epilogue_element(context, &mut body, (output, candidates), (stored, &dims), coords, inside)?;
            }
        }
    }
    Ok(body)
}

/// Stores element `coords` of output `stored` (of dims `dims`) where
/// `inside` holds: the epilogue's value there, with the matmul's result
/// `output` read as the accumulators of `candidates` (`(coords, value)`).
pub(super) fn store_epilogue_element(
    context: &mut KernelContext,
    body: &mut Vec<Stmt>,
    (output, candidates): (ValueRef, Vec<(Vec<Expr>, Value)>),
    (stored, dims): (ValueRef, &[Expr]),
    coords: Vec<Expr>,
    inside: Expr,
) -> Result<(), String> {
    context.overrides.insert(output, candidates);
    let mut stores = Vec::new();
    let value = context.value_at(&mut stores, stored, &coords)?;
    stores.push(Stmt::Store { buffer: context.buffer(stored)?, index: linear_index(&coords, dims), value: value.expr });
    body.push(Stmt::If { condition: inside, then: stores, otherwise: Vec::new() });
    Ok(())
}

/// How a matmul group stores one of its outputs.
pub(super) struct StoredOutput {
    /// The output's dims as expressions.
    pub dims: Vec<Expr>,
    /// One element per column pair (a SwiGLU over interleaved gate/up
    /// columns) rather than one per matmul column.
    pub pairs: bool,
    /// The output's columns.
    pub columns: Expr,
}

impl StoredOutput {
    /// Output `stored` of a matmul of rank `rank` and `n_dim` columns: as
    /// wide as the matmul, or half as wide; anything else is refused.
    pub fn of(context: &KernelContext, stored: ValueRef, rank: usize, n_dim: &Dim) -> Result<StoredOutput, String> {
        let dims = context.dims(stored)?;
        let name = context.graph.value_name(stored);
        let columns = context.graph.value_type(stored).shape.last().cloned().ok_or("a scalar output")?;
        if dims.len() != rank {
            return Err(format!("matmul group output `{name}` has another rank"));
        }
        let pairs = if &columns == n_dim {
            false
        } else if &(&columns * &Dim::constant(2)) == n_dim {
            true
        } else {
            return Err(format!("matmul group output `{name}` is neither as wide as the matmul nor half of it"));
        };
        Ok(StoredOutput { dims, pairs, columns: context.dim(&columns)? })
    }
}

/// The conjunction of `index < bound` conditions a tile load needs (none
/// when every one is known to hold).
struct Guard(Option<Expr>);

impl Guard {
    fn new() -> Guard {
        Guard(None)
    }

    /// Adds `index < bound`, unless `always` says it holds for every index the kernel forms.
    fn below(self, index: &Expr, bound: &Expr, always: bool) -> Guard {
        if always {
            return self;
        }
        let condition = index.clone().lt(bound);
        Guard(Some(match self.0 {
            Some(previous) => previous.and(condition),
            None => condition,
        }))
    }
}

/// `tile[slot] = guard ? operand : 0`, reading the operand only where the guard holds.
fn guarded_tile_load(
    context: &mut KernelContext,
    tile: usize,
    slot: Expr,
    guard: Guard,
    operand: impl FnOnce(&KernelContext, &mut Vec<Stmt>) -> Result<Value, String>,
) -> Result<Vec<Stmt>, String> {
    let Some(inside) = guard.0 else {
        let mut body = Vec::new();
        let loaded = operand(context, &mut body)?;
        body.push(Stmt::SharedStore { array: tile, index: slot, value: loaded.expr });
        return Ok(body);
    };
    let value = context.fresh_var();
    let mut then = Vec::new();
    let loaded = operand(context, &mut then)?;
    then.push(Stmt::Assign { var: value, value: loaded.expr });
    Ok(vec![
        Stmt::Let { var: value, dtype: DType::F32, value: build::f32(0.0) },
        Stmt::If { condition: inside, then, otherwise: Vec::new() },
        Stmt::SharedStore { array: tile, index: slot, value: build::var(value) },
    ])
}
