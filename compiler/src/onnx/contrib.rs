//! `com.microsoft` contrib ops (ONNX Runtime's transformer optimizer output),
//! each decomposed into IR ops with the semantics ONNX Runtime documents.

use kiln_ir::{BinaryOp, Constant, DType, GeluApproximation, Op, ReduceKind, Tensor, ValueRef};

use super::ops::{ImportFn, NodeImport};

type Result<T> = std::result::Result<T, String>;

/// The `com.microsoft` domain: op type → importer.
pub(super) const MICROSOFT_DOMAIN: &[(&str, ImportFn)] = &[
    ("Attention", attention),
    ("BiasGelu", |n| {
        let (x, bias) = (n.input(0)?, n.input(1)?);
        let sum = n.emit(Op::Binary(BinaryOp::Add), &[x, bias])?;
        n.emit_output(0, Op::Gelu { approximation: GeluApproximation::None }, &[sum]).map(|_| ())
    }),
    ("EmbedLayerNormalization", embed_layer_norm),
    ("FastGelu", |n| {
        let mut x = n.input(0)?;
        if let Some(bias) = n.optional_input(1)? {
            x = n.emit(Op::Binary(BinaryOp::Add), &[x, bias])?;
        }
        n.emit_output(0, Op::Gelu { approximation: GeluApproximation::Tanh }, &[x]).map(|_| ())
    }),
    ("Gelu", |n| {
        let x = n.input(0)?;
        n.emit_output(0, Op::Gelu { approximation: GeluApproximation::None }, &[x]).map(|_| ())
    }),
    ("SimplifiedLayerNormalization", simplified_layer_norm),
    ("SkipLayerNormalization", |n| skip_layer_norm(n, false)),
    ("SkipSimplifiedLayerNormalization", |n| skip_layer_norm(n, true)),
];

/// RMS normalization under ONNX Runtime's name (either domain).
pub(super) fn simplified_layer_norm(n: &mut NodeImport) -> Result<()> {
    n.require_outputs(&[0])?;
    let inputs = [n.input(0)?, n.input(1)?];
    let op = Op::RmsNorm { axis: n.int("axis", -1), epsilon: n.float("epsilon", 1e-5) };
    n.emit_output(0, op, &inputs).map(|_| ())
}

/// `norm(input + skip [+ bias])`; output 3 is the sum itself.
fn skip_layer_norm(n: &mut NodeImport, simplified: bool) -> Result<()> {
    n.require_outputs(&[0, 3])?;
    let (input, skip, gamma) = (n.input(0)?, n.input(1)?, n.input(2)?);
    let (beta, bias) =
        if simplified { (None, n.optional_input(3)?) } else { (n.optional_input(3)?, n.optional_input(4)?) };
    let mut sum = n.emit(Op::Binary(BinaryOp::Add), &[input, skip])?;
    if let Some(bias) = bias {
        sum = n.emit(Op::Binary(BinaryOp::Add), &[sum, bias])?;
    }
    n.bind(3, sum);
    let epsilon = n.float("epsilon", 1e-12);
    if simplified {
        n.emit_output(0, Op::RmsNorm { axis: -1, epsilon }, &[sum, gamma])?;
    } else {
        let mut inputs = vec![sum, gamma];
        inputs.extend(beta);
        n.emit_output(0, Op::LayerNorm { axis: -1, epsilon }, &inputs)?;
    }
    Ok(())
}

/// The scalar dim `axis` of `value`'s shape, as an i64 scalar value.
fn dim_scalar(n: &mut NodeImport, value: ValueRef, axis: i64) -> Result<ValueRef> {
    let shape = n.emit(Op::Shape { start: 0, end: None }, &[value])?;
    let index = n.constant(Constant::scalar_i64(axis));
    n.emit(Op::Gather { axis: 0 }, &[shape, index])
}

/// `0, 1, …, seq-1` for the sequence axis (1) of `value`.
fn positions(n: &mut NodeImport, value: ValueRef) -> Result<ValueRef> {
    let length = dim_scalar(n, value, 1)?;
    let (zero, one) = (n.constant(Constant::scalar_i64(0)), n.constant(Constant::scalar_i64(1)));
    n.emit(Op::Range, &[zero, length, one])
}

/// `LayerNorm(word[ids] + position[0..seq] + segment[segment_ids])`; output 1
/// (`mask_index`) is the number of unmasked tokens per sequence, output 2 the sum.
fn embed_layer_norm(n: &mut NodeImport) -> Result<()> {
    n.require_outputs(&[0, 1, 2])?;
    let ids = n.input(0)?;
    let ids = n.as_i64(ids)?;
    let (word_table, position_table) = (n.input(2)?, n.input(3)?);
    let (gamma, beta) = (n.input(5)?, n.input(6)?);
    let words = n.emit(Op::Gather { axis: 0 }, &[word_table, ids])?;
    let position_ids = match n.optional_input(8)? {
        Some(ids) => n.as_i64(ids)?,
        None => positions(n, ids)?,
    };
    let positions = n.emit(Op::Gather { axis: 0 }, &[position_table, position_ids])?;
    let mut sum = n.emit(Op::Binary(BinaryOp::Add), &[words, positions])?;
    if let (Some(segment_ids), Some(segment_table)) = (n.optional_input(1)?, n.optional_input(4)?) {
        let segment_ids = n.as_i64(segment_ids)?;
        let segments = n.emit(Op::Gather { axis: 0 }, &[segment_table, segment_ids])?;
        sum = n.emit(Op::Binary(BinaryOp::Add), &[sum, segments])?;
    }
    n.bind(2, sum);
    let epsilon = n.float("epsilon", 1e-12);
    n.emit_output(0, Op::LayerNorm { axis: -1, epsilon }, &[sum, gamma, beta])?;
    if !n.output_name(1).is_empty() {
        let mask = n.optional_input(7)?.ok_or("mask_index is used but the node has no mask input")?;
        let mask = n.as_i64(mask)?;
        let count = n.emit(Op::Reduce { kind: ReduceKind::Sum, axes: vec![1], keep_dims: false }, &[mask])?;
        n.emit_output(1, Op::Cast { to: DType::I32 }, &[count])?;
    }
    Ok(())
}

