//! ONNX import: a `.onnx` file (with its external data files) into a [`Graph`].
//!
//! Supported: opsets 1–28 of the default domain, each node checked for the
//! op version its opset selects (see `versions.rs`), and the `com.microsoft`
//! contrib ops that ONNX Runtime's transformer optimizer writes (see
//! [`ops::is_supported`]). A model with unsupported ops fails once, listing
//! every unsupported op type with the nodes that use it. Weights stored in
//! external data files are memory-mapped, not copied.

mod attention;
mod contrib;
mod ops;
mod tensors;
mod versions;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use kiln_ir::{verify, Dim, Graph, TensorType, ValueRef};
use onnx_protobuf::{Message, ModelProto};

pub use ops::is_supported;
use tensors::ExternalData;
pub use tensors::{read_tensor_proto, tensor_proto_bytes};

/// The opsets of the default ONNX domain that kiln reads (28 is what onnx
/// 1.23 writes). Within them each op is imported as the version the opset
/// selects, and versions kiln does not implement are refused by name (see
/// `versions.rs`). From 24 on, the ops kiln imports changed only by admitting
/// new element types (refused by name where kiln lacks them) and by two
/// attributes: `Cast`'s `round_mode` (opset 28; it only matters for casts to
/// 8-bit floats, and anything but its default is refused) and `Range`'s
/// `stash_type` (opset 27; kiln computes in f32, the default, and refuses
/// others). Opset 24 added `Swish` (imported) and revised `Attention` (see
/// `attention.rs` for what kiln implements of it).
pub const SUPPORTED_OPSETS: std::ops::RangeInclusive<i64> = 1..=versions::NEWEST_OPSET;

/// Why an ONNX model could not be imported. Every variant names the file, and
/// where it applies the node or tensor at fault.
#[derive(Debug, thiserror::Error)]
pub enum OnnxImportError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not an ONNX model: {message}")]
    NotOnnx { path: PathBuf, message: String },
    #[error("{path}: opset {version} of domain `{domain}` is not supported (kiln reads opsets 1 to 28 of the default domain)")]
    UnsupportedOpset { path: PathBuf, domain: String, version: i64 },
    #[error("{path}: ops kiln does not import (not supported):\n{ops}")]
    UnsupportedOps { path: PathBuf, ops: UnsupportedOps },
    #[error("{path}: tensor `{tensor}`: {message}")]
    Tensor { path: PathBuf, tensor: String, message: String },
    #[error("{path}: node `{node}` ({op_type}): {message}")]
    Node { path: PathBuf, node: String, op_type: String, message: String },
    #[error("{path}: graph input `{input}`: {message}")]
    Input { path: PathBuf, input: String, message: String },
    #[error("{path}: graph output `{output}` is not computed by any node")]
    MissingOutput { path: PathBuf, output: String },
    #[error("{path}: the imported graph is invalid (a kiln bug): {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Unsupported op types (`domain::OpType`) with the names of the nodes that use them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnsupportedOps(pub BTreeMap<String, Vec<String>>);

impl fmt::Display for UnsupportedOps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, (op, nodes)) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            let shown: Vec<&str> = nodes.iter().take(5).map(String::as_str).collect();
            let more = if nodes.len() > 5 { format!(" and {} more", nodes.len() - 5) } else { String::new() };
            write!(f, "  {op}: {} node(s): {}{more}", nodes.len(), shown.join(", "))?;
        }
        Ok(())
    }
}

/// Reads an ONNX model file and imports it.
pub fn import_onnx(path: &Path) -> Result<Graph, OnnxImportError> {
    let bytes = std::fs::read(path).map_err(|source| OnnxImportError::Io { path: path.to_path_buf(), source })?;
    let directory = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    import_onnx_bytes(&bytes, path, &directory)
}

