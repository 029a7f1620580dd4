//! Hugging Face checkpoints: a directory with `config.json` and safetensors
//! weights, built into the same graph the ONNX export of that model gives.
//!
//! The graph is chosen by `architectures`: `BertModel` gives
//! `last_hidden_state` (+ `pooler_output` when the weights have a pooler),
//! `BertForSequenceClassification` gives `logits`, `*ForCausalLM` gives
//! `logits`. Inputs are `input_ids` and `attention_mask` (+ `token_type_ids`
//! for BERT), each `i64[batch, seq]`. Weights stay memory-mapped.

mod builder;
mod config;
mod decoder;
mod encoder;
mod weights;

use std::path::{Path, PathBuf};

use kiln_ir::{verify, DType, Graph};

pub use config::{read_config, DecoderConfig, EncoderConfig, ModelConfig};
pub use weights::{parse_safetensors, SafetensorsTensor, WeightStore};

/// Why a Hugging Face directory could not be imported; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum HfImportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path}: model_type `{model_type}` is not supported (kiln reads bert, distilbert, llama, qwen2, mistral)")]
    UnknownModelType { path: PathBuf, model_type: String },
    #[error("{path}: `{setting}` = {value} is not implemented by kiln")]
    UnsupportedSetting { path: PathBuf, setting: String, value: String },
    #[error("{path}: invalid safetensors: {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error("{directory}: no *.safetensors weights")]
    NoWeights { directory: PathBuf },
    #[error("the checkpoint has no tensor named {}", names.join(" or "))]
    MissingTensor { names: Vec<String> },
    #[error("building the graph failed (a kiln bug): {message}")]
    Build { message: String },
}

/// Imports the checkpoint in `directory`.
pub fn import_hf_directory(directory: &Path) -> Result<Graph, HfImportError> {
    let config_path = directory.join("config.json");
    let config = read_config(&config_path)?;
    let weights = WeightStore::open(directory)?;
    let configured = match &config {
        ModelConfig::Encoder(c) => c.dtype,
        ModelConfig::Decoder(c) => c.dtype,
    };
    let dtype = configured.or_else(|| weights.dominant_float_dtype()).unwrap_or(DType::F32);
    let graph = match &config {
        ModelConfig::Encoder(config) => encoder::build_encoder(config, &weights, dtype)?,
        ModelConfig::Decoder(config) => decoder::build_decoder(config, &weights, dtype)?,
    };
    verify(&graph).map_err(|e| HfImportError::Build { message: e.to_string() })?;
    Ok(graph)
}
