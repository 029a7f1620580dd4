//! `config.json` of Hugging Face checkpoints, in both transformers 4.x and
//! 5.x styles, read into typed configs. A setting kiln does not implement is
//! an error, never ignored.

use std::path::Path;

use kiln_ir::DType;
use serde_json::{Map, Value};

use super::HfImportError;

/// What graph to build, from `architectures`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// The base model: `last_hidden_state` (+ `pooler_output` for BERT with a pooler).
    BaseModel,
    /// `logits` of a sequence classifier (cross-encoder).
    SequenceClassification,
    /// `logits` over the vocabulary.
    CausalLm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncoderFamily {
    Bert,
    DistilBert,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    GeluErf,
    GeluTanh,
    Relu,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EncoderConfig {
    pub family: EncoderFamily,
    pub head: Head,
    pub hidden: i64,
    pub layers: usize,
    pub heads: i64,
    pub epsilon: f32,
    pub activation: Activation,
    pub dtype: Option<DType>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DecoderConfig {
    pub model_type: String,
    pub head: Head,
    pub hidden: i64,
    pub layers: usize,
    pub heads: i64,
    pub kv_heads: i64,
    pub head_dim: i64,
    pub epsilon: f32,
    pub rope_theta: f64,
    pub tied_embeddings: bool,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    pub dtype: Option<DType>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ModelConfig {
    Encoder(EncoderConfig),
    Decoder(DecoderConfig),
}

struct Reader<'a> {
    path: &'a Path,
    json: &'a Map<String, Value>,
}

impl Reader<'_> {
    fn error(&self, message: String) -> HfImportError {
        HfImportError::Config { path: self.path.to_path_buf(), message }
    }

    fn unsupported(&self, setting: &str, value: &Value) -> HfImportError {
        HfImportError::UnsupportedSetting {
            path: self.path.to_path_buf(),
            setting: setting.to_string(),
            value: value.to_string(),
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.json.get(key).filter(|v| !v.is_null())
    }

    fn int(&self, keys: &[&str]) -> Result<i64, HfImportError> {
        keys.iter()
            .find_map(|k| self.get(k))
            .ok_or_else(|| self.error(format!("missing `{}`", keys[0])))?
            .as_i64()
            .filter(|v| *v > 0)
            .ok_or_else(|| self.error(format!("`{}` is not a positive integer", keys[0])))
    }

    fn optional_int(&self, key: &str) -> Result<Option<i64>, HfImportError> {
        self.get(key)
            .map(|v| {
                v.as_i64().filter(|v| *v > 0).ok_or_else(|| self.error(format!("`{key}` is not a positive integer")))
            })
            .transpose()
    }

    fn float(&self, key: &str, default: f64) -> Result<f64, HfImportError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| self.error(format!("`{key}` is not a number"))),
        }
    }

    fn boolean(&self, key: &str, default: bool) -> Result<bool, HfImportError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.error(format!("`{key}` is not a bool"))),
        }
    }

    fn string(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// `dtype` (5.x) or `torch_dtype` (4.x).
    fn dtype(&self) -> Result<Option<DType>, HfImportError> {
        let Some(value) = self.get("dtype").or_else(|| self.get("torch_dtype")) else {
            return Ok(None);
        };
        Ok(Some(match value.as_str() {
            Some("float32") => DType::F32,
            Some("float16") => DType::F16,
            Some("bfloat16") => DType::BF16,
            _ => return Err(self.unsupported("dtype", value)),
        }))
    }

    fn head(&self, architecture: &str) -> Result<Head, HfImportError> {
        if architecture.ends_with("ForCausalLM") {
            Ok(Head::CausalLm)
        } else if architecture.ends_with("ForSequenceClassification") {
            Ok(Head::SequenceClassification)
        } else if architecture.ends_with("Model") {
            Ok(Head::BaseModel)
        } else {
            Err(self.unsupported("architectures", &Value::String(architecture.to_string())))
        }
    }
}

/// Reads `config.json` at `path`.
pub fn read_config(path: &Path) -> Result<ModelConfig, HfImportError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| HfImportError::Io { path: path.to_path_buf(), source })?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| HfImportError::Config { path: path.to_path_buf(), message: e.to_string() })?;
    let json = value
        .as_object()
        .ok_or_else(|| HfImportError::Config { path: path.to_path_buf(), message: "not a JSON object".into() })?;
    parse_config(path, json)
}

