//! Shape and dtype inference, with symbolic values of shape tensors.
//!
//! Exported graphs compute shapes at run time (`Shape → Gather → Concat →
//! Reshape`). To type such graphs with symbolic dims, inference tracks the
//! *symbolic value* of small integer tensors (rank ≤ 1): each element is a
//! [`Dim`] expression of the graph's symbols. A `Reshape` whose shape input is
//! `Concat(Shape(x)[0], Shape(x)[1], 12, 32)` then gets type `[batch, seq, 12, 32]`.

use kiln_runtime::{DType, Dim};

use crate::graph::{Graph, ValueRef};
use crate::op::{normalize_axis, BinaryOp, Op, UnaryOp};
use crate::tensor::TensorType;

/// Why a node's output types could not be inferred.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InferError(pub String);

fn fail<T>(message: impl Into<String>) -> Result<T, InferError> {
    Err(InferError(message.into()))
}

/// Index-like tensors whose values are tracked have at most this many elements.
const MAX_TRACKED_ELEMENTS: usize = 64;
/// Values at or above this are "to the end" sentinels in Slice ends.
const SLICE_END_SENTINEL: i64 = i32::MAX as i64;

/// The output types of `op` applied to `inputs` of `graph`.
pub fn infer_output_types(graph: &Graph, op: &Op, inputs: &[ValueRef]) -> Result<Vec<TensorType>, InferError> {
    let ty = |index: usize| graph.value_type(inputs[index]);
    let single = |ty: TensorType| Ok(vec![ty]);
    match op {
        Op::Input => fail("an input node has no inputs to infer from"),
        Op::Constant(constant) => single(constant.tensor_type()),
        Op::Unary(unary) => {
            let input = ty(0);
            match unary {
                UnaryOp::Not if input.dtype != DType::Bool => fail(format!("not takes bool, got {}", input.dtype)),
                UnaryOp::Not | UnaryOp::Abs | UnaryOp::Neg | UnaryOp::Relu => single(input.clone()),
                UnaryOp::IsNan => single(TensorType::new(DType::Bool, input.shape.clone())),
                _ if !input.dtype.is_float() => {
                    fail(format!("{} takes a float tensor, got {}", unary.name(), input.dtype))
                }
                _ => single(input.clone()),
            }
        }
        Op::Binary(binary) => {
            let (a, b) = (ty(0), ty(1));
            if a.dtype != b.dtype {
                return fail(format!("{} of different dtypes {} and {}", binary.name(), a.dtype, b.dtype));
            }
            if binary.is_logical() && a.dtype != DType::Bool {
                return fail(format!("{} takes bool, got {}", binary.name(), a.dtype));
            }
            let shape = broadcast_shapes(&a.shape, &b.shape)?;
            let dtype = if binary.is_comparison() || binary.is_logical() { DType::Bool } else { a.dtype };
            single(TensorType::new(dtype, shape))
        }
        Op::Where => {
            let (condition, x, y) = (ty(0), ty(1), ty(2));
            if condition.dtype != DType::Bool {
                return fail(format!("where's condition must be bool, got {}", condition.dtype));
            }
            if x.dtype != y.dtype {
                return fail(format!("where of different dtypes {} and {}", x.dtype, y.dtype));
            }
            let shape = broadcast_shapes(&broadcast_shapes(&condition.shape, &x.shape)?, &y.shape)?;
            single(TensorType::new(x.dtype, shape))
        }
        Op::Cast { to } => single(TensorType::new(*to, ty(0).shape.clone())),
        Op::Shape { start, end } => {
            let rank = ty(0).rank();
            let (start, end) = shape_range(*start, *end, rank);
            single(TensorType::fixed(DType::I64, &[end.saturating_sub(start)]))
        }
        Op::Reshape { allow_zero } => {
            let input = ty(0);
            let target = index_values(graph, inputs[1], "reshape's shape")?;
            single(TensorType::new(input.dtype, reshape_dims(&input.shape, &target, *allow_zero)?))
        }
        Op::Transpose { permutation } => {
            let input = ty(0);
            let mut sorted = permutation.clone();
            sorted.sort_unstable();
            if sorted != (0..input.rank()).collect::<Vec<_>>() {
                return fail(format!("permutation {permutation:?} does not fit rank {}", input.rank()));
            }
            single(TensorType::new(input.dtype, permutation.iter().map(|&p| input.shape[p].clone()).collect()))
        }
        Op::Squeeze { axes } => {
            let input = ty(0);
            let axes = if axes.is_empty() {
                (0..input.rank()).filter(|&i| input.shape[i] == Dim::constant(1)).collect()
            } else {
                normalize_axes(axes, input.rank())?
            };
            let shape = input.shape.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, d)| d.clone());
            single(TensorType::new(input.dtype, shape.collect()))
        }
        Op::Unsqueeze { axes } => {
            let input = ty(0);
            let axes = normalize_axes(axes, input.rank() + axes.len())?;
            let mut rest = input.shape.iter();
            let shape = (0..input.rank() + axes.len())
                .map(|i| if axes.contains(&i) { Some(Dim::constant(1)) } else { rest.next().cloned() })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| InferError("repeated unsqueeze axes".into()))?;
            single(TensorType::new(input.dtype, shape))
        }
        Op::Flatten { axis } => {
            let input = ty(0);
            let axis = if *axis < 0 { *axis + input.rank() as i64 } else { *axis };
            if axis < 0 || axis as usize > input.rank() {
                return fail(format!("flatten axis {axis} outside rank {}", input.rank()));
            }
            let product = |dims: &[Dim]| dims.iter().fold(Dim::constant(1), |p, d| &p * d);
            let (outer, inner) = input.shape.split_at(axis as usize);
            single(TensorType::new(input.dtype, vec![product(outer), product(inner)]))
        }
        Op::Concat { axis } => {
            let first = ty(0);
            let axis = normalize_axis(*axis, first.rank())
                .ok_or_else(|| InferError(format!("concat axis {axis} outside rank {}", first.rank())))?;
            let mut shape = first.shape.clone();
            for index in 1..inputs.len() {
                let other = ty(index);
                if other.dtype != first.dtype || other.rank() != first.rank() {
                    return fail(format!("concat of {first} and {other}"));
                }
                for (d, dim) in shape.iter_mut().enumerate() {
                    *dim = if d == axis { &*dim + &other.shape[d] } else { merge_dims(dim, &other.shape[d])? };
                }
            }
            single(TensorType::new(first.dtype, shape))
        }
        Op::Slice => {
            let input = ty(0);
            let starts = index_values(graph, inputs[1], "slice starts")?;
            let ends = index_values(graph, inputs[2], "slice ends")?;
            let axes = constant_ints(graph, inputs[3], "slice axes")?;
            let steps = constant_ints(graph, inputs[4], "slice steps")?;
            if starts.len() != ends.len() || axes.len() != starts.len() || steps.len() != starts.len() {
                return fail("slice starts, ends, axes and steps differ in length");
            }
            let mut shape = input.shape.clone();
            for i in 0..axes.len() {
                let axis = normalize_axis(axes[i], input.rank())
                    .ok_or_else(|| InferError(format!("slice axis {} outside rank {}", axes[i], input.rank())))?;
                shape[axis] = slice_length(&input.shape[axis], &starts[i], &ends[i], steps[i])?;
            }
            single(TensorType::new(input.dtype, shape))
        }
        Op::Gather { axis } => {
            let (data, indices) = (ty(0), ty(1));
            if !indices.dtype.is_integer() {
                return fail(format!("gather indices must be integers, got {}", indices.dtype));
            }
            let axis = normalize_axis(*axis, data.rank())
                .ok_or_else(|| InferError(format!("gather axis {axis} outside rank {}", data.rank())))?;
            let mut shape = data.shape[..axis].to_vec();
            shape.extend(indices.shape.iter().cloned());
            shape.extend(data.shape[axis + 1..].iter().cloned());
            single(TensorType::new(data.dtype, shape))
        }
        Op::GatherNd { batch_dims } => {
            let (data, indices) = (ty(0), ty(1));
            let batch_dims = *batch_dims as usize;
            let depth = indices
                .shape
                .last()
                .and_then(Dim::as_constant)
                .ok_or_else(|| InferError("gather_nd needs a constant last indices dim".into()))?
                as usize;
            if batch_dims + depth > data.rank() || indices.rank() < 1 || batch_dims >= indices.rank() {
                return fail(format!("gather_nd of {data} by {indices} with batch_dims {batch_dims}"));
            }
            let mut shape = indices.shape[..indices.rank() - 1].to_vec();
            shape.extend(data.shape[batch_dims + depth..].iter().cloned());
            single(TensorType::new(data.dtype, shape))
        }
        Op::Expand => {
            let input = ty(0);
            let target = index_values(graph, inputs[1], "expand's shape")?;
            single(TensorType::new(input.dtype, broadcast_shapes(&input.shape, &target)?))
        }
        Op::Range => {
            let dtype = ty(0).dtype;
            let value = |index: usize| symbolic_value(graph, inputs[index]).and_then(|v| v.into_iter().next());
            let length = match (value(0), value(1), value(2).and_then(|d| d.as_constant())) {
                (Some(start), Some(limit), Some(delta)) if delta > 0 => {
                    let span = &(&limit - &start) + &Dim::constant(delta - 1);
                    span.floor_div(delta).map(|d| clamp_non_negative(&d))
                }
                (Some(start), Some(limit), Some(delta)) if delta < 0 => {
                    match (start.as_constant(), limit.as_constant()) {
                        (Some(s), Some(l)) => Some(Dim::constant(((s - l - delta - 1) / -delta).max(0))),
                        _ => None,
                    }
                }
                _ => None,
            };
            match length {
                Some(length) => single(TensorType::new(dtype, vec![length])),
                None => fail("not supported: range bounds only known at run time decide its length, which kiln fixes ahead of time"),
            }
        }
        Op::ConstantOfShape { dtype, .. } => {
            let shape = index_values(graph, inputs[0], "constant_of_shape's shape")?;
            single(TensorType::new(*dtype, shape))
        }
        Op::Trilu { .. } => {
            let input = ty(0);
            if input.rank() < 2 {
                return fail("trilu needs rank 2 or more");
            }
            single(input.clone())
        }
        Op::MatMul { transpose_a, transpose_b } => {
            let (a, b) = (ty(0), ty(1));
            if a.dtype != b.dtype {
                return fail(format!("matmul of different dtypes {} and {}", a.dtype, b.dtype));
            }
            let a_shape = swap_last_two(&a.shape, *transpose_a)?;
            let b_shape = swap_last_two(&b.shape, *transpose_b)?;
            single(TensorType::new(a.dtype, matmul_shape(&a_shape, &b_shape)?))
        }
        Op::Dims { values, scalar } => {
            if *scalar && values.len() != 1 {
                return fail("a scalar dims node holds one value");
            }
            let shape = if *scalar { Vec::new() } else { vec![Dim::constant(values.len() as i64)] };
            single(TensorType::new(DType::I64, shape))
        }
        Op::SwiGlu => {
            let (gate, up) = (ty(0), ty(1));
            if gate.dtype != up.dtype || !gate.dtype.is_float() {
                return fail(format!("swiglu of {} and {}", gate.dtype, up.dtype));
            }
            single(TensorType::new(gate.dtype, broadcast_shapes(&gate.shape, &up.shape)?))
        }
        Op::Rope { .. } => {
            let x = ty(0);
            for index in [1, 2] {
                let table = ty(index);
                if table.dtype != x.dtype || broadcast_shapes(&x.shape, &table.shape)? != x.shape {
                    return fail(format!("rope table {table} does not fit {x}"));
                }
            }
            match x.shape.last().and_then(Dim::as_constant) {
                Some(d) if d % 2 == 0 => single(x.clone()),
                _ => fail(format!("rope needs an even constant last dim, got {x}")),
            }
        }
        Op::Attention { mask, .. } => {
            let (q, k, v) = (ty(0), ty(1), ty(2));
            if q.rank() != 4 || k.rank() != 4 || v.rank() != 4 {
                return fail(format!("attention takes rank-4 q, k, v; got {q}, {k}, {v}"));
            }
            if q.dtype != k.dtype || q.dtype != v.dtype || !q.dtype.is_float() {
                return fail(format!("attention of {}, {}, {}", q.dtype, k.dtype, v.dtype));
            }
            let batch = merge_dims(&merge_dims(&q.shape[0], &k.shape[0])?, &v.shape[0])?;
            merge_dims(&q.shape[3], &k.shape[3])
                .map_err(|_| InferError(format!("q {q} and k {k} head dims differ")))?;
            merge_dims(&k.shape[1], &v.shape[1])?;
            merge_dims(&k.shape[2], &v.shape[2])?;
            if let (Some(hq), Some(hkv)) = (q.shape[1].as_constant(), k.shape[1].as_constant()) {
                if hkv == 0 || hq % hkv != 0 {
                    return fail(format!("{hkv} key/value heads do not divide {hq} query heads"));
                }
            }
            if mask.has_padding() {
                let keep = ty(3);
                if !(keep.dtype == DType::Bool || keep.dtype.is_integer()) || keep.rank() != 2 {
                    return fail(format!("attention's key_keep must be bool or integer [batch, keys], got {keep}"));
                }
                merge_dims(&keep.shape[1], &k.shape[2])?;
            }
            single(TensorType::new(q.dtype, vec![batch, q.shape[1].clone(), q.shape[2].clone(), v.shape[3].clone()]))
        }
        Op::Reduce { axes, keep_dims, .. } => {
            let input = ty(0);
            let axes = if axes.is_empty() { (0..input.rank()).collect() } else { normalize_axes(axes, input.rank())? };
            let shape = input
                .shape
                .iter()
                .enumerate()
                .filter_map(|(i, d)| match (axes.contains(&i), keep_dims) {
                    (true, true) => Some(Dim::constant(1)),
                    (true, false) => None,
                    (false, _) => Some(d.clone()),
                })
                .collect();
            single(TensorType::new(input.dtype, shape))
        }
        Op::Softmax { axis } | Op::LayerNorm { axis, .. } | Op::RmsNorm { axis, .. } => {
            let input = ty(0);
            if !input.dtype.is_float() {
                return fail(format!("{} takes a float tensor, got {}", op.name(), input.dtype));
            }
            normalize_axis(*axis, input.rank())
                .ok_or_else(|| InferError(format!("axis {axis} outside rank {}", input.rank())))?;
            for index in 1..inputs.len() {
                if ty(index).dtype != input.dtype {
                    return fail(format!(
                        "{} parameter {index} is {}, input is {}",
                        op.name(),
                        ty(index).dtype,
                        input.dtype
                    ));
                }
            }
            single(input.clone())
        }
        Op::Gelu { .. } => {
            let input = ty(0);
            if !input.dtype.is_float() {
                return fail(format!("gelu takes a float tensor, got {}", input.dtype));
            }
            single(input.clone())
        }
    }
}

