//! Matmuls with few rows — a decode step's projections and LM head, where
//! `M = batch·seq` is 1 to 4 — against an n-by-k weight (`x · Wᵀ`, the
//! layout of a Linear layer's weight). The tiled kernel would pad those rows
//! to 32 and stream every weight row through shared memory for them; here
//! each weight element is read once, straight from global memory, and used
//! for every row.
//!
//! A warp owns [`COLUMNS`] consecutive output columns; its lanes stride
//! along k (consecutive lanes read consecutive weight elements: one
//! coalesced 128-byte request per weight row and step) and keep one partial
//! sum per (row, column); a reduce-scatter of shuffles ([`reduce_scatter`])
//! adds the lanes' partials so that each group of lanes ends with one
//! (row, column) total, and one lane of each group applies the epilogue and
//! stores. Rows past the bound `M` read row `M − 1` (always in bounds) and
//! are never stored.

use kiln_ir::graph::{NodeIndex, ValueRef};
use kiln_ir::{DType, Dim, Graph, Op};
use kiln_runtime::kernel::{self, build, Expr, Special, Stmt};

use super::context::{linear_index, unravel, KernelContext, Value};
use super::matmul::StoredOutput;

/// Output columns per warp.
const COLUMNS: i64 = 8;
const WARPS: i64 = 4;
const THREADS: u32 = (WARPS * 32) as u32;

/// The rows dim (`batch·seq`, the matmul's M with its batch dims folded in)
/// when `anchor` is a matmul a skinny kernel can compute: A of any batch
/// shape against a 2-D n-by-k weight, or `None`.
pub fn rows_dim(graph: &Graph, anchor: NodeIndex) -> Option<Dim> {
    let Op::MatMul { transpose_a: false, transpose_b: true } = graph.node(anchor).op else { return None };
    let inputs = graph.inputs_of(anchor);
    if graph.value_type(inputs[1]).rank() != 2 || graph.value_type(inputs[0]).rank() < 2 {
        return None;
    }
    let shape = &graph.value_type(ValueRef::new(anchor, 0)).shape;
    Some(shape[..shape.len() - 1].iter().fold(Dim::constant(1), |p, d| &p * d))
}