fn parse_config(path: &Path, json: &Map<String, Value>) -> Result<ModelConfig, HfImportError> {
    let reader = Reader { path, json };
    let model_type =
        reader.string("model_type").ok_or_else(|| reader.error("missing `model_type`".into()))?.to_string();
    let architectures: Vec<&str> = reader
        .get("architectures")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if architectures.len() > 1 {
        return Err(reader.unsupported("architectures", &json["architectures"]));
    }
    let default_architecture = match model_type.as_str() {
        "bert" => "BertModel",
        "distilbert" => "DistilBertModel",
        _ => "ForCausalLM",
    };
    let head = reader.head(architectures.first().copied().unwrap_or(default_architecture))?;
    match model_type.as_str() {
        "bert" | "distilbert" => {
            let family = if model_type == "bert" { EncoderFamily::Bert } else { EncoderFamily::DistilBert };
            if head == Head::CausalLm || (family == EncoderFamily::DistilBert && head != Head::BaseModel) {
                return Err(reader.unsupported("architectures", &json["architectures"]));
            }
            let activation_key = if family == EncoderFamily::Bert { "hidden_act" } else { "activation" };
            let activation = match reader.string(activation_key).unwrap_or("gelu") {
                "gelu" => Activation::GeluErf,
                "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
                "relu" => Activation::Relu,
                _ => return Err(reader.unsupported(activation_key, &json[activation_key])),
            };
            if let Some(kind) = reader.get("position_embedding_type").filter(|v| v.as_str() != Some("absolute")) {
                return Err(reader.unsupported("position_embedding_type", kind));
            }
            if reader.boolean("is_decoder", false)? {
                return Err(reader.unsupported("is_decoder", &Value::Bool(true)));
            }
            let (hidden, layers, heads, epsilon) = match family {
                EncoderFamily::Bert => (
                    reader.int(&["hidden_size"])?,
                    reader.int(&["num_hidden_layers"])?,
                    reader.int(&["num_attention_heads"])?,
                    reader.float("layer_norm_eps", 1e-12)?,
                ),
                EncoderFamily::DistilBert => {
                    (reader.int(&["dim"])?, reader.int(&["n_layers"])?, reader.int(&["n_heads"])?, 1e-12)
                }
            };
            if hidden % heads != 0 {
                return Err(reader.error(format!("{heads} heads do not divide hidden size {hidden}")));
            }
            Ok(ModelConfig::Encoder(EncoderConfig {
                family,
                head,
                hidden,
                layers: layers as usize,
                heads,
                epsilon: epsilon as f32,
                activation,
                dtype: reader.dtype()?,
            }))
        }
        "llama" | "qwen2" | "mistral" => {
            if head == Head::SequenceClassification {
                return Err(reader.unsupported("architectures", &json["architectures"]));
            }
            let rope_theta = rope_theta(&reader)?;
            reject_sliding_windows(&reader, &model_type)?;
            match reader.string("hidden_act").unwrap_or("silu") {
                "silu" | "swish" => {}
                _ => return Err(reader.unsupported("hidden_act", &json["hidden_act"])),
            }
            let hidden = reader.int(&["hidden_size"])?;
            let heads = reader.int(&["num_attention_heads"])?;
            let kv_heads = reader.optional_int("num_key_value_heads")?.unwrap_or(heads);
            let head_dim = match reader.optional_int("head_dim")? {
                Some(d) => d,
                None if hidden % heads == 0 => hidden / heads,
                None => return Err(reader.error(format!("{heads} heads do not divide hidden size {hidden}"))),
            };
            if heads % kv_heads != 0 || head_dim % 2 != 0 {
                return Err(reader.error(format!(
                    "{kv_heads} key/value heads must divide {heads} heads, and head_dim {head_dim} must be even"
                )));
            }
            Ok(ModelConfig::Decoder(DecoderConfig {
                head,
                hidden,
                layers: reader.int(&["num_hidden_layers"])? as usize,
                heads,
                kv_heads,
                head_dim,
                epsilon: reader.float("rms_norm_eps", 1e-6)? as f32,
                rope_theta,
                tied_embeddings: reader
                    .boolean("tie_word_embeddings", model_type != "llama" && model_type != "mistral")?,
                attention_bias: reader.boolean("attention_bias", model_type == "qwen2")? || model_type == "qwen2",
                mlp_bias: reader.boolean("mlp_bias", false)?,
                dtype: reader.dtype()?,
                model_type,
            }))
        }
        _ => Err(HfImportError::UnknownModelType { path: path.to_path_buf(), model_type }),
    }
}

