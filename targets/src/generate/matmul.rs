//! Matmul groups: `C = A·B` (either input transposed) over broadcast batch
//! dims, with the epilogue applied to each accumulator. A block computes a
//! 32×32 tile of C with 256 threads, each holding a 2×2 register block; A
//! and B stream through shared memory in 32×16 and 16×32 tiles. This is the
//! f32 path and every target's fallback; tensor-core kernels replace it where
//! the hardware allows.
//!
//! Tile loads are coalesced whichever way an operand is stored: consecutive
//! threads read consecutive elements of its contiguous dimension (k for A
//! and for a transposed, n-by-k B; m for a transposed A; n for B). Shared
//! rows are padded — A's to 17 words, B's to 34 — so neither the stores of
//! either mapping nor the inner loop's reads conflict on banks (the
//! machine's counters check it: `compiler/tests/compiler/machine.rs`).

use kiln_ir::graph::{NodeIndex, ValueRef};
use kiln_ir::{DType, Dim, Op};
use kiln_runtime::kernel::{self, build, Expr, Special, Stmt};

use super::context::{broadcast_coords, linear_index, unravel, KernelContext, Value};

const TILE: i64 = 32;
const DEPTH: i64 = 16;
const THREADS: u32 = 256;
/// Words between rows of the A tile (32 rows of `DEPTH`): odd, so 32 rows at one k fall in 32 banks.
const A_STRIDE: i64 = DEPTH + 1;
/// Words between rows of the B tile (`DEPTH` rows of 32): 34 ≡ 2 (mod 32), so 16 rows at
/// two adjacent columns fall in 32 banks.
const B_STRIDE: i64 = TILE + 2;

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
    let tiles = |d: &Dim| (d + &Dim::constant(TILE - 1)).floor_div(TILE).expect("positive");
    let (tiles_m, tiles_n) = (tiles(&rows_dim), tiles(&n_dim));
    context.block_threads = THREADS;
    let grid_batches = if flatten { Dim::constant(1) } else { batches.clone() };
    context.grid_blocks = &(&grid_batches * &tiles_m) * &tiles_n;
    let a_tile = context.add_shared("a_tile", DType::F32, (TILE * A_STRIDE) as usize);
    let b_tile = context.add_shared("b_tile", DType::F32, (DEPTH * B_STRIDE) as usize);

    let mut body = Vec::new();
    let i64v = |expr: Expr| Value { expr, dtype: DType::I64 };
    let (m, n, k) = (context.dim(&m_dim)?, context.dim(&n_dim)?, context.dim(&k_dim)?);
    let rows = context.dim(&rows_dim)?;
    let (tm_count, tn_count) = (context.dim(&tiles_m)?, context.dim(&tiles_n)?);
    let block = context.bind(&mut body, i64v(build::cast(DType::I64, build::special(Special::BlockIndex))));
    let thread = context.bind(&mut body, i64v(build::cast(DType::I64, build::special(Special::ThreadIndex))));
    let tile_n =
        context.bind(&mut body, i64v(build::binary(kernel::BinaryOp::Rem, block.expr.clone(), tn_count.clone())));
    let tile_m = context.bind(
        &mut body,
        i64v(build::binary(
            kernel::BinaryOp::Rem,
            build::binary(kernel::BinaryOp::Div, block.expr.clone(), tn_count.clone()),
            tm_count.clone(),
        )),
    );
    let batch_dims: Vec<Expr> = batch_shape.iter().map(|d| context.dim(d)).collect::<Result<_, _>>()?;
    let block_batch_coords: Vec<Expr> = if flatten {
        Vec::new()
    } else {
        let batch = context.bind(
            &mut body,
            i64v(build::binary(kernel::BinaryOp::Div, block.expr.clone(), build::mul(tn_count, tm_count))),
        );
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
    let row_in_tile = context.bind(&mut body, i64v(thread.expr.clone() / 16));
    let column_in_tile = context.bind(&mut body, i64v(thread.expr.clone() % 16));

    let accumulators: Vec<kernel::Var> = (0..4).map(|_| context.fresh_var()).collect();
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
    // Each thread loads two elements of each tile (512 elements, 256 threads).
    for part in 0..2 {
        let element = thread.expr.clone() + part * THREADS as i64;
        // A tile: 32 rows (m) × 16 columns (k); threads run along A's contiguous dim.
        let (row_in, k_in) = if transpose_a {
            (element.clone() % TILE, element.clone() / TILE)
        } else {
            (element.clone() / DEPTH, element.clone() % DEPTH)
        };
        let row = tile_m.expr.clone() * TILE + row_in.clone();
        let column = build::var(k0) + k_in.clone();
        let (a_batch, a_row) = split_row(row.clone());
        tile_loop.extend(guarded_tile_load(
            context,
            a_tile,
            row_in * A_STRIDE + k_in,
            &row,
            &rows,
            &column,
            &k,
            |context, body| operand(context, body, a, transpose_a, &a_batch, a_row, column.clone()),
        )?);
        // B tile: 16 rows (k) × 32 columns (n); threads run along B's contiguous dim.
        let (k_in, column_in) = if transpose_b {
            (element.clone() % DEPTH, element.clone() / DEPTH)
        } else {
            (element.clone() / TILE, element.clone() % TILE)
        };
        let row = build::var(k0) + k_in.clone();
        let column = tile_n.expr.clone() * TILE + column_in.clone();
        let slot = k_in * B_STRIDE + column_in;
        // B's batch coords: the block's (a weight has none).
        let b_batch = if flatten { vec![build::i64(0); batch_dims.len()] } else { block_batch_coords.clone() };
        tile_loop.extend(guarded_tile_load(context, b_tile, slot, &row, &k, &column, &n, |context, body| {
            operand(context, body, b, transpose_b, &b_batch, row.clone(), column.clone())
        })?);
    }
    tile_loop.push(Stmt::Barrier);
    let kk = context.fresh_var();
    let mut inner = Vec::new();
    for i in 0..2 {
        for j in 0..2 {
            let a_index = (row_in_tile.expr.clone() * 2 + i) * A_STRIDE + build::var(kk);
            let b_index = build::var(kk) * B_STRIDE + (column_in_tile.expr.clone() * 2 + j);
            let acc = accumulators[(i * 2 + j) as usize];
            let a = Expr::SharedLoad { array: a_tile, index: Box::new(a_index) };
            let b = Expr::SharedLoad { array: b_tile, index: Box::new(b_index) };
            inner.push(Stmt::Assign { var: acc, value: build::var(acc) + a * b });
        }
    }
    tile_loop.push(Stmt::For { var: kk, start: build::i64(0), end: build::i64(DEPTH), step: 1, body: inner });
    tile_loop.push(Stmt::Barrier);
    body.push(Stmt::For { var: k0, start: build::i64(0), end: k.clone(), step: DEPTH, body: tile_loop });

    // Epilogue: the matmul's result is this thread's accumulator at its (row, column).
    let position = |i: i64, j: i64| {
        let row = tile_m.expr.clone() * TILE + (row_in_tile.expr.clone() * 2 + i);
        let column = tile_n.expr.clone() * TILE + (column_in_tile.expr.clone() * 2 + j);
        (row, column)
    };
    let entries = (0..4)
        .map(|r| {
            let (row, column) = position(r / 2, r % 2);
            let (mut coords, row) = split_row(row);
            coords.push(row);
            coords.push(column);
            (coords, Value { expr: build::var(accumulators[r as usize]), dtype: DType::F32 })
        })
        .collect();
    context.overrides.insert(output, entries);
    for stored in context.contract.outputs.clone() {
        let dims = context.dims(stored)?;
        let stored_columns = context.graph.value_type(stored).shape.last().cloned().ok_or("a scalar output")?;
        if dims.len() != rank {
            return Err(format!("matmul group output `{}` has another rank", context.graph.value_name(stored)));
        }
        // Outputs as wide as the matmul take one element per accumulator; a
        // SwiGLU over interleaved gate/up columns takes one per column pair.
        let pairs = if stored_columns == n_dim {
            false
        } else if &stored_columns * &Dim::constant(2) == n_dim {
            true
        } else {
            return Err(format!(
                "matmul group output `{}` is neither as wide as the matmul nor half of it",
                context.graph.value_name(stored)
            ));
        };
        let stored_n = context.dim(&stored_columns)?;
        for i in 0..2 {
            for j in 0..if pairs { 1 } else { 2 } {
                let (flat_row, column) = position(i, j);
                let column = if pairs { column / 2 } else { column };
                let (mut coords, row) = split_row(flat_row.clone());
                coords.push(row);
                coords.push(column.clone());
                let mut stores = Vec::new();
                let value = context.value_at(&mut stores, stored, &coords)?;
                stores.push(Stmt::Store {
                    buffer: context.buffer(stored)?,
                    index: linear_index(&coords, &dims),
                    value: value.expr,
                });
                let inside = flat_row.lt(&rows).and(column.lt(&stored_n));
                body.push(Stmt::If { condition: inside, then: stores, otherwise: Vec::new() });
            }
        }
    }
    Ok(body)
}

/// `tile[slot] = inside ? operand : 0`, reading the operand only inside.
#[allow(clippy::too_many_arguments)]
fn guarded_tile_load(
    context: &mut KernelContext,
    tile: usize,
    slot: Expr,
    row: &Expr,
    rows: &Expr,
    column: &Expr,
    columns: &Expr,
    operand: impl FnOnce(&KernelContext, &mut Vec<Stmt>) -> Result<Value, String>,
) -> Result<Vec<Stmt>, String> {
    let value = context.fresh_var();
    let mut then = Vec::new();
    let loaded = operand(context, &mut then)?;
    then.push(Stmt::Assign { var: value, value: loaded.expr });
    let inside = row.clone().lt(rows).and(column.clone().lt(columns));
    Ok(vec![
        Stmt::Let { var: value, dtype: DType::F32, value: build::f32(0.0) },
        Stmt::If { condition: inside, then, otherwise: Vec::new() },
        Stmt::SharedStore { array: tile, index: slot, value: build::var(value) },
    ])
}