/// The kernel for at most `rows` rows (the variant's bucket guarantees it).
pub fn generate(context: &mut KernelContext, anchor: NodeIndex, rows: i64) -> Result<Vec<Stmt>, String> {
    let graph = context.graph;
    let rows_dim = rows_dim(graph, anchor).ok_or("not a matmul against an n-by-k weight")?;
    let inputs = graph.inputs_of(anchor);
    let (a, b) = (inputs[0], inputs[1]);
    let output = ValueRef::new(anchor, 0);
    let out_shape = graph.value_type(output).shape.clone();
    let rank = out_shape.len();
    let (m_dim, n_dim) = (out_shape[rank - 2].clone(), out_shape[rank - 1].clone());
    let k_dim = graph.value_type(b).shape[1].clone();
    let batch_shape = out_shape[..rank - 2].to_vec();
    let warps_dim = (&n_dim + &Dim::constant(COLUMNS - 1)).floor_div(COLUMNS).expect("positive");
    context.block_threads = THREADS;
    context.grid_blocks = (&warps_dim + &Dim::constant(WARPS - 1)).floor_div(WARPS).expect("positive");

    let mut body = Vec::new();
    let i64v = |expr: Expr| Value { expr, dtype: DType::I64 };
    let (m, n, k, total_rows) =
        (context.dim(&m_dim)?, context.dim(&n_dim)?, context.dim(&k_dim)?, context.dim(&rows_dim)?);
    let batch_dims: Vec<Expr> = batch_shape.iter().map(|d| context.dim(d)).collect::<Result<_, _>>()?;
    let block = context.bind(&mut body, i64v(build::cast(DType::I64, build::special(Special::BlockIndex))));
    let thread = context.bind(&mut body, i64v(build::cast(DType::I64, build::special(Special::ThreadIndex))));
    let lane = context.bind(&mut body, i64v(thread.expr.clone() % 32)).expr;
    let first_column =
        context.bind(&mut body, i64v((block.expr.clone() * WARPS + thread.expr.clone() / 32) * COLUMNS)).expr;
    // Row `r` of the flattened rows as A's coordinates (batch coords, row).
    let a_coords = |row: Expr, column: Expr| {
        let mut coords = if batch_dims.is_empty() { Vec::new() } else { unravel(row.clone() / &m, &batch_dims) };
        coords.push(if batch_dims.is_empty() { row } else { row % &m });
        coords.push(column);
        coords
    };
    // Rows past the bound read the last row (M ≥ 1 inside the bucket).
    let read_rows: Vec<Expr> = (0..rows)
        .map(|r| {
            if r == 0 {
                build::i64(0)
            } else {
                build::binary(kernel::BinaryOp::Min, build::i64(r), total_rows.clone() - 1)
            }
        })
        .map(|row| context.bind(&mut body, i64v(row)).expr)
        .collect();
    // Columns past N read the last column.
    let read_columns: Vec<Expr> = (0..COLUMNS)
        .map(|c| build::binary(kernel::BinaryOp::Min, first_column.clone() + c, n.clone() - 1))
        .map(|column| context.bind(&mut body, i64v(column)).expr)
        .collect();

    let partials: Vec<kernel::Var> = (0..rows * COLUMNS).map(|_| context.fresh_var()).collect();
    for &partial in &partials {
        body.push(Stmt::Let { var: partial, dtype: DType::F32, value: build::f32(0.0) });
    }
    // The k loop steps by a warp's width, uniformly: lane `l` takes
    // `k = k0 + l`, guarded only when K is not a multiple of 32, so the
    // partial sums update in place in the common case.
    let k0 = context.fresh_var();
    let k_lane = build::var(k0) + lane.clone();
    let whole_steps = k_dim.as_constant().is_some_and(|k| k % 32 == 0);
    let mut step = Vec::new();
    let a_values: Vec<Value> = read_rows
        .iter()
        .map(|row| {
            let value = context.value_at(&mut step, a, &a_coords(row.clone(), k_lane.clone()))?;
            Ok(context.bind(&mut step, value))
        })
        .collect::<Result<_, String>>()?;
    // A stored weight is read at `(column·K + lane) + k0`: a per-lane part
    // fixed for the whole loop plus the uniform step.
    let weight_buffer = context.buffer(b).ok().filter(|_| graph.value_type(b).dtype == DType::F32);
    for (c, column) in read_columns.iter().enumerate() {
        let weight = match weight_buffer {
            Some(buffer) => {
                let fixed = context.bind(&mut body, i64v(column.clone() * &k + lane.clone())).expr;
                Value::float(build::load(buffer, fixed + build::var(k0)))
            }
            None => context.value_at(&mut step, b, &[column.clone(), k_lane.clone()])?,
        };
        let weight = context.bind(&mut step, weight);
        for (r, a_value) in a_values.iter().enumerate() {
            let partial = partials[r * COLUMNS as usize + c];
            let product = a_value.expr.clone() * weight.expr.clone();
            step.push(Stmt::Assign { var: partial, value: build::var(partial) + product });
        }
    }
    let step =
        if whole_steps { step } else { vec![Stmt::If { condition: k_lane.lt(&k), then: step, otherwise: Vec::new() }] };
    body.push(Stmt::For { var: k0, start: build::i64(0), end: k, step: 32, body: step });
    let (total, index_shift) = reduce_scatter(context, &mut body, &partials, &lane);

    // Epilogue: the lanes holding a total store it (lane `l` holds partial
    // `l >> index_shift`, i.e. row `p / COLUMNS`, column `p % COLUMNS`).
    let partial_index = context.bind(&mut body, i64v(lane.clone() >> index_shift as i64)).expr;
    let row = context.bind(&mut body, i64v(partial_index.clone() / COLUMNS)).expr;
    let column_in_warp = context.bind(&mut body, i64v(partial_index % COLUMNS)).expr;
    let column = context.bind(&mut body, i64v(first_column.clone() + column_in_warp.clone())).expr;
    // The total of the next column (for a pair's second element) is one
    // column over, `1 << index_shift` lanes away; every lane takes part.
    let next_total = context.fresh_var();
    let next = Expr::ShuffleXor { value: Box::new(build::var(total)), mask: 1 << index_shift };
    body.push(Stmt::Let { var: next_total, dtype: DType::F32, value: next });
    let holder = (lane.clone() & ((1i64 << index_shift) - 1)).equals(0);
    let mut stores = Vec::new();
    for stored in context.contract.outputs.clone() {
        let StoredOutput { dims, pairs, columns: stored_n } = StoredOutput::of(context, stored, rank, &n_dim)?;
        let mut coords = a_coords(row.clone(), column.clone());
        // The store reads the matmul at its own element, or at both columns
        // of its pair: only those totals are candidates.
        let mut candidates = vec![(coords.clone(), Value::float(build::var(total)))];
        if pairs {
            let next_coords = a_coords(row.clone(), column.clone() + 1);
            candidates.push((next_coords, Value::float(build::var(next_total))));
            *coords.last_mut().expect("a column") = column.clone() / 2;
        }
        context.overrides.insert(output, candidates);
        let mut store = Vec::new();
        let value = context.value_at(&mut store, stored, &coords)?;
        store.push(Stmt::Store {
            buffer: context.buffer(stored)?,
            index: linear_index(&coords, &dims),
            value: value.expr,
        });
        let stored_column = coords.last().expect("a column").clone();
        let mut inside = holder.clone().and(row.clone().lt(&total_rows)).and(stored_column.lt(&stored_n));
        if pairs {
            inside = inside.and((column_in_warp.clone() % 2).equals(0));
        }
        stores.push(Stmt::If { condition: inside, then: store, otherwise: Vec::new() });
    }
    body.extend(stores);
    Ok(body)
}

