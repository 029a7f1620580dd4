//! BERT (BertModel, BertForSequenceClassification) and DistilBERT graphs,
//! written as the ONNX exporters write them: post-norm layers, an additive
//! padding mask from `attention_mask`, erf or tanh GELU.

use kiln_ir::{BinaryOp, DType, Dim, GeluApproximation, Graph, Op, TensorType, UnaryOp, ValueRef};

use super::builder::Builder;
use super::config::{Activation, EncoderConfig, EncoderFamily, Head};
use super::weights::WeightStore;
use super::HfImportError;

/// Tensor names with every prefix a checkpoint may put before them.
fn names(prefixes: &[&str], name: &str) -> Vec<String> {
    prefixes.iter().map(|p| format!("{p}{name}")).collect()
}

pub fn build_encoder(config: &EncoderConfig, weights: &WeightStore, dtype: DType) -> Result<Graph, HfImportError> {
    let prefixes: &[&str] = match config.family {
        EncoderFamily::Bert => &["", "bert."],
        EncoderFamily::DistilBert => &["", "distilbert."],
    };
    let n = |name: &str| names(prefixes, name);
    let mut b = Builder::new(weights, dtype);
    let token_shape = vec![Dim::symbol("batch"), Dim::symbol("seq")];
    let ids = b.graph.add_input("input_ids", TensorType::new(DType::I64, token_shape.clone()));
    let mask = b.graph.add_input("attention_mask", TensorType::new(DType::I64, token_shape.clone()));
    let types = (config.family == EncoderFamily::Bert)
        .then(|| b.graph.add_input("token_type_ids", TensorType::new(DType::I64, token_shape)));

    b.set_scope("embeddings");
    let word_table = b.weight(&n("embeddings.word_embeddings.weight"))?;
    let mut embeddings = b.op(Op::Gather { axis: 0 }, &[word_table, ids])?;
    if let Some(types) = types {
        let type_table = b.weight(&n("embeddings.token_type_embeddings.weight"))?;
        let type_embeddings = b.op(Op::Gather { axis: 0 }, &[type_table, types])?;
        embeddings = b.binary(BinaryOp::Add, embeddings, type_embeddings)?;
    }
    let length = b.dim(ids, 1)?;
    let positions = b.range(length)?;
    let position_table = b.weight(&n("embeddings.position_embeddings.weight"))?;
    let position_embeddings = b.op(Op::Gather { axis: 0 }, &[position_table, positions])?;
    embeddings = b.binary(BinaryOp::Add, embeddings, position_embeddings)?;
    let mut hidden = layer_norm(&mut b, config, embeddings, &n("embeddings.LayerNorm"))?;

    let keep = b.op(Op::Cast { to: DType::Bool }, &[mask])?;
    let keep = b.op(Op::Unsqueeze { axes: vec![1, 2] }, &[keep])?;
    let additive_mask = b.additive_mask(keep)?;

    let head_dim = config.hidden / config.heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    for layer in 0..config.layers {
        let p = |suffix: &str| match config.family {
            EncoderFamily::Bert => n(&format!("encoder.layer.{layer}.{suffix}")),
            EncoderFamily::DistilBert => n(&format!("transformer.layer.{layer}.{suffix}")),
        };
        let (query, key, value, output, attention_norm, up, down, output_norm) = match config.family {
            EncoderFamily::Bert => (
                "attention.self.query",
                "attention.self.key",
                "attention.self.value",
                "attention.output.dense",
                "attention.output.LayerNorm",
                "intermediate.dense",
                "output.dense",
                "output.LayerNorm",
            ),
            EncoderFamily::DistilBert => (
                "attention.q_lin",
                "attention.k_lin",
                "attention.v_lin",
                "attention.out_lin",
                "sa_layer_norm",
                "ffn.lin1",
                "ffn.lin2",
                "output_layer_norm",
            ),
        };
        let linear = |b: &mut Builder, x: ValueRef, name: &str| {
            b.linear(x, &p(&format!("{name}.weight")), Some(&p(&format!("{name}.bias"))))
        };
        b.set_scope(&format!("layers.{layer}.attention"));
        let q = linear(&mut b, hidden, query)?;
        let k = linear(&mut b, hidden, key)?;
        let v = linear(&mut b, hidden, value)?;
        let q = b.split_heads(q, config.heads, head_dim, false)?;
        let k = b.split_heads(k, config.heads, head_dim, true)?;
        let v = b.split_heads(v, config.heads, head_dim, false)?;
        let context = b.attention(q, k, v, scale, additive_mask)?;
        let context = b.merge_heads(context, config.hidden)?;
        let attended = linear(&mut b, context, output)?;
        let residual = b.binary(BinaryOp::Add, attended, hidden)?;
        hidden = layer_norm(&mut b, config, residual, &p(attention_norm))?;

        b.set_scope(&format!("layers.{layer}.mlp"));
        let expanded = linear(&mut b, hidden, up)?;
        let activated = match config.activation {
            Activation::GeluErf => b.op(Op::Gelu { approximation: GeluApproximation::None }, &[expanded])?,
            Activation::GeluTanh => b.op(Op::Gelu { approximation: GeluApproximation::Tanh }, &[expanded])?,
            Activation::Relu => b.unary(UnaryOp::Relu, expanded)?,
        };
        let contracted = linear(&mut b, activated, down)?;
        let residual = b.binary(BinaryOp::Add, contracted, hidden)?;
        hidden = layer_norm(&mut b, config, residual, &p(output_norm))?;
    }

    b.set_scope("head");
    let pooler_weight = n("pooler.dense.weight");
    let has_pooler = pooler_weight.iter().any(|name| weights.contains(name));
    let pooled = if config.family == EncoderFamily::Bert && (has_pooler || config.head == Head::SequenceClassification)
    {
        let first = b.scalar_i64(0);
        let first_token = b.op(Op::Gather { axis: 1 }, &[hidden, first])?;
        let dense = b.linear(first_token, &pooler_weight, Some(&n("pooler.dense.bias")))?;
        Some(b.unary(UnaryOp::Tanh, dense)?)
    } else {
        None
    };
    match (config.head, pooled) {
        (Head::SequenceClassification, Some(pooled)) => {
            let logits =
                b.linear(pooled, &["classifier.weight".to_string()], Some(&["classifier.bias".to_string()]))?;
            Ok(b.finish(&[("logits", logits)]))
        }
        (_, Some(pooled)) => Ok(b.finish(&[("last_hidden_state", hidden), ("pooler_output", pooled)])),
        (_, None) => Ok(b.finish(&[("last_hidden_state", hidden)])),
    }
}

fn layer_norm(
    b: &mut Builder,
    config: &EncoderConfig,
    x: ValueRef,
    prefix: &[String],
) -> Result<ValueRef, HfImportError> {
    let with = |suffix: &str| prefix.iter().map(|p| format!("{p}.{suffix}")).collect::<Vec<_>>();
    let scale = b.weight(&with("weight"))?;
    let bias = b.weight(&with("bias"))?;
    b.op(Op::LayerNorm { axis: -1, epsilon: config.epsilon }, &[x, scale, bias])
}
