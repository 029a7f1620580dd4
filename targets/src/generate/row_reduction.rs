//! Row reductions over the last axis — LayerNorm, RmsNorm, softmax and
//! last-axis reductions — with their prologue and epilogue: one block per row
//! (a warp for rows up to 256 elements), statistics in f32 reduced through
//! warp shuffles and shared memory.

use kiln_ir::graph::{NodeIndex, ValueRef};
use kiln_ir::{DType, Op, ReduceKind};
use kiln_runtime::kernel::{self, build, Expr, Special, Stmt};

use super::context::{linear_index, unravel, KernelContext, Value};

/// Threads per row: one warp for rows known to be short, four otherwise.
fn threads_for(columns: Option<i64>) -> u32 {
    match columns {
        Some(columns) if columns <= 256 => 32,
        _ => 128,
    }
}

pub fn generate(context: &mut KernelContext, anchor: NodeIndex) -> Result<Vec<Stmt>, String> {
    let graph = context.graph;
    let op = graph.node(anchor).op.clone();
    let input = graph.inputs_of(anchor)[0];
    let shape = graph.value_type(input).shape.clone();
    let last_axis = |axis: i64| axis == -1 || axis == shape.len() as i64 - 1;
    let reduced_last = match &op {
        Op::LayerNorm { axis, .. } | Op::RmsNorm { axis, .. } | Op::Softmax { axis } => last_axis(*axis),
        Op::Reduce { axes, .. } => axes.len() == 1 && last_axis(axes[0]),
        _ => false,
    };
    if !reduced_last {
        return Err(format!("{} over other than the last axis has no kernel yet", op.name()));
    }
    let row_length = shape.last().ok_or("a row reduction of a scalar")?.clone();
    let leading = &shape[..shape.len() - 1];
    let rows = leading.iter().fold(kiln_ir::Dim::constant(1), |p, d| &p * d);
    let threads = threads_for(row_length.as_constant());
    let columns = context.dim(&row_length)?;
    let accumulator_type = super::context::register_type(graph.value_type(input).dtype);
    context.block_threads = threads;
    context.grid_blocks = rows;
    let warps = (threads / 32) as usize;
    let partials = context.add_shared("partials", accumulator_type, warps.max(1));
    let mut body = Vec::new();
    let i64_value = |expr: Expr| Value { expr, dtype: DType::I64 };
    let row = context.bind(&mut body, i64_value(build::cast(DType::I64, build::special(Special::BlockIndex))));
    let thread = context.bind(&mut body, i64_value(build::cast(DType::I64, build::special(Special::ThreadIndex))));
    let leading_dims: Vec<Expr> = leading.iter().map(|d| context.dim(d)).collect::<Result<_, _>>()?;
    let row_coords: Vec<Expr> = unravel(row.expr.clone(), &leading_dims)
        .into_iter()
        .map(|c| context.bind(&mut body, i64_value(c)).expr)
        .collect();
    let coords_at = |column: &Expr| {
        let mut coords = row_coords.clone();
        coords.push(column.clone());
        coords
    };

    // One pass over the row: `term(x)` folded with `combine`, reduced across the block.
    let reduce_row = |context: &mut KernelContext,
                      body: &mut Vec<Stmt>,
                      initial: f32,
                      combine: kernel::BinaryOp,
                      term: &dyn Fn(Value) -> Expr|
     -> Result<Value, String> {
        let accumulator = context.fresh_var();
        let initial = match accumulator_type {
            DType::F32 => build::f32(initial),
            _ if initial == f32::NEG_INFINITY => build::i64(i64::MIN),
            _ if initial == f32::INFINITY => build::i64(i64::MAX),
            _ => build::i64(initial as i64),
        };
        body.push(Stmt::Let { var: accumulator, dtype: accumulator_type, value: initial });
        let column = context.fresh_var();
        let mut loop_body = Vec::new();
        let x = context.value_at(&mut loop_body, input, &coords_at(&build::var(column)))?;
        let x = context.bind(&mut loop_body, x);
        loop_body
            .push(Stmt::Assign { var: accumulator, value: build::binary(combine, build::var(accumulator), term(x)) });
        body.push(Stmt::For {
            var: column,
            start: thread.expr.clone(),
            end: columns.clone(),
            step: threads as i64,
            body: loop_body,
        });
        block_reduce(context, body, accumulator, accumulator_type, combine, warps, partials)
    };
    let inputs = graph.inputs_of(anchor);
    let float = |expr: Expr| Value { expr, dtype: DType::F32 };
    let row = Row { anchor, thread: &thread, threads, columns: &columns, coords: &row_coords };
    match &op {
        Op::LayerNorm { epsilon, .. } => {
            let sum = reduce_row(context, &mut body, 0.0, kernel::BinaryOp::Add, &|x| x.expr)?;
            let mean = context.bind(
                &mut body,
                float(build::binary(kernel::BinaryOp::Div, sum.expr, build::cast(DType::F32, columns.clone()))),
            );
            let mean_expr = mean.expr.clone();
            let squares = reduce_row(context, &mut body, 0.0, kernel::BinaryOp::Add, &|x| {
                let centered = build::binary(kernel::BinaryOp::Sub, x.expr, mean_expr.clone());
                build::mul(centered.clone(), centered)
            })?;
            let variance = build::binary(kernel::BinaryOp::Div, squares.expr, build::cast(DType::F32, columns.clone()));
            let inverse = context.bind(
                &mut body,
                float(build::unary(kernel::UnaryOp::Rsqrt, build::add(variance, build::f32(*epsilon)))),
            );
            write_row(context, &mut body, &row, &|context, loop_body, column| {
                let x = context.value_at(loop_body, input, &coords_at(&column))?;
                let scale = context.value_at(loop_body, inputs[1], std::slice::from_ref(&column))?;
                let mut y = build::mul(
                    build::mul(build::binary(kernel::BinaryOp::Sub, x.expr, mean.expr.clone()), inverse.expr.clone()),
                    scale.expr,
                );
                if let Some(&bias) = inputs.get(2) {
                    y = build::add(y, context.value_at(loop_body, bias, std::slice::from_ref(&column))?.expr);
                }
                Ok(float(y))
            })?;
        }
        Op::RmsNorm { epsilon, .. } => {
            let squares =
                reduce_row(context, &mut body, 0.0, kernel::BinaryOp::Add, &|x| build::mul(x.expr.clone(), x.expr))?;
            let mean_square =
                build::binary(kernel::BinaryOp::Div, squares.expr, build::cast(DType::F32, columns.clone()));
            let inverse = context.bind(
                &mut body,
                float(build::unary(kernel::UnaryOp::Rsqrt, build::add(mean_square, build::f32(*epsilon)))),
            );
            write_row(context, &mut body, &row, &|context, loop_body, column| {
                let x = context.value_at(loop_body, input, &coords_at(&column))?;
                let scale = context.value_at(loop_body, inputs[1], std::slice::from_ref(&column))?;
                Ok(float(build::mul(build::mul(x.expr, inverse.expr.clone()), scale.expr)))
            })?;
        }
        Op::Softmax { .. } => {
            let maximum = reduce_row(context, &mut body, f32::NEG_INFINITY, kernel::BinaryOp::Max, &|x| x.expr)?;
            let maximum_expr = maximum.expr.clone();
            let total = reduce_row(context, &mut body, 0.0, kernel::BinaryOp::Add, &|x| {
                build::unary(kernel::UnaryOp::Exp, build::binary(kernel::BinaryOp::Sub, x.expr, maximum_expr.clone()))
            })?;
            write_row(context, &mut body, &row, &|context, loop_body, column| {
                let x = context.value_at(loop_body, input, &coords_at(&column))?;
                let shifted = build::unary(
                    kernel::UnaryOp::Exp,
                    build::binary(kernel::BinaryOp::Sub, x.expr, maximum.expr.clone()),
                );
                Ok(float(build::binary(kernel::BinaryOp::Div, shifted, total.expr.clone())))
            })?;
        }
        Op::Reduce { kind, keep_dims, .. } => {
            let (initial, combine) = match kind {
                ReduceKind::Sum | ReduceKind::Mean => (0.0, kernel::BinaryOp::Add),
                ReduceKind::Max => (f32::NEG_INFINITY, kernel::BinaryOp::Max),
                ReduceKind::Min => (f32::INFINITY, kernel::BinaryOp::Min),
                ReduceKind::Prod => return Err("reduce_prod has no kernel yet".into()),
            };
            if kind == &ReduceKind::Mean && accumulator_type != DType::F32 {
                return Err("an integer mean has no kernel yet".into());
            }
            let total = reduce_row(context, &mut body, initial, combine, &|x| x.expr)?;
            let result = match kind {
                ReduceKind::Mean => {
                    float(build::binary(kernel::BinaryOp::Div, total.expr, build::cast(DType::F32, columns.clone())))
                }
                _ => total,
            };
            context.set_override(ValueRef::new(anchor, 0), result);
            let mut coords = row_coords.clone();
            if *keep_dims {
                coords.push(build::i64(0));
            }
            let mut then = Vec::new();
            for stored in context.contract.outputs.clone() {
                let dims = context.dims(stored)?;
                if dims.len() != coords.len() {
                    return Err("a reduction group writes values of another shape".into());
                }
                let value = context.value_at(&mut then, stored, &coords)?;
                then.push(Stmt::Store {
                    buffer: context.buffer(stored)?,
                    index: linear_index(&coords, &dims),
                    value: value.expr,
                });
            }
            body.push(Stmt::If {
                condition: build::binary(kernel::BinaryOp::Eq, thread.expr.clone(), build::i64(0)),
                then,
                otherwise: Vec::new(),
            });
        }
        _ => return Err(format!("{} is not a row reduction", op.name())),
    }
    Ok(body)
}

