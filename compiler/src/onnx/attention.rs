//! The default domain's `Attention` (opsets 23 to 25) in IR ops, as ONNX's
//! reference defines it: 3-D inputs split into heads (`q_num_heads`,
//! `kv_num_heads`), Q and K each scaled by √scale, `past_key`/`past_value`
//! prepended along the sequence (the concatenations are the `present_*`
//! outputs), grouped-query heads repeated in place (`[h0, h0, h1, h1, …]`),
//! `softcap`, an additive or boolean `attn_mask` (shorter masks padded as
//! masked), `is_causal` aligned to the end of the keys (offset by the past),
//! softmax over keys with rows whose bias masks every key set to zero, and
//! `qk_matmul_output` in each of its modes. Without a mask, softcap or exposed
//! scores it is kiln's attention op directly (the op the recognizers make of
//! exported graphs); otherwise the matmul → softmax → matmul graph above.
//!
//! Opset 24's external cache (`nonpad_kv_seqlen`: keys past each batch's
//! length are masked, and the causal frontier and windows are offset by
//! `nonpad_kv_seqlen[b] − q_len`) and the sliding windows (`left_window_size`,
//! `right_window_size`, around each query's absolute position) are more
//! bias terms of that graph.
//!
//! `softmax_precision` casts the biased scores to float64, float32, float16
//! or bfloat16 for the softmax and the probabilities back (float64 is for the
//! reference evaluator: kiln's kernels refuse it by name).

use kiln_ir::{BinaryOp, DType, Dim, MaskKind, Op, ReduceKind, SequenceLayout, UnaryOp, ValueRef};

use super::ops::NodeImport;

type Result<T> = std::result::Result<T, String>;

/// `[batch, seq, heads·head]` as `[batch, heads, seq, head]`.
fn split_heads(n: &mut NodeImport, x: ValueRef, heads: i64, what: &str) -> Result<ValueRef> {
    let shape = n.importer.graph.value_type(x).shape.clone();
    let hidden = shape[2].as_constant().ok_or_else(|| format!("not supported: {what}'s hidden size is symbolic"))?;
    if heads < 1 || hidden % heads != 0 {
        return Err(format!(
            "{heads} heads do not divide {what}'s hidden size {hidden} (3-D inputs need q_num_heads and kv_num_heads)"
        ));
    }
    let split = vec![shape[0].clone(), shape[1].clone(), Dim::constant(heads), Dim::constant(hidden / heads)];
    let split = n.emit(Op::Dims { values: split, scalar: false }, &[])?;
    let split = n.emit(Op::Reshape { allow_zero: false }, &[x, split])?;
    n.emit(Op::Transpose { permutation: vec![0, 2, 1, 3] }, &[split])
}

/// `x` as a float value of `dtype`: `where(keep, 0, −∞)` for a boolean mask.
fn additive(n: &mut NodeImport, mask: ValueRef, dtype: DType) -> Result<ValueRef> {
    if n.dtype_of(mask) != DType::Bool {
        return Ok(mask);
    }
    let (zero, masked) = (n.scalar(dtype, 0.0), n.scalar(dtype, f32::NEG_INFINITY));
    n.emit(Op::Where, &[mask, zero, masked])
}

/// Where each query stands relative to the keys: a fixed offset (the past's
/// length, or 0) or one per batch (`nonpad_kv_seqlen[b] − q_len`, as i64 `[batch]`).
enum Offset {
    Fixed(Dim),
    PerBatch(ValueRef),
}

/// `(i + offset) − j` for query `i` and key `j`: i64 `[sq, skv]` for a fixed
/// offset, `[batch, 1, sq, skv]` for one per batch. Causality allows `≥ 0`;
/// a window allows `≤ left` and `≥ −right`.
fn position_difference(n: &mut NodeImport, queries: &Dim, keys: &Dim, offset: &Offset) -> Result<ValueRef> {
    let zero = n.ints_scalar(0);
    let one = n.ints_scalar(1);
    let query_count = n.dims_scalar(queries)?;
    let rows = n.emit(Op::Range, &[zero, query_count, one])?;
    let rows = n.emit(Op::Unsqueeze { axes: vec![1] }, &[rows])?;
    let offset = match offset {
        Offset::Fixed(dim) => n.dims_scalar(dim)?,
        Offset::PerBatch(per_batch) => n.emit(Op::Unsqueeze { axes: vec![1, 2, 3] }, &[*per_batch])?,
    };
    let positions = n.emit(Op::Binary(BinaryOp::Add), &[rows, offset])?;
    let columns = key_indices(n, keys)?;
    n.emit(Op::Binary(BinaryOp::Sub), &[positions, columns])
}