/// Multi-head self-attention from a packed QKV projection, with an optional
/// key mask given as per-sequence lengths (`[batch]`) or a 0/1 mask (`[batch, seq]`).
fn attention(n: &mut NodeImport) -> Result<()> {
    n.require_outputs(&[0])?;
    if n.node.input.iter().skip(4).any(|name| !name.is_empty()) {
        return Err("past state, attention bias and past_sequence_length inputs are not supported".into());
    }
    if n.int("unidirectional", 0) != 0 || n.int("do_rotary", 0) != 0 {
        return Err("unidirectional and rotary forms are not supported".into());
    }
    let heads = n.int("num_heads", 0);
    let (input, weights) = (n.input(0)?, n.input(1)?);
    let dtype = n.dtype_of(input);
    let total =
        n.importer.graph.value_type(weights).shape.get(1).and_then(|d| d.as_constant()).ok_or("weights must be 2-D")?;
    let sizes = match n.ints("qkv_hidden_sizes") {
        Some(sizes) if sizes.len() == 3 => sizes,
        Some(_) => return Err("qkv_hidden_sizes must have 3 entries".into()),
        None if total % 3 == 0 => vec![total / 3; 3],
        None => return Err(format!("{total} projection columns do not split into Q, K and V")),
    };
    if heads <= 0 || sizes.iter().any(|s| s % heads != 0) || sizes[0] != sizes[1] {
        return Err(format!("num_heads {heads} does not divide the hidden sizes {sizes:?}"));
    }
    let mut packed = n.emit(Op::MATMUL, &[input, weights])?;
    if let Some(bias) = n.optional_input(2)? {
        packed = n.emit(Op::Binary(BinaryOp::Add), &[packed, bias])?;
    }
    let heads_of = |n: &mut NodeImport, start: i64, size: i64, permutation: Vec<usize>| -> Result<ValueRef> {
        let (starts, ends) = (n.ints_constant(&[start]), n.ints_constant(&[start + size]));
        let (axes, steps) = (n.ints_constant(&[2]), n.ints_constant(&[1]));
        let part = n.emit(Op::Slice, &[packed, starts, ends, axes, steps])?;
        let shape = n.ints_constant(&[0, 0, heads, size / heads]);
        let split = n.emit(Op::Reshape { allow_zero: false }, &[part, shape])?;
        n.emit(Op::Transpose { permutation }, &[split])
    };
    let query = heads_of(n, 0, sizes[0], vec![0, 2, 1, 3])?;
    let key_transposed = heads_of(n, sizes[0], sizes[1], vec![0, 2, 3, 1])?;
    let value = heads_of(n, sizes[0] + sizes[1], sizes[2], vec![0, 2, 1, 3])?;
    let scores = n.emit(Op::MATMUL, &[query, key_transposed])?;
    let scale = match n.float("scale", 0.0) {
        0.0 => 1.0 / ((sizes[0] / heads) as f32).sqrt(),
        scale => scale,
    };
    let scale = n.constant(Constant::scalar_f32(dtype, scale));
    let mut scores = n.emit(Op::Binary(BinaryOp::Mul), &[scores, scale])?;
    if let Some(mask) = n.optional_input(3)? {
        let keep = match n.importer.graph.value_type(mask).rank() {
            1 => {
                let lengths = n.as_i64(mask)?;
                let lengths = n.emit(Op::Unsqueeze { axes: vec![1] }, &[lengths])?;
                let positions = positions(n, input)?;
                let positions = n.emit(Op::Unsqueeze { axes: vec![0] }, &[positions])?;
                n.emit(Op::Binary(BinaryOp::Less), &[positions, lengths])?
            }
            2 => n.emit(Op::Cast { to: DType::Bool }, &[mask])?,
            rank => return Err(format!("a rank-{rank} mask_index is not supported")),
        };
        let zero = n.constant(Constant::scalar_f32(dtype, 0.0));
        let filter = n.constant(Constant::from_tensor(&Tensor::from_f32(
            dtype,
            Vec::new(),
            vec![n.float("mask_filter_value", -10000.0)],
        )));
        let additive = n.emit(Op::Where, &[keep, zero, filter])?;
        let additive = n.emit(Op::Unsqueeze { axes: vec![1, 2] }, &[additive])?;
        scores = n.emit(Op::Binary(BinaryOp::Add), &[scores, additive])?;
    }
    let probabilities = n.emit(Op::Softmax { axis: -1 }, &[scores])?;
    let context = n.emit(Op::MATMUL, &[probabilities, value])?;
    let context = n.emit(Op::Transpose { permutation: vec![0, 2, 1, 3] }, &[context])?;
    let shape = n.ints_constant(&[0, 0, sizes[2]]);
    n.emit_output(0, Op::Reshape { allow_zero: false }, &[context, shape])?;
    Ok(())
}
