//! Sentence embeddings from a compiled encoder: tokenize with the model's own
//! `tokenizer.json`, run the artifact, pool and normalize as the
//! sentence-transformers `modules.json` says, and compare texts by cosine
//! similarity. This is what `kiln embed` prints.

use std::path::Path;

use anyhow::{bail, Context, Result};
use kiln_runtime::{HostTensor, Session};

/// How token vectors become one sentence vector (sentence-transformers' modules).
#[derive(Clone, Debug, PartialEq)]
pub struct Pooling {
    /// Mean over unmasked tokens (else the first token, CLS).
    pub mean: bool,
    /// L2-normalize the pooled vector.
    pub normalize: bool,
}

/// Reads `modules.json` and the pooling module's `config.json`; a directory
/// without `modules.json` gets mean pooling without normalization.
pub fn read_pooling(model_dir: &Path) -> Result<Pooling> {
    let modules_path = model_dir.join("modules.json");
    let Ok(text) = std::fs::read_to_string(&modules_path) else {
        return Ok(Pooling { mean: true, normalize: false });
    };
    let modules: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", modules_path.display()))?;
    let modules = modules.as_array().with_context(|| format!("{}: not a list of modules", modules_path.display()))?;
    let kind = |module: &serde_json::Value| module["type"].as_str().unwrap_or_default().to_string();
    let mut pooling = Pooling { mean: true, normalize: false };
    for module in modules {
        let kind = kind(module);
        if kind.ends_with(".Pooling") {
            let path = model_dir.join(module["path"].as_str().unwrap_or_default()).join("config.json");
            let config: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
            )
            .with_context(|| format!("{}: not JSON", path.display()))?;
            let flag = |key: &str| config[key].as_bool().unwrap_or(false);
            pooling.mean = match (flag("pooling_mode_mean_tokens"), flag("pooling_mode_cls_token")) {
                (true, _) => true,
                (false, true) => false,
                _ => bail!("{}: only mean and CLS pooling are supported", path.display()),
            };
        } else if kind.ends_with(".Normalize") {
            pooling.normalize = true;
        }
    }
    Ok(pooling)
}

/// Token ids, attention mask and token type ids for `texts`, padded to the longest.
pub struct Batch {
    pub inputs: Vec<(String, HostTensor)>,
    pub mask: Vec<Vec<i64>>,
}

/// Tokenizes `texts` with `tokenizer.json` (truncated to `max_tokens`).
pub fn tokenize(tokenizer_path: &Path, texts: &[String], max_tokens: usize) -> Result<Batch> {
    let mut tokenizer = tokenizers::Tokenizer::from_file(tokenizer_path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", tokenizer_path.display()))?;
    tokenizer.with_padding(Some(tokenizers::PaddingParams::default()));
    tokenizer
        .with_truncation(Some(tokenizers::TruncationParams { max_length: max_tokens, ..Default::default() }))
        .map_err(|e| anyhow::anyhow!("{}: {e}", tokenizer_path.display()))?;
    let encodings = tokenizer
        .encode_batch(texts.to_vec(), true)
        .map_err(|e| anyhow::anyhow!("tokenizing with {}: {e}", tokenizer_path.display()))?;
    let seq = encodings.first().map(|e| e.get_ids().len()).unwrap_or(0);
    let batch = encodings.len();
    let gather =
        |field: &dyn Fn(&tokenizers::Encoding) -> Vec<i64>| -> Vec<i64> { encodings.iter().flat_map(field).collect() };
    let ids = gather(&|e| e.get_ids().iter().map(|&v| v as i64).collect());
    let mask = gather(&|e| e.get_attention_mask().iter().map(|&v| v as i64).collect());
    let types = gather(&|e| e.get_type_ids().iter().map(|&v| v as i64).collect());
    let rows = mask.chunks(seq.max(1)).map(<[i64]>::to_vec).collect();
    Ok(Batch {
        inputs: vec![
            ("input_ids".into(), HostTensor::from_i64(vec![batch, seq], &ids)),
            ("attention_mask".into(), HostTensor::from_i64(vec![batch, seq], &mask)),
            ("token_type_ids".into(), HostTensor::from_i64(vec![batch, seq], &types)),
        ],
        mask: rows,
    })
}

/// Pools `[batch, seq, hidden]` token vectors into one vector per text.
pub fn pool(hidden: &HostTensor, mask: &[Vec<i64>], pooling: &Pooling) -> Result<Vec<Vec<f64>>> {
    let [batch, seq, width] = hidden.shape[..] else {
        bail!("the model's first output has shape {:?}, not [batch, seq, hidden]", hidden.shape);
    };
    if !hidden.dtype.is_float() {
        bail!("the model's first output is {}, not floating point", hidden.dtype);
    }
    let values = hidden.to_f64_vec();
    let mut pooled = Vec::with_capacity(batch);
    for (row, row_mask) in mask.iter().enumerate().take(batch) {
        let token = |t: usize| &values[(row * seq + t) * width..(row * seq + t + 1) * width];
        let mut vector = vec![0.0; width];
        if pooling.mean {
            let count = row_mask.iter().filter(|&&m| m != 0).count().max(1) as f64;
            for t in (0..seq).filter(|&t| row_mask[t] != 0) {
                vector.iter_mut().zip(token(t)).for_each(|(v, x)| *v += x / count);
            }
        } else {
            vector.copy_from_slice(token(0));
        }
        if pooling.normalize {
            let norm = vector.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
            vector.iter_mut().for_each(|v| *v /= norm);
        }
        pooled.push(vector);
    }
    Ok(pooled)
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b)).max(1e-12)
}