/// `rope_theta` (4.x, with `rope_scaling` null or default) or
/// `rope_parameters.rope_theta` (5.x, `rope_type` default).
fn rope_theta(reader: &Reader) -> Result<f64, HfImportError> {
    let check_type = |parameters: &Value, setting: &str| -> Result<(), HfImportError> {
        let kind =
            parameters.get("rope_type").or_else(|| parameters.get("type")).and_then(Value::as_str).unwrap_or("default");
        if kind != "default" {
            return Err(reader.unsupported(setting, parameters));
        }
        Ok(())
    };
    if let Some(parameters) = reader.get("rope_parameters") {
        check_type(parameters, "rope_parameters")?;
        if let Some(theta) = parameters.get("rope_theta") {
            return theta.as_f64().ok_or_else(|| reader.error("`rope_parameters.rope_theta` is not a number".into()));
        }
    }
    if let Some(scaling) = reader.get("rope_scaling") {
        check_type(scaling, "rope_scaling")?;
    }
    reader.float("rope_theta", 10000.0)
}

fn reject_sliding_windows(reader: &Reader, model_type: &str) -> Result<(), HfImportError> {
    if let Some(types) = reader.get("layer_types") {
        let all_full = types.as_array().is_some_and(|a| a.iter().all(|t| t.as_str() == Some("full_attention")));
        if !all_full {
            return Err(reader.unsupported("layer_types", types));
        }
    }
    let window_applies = match model_type {
        "qwen2" => reader.boolean("use_sliding_window", false)?,
        _ => true,
    };
    if let Some(window) = reader.get("sliding_window").filter(|_| window_applies) {
        return Err(reader.unsupported("sliding_window", window));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ModelConfig, HfImportError> {
        let value: Value = serde_json::from_str(text).unwrap();
        parse_config(Path::new("config.json"), value.as_object().unwrap())
    }

    const LLAMA: &str = r#"{"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64,
        "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2, "rms_norm_eps": 1e-5"#;

    #[test]
    fn reads_rope_theta_in_both_styles() {
        let old = parse(&format!(r#"{LLAMA}, "rope_theta": 50000.0, "rope_scaling": null}}"#)).unwrap();
        let new = parse(&format!(r#"{LLAMA}, "rope_parameters": {{"rope_theta": 50000.0, "rope_type": "default"}}}}"#))
            .unwrap();
        assert_eq!(old, new);
        let ModelConfig::Decoder(config) = old else { panic!("a decoder") };
        assert_eq!((config.rope_theta, config.head_dim, config.kv_heads), (50000.0, 16, 2));
    }

    #[test]
    fn rejects_rope_scaling_it_does_not_implement() {
        let error =
            parse(&format!(r#"{LLAMA}, "rope_scaling": {{"rope_type": "llama3", "factor": 8.0}}}}"#)).unwrap_err();
        assert!(
            matches!(error, HfImportError::UnsupportedSetting { ref setting, .. } if setting == "rope_scaling"),
            "{error}"
        );
        let error =
            parse(&format!(r#"{LLAMA}, "rope_parameters": {{"rope_type": "yarn", "rope_theta": 1.0}}}}"#)).unwrap_err();
        assert!(matches!(error, HfImportError::UnsupportedSetting { .. }), "{error}");
    }

    #[test]
    fn rejects_sliding_windows() {
        let mistral = LLAMA.replace("llama", "mistral").replace("LlamaForCausalLM", "MistralForCausalLM");
        assert!(parse(&format!(r#"{mistral}, "sliding_window": 4096}}"#)).is_err());
        assert!(parse(&format!(r#"{mistral}, "sliding_window": null}}"#)).is_ok());
        let layers = format!(r#"{LLAMA}, "layer_types": ["full_attention", "sliding_attention"]}}"#);
        assert!(matches!(parse(&layers).unwrap_err(), HfImportError::UnsupportedSetting { .. }));
    }

    #[test]
    fn rejects_unknown_model_types() {
        let error = parse(r#"{"model_type": "gpt_neox"}"#).unwrap_err();
        assert!(matches!(error, HfImportError::UnknownModelType { ref model_type, .. } if model_type == "gpt_neox"));
    }
}