/// Imports ONNX model bytes; `path` names the model in errors and
/// `directory` is where external data files are looked up.
pub fn import_onnx_bytes(bytes: &[u8], path: &Path, directory: &Path) -> Result<Graph, OnnxImportError> {
    let path_buf = path.to_path_buf();
    if bytes.is_empty() {
        return Err(OnnxImportError::NotOnnx { path: path_buf, message: "the file is empty".into() });
    }
    let model = ModelProto::parse_from_bytes(bytes)
        .map_err(|error| OnnxImportError::NotOnnx { path: path_buf.clone(), message: error.to_string() })?;
    let Some(graph_proto) = model.graph.as_ref() else {
        return Err(OnnxImportError::NotOnnx { path: path_buf, message: "the model has no graph".into() });
    };
    let default_opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| OnnxImportError::NotOnnx {
            path: path_buf.clone(),
            message: "no opset of the default domain".into(),
        })?;
    if !SUPPORTED_OPSETS.contains(&default_opset) {
        return Err(OnnxImportError::UnsupportedOpset {
            path: path_buf,
            domain: "ai.onnx".into(),
            version: default_opset,
        });
    }

    let mut unsupported = UnsupportedOps::default();
    for (index, node) in graph_proto.node.iter().enumerate() {
        let domain = if node.domain.is_empty() { "ai.onnx" } else { &node.domain };
        let op = &node.op_type;
        let refusal = if !is_supported(&node.domain, op) {
            Some(format!("{domain}::{op}"))
        } else if domain == "ai.onnx" {
            match versions::select(op, default_opset) {
                Some(versions::Selected::TooOld { version, oldest }) => Some(format!(
                    "{domain}::{op}-{version} (what opset {default_opset} selects; kiln implements {op}-{oldest} and later)"
                )),
                Some(versions::Selected::NotYetDefined { added }) => Some(format!(
                    "{domain}::{op} (not defined at opset {default_opset}; ONNX added it at opset {added})"
                )),
                Some(versions::Selected::Implemented(_)) | None => None,
            }
        } else {
            None
        };
        if let Some(refusal) = refusal {
            unsupported.0.entry(refusal).or_default().push(node_display_name(&node.name, op, index));
        }
    }
    if !unsupported.0.is_empty() {
        return Err(OnnxImportError::UnsupportedOps { path: path_buf, ops: unsupported });
    }

    let mut importer = Importer {
        path: path_buf.clone(),
        graph: Graph::new(),
        values: HashMap::new(),
        external: ExternalData::new(directory),
        opset: default_opset,
    };
    let initializer_names: std::collections::HashSet<&str> =
        graph_proto.initializer.iter().map(|t| t.name.as_str()).collect();
    for input in &graph_proto.input {
        if initializer_names.contains(input.name.as_str()) {
            continue;
        }
        let ty = importer.input_type(input)?;
        let value = importer.graph.add_input(&input.name, ty);
        importer.values.insert(input.name.clone(), value);
    }
    for initializer in &graph_proto.initializer {
        let constant = tensors::constant_from_proto(initializer, &mut importer.external).map_err(|message| {
            OnnxImportError::Tensor { path: path_buf.clone(), tensor: initializer.name.clone(), message }
        })?;
        let value = importer.graph.add_constant(&initializer.name, constant);
        importer.values.insert(initializer.name.clone(), value);
    }
    for (index, node) in graph_proto.node.iter().enumerate() {
        let name = node_display_name(&node.name, &node.op_type, index);
        ops::import_node(&mut importer, node, &name).map_err(|message| OnnxImportError::Node {
            path: path_buf.clone(),
            node: name.clone(),
            op_type: node.op_type.clone(),
            message,
        })?;
    }
    for output in &graph_proto.output {
        let value = *importer
            .values
            .get(&output.name)
            .ok_or_else(|| OnnxImportError::MissingOutput { path: path_buf.clone(), output: output.name.clone() })?;
        importer.graph.add_output(&output.name, value);
    }
    let graph = importer.graph;
    verify(&graph).map_err(|error| OnnxImportError::Invalid { path: path_buf, message: error.to_string() })?;
    Ok(graph)
}

fn node_display_name(name: &str, op_type: &str, index: usize) -> String {
    if name.is_empty() {
        format!("{op_type}_{index}")
    } else {
        name.to_string()
    }
}

/// State of one import: the graph so far and ONNX value names → IR values.
pub(crate) struct Importer {
    path: PathBuf,
    pub(crate) graph: Graph,
    pub(crate) values: HashMap<String, ValueRef>,
    pub(crate) external: ExternalData,
    pub(crate) opset: i64,
}

impl Importer {
    fn input_type(&self, input: &onnx_protobuf::ValueInfoProto) -> Result<TensorType, OnnxImportError> {
        let error =
            |message: String| OnnxImportError::Input { path: self.path.clone(), input: input.name.clone(), message };
        let Some(onnx_protobuf::type_proto::Value::TensorType(tensor)) =
            input.type_.as_ref().and_then(|t| t.value.as_ref())
        else {
            return Err(error(
                "not supported: a sequence, map or optional input (kiln imports tensor inputs only)".into(),
            ));
        };
        let dtype = tensors::dtype_from_onnx(tensor.elem_type).map_err(error)?;
        let Some(shape) = tensor.shape.as_ref() else {
            return Err(error("the input has no shape (rank unknown)".into()));
        };
        let dims = shape
            .dim
            .iter()
            .enumerate()
            .map(|(index, dim)| match &dim.value {
                Some(onnx_protobuf::tensor_shape_proto::dimension::Value::DimValue(v)) if *v >= 0 => {
                    Ok(Dim::constant(*v))
                }
                Some(onnx_protobuf::tensor_shape_proto::dimension::Value::DimValue(v)) => {
                    Err(error(format!("negative dim {v}")))
                }
                Some(onnx_protobuf::tensor_shape_proto::dimension::Value::DimParam(text)) => {
                    Dim::parse(text).map_err(|e| error(e.to_string()))
                }
                _ => Ok(Dim::symbol(&format!("{}_dim{index}", sanitize_symbol(&input.name)))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TensorType::new(dtype, dims))
    }
}

fn sanitize_symbol(name: &str) -> String {
    let cleaned: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    if cleaned.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{cleaned}")
    } else {
        cleaned
    }
}