fn clamp_non_negative(dim: &Dim) -> Dim {
    match dim.as_constant() {
        Some(value) => Dim::constant(value.max(0)),
        None => dim.clone(),
    }
}

/// `start..end` of `Shape`, normalized and clamped to the rank.
pub fn shape_range(start: i64, end: Option<i64>, rank: usize) -> (usize, usize) {
    let clamp = |v: i64| {
        let v = if v < 0 { v + rank as i64 } else { v };
        v.clamp(0, rank as i64) as usize
    };
    let start = clamp(start);
    let end = end.map_or(rank, clamp);
    (start, end.max(start))
}

fn normalize_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>, InferError> {
    axes.iter()
        .map(|&a| normalize_axis(a, rank).ok_or_else(|| InferError(format!("axis {a} outside rank {rank}"))))
        .collect()
}

/// One dim from two that broadcasting says must agree. Constant 1 yields to
/// the other; otherwise equal dims, or (when only run time can tell) the more
/// specific one: a constant over a symbol, a symbol over an expression.
pub fn merge_dims(a: &Dim, b: &Dim) -> Result<Dim, InferError> {
    if a == b {
        return Ok(a.clone());
    }
    match (a.as_constant(), b.as_constant()) {
        (Some(1), _) => Ok(b.clone()),
        (_, Some(1)) => Ok(a.clone()),
        (Some(x), Some(y)) => fail(format!("dims {x} and {y} do not broadcast")),
        (Some(_), None) => Ok(a.clone()),
        (None, Some(_)) => Ok(b.clone()),
        (None, None) => {
            let rank = |d: &Dim| (d.as_symbol().is_none(), d.to_string().len());
            Ok(if rank(b) < rank(a) { b.clone() } else { a.clone() })
        }
    }
}

