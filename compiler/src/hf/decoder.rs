//! Llama, Qwen2 and Mistral causal LMs: pre-norm layers with RMSNorm,
//! rotate-half RoPE over positions `0..seq`, grouped-query attention under a
//! causal + padding mask, and a SwiGLU MLP — written as exporters write them.

use kiln_ir::{BinaryOp, Constant, DType, Dim, Graph, Op, Tensor, TensorType, UnaryOp, ValueRef};

use super::builder::Builder;
use super::config::{DecoderConfig, Head};
use super::weights::WeightStore;
use super::HfImportError;

pub fn build_decoder(config: &DecoderConfig, weights: &WeightStore, dtype: DType) -> Result<Graph, HfImportError> {
    let n = |name: &str| vec![format!("model.{name}"), name.to_string()];
    let mut b = Builder::new(weights, dtype);
    let token_shape = vec![Dim::symbol("batch"), Dim::symbol("seq")];
    let ids = b.graph.add_input("input_ids", TensorType::new(DType::I64, token_shape.clone()));
    let mask = b.graph.add_input("attention_mask", TensorType::new(DType::I64, token_shape));

    b.set_scope("embeddings");
    let embedding_names = n("embed_tokens.weight");
    let table = b.weight(&embedding_names)?;
    let mut hidden = b.op(Op::Gather { axis: 0 }, &[table, ids])?;

    b.set_scope("rope");
    let length = b.dim(ids, 1)?;
    let positions = b.range(length)?;
    let (cos, sin) = rope_tables(&mut b, config, positions)?;

    b.set_scope("mask");
    let additive_mask = causal_padding_mask(&mut b, mask, positions)?;

    let scale = 1.0 / (config.head_dim as f32).sqrt();
    let groups = config.heads / config.kv_heads;
    let output_bias = config.attention_bias && config.model_type != "qwen2";
    for layer in 0..config.layers {
        let p = |suffix: &str| n(&format!("layers.{layer}.{suffix}"));
        let linear = |b: &mut Builder, x: ValueRef, name: &str, bias: bool| {
            let bias_names = p(&format!("{name}.bias"));
            b.linear(x, &p(&format!("{name}.weight")), bias.then_some(bias_names.as_slice()))
        };
        b.set_scope(&format!("layers.{layer}.attention"));
        let normed = rms_norm(&mut b, config, hidden, &p("input_layernorm.weight"))?;
        let q = linear(&mut b, normed, "self_attn.q_proj", config.attention_bias)?;
        let k = linear(&mut b, normed, "self_attn.k_proj", config.attention_bias)?;
        let v = linear(&mut b, normed, "self_attn.v_proj", config.attention_bias)?;
        let q = b.split_heads(q, config.heads, config.head_dim, false)?;
        let k = b.split_heads(k, config.kv_heads, config.head_dim, false)?;
        let v = b.split_heads(v, config.kv_heads, config.head_dim, false)?;
        let q = apply_rope(&mut b, config, q, cos, sin)?;
        let k = apply_rope(&mut b, config, k, cos, sin)?;
        let k = repeat_kv(&mut b, config, k, groups)?;
        let v = repeat_kv(&mut b, config, v, groups)?;
        let k = b.op(Op::Transpose { permutation: vec![0, 1, 3, 2] }, &[k])?;
        let context = b.attention(q, k, v, scale, additive_mask)?;
        let context = b.merge_heads(context, config.heads * config.head_dim)?;
        let attended = linear(&mut b, context, "self_attn.o_proj", output_bias)?;
        hidden = b.binary(BinaryOp::Add, hidden, attended)?;

        b.set_scope(&format!("layers.{layer}.mlp"));
        let normed = rms_norm(&mut b, config, hidden, &p("post_attention_layernorm.weight"))?;
        let gate = linear(&mut b, normed, "mlp.gate_proj", config.mlp_bias)?;
        let up = linear(&mut b, normed, "mlp.up_proj", config.mlp_bias)?;
        let sigmoid = b.unary(UnaryOp::Sigmoid, gate)?;
        let silu = b.binary(BinaryOp::Mul, gate, sigmoid)?;
        let gated = b.binary(BinaryOp::Mul, silu, up)?;
        let down = linear(&mut b, gated, "mlp.down_proj", config.mlp_bias)?;
        hidden = b.binary(BinaryOp::Add, hidden, down)?;
    }

    b.set_scope("head");
    hidden = rms_norm(&mut b, config, hidden, &n("norm.weight"))?;
    if config.head == Head::BaseModel {
        return Ok(b.finish(&[("last_hidden_state", hidden)]));
    }
    let lm_head = vec!["lm_head.weight".to_string()];
    let head_names =
        if weights.contains("lm_head.weight") || !config.tied_embeddings { lm_head } else { embedding_names };
    let logits = b.linear(hidden, &head_names, None)?;
    Ok(b.finish(&[("logits", logits)]))
}