/// The key indices `[1, skv]` (i64).
fn key_indices(n: &mut NodeImport, keys: &Dim) -> Result<ValueRef> {
    let (zero, one, key_count) = (n.ints_scalar(0), n.ints_scalar(1), n.dims_scalar(keys)?);
    let columns = n.emit(Op::Range, &[zero, key_count, one])?;
    n.emit(Op::Unsqueeze { axes: vec![0] }, &[columns])
}

/// The additive bias allowing where `difference op bound` holds.
fn bias_where(n: &mut NodeImport, difference: ValueRef, op: BinaryOp, bound: i64, dtype: DType) -> Result<ValueRef> {
    let bound = n.ints_scalar(bound);
    let allowed = n.emit(Op::Binary(op), &[difference, bound])?;
    additive(n, allowed, dtype)
}

pub(super) fn import_attention(n: &mut NodeImport) -> Result<()> {
    let nonpad_kv_seqlen = match n.optional_input(6)? {
        Some(lengths) => Some(n.as_i64(lengths)?),
        None => None,
    };
    let (left_window, right_window) = (n.int("left_window_size", -1), n.int("right_window_size", -1));
    if left_window < -1 || right_window < -1 {
        return Err(format!("window sizes {left_window} and {right_window} (-1 or non-negative)"));
    }
    let windowed = left_window >= 0 || right_window >= 0;
    let (mut q, mut k, mut v) = (n.input(0)?, n.input(1)?, n.input(2)?);
    let dtype = n.dtype_of(q);
    let precision = match n.int("softmax_precision", 0) {
        0 => dtype,
        code => match super::tensors::dtype_from_onnx(code as i32) {
            Ok(precision @ (DType::F64 | DType::F32 | DType::F16 | DType::BF16)) => precision,
            _ => {
                return Err(format!(
                    "not supported: softmax_precision {code} (kiln computes softmax in float64, float32, float16 or \
                     bfloat16)"
                ))
            }
        },
    };
    let rank = n.importer.graph.value_type(q).rank();
    if rank == 3 {
        let (q_heads, kv_heads) = (n.int("q_num_heads", 0), n.int("kv_num_heads", 0));
        q = split_heads(n, q, q_heads, "Q")?;
        k = split_heads(n, k, kv_heads, "K")?;
        v = split_heads(n, v, kv_heads, "V")?;
    } else if rank != 4 {
        return Err(format!("inputs of rank {rank} (3 or 4 expected)"));
    }
    // Scale: Q and K each by √scale (default scale 1/√head).
    let head = n.importer.graph.value_type(q).shape[3].as_constant().ok_or("not supported: a symbolic head size")?;
    let scale = match n.attribute("scale") {
        Some(attribute) => attribute.f,
        None => 1.0 / (head as f32).sqrt(),
    };
    // Past keys and values come first along the sequence.
    let past_length = match (n.optional_input(4)?, n.optional_input(5)?) {
        (Some(past_key), Some(past_value)) => {
            let length = n.importer.graph.value_type(past_key).shape[2].clone();
            k = n.emit(Op::Concat { axis: 2 }, &[past_key, k])?;
            v = n.emit(Op::Concat { axis: 2 }, &[past_value, v])?;
            length
        }
        (None, None) => Dim::constant(0),
        _ => return Err("past_key and past_value come together".into()),
    };
    if nonpad_kv_seqlen.is_some() && past_length != Dim::constant(0) {
        return Err("nonpad_kv_seqlen (an external cache) with past_key and past_value (an internal one)".into());
    }
    n.bind(1, k);
    n.bind(2, v);
    // Without a mask, softcap or exposed scores, this is kiln's attention op
    // itself (whose causal frontier, `j ≤ i + sk − sq`, is ONNX's when the
    // past is all that makes the keys outnumber the queries).
    let causal = n.int("is_causal", 0) != 0;
    let (queries, keys) =
        (n.importer.graph.value_type(q).shape[2].clone(), n.importer.graph.value_type(k).shape[2].clone());
    // A boolean mask of keys alone (`[batch, 1, 1, keys]`) is the attention op's padding mask.
    let key_keep = match n.optional_input(3)? {
        Some(mask) if n.dtype_of(mask) == DType::Bool => {
            let shape = &n.importer.graph.value_type(mask).shape;
            let batch = &n.importer.graph.value_type(q).shape[0];
            let per_key = shape.len() == 4
                && &shape[0] == batch
                && shape[1] == Dim::constant(1)
                && shape[2] == Dim::constant(1)
                && shape[3] == keys;
            per_key.then_some(mask)
        }
        _ => None,
    };
    let plain = (n.optional_input(3)?.is_none() || key_keep.is_some())
        && n.float("softcap", 0.0) <= 0.0
        && n.output_name(3).is_empty()
        && nonpad_kv_seqlen.is_none()
        && !windowed
        && (precision == dtype || precision == DType::F32);
    if plain && (!causal || &keys - &queries == past_length) {
        let mask = match (causal, key_keep.is_some()) {
            (false, false) => MaskKind::None,
            (true, false) => MaskKind::Causal,
            (false, true) => MaskKind::Padding,
            (true, true) => MaskKind::CausalAndPadding,
        };
        let op = Op::Attention {
            scale,
            mask,
            mask_fill: f32::NEG_INFINITY,
            zero_fully_masked_rows: true,
            layout: SequenceLayout::Padded,
        };
        let mut inputs = vec![q, k, v];
        if let Some(mask) = key_keep {
            let batch = n.importer.graph.value_type(q).shape[0].clone();
            let shape = n.emit(Op::Dims { values: vec![batch, keys.clone()], scalar: false }, &[])?;
            inputs.push(n.emit(Op::Reshape { allow_zero: false }, &[mask, shape])?);
        }
        if rank == 4 {
            return n.emit_output(0, op, &inputs).map(|_| ());
        }
        let context = n.emit(op, &inputs)?;
        return merge_heads(n, context);
    }
    let root = n.scalar(dtype, scale.sqrt());
    let q = n.emit(Op::Binary(BinaryOp::Mul), &[q, root])?;
    let k = n.emit(Op::Binary(BinaryOp::Mul), &[k, root])?;
    // Grouped-query heads: each KV head repeated for its group, in place.
    let (q_type, k_type) = (n.importer.graph.value_type(q).clone(), n.importer.graph.value_type(k).clone());
    let (q_heads, kv_heads) = (q_type.shape[1].as_constant(), k_type.shape[1].as_constant());
    let (k, v) = match (q_heads, kv_heads) {
        (Some(q_heads), Some(kv_heads)) if q_heads != kv_heads => {
            if q_heads % kv_heads != 0 {
                return Err(format!("{q_heads} query heads are not a multiple of {kv_heads} key/value heads"));
            }
            let mut repeated = Vec::new();
            for x in [k, v] {
                let shape = n.importer.graph.value_type(x).shape.clone();
                let grouped = n.emit(Op::Unsqueeze { axes: vec![2] }, &[x])?;
                let mut wide = shape.clone();
                wide.insert(2, Dim::constant(q_heads / kv_heads));
                let wide = n.emit(Op::Dims { values: wide, scalar: false }, &[])?;
                let grouped = n.emit(Op::Expand, &[grouped, wide])?;
                let mut flat = shape;
                flat[1] = Dim::constant(q_heads);
                let flat = n.emit(Op::Dims { values: flat, scalar: false }, &[])?;
                repeated.push(n.emit(Op::Reshape { allow_zero: false }, &[grouped, flat])?);
            }
            (repeated[0], repeated[1])
        }
        _ => (k, v),
    };
    let keys_transposed = n.emit(Op::Transpose { permutation: vec![0, 1, 3, 2] }, &[k])?;
    let mut scores = n.emit(Op::MATMUL, &[q, keys_transposed])?;
    let softcap = n.float("softcap", 0.0);
    if softcap > 0.0 {
        let cap = n.scalar(dtype, softcap);
        let scaled = n.emit(Op::Binary(BinaryOp::Div), &[scores, cap])?;
        let bounded = n.emit(Op::Unary(UnaryOp::Tanh), &[scaled])?;
        scores = n.emit(Op::Binary(BinaryOp::Mul), &[bounded, cap])?;
    }
    // The additive bias: the mask (padded as masked up to every key), then causality.
    let mut bias = match n.optional_input(3)? {
        None => None,
        Some(mask) => {
            let mask_type = n.importer.graph.value_type(mask).clone();
            let mask_keys = mask_type.shape.last().cloned().ok_or("a rank-0 attn_mask")?;
            let mut mask = additive(n, mask, dtype)?;
            if mask_keys != keys {
                let (have, want) = match (mask_keys.as_constant(), keys.as_constant()) {
                    (Some(have), Some(want)) if have < want => (have, want),
                    _ => return Err(format!("not supported: an attn_mask of {mask_keys} keys for {keys} keys")),
                };
                let mut pad = mask_type.shape.clone();
                *pad.last_mut().expect("rank ≥ 1") = Dim::constant(want - have);
                let pad = n.emit(Op::Dims { values: pad, scalar: false }, &[])?;
                let masked = n.scalar(dtype, f32::NEG_INFINITY);
                let padding = n.emit(Op::Expand, &[masked, pad])?;
                mask = n.emit(Op::Concat { axis: -1 }, &[mask, padding])?;
            }
            Some(mask)
        }
    };
    // Causality and the windows, around each query's absolute position; then the external cache's padding.
    let offset = match nonpad_kv_seqlen {
        Some(lengths) => {
            let query_count = n.dims_scalar(&queries)?;
            Offset::PerBatch(n.emit(Op::Binary(BinaryOp::Sub), &[lengths, query_count])?)
        }
        None => Offset::Fixed(past_length.clone()),
    };
    let mut terms = Vec::new();
    if causal || windowed {
        let difference = position_difference(n, &queries, &keys, &offset)?;
        if causal {
            terms.push(bias_where(n, difference, BinaryOp::GreaterOrEqual, 0, dtype)?);
        }
        if left_window >= 0 {
            terms.push(bias_where(n, difference, BinaryOp::LessOrEqual, left_window, dtype)?);
        }
        if right_window >= 0 {
            terms.push(bias_where(n, difference, BinaryOp::GreaterOrEqual, -right_window, dtype)?);
        }
    }
    if let Some(lengths) = nonpad_kv_seqlen {
        let lengths = n.emit(Op::Unsqueeze { axes: vec![1, 2, 3] }, &[lengths])?;
        let columns = key_indices(n, &keys)?;
        let present = n.emit(Op::Binary(BinaryOp::Less), &[columns, lengths])?;
        terms.push(additive(n, present, dtype)?);
    }
    for term in terms {
        bias = Some(match bias {
            Some(bias) => n.emit(Op::Binary(BinaryOp::Add), &[bias, term])?,
            None => term,
        });
    }
    let with_bias = match bias {
        Some(bias) => n.emit(Op::Binary(BinaryOp::Add), &[scores, bias])?,
        None => scores,
    };
    let softmax_input = match precision == dtype {
        true => with_bias,
        false => n.emit(Op::Cast { to: precision }, &[with_bias])?,
    };
    let mut probabilities = n.emit(Op::Softmax { axis: -1 }, &[softmax_input])?;
    if let Some(bias) = bias {
        // A row whose bias masks every key attends to nothing: zero probabilities.
        let row_max = n.emit(Op::Reduce { kind: ReduceKind::Max, axes: vec![-1], keep_dims: true }, &[bias])?;
        let masked = n.scalar(dtype, f32::NEG_INFINITY);
        let all_masked = n.emit(Op::Binary(BinaryOp::Equal), &[row_max, masked])?;
        let zero = n.scalar(precision, 0.0);
        probabilities = n.emit(Op::Where, &[all_masked, zero, probabilities])?;
    }
    if precision != dtype {
        probabilities = n.emit(Op::Cast { to: dtype }, &[probabilities])?;
    }
    if !n.output_name(3).is_empty() {
        // As ONNX's reference: modes 0 and 1 give the (softcapped) scores, 2 with the bias, 3 the probabilities.
        let exposed = match n.int("qk_matmul_output_mode", 0) {
            0 | 1 => scores,
            2 => with_bias,
            3 => probabilities,
            other => return Err(format!("qk_matmul_output_mode {other} (0 to 3)")),
        };
        n.bind(3, exposed);
    }
    if rank == 4 {
        return n.emit_output(0, Op::MATMUL, &[probabilities, v]).map(|_| ());
    }
    let context = n.emit(Op::MATMUL, &[probabilities, v])?;
    merge_heads(n, context)
}

/// `[batch, heads, seq, head]` as `[batch, seq, heads·head]`, the node's output 0.
fn merge_heads(n: &mut NodeImport, context: ValueRef) -> Result<()> {
    let heads_last = n.emit(Op::Transpose { permutation: vec![0, 2, 1, 3] }, &[context])?;
    let shape = n.importer.graph.value_type(heads_last).shape.clone();
    let merged = match (shape[2].as_constant(), shape[3].as_constant()) {
        (Some(heads), Some(head)) => Dim::constant(heads * head),
        _ => return Err("not supported: symbolic head counts or sizes".into()),
    };
    let merged = n.emit(Op::Dims { values: vec![shape[0].clone(), shape[1].clone(), merged], scalar: false }, &[])?;
    n.emit_output(0, Op::Reshape { allow_zero: false }, &[heads_last, merged]).map(|_| ())
}