/// The anchor's value at a column of the row, computed in the loop body.
type ColumnValue<'a> = dyn Fn(&KernelContext, &mut Vec<Stmt>, Expr) -> Result<Value, String> + 'a;

/// Writes every group output over the row, with the anchor's value from `y`.
/// Where one block's row is: the anchor, the thread's first column and the
/// stride between its columns, the row length, the coordinates of the row.
struct Row<'a> {
    anchor: NodeIndex,
    thread: &'a Value,
    threads: u32,
    columns: &'a Expr,
    coords: &'a [Expr],
}

fn write_row(context: &mut KernelContext, body: &mut Vec<Stmt>, row: &Row, y: &ColumnValue) -> Result<(), String> {
    let Row { anchor, thread, threads, columns, coords: row_coords } = *row;
    let column = context.fresh_var();
    let mut stores = Vec::new();
    let value = y(context, &mut stores, build::var(column))?;
    let value = context.bind(&mut stores, value);
    context.set_override(ValueRef::new(anchor, 0), value);
    let mut coords = row_coords.to_vec();
    coords.push(build::var(column));
    for output in context.contract.outputs.clone() {
        let dims = context.dims(output)?;
        if dims.len() != coords.len() {
            return Err(format!("group output `{}` is not a row of the norm", context.graph.value_name(output)));
        }
        let value = context.value_at(&mut stores, output, &coords)?;
        stores.push(Stmt::Store {
            buffer: context.buffer(output)?,
            index: linear_index(&coords, &dims),
            value: value.expr,
        });
    }
    body.push(Stmt::For {
        var: column,
        start: thread.expr.clone(),
        end: columns.clone(),
        step: threads as i64,
        body: stores,
    });
    Ok(())
}

