//! Attention groups: one warp per query row, online softmax over the keys
//! (the score matrix never exists), padding and causal masks, grouped-query
//! heads, and the group's prologue (RoPE) applied as q and k are read. Each
//! lane holds head-dim elements `lane, lane + 32, …` of q and of the output.

use kiln_ir::graph::{NodeIndex, ValueRef};
use kiln_ir::{DType, Dim, Op};
use kiln_runtime::kernel::{self, build, Expr, Special, Stmt};

use super::context::{linear_index, unravel, KernelContext, Value};

const WARPS: i64 = 4;

pub fn generate(context: &mut KernelContext, anchor: NodeIndex) -> Result<Vec<Stmt>, String> {
    let graph = context.graph;
    let Op::Attention { scale, mask, mask_fill, zero_fully_masked_rows, .. } = graph.node(anchor).op.clone() else {
        return Err("not an attention".into());
    };
    let inputs = graph.inputs_of(anchor);
    let (q, k, v) = (inputs[0], inputs[1], inputs[2]);
    let (q_shape, k_shape, v_shape) =
        (graph.value_type(q).shape.clone(), graph.value_type(k).shape.clone(), graph.value_type(v).shape.clone());
    let depth = q_shape[3].as_constant().ok_or("a symbolic head dim")?;
    let value_depth = v_shape[3].as_constant().ok_or("a symbolic value head dim")?;
    let chunks = ((depth.max(value_depth) + 31) / 32) as usize;
    let rows = &(&q_shape[0] * &q_shape[1]) * &q_shape[2];
    context.block_threads = (WARPS * 32) as u32;
    context.grid_blocks = (&rows + &Dim::constant(WARPS - 1)).floor_div(WARPS).expect("positive");

    let mut body = Vec::new();
    let i64v = |expr: Expr| Value { expr, dtype: DType::I64 };
    let f32v = |expr: Expr| Value { expr, dtype: DType::F32 };
    let thread = build::cast(DType::I64, build::special(Special::ThreadIndex));
    // Lanes of 32-thread groups, also inside AMD's 64-wide wavefronts.
    let lane = context.bind(&mut body, i64v(build::binary(kernel::BinaryOp::Rem, thread.clone(), build::i64(32))));
    let row = context.bind(
        &mut body,
        i64v(build::add(
            build::mul(build::cast(DType::I64, build::special(Special::BlockIndex)), build::i64(WARPS)),
            build::binary(kernel::BinaryOp::Div, thread, build::i64(32)),
        )),
    );
    let (batch, heads, queries) = (context.dim(&q_shape[0])?, context.dim(&q_shape[1])?, context.dim(&q_shape[2])?);
    let (kv_heads, keys) = (context.dim(&k_shape[1])?, context.dim(&k_shape[2])?);
    let row_count = build::mul(build::mul(batch, heads.clone()), queries.clone());
    let mut warp_body = Vec::new();
    let coords = unravel(row.expr.clone(), &[context.dim(&q_shape[0])?, heads.clone(), queries.clone()]);
    let (b, h, i) = (
        context.bind(&mut warp_body, i64v(coords[0].clone())),
        context.bind(&mut warp_body, i64v(coords[1].clone())),
        context.bind(&mut warp_body, i64v(coords[2].clone())),
    );
    let group = build::binary(kernel::BinaryOp::Div, heads, kv_heads);
    let kv_head = context.bind(&mut warp_body, i64v(build::binary(kernel::BinaryOp::Div, h.expr.clone(), group)));
    let lane_depth = |chunk: usize| build::add(lane.expr.clone(), build::i64(32 * chunk as i64));

    // q into registers (0 past the head dim).
    let mut q_registers = Vec::new();
    for chunk in 0..chunks {
        let register = context.fresh_var();
        warp_body.push(Stmt::Let { var: register, dtype: DType::F32, value: build::f32(0.0) });
        let d = lane_depth(chunk);
        let mut then = Vec::new();
        let value = context.value_at(&mut then, q, &[b.expr.clone(), h.expr.clone(), i.expr.clone(), d.clone()])?;
        then.push(Stmt::Assign { var: register, value: value.expr });
        warp_body.push(Stmt::If { condition: build::lt(d, build::i64(depth)), then, otherwise: Vec::new() });
        q_registers.push(register);
    }
    // Mutable per-lane state: the running maximum, the running sum of weights, the output accumulators.
    let mut state = |initial: f32| {
        let var = context.fresh_var();
        warp_body.push(Stmt::Let { var, dtype: DType::F32, value: build::f32(initial) });
        var
    };
    let max_var = state(f32::NEG_INFINITY);
    let total_var = state(0.0);
    let accumulators: Vec<kernel::Var> = (0..chunks).map(|_| state(0.0)).collect();

    let j = context.fresh_var();
    let mut key_body = Vec::new();
    let partial = context.fresh_var();
    key_body.push(Stmt::Let { var: partial, dtype: DType::F32, value: build::f32(0.0) });
    for (chunk, &register) in q_registers.iter().enumerate() {
        let d = lane_depth(chunk);
        let mut then = Vec::new();
        let key = context.value_at(&mut then, k, &[b.expr.clone(), kv_head.expr.clone(), build::var(j), d.clone()])?;
        then.push(Stmt::Assign {
            var: partial,
            value: build::add(build::var(partial), build::mul(build::var(register), key.expr)),
        });
        key_body.push(Stmt::If { condition: build::lt(d, build::i64(depth)), then, otherwise: Vec::new() });
    }
    for offset in [16u32, 8, 4, 2, 1] {
        key_body.push(Stmt::Assign {
            var: partial,
            value: build::add(
                build::var(partial),
                Expr::ShuffleXor { value: Box::new(build::var(partial)), mask: offset },
            ),
        });
    }
    let score = context.fresh_var();
    key_body.push(Stmt::Let {
        var: score,
        dtype: DType::F32,
        value: build::mul(build::var(partial), build::f32(scale)),
    });
    let mut masked = Expr::Literal(kernel::Literal::Bool(false));
    if mask.is_causal() {
        // Key j is hidden from query i when j > i + keys − queries.
        let future = build::lt(build::add(i.expr.clone(), keys.clone()), build::add(build::var(j), queries.clone()));
        masked = build::binary(kernel::BinaryOp::Or, masked, future);
    }
    if mask.has_padding() {
        let keep = context.value_at(&mut key_body, inputs[3], &[b.expr.clone(), build::var(j)])?;
        let zero = match keep.dtype {
            DType::F32 => build::f32(0.0),
            DType::Bool => Expr::Literal(kernel::Literal::Bool(false)),
            _ => build::i64(0),
        };
        masked = build::binary(kernel::BinaryOp::Or, masked, build::binary(kernel::BinaryOp::Eq, keep.expr, zero));
    }
    key_body.push(Stmt::If {
        condition: masked,
        then: vec![Stmt::Assign { var: score, value: build::add(build::var(score), build::f32(mask_fill)) }],
        otherwise: Vec::new(),
    });
    let new_max = context.fresh_var();
    key_body.push(Stmt::Let {
        var: new_max,
        dtype: DType::F32,
        value: build::binary(kernel::BinaryOp::Max, build::var(max_var), build::var(score)),
    });
    // With every score so far −∞ the row has no weight yet: keep it at zero.
    let all_minus_infinity = build::binary(kernel::BinaryOp::Eq, build::var(new_max), build::f32(f32::NEG_INFINITY));
    let correction = context.fresh_var();
    key_body.push(Stmt::Let {
        var: correction,
        dtype: DType::F32,
        value: Expr::Select(
            Box::new(all_minus_infinity.clone()),
            Box::new(build::f32(1.0)),
            Box::new(build::unary(
                kernel::UnaryOp::Exp,
                build::binary(kernel::BinaryOp::Sub, build::var(max_var), build::var(new_max)),
            )),
        ),
    });
    let weight = context.fresh_var();
    key_body.push(Stmt::Let {
        var: weight,
        dtype: DType::F32,
        value: Expr::Select(
            Box::new(all_minus_infinity),
            Box::new(build::f32(0.0)),
            Box::new(build::unary(
                kernel::UnaryOp::Exp,
                build::binary(kernel::BinaryOp::Sub, build::var(score), build::var(new_max)),
            )),
        ),
    });
    key_body.push(Stmt::Assign {
        var: total_var,
        value: build::add(build::mul(build::var(total_var), build::var(correction)), build::var(weight)),
    });
    for (chunk, &acc) in accumulators.iter().enumerate() {
        let d = lane_depth(chunk);
        key_body.push(Stmt::Assign { var: acc, value: build::mul(build::var(acc), build::var(correction)) });
        let mut then = Vec::new();
        let value =
            context.value_at(&mut then, v, &[b.expr.clone(), kv_head.expr.clone(), build::var(j), d.clone()])?;
        then.push(Stmt::Assign {
            var: acc,
            value: build::add(build::var(acc), build::mul(build::var(weight), value.expr)),
        });
        key_body.push(Stmt::If { condition: build::lt(d, build::i64(value_depth)), then, otherwise: Vec::new() });
    }
    key_body.push(Stmt::Assign { var: max_var, value: build::var(new_max) });
    warp_body.push(Stmt::For { var: j, start: build::i64(0), end: keys, step: 1, body: key_body });

    // A row with no weight (every key masked with −∞) is NaN, or 0 with the guard.
    let empty = if zero_fully_masked_rows { build::f32(0.0) } else { build::f32(f32::NAN) };
    let output = ValueRef::new(anchor, 0);
    for (chunk, &accumulator) in accumulators.iter().enumerate() {
        let d = lane_depth(chunk);
        let result = Expr::Select(
            Box::new(build::binary(kernel::BinaryOp::Eq, build::var(total_var), build::f32(0.0))),
            Box::new(empty.clone()),
            Box::new(build::binary(kernel::BinaryOp::Div, build::var(accumulator), build::var(total_var))),
        );
        context.set_override(output, f32v(result));
        let coords = vec![b.expr.clone(), h.expr.clone(), i.expr.clone(), d.clone()];
        let mut stores = Vec::new();
        for stored in context.contract.outputs.clone() {
            let dims = context.dims(stored)?;
            if context.graph.value_type(stored).shape != context.graph.value_type(output).shape {
                return Err(format!(
                    "attention group output `{}` is not shaped like the attention",
                    context.graph.value_name(stored)
                ));
            }
            let value = context.value_at(&mut stores, stored, &coords)?;
            stores.push(Stmt::Store {
                buffer: context.buffer(stored)?,
                index: linear_index(&coords, &dims),
                value: value.expr,
            });
        }
        warp_body.push(Stmt::If {
            condition: build::lt(d, build::i64(value_depth)),
            then: stores,
            otherwise: Vec::new(),
        });
    }
    body.push(Stmt::If { condition: build::lt(row.expr, row_count), then: warp_body, otherwise: Vec::new() });
    Ok(body)
}