/// NumPy broadcasting of two shapes.
pub fn broadcast_shapes(a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>, InferError> {
    let rank = a.len().max(b.len());
    let one = Dim::constant(1);
    (0..rank)
        .map(|i| {
            let da = if i + a.len() >= rank { &a[i + a.len() - rank] } else { &one };
            let db = if i + b.len() >= rank { &b[i + b.len() - rank] } else { &one };
            merge_dims(da, db)
        })
        .collect()
}

fn swap_last_two(shape: &[Dim], swap: bool) -> Result<Vec<Dim>, InferError> {
    let mut shape = shape.to_vec();
    if swap {
        if shape.len() < 2 {
            return fail("a transposed matmul input needs rank 2 or more");
        }
        let rank = shape.len();
        shape.swap(rank - 2, rank - 1);
    }
    Ok(shape)
}

fn matmul_shape(a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>, InferError> {
    if a.is_empty() || b.is_empty() {
        return fail("matmul of a scalar");
    }
    let a_matrix: Vec<Dim> = if a.len() == 1 { vec![Dim::constant(1), a[0].clone()] } else { a.to_vec() };
    let b_matrix: Vec<Dim> = if b.len() == 1 { vec![b[0].clone(), Dim::constant(1)] } else { b.to_vec() };
    let (a_batch, a_rows) = a_matrix.split_at(a_matrix.len() - 2);
    let (b_batch, b_rows) = b_matrix.split_at(b_matrix.len() - 2);
    merge_dims(&a_rows[1], &b_rows[0])
        .map_err(|_| InferError(format!("matmul inner dims {} and {} differ", a_rows[1], b_rows[0])))?;
    let mut shape = broadcast_shapes(a_batch, b_batch)?;
    if a.len() > 1 {
        shape.push(a_rows[0].clone());
    }
    if b.len() > 1 {
        shape.push(b_rows[1].clone());
    }
    Ok(shape)
}

fn reshape_dims(input: &[Dim], target: &[Dim], allow_zero: bool) -> Result<Vec<Dim>, InferError> {
    let mut shape = Vec::with_capacity(target.len());
    let mut inferred = None;
    for (i, dim) in target.iter().enumerate() {
        match dim.as_constant() {
            Some(0) if !allow_zero => shape.push(
                input
                    .get(i)
                    .cloned()
                    .ok_or_else(|| InferError(format!("reshape copies dim {i} of a rank-{} input", input.len())))?,
            ),
            Some(-1) if inferred.is_none() => {
                inferred = Some(i);
                shape.push(Dim::constant(1));
            }
            Some(v) if v < 0 => return fail(format!("reshape to negative dim {v}")),
            _ => shape.push(dim.clone()),
        }
    }
    if let Some(position) = inferred {
        let total = input.iter().fold(Dim::constant(1), |p, d| &p * d);
        let known = shape.iter().fold(Dim::constant(1), |p, d| &p * d);
        shape[position] = total.divide(&known).ok_or_else(|| {
            InferError(format!("cannot infer the -1 dim of a reshape of {} elements into parts of {known}", total))
        })?;
    }
    Ok(shape)
}

fn slice_length(dim: &Dim, start: &Dim, end: &Dim, step: i64) -> Result<Dim, InferError> {
    if step == 0 {
        return fail("slice step 0");
    }
    if let (Some(d), Some(s), Some(e)) = (dim.as_constant(), start.as_constant(), end.as_constant()) {
        let (s, e) = clamp_slice_bounds(d, s, e, step);
        return Ok(Dim::constant(slice_count(s, e, step)));
    }
    if step < 0 {
        return fail("slice with a negative step over a symbolic dim");
    }
    let position = |index: &Dim, is_end: bool| -> Dim {
        match index.as_constant() {
            Some(v) if is_end && v >= SLICE_END_SENTINEL => dim.clone(),
            Some(v) if v < 0 => dim + &Dim::constant(v),
            Some(0) => Dim::constant(0),
            _ => index.minimum(dim),
        }
    };
    let (start, end) = (position(start, false), position(end, true));
    let span = &end - &start;
    Ok(if step == 1 { span } else { (&span + &Dim::constant(step - 1)).floor_div(step).expect("step > 0") })
}

/// ONNX Slice clamping of start and end for a constant dim.
pub fn clamp_slice_bounds(dim: i64, start: i64, end: i64, step: i64) -> (i64, i64) {
    if dim <= 0 {
        return (0, 0);
    }
    let normalize = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
    let (start, end) = (normalize(start), normalize(end));
    if step > 0 {
        (start.clamp(0, dim), end.clamp(0, dim))
    } else {
        (start.clamp(0, dim - 1), end.clamp(-1, dim - 1))
    }
}

/// How many elements a slice from clamped `start` to `end` by `step` (≠ 0) takes.
pub fn slice_count(start: i64, end: i64, step: i64) -> i64 {
    let (start, end, step) = (start as i128, end as i128, step as i128);
    let count = if step > 0 { (end - start + step - 1) / step } else { (start - end - step - 1) / -step };
    count.clamp(0, i64::MAX as i128) as i64
}

/// The constant integer elements of `value`, or an error naming `what`.
pub fn constant_ints(graph: &Graph, value: ValueRef, what: &str) -> Result<Vec<i64>, InferError> {
    symbolic_value(graph, value).and_then(|dims| dims.iter().map(Dim::as_constant).collect()).ok_or_else(|| {
        InferError(format!(
            "not supported: {what} (`{}`) is only known at run time; kiln compiles ahead of time and needs it \
                 as a constant",
            graph.value_name(value)
        ))
    })
}

fn index_values(graph: &Graph, value: ValueRef, what: &str) -> Result<Vec<Dim>, InferError> {
    symbolic_value(graph, value).ok_or_else(|| {
        InferError(format!(
            "not supported: {what} (`{}`) is only known at run time, and it decides the output's shape, which kiln \
             fixes ahead of time as a function of the input dims",
            graph.value_name(value)
        ))
    })
}

/// The elements of a small integer or bool tensor as dim expressions, when
/// they are known at compile time (bools are 0 and 1; a tensor with no
/// elements always is, even a graph input). Rank-0 values give one element.
pub fn symbolic_value(graph: &Graph, value: ValueRef) -> Option<Vec<Dim>> {
    symbolic_value_at_depth(graph, value, 0)
}

fn symbolic_value_at_depth(graph: &Graph, value: ValueRef, depth: usize) -> Option<Vec<Dim>> {
    if depth > 256 {
        return None;
    }
    let ty = graph.value(value)?.ty.clone();
    if ty.rank() > 1 || !(ty.dtype.is_integer() || ty.dtype == DType::Bool) {
        return None;
    }
    // A tensor with no elements has one value, whatever produces it (a graph input of shape [0]).
    if ty.element_count().as_constant() == Some(0) {
        return Some(Vec::new());
    }
    let node = graph.node(value.node);
    let inputs = graph.inputs_of(value.node);
    let input = |index: usize| symbolic_value_at_depth(graph, *inputs.get(index)?, depth + 1);
    let values = match &node.op {
        Op::Constant(constant) => {
            if constant.element_count() > MAX_TRACKED_ELEMENTS {
                return None;
            }
            match constant.dtype() {
                DType::Bool => constant.bytes().iter().map(|&b| Dim::constant(b as i64)).collect(),
                _ => constant.to_i64_vec()?.into_iter().map(Dim::constant).collect(),
            }
        }
        Op::Dims { values, .. } => values.clone(),
        Op::Shape { start, end } => {
            let shape = &graph.value_type(inputs[0]).shape;
            let (start, end) = shape_range(*start, *end, shape.len());
            shape[start..end].to_vec()
        }
        Op::Cast { to } if to.is_integer() || *to == DType::Bool => {
            let source = graph.value_type(inputs[0]).dtype;
            if !(source.is_integer() || source == DType::Bool) {
                return None;
            }
            let values = input(0)?;
            if *to == DType::Bool {
                values.iter().map(|d| d.as_constant().map(|v| Dim::constant((v != 0) as i64))).collect::<Option<_>>()?
            } else {
                values
            }
        }
        Op::Reshape { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } | Op::Flatten { .. } => input(0)?,
        Op::Gather { .. } => {
            let data = input(0)?;
            let indices = input(1)?;
            indices
                .iter()
                .map(|index| {
                    let index = index.as_constant()?;
                    let index = if index < 0 { index + data.len() as i64 } else { index };
                    data.get(usize::try_from(index).ok()?).cloned()
                })
                .collect::<Option<_>>()?
        }
        Op::Concat { .. } => {
            let mut all = Vec::new();
            for index in 0..inputs.len() {
                all.extend(input(index)?);
            }
            all
        }
        Op::Slice => {
            let data = input(0)?;
            let constant = |index: usize| -> Option<i64> { input(index)?.first()?.as_constant() };
            let (start, end, step) = (constant(1)?, constant(2)?, constant(4)?);
            if step <= 0 {
                return None;
            }
            let (start, end) = clamp_slice_bounds(data.len() as i64, start, end, step);
            (start..end).step_by(step as usize).map(|i| data[i as usize].clone()).collect()
        }
        Op::Binary(binary) => {
            let (a, b) = (input(0)?, input(1)?);
            let length = a.len().max(b.len());
            if (a.len() != length && a.len() != 1) || (b.len() != length && b.len() != 1) {
                return None;
            }
            (0..length)
                .map(|i| symbolic_binary(*binary, &a[i.min(a.len() - 1)], &b[i.min(b.len() - 1)]))
                .collect::<Option<_>>()?
        }
        Op::Where => {
            let (condition, x, y) = (input(0)?, input(1)?, input(2)?);
            let length = condition.len().max(x.len()).max(y.len());
            let pick = |v: &Vec<Dim>, i: usize| v.get(i.min(v.len().saturating_sub(1))).cloned();
            (0..length)
                .map(|i| match pick(&condition, i)?.as_constant()? {
                    0 => pick(&y, i),
                    _ => pick(&x, i),
                })
                .collect::<Option<_>>()?
        }
        Op::ConstantOfShape { value: fill, .. } => {
            let shape = input(0)?;
            let count = shape.iter().try_fold(1i64, |p, d| Some(p * d.as_constant()?))?;
            if count as usize > MAX_TRACKED_ELEMENTS || fill.fract() != 0.0 {
                return None;
            }
            vec![Dim::constant(*fill as i64); count as usize]
        }
        Op::Expand => {
            let data = input(0)?;
            let shape = input(1)?;
            let count = shape.iter().try_fold(1i64, |p, d| Some(p * d.as_constant()?))?;
            if data.len() != 1 || count as usize > MAX_TRACKED_ELEMENTS {
                return None;
            }
            vec![data[0].clone(); count as usize]
        }
        Op::Range => {
            let (start, limit, delta) = (input(0)?, input(1)?, input(2)?);
            let (start, limit, delta) = (start[0].as_constant()?, limit[0].as_constant()?, delta[0].as_constant()?);
            if delta == 0 || ((limit - start) / delta) as usize > MAX_TRACKED_ELEMENTS {
                return None;
            }
            let mut values = Vec::new();
            let mut v = start;
            while (delta > 0 && v < limit) || (delta < 0 && v > limit) {
                values.push(Dim::constant(v));
                v += delta;
            }
            values
        }
        _ => return None,
    };
    Some(values)
}

fn symbolic_binary(op: BinaryOp, a: &Dim, b: &Dim) -> Option<Dim> {
    let both = a.as_constant().zip(b.as_constant());
    let truth = |t: bool| Dim::constant(t as i64);
    Some(match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => match both {
            Some((x, y)) if y != 0 => Dim::constant(x / y),
            _ => a.divide(b)?,
        },
        BinaryOp::Max => a.maximum(b),
        BinaryOp::Min => a.minimum(b),
        BinaryOp::Equal => match both {
            Some((x, y)) => truth(x == y),
            None if a == b => truth(true),
            // Dims are sizes: a symbolic dim never equals a negative constant.
            None if a.as_constant().or(b.as_constant()).is_some_and(|v| v < 0) => truth(false),
            None => return None,
        },
        BinaryOp::Less => truth(both.map(|(x, y)| x < y)?),
        BinaryOp::LessOrEqual => truth(both.map(|(x, y)| x <= y)?),
        BinaryOp::Greater => truth(both.map(|(x, y)| x > y)?),
        BinaryOp::GreaterOrEqual => truth(both.map(|(x, y)| x >= y)?),
        BinaryOp::And => truth(both.map(|(x, y)| x != 0 && y != 0)?),
        BinaryOp::Or => truth(both.map(|(x, y)| x != 0 || y != 0)?),
        BinaryOp::Xor => truth(both.map(|(x, y)| (x != 0) != (y != 0))?),
        BinaryOp::Pow => return None,
    })
}