/// Reduces `accumulator` across the block with `combine`; every thread gets the result.
fn block_reduce(
    context: &mut KernelContext,
    body: &mut Vec<Stmt>,
    accumulator: kernel::Var,
    dtype: DType,
    combine: kernel::BinaryOp,
    warps: usize,
    partials: usize,
) -> Result<Value, String> {
    for offset in [16u32, 8, 4, 2, 1] {
        body.push(Stmt::Assign {
            var: accumulator,
            value: build::binary(
                combine,
                build::var(accumulator),
                Expr::ShuffleXor { value: Box::new(build::var(accumulator)), mask: offset },
            ),
        });
    }
    if warps <= 1 {
        return Ok(Value { expr: build::var(accumulator), dtype });
    }
    // Lanes of 32-thread groups, also inside AMD's 64-wide wavefronts.
    let lane = build::binary(
        kernel::BinaryOp::Rem,
        build::cast(DType::I64, build::special(Special::ThreadIndex)),
        build::i64(32),
    );
    let warp = build::binary(
        kernel::BinaryOp::Div,
        build::cast(DType::I64, build::special(Special::ThreadIndex)),
        build::i64(32),
    );
    body.push(Stmt::If {
        condition: build::binary(kernel::BinaryOp::Eq, lane, build::i64(0)),
        then: vec![Stmt::SharedStore { array: partials, index: warp, value: build::var(accumulator) }],
        otherwise: Vec::new(),
    });
    body.push(Stmt::Barrier);
    let total = context.fresh_var();
    body.push(Stmt::Let {
        var: total,
        dtype,
        value: Expr::SharedLoad { array: partials, index: Box::new(build::i64(0)) },
    });
    for w in 1..warps {
        body.push(Stmt::Assign {
            var: total,
            value: build::binary(
                combine,
                build::var(total),
                Expr::SharedLoad { array: partials, index: Box::new(build::i64(w as i64)) },
            ),
        });
    }
    // The partials are read by every thread before the next reduction overwrites them.
    body.push(Stmt::Barrier);
    Ok(Value { expr: build::var(total), dtype })
}