/// Adds each partial over the warp's 32 lanes, leaving one total per lane
/// group: halving steps at lane distances 16, 8, … swap half the remaining
/// partials with the partner lane (each keeps the half its lane bit picks),
/// then plain butterfly steps add over the lanes left. `partials.len()` is a
/// power of two up to 32; returns the variable holding the lane's total and
/// `s` such that lane `l` holds partial `l >> s`. Costs about two selects,
/// a shuffle and an add per partial, where a butterfly per partial costs
/// five shuffles and five adds.
fn reduce_scatter(
    context: &KernelContext,
    body: &mut Vec<Stmt>,
    partials: &[kernel::Var],
    lane: &Expr,
) -> (kernel::Var, u32) {
    assert!(partials.len().is_power_of_two() && partials.len() <= 32, "a power of two of partials");
    let mut values = partials.to_vec();
    let mut offset = 16u32;
    while values.len() > 1 {
        let half = values.len() / 2;
        let upper = context.fresh_var();
        body.push(Stmt::Let {
            var: upper,
            dtype: DType::Bool,
            value: (lane.clone() & offset as i64).equals(offset as i64),
        });
        let mut kept = Vec::with_capacity(half);
        for i in 0..half {
            let (low, high) = (build::var(values[i]), build::var(values[i + half]));
            let select = |upper_value: Expr, lower_value: Expr| {
                Expr::Select(Box::new(build::var(upper)), Box::new(upper_value), Box::new(lower_value))
            };
            // Send the half the partner keeps; keep the half this lane's bit picks.
            let sent = context.fresh_var();
            body.push(Stmt::Let { var: sent, dtype: DType::F32, value: select(low.clone(), high.clone()) });
            let received = Expr::ShuffleXor { value: Box::new(build::var(sent)), mask: offset };
            let sum = context.fresh_var();
            body.push(Stmt::Let { var: sum, dtype: DType::F32, value: select(high, low) + received });
            kept.push(sum);
        }
        values = kept;
        offset /= 2;
    }
    let total = values[0];
    let shift = 5 - partials.len().trailing_zeros();
    while offset >= 1 {
        let other = Expr::ShuffleXor { value: Box::new(build::var(total)), mask: offset };
        body.push(Stmt::Assign { var: total, value: build::var(total) + other });
        offset /= 2;
    }
    (total, shift)
}