fn rms_norm(b: &mut Builder, config: &DecoderConfig, x: ValueRef, names: &[String]) -> Result<ValueRef, HfImportError> {
    let scale = b.weight(names)?;
    b.op(Op::RmsNorm { axis: -1, epsilon: config.epsilon }, &[x, scale])
}

/// `cos` and `sin` of `position · θ^(-2i/d)`, each `[seq, head_dim]` with the
/// frequencies repeated for both halves (rotate-half layout).
fn rope_tables(
    b: &mut Builder,
    config: &DecoderConfig,
    positions: ValueRef,
) -> Result<(ValueRef, ValueRef), HfImportError> {
    let half = (config.head_dim / 2) as usize;
    let inverse_frequencies: Vec<f32> =
        (0..half).map(|i| (1.0 / config.rope_theta.powf(2.0 * i as f64 / config.head_dim as f64)) as f32).collect();
    let frequencies =
        b.constant(Constant::from_tensor(&Tensor::from_f32(DType::F32, vec![1, half], inverse_frequencies)));
    let positions = b.op(Op::Cast { to: DType::F32 }, &[positions])?;
    let positions = b.op(Op::Unsqueeze { axes: vec![1] }, &[positions])?;
    let angles = b.binary(BinaryOp::Mul, positions, frequencies)?;
    let angles = b.op(Op::Concat { axis: -1 }, &[angles, angles])?;
    let mut cos = b.unary(UnaryOp::Cos, angles)?;
    let mut sin = b.unary(UnaryOp::Sin, angles)?;
    if b.dtype != DType::F32 {
        cos = b.op(Op::Cast { to: b.dtype }, &[cos])?;
        sin = b.op(Op::Cast { to: b.dtype }, &[sin])?;
    }
    Ok((cos, sin))
}

/// `x·cos + rotate_half(x)·sin` with `rotate_half(x) = [-x₂, x₁]` over the last dim.
fn apply_rope(
    b: &mut Builder,
    config: &DecoderConfig,
    x: ValueRef,
    cos: ValueRef,
    sin: ValueRef,
) -> Result<ValueRef, HfImportError> {
    let half = config.head_dim / 2;
    let slice = |b: &mut Builder, start: i64, end: i64| {
        let (starts, ends, axes, steps) = (b.ints(&[start]), b.ints(&[end]), b.ints(&[-1]), b.ints(&[1]));
        b.op(Op::Slice, &[x, starts, ends, axes, steps])
    };
    let first = slice(b, 0, half)?;
    let second = slice(b, half, i64::MAX)?;
    let negated = b.unary(UnaryOp::Neg, second)?;
    let rotated = b.op(Op::Concat { axis: -1 }, &[negated, first])?;
    let x_cos = b.binary(BinaryOp::Mul, x, cos)?;
    let rotated_sin = b.binary(BinaryOp::Mul, rotated, sin)?;
    b.binary(BinaryOp::Add, x_cos, rotated_sin)
}

/// `[b, kv, s, d] → [b, kv·groups, s, d]`, each key/value head repeated for its query heads.
fn repeat_kv(b: &mut Builder, config: &DecoderConfig, x: ValueRef, groups: i64) -> Result<ValueRef, HfImportError> {
    if groups == 1 {
        return Ok(x);
    }
    let expanded = b.op(Op::Unsqueeze { axes: vec![2] }, &[x])?;
    let repeats = b.ints(&[1, 1, groups, 1, 1]);
    let expanded = b.op(Op::Expand, &[expanded, repeats])?;
    let shape = b.ints(&[0, config.heads, -1, config.head_dim]);
    b.op(Op::Reshape { allow_zero: false }, &[expanded, shape])
}

/// `[batch, 1, seq, seq]`: 0 where key `j ≤` query `i` and key `j` is not
/// padding, the lowest finite value elsewhere.
fn causal_padding_mask(b: &mut Builder, mask: ValueRef, positions: ValueRef) -> Result<ValueRef, HfImportError> {
    let rows = b.op(Op::Unsqueeze { axes: vec![1] }, &[positions])?;
    let columns = b.op(Op::Unsqueeze { axes: vec![0] }, &[positions])?;
    let causal = b.binary(BinaryOp::LessOrEqual, columns, rows)?;
    let keep = b.op(Op::Cast { to: DType::Bool }, &[mask])?;
    let keep = b.op(Op::Unsqueeze { axes: vec![1, 2] }, &[keep])?;
    let allowed = b.binary(BinaryOp::And, keep, causal)?;
    b.additive_mask(allowed)
}