/// Embeds `texts` with the artifact behind `session`.
pub fn embed(session: &mut Session, model_dir: &Path, texts: &[String]) -> Result<Vec<Vec<f64>>> {
    let artifact = &session.model().artifact;
    let max_tokens = artifact.bounds.get("seq").map(|&(_, max)| max as usize).unwrap_or(512);
    let entry = artifact.entry_point("forward").context("no `forward` entry point")?;
    let wanted: Vec<String> = entry.inputs.iter().map(|&slot| artifact.slots[slot].tensor.name.clone()).collect();
    let batch = tokenize(&model_dir.join("tokenizer.json"), texts, max_tokens)?;
    let inputs: Vec<(String, HostTensor)> =
        batch.inputs.into_iter().filter(|(name, _)| wanted.contains(name)).collect();
    if inputs.len() != wanted.len() {
        bail!("the artifact's inputs {wanted:?} are not the tokenizer's input_ids/attention_mask/token_type_ids");
    }
    let outputs = session.run(&inputs)?;
    let (_, hidden) = outputs.first().context("the model has no outputs")?;
    pool(hidden, &batch.mask, &read_pooling(model_dir)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_pooling_skips_padding_and_normalization_gives_unit_vectors() {
        // Two texts, three token slots, two dims; the second text has one real token.
        let hidden =
            HostTensor::from_f32(vec![2, 3, 2], &[1.0, 2.0, 3.0, 4.0, 100.0, 100.0, 6.0, 8.0, 50.0, 50.0, 50.0, 50.0]);
        let mask = vec![vec![1, 1, 0], vec![1, 0, 0]];
        let mean = pool(&hidden, &mask, &Pooling { mean: true, normalize: false }).unwrap();
        assert_eq!(mean, vec![vec![2.0, 3.0], vec![6.0, 8.0]]);
        let unit = pool(&hidden, &mask, &Pooling { mean: true, normalize: true }).unwrap();
        assert_eq!(unit[1], vec![0.6, 0.8]);
        let cls = pool(&hidden, &mask, &Pooling { mean: false, normalize: false }).unwrap();
        assert_eq!(cls, vec![vec![1.0, 2.0], vec![6.0, 8.0]]);
        assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
    }

    #[test]
    fn pooling_follows_modules_json() {
        let directory = std::env::temp_dir().join(format!("kiln-pooling-{}", std::process::id()));
        std::fs::create_dir_all(directory.join("1_Pooling")).unwrap();
        std::fs::write(
            directory.join("modules.json"),
            r#"[{"path": "", "type": "sentence_transformers.models.Transformer"},
                {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]"#,
        )
        .unwrap();
        std::fs::write(directory.join("1_Pooling/config.json"), r#"{"pooling_mode_cls_token": true}"#).unwrap();
        assert_eq!(read_pooling(&directory).unwrap(), Pooling { mean: false, normalize: false });
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
