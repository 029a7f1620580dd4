//! kiln's compiler front end: model importers and the pipeline driver.
//!
//! [`load_model`] reads either an ONNX file ([`onnx`]) or a Hugging Face
//! directory of `config.json` + safetensors ([`hf`]) into kiln's graph IR.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod artifact;
pub mod compile;
pub mod embed;
pub mod hf;
pub mod launch_plan;
pub mod npy;
pub mod onnx;
pub mod summary;

use std::path::Path;

use kiln_ir::Graph;

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Onnx(#[from] onnx::OnnxImportError),
    #[error(transparent)]
    HuggingFace(#[from] hf::HfImportError),
    #[error("{0}: no such file or directory")]
    Missing(String),
    #[error("{0}: expected a .onnx file or a directory with config.json and *.safetensors")]
    UnknownFormat(String),
}

/// Imports the model at `path`: a `.onnx` file, or a directory holding
/// `config.json` and safetensors weights.
pub fn load_model(path: &Path) -> Result<Graph, LoadError> {
    if !path.exists() {
        return Err(LoadError::Missing(path.display().to_string()));
    }
    if path.is_dir() {
        if path.join("config.json").is_file() {
            return Ok(hf::import_hf_directory(path)?);
        }
        return Err(LoadError::UnknownFormat(path.display().to_string()));
    }
    Ok(onnx::import_onnx(path)?)
}
