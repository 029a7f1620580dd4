//! safetensors weights of a model directory, memory-mapped.
//!
//! Reads `model.safetensors`, or the shards named by
//! `model.safetensors.index.json`, or every `*.safetensors` file of the
//! directory. Headers are validated (offsets inside the file, lengths matching
//! shapes) before any tensor is used; tensor bytes are never copied.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_ir::{Constant, DType};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use super::HfImportError;

struct Entry {
    file: Arc<Mmap>,
    path: PathBuf,
    dtype: DType,
    shape: Vec<usize>,
    offset: usize,
    length: usize,
}

/// Every tensor of a model directory, by name.
pub struct WeightStore {
    entries: BTreeMap<String, Entry>,
}

impl WeightStore {
    pub fn open(directory: &Path) -> Result<WeightStore, HfImportError> {
        let files = weight_files(directory)?;
        let mut entries = BTreeMap::new();
        for path in files {
            let file = std::fs::File::open(&path).map_err(|source| HfImportError::Io { path: path.clone(), source })?;
            // SAFETY: read-only map of a weights file that kiln does not modify.
            let map = Arc::new(
                unsafe { Mmap::map(&file) }.map_err(|source| HfImportError::Io { path: path.clone(), source })?,
            );
            let tensors = parse_safetensors(&map[..])
                .map_err(|message| HfImportError::Safetensors { path: path.clone(), message })?;
            for tensor in tensors {
                let entry = Entry {
                    file: map.clone(),
                    path: path.clone(),
                    dtype: tensor.dtype,
                    shape: tensor.shape,
                    offset: tensor.offset,
                    length: tensor.length,
                };
                if entries.insert(tensor.name.clone(), entry).is_some() {
                    return Err(HfImportError::Safetensors {
                        path: path.clone(),
                        message: format!("tensor `{}` appears in two files", tensor.name),
                    });
                }
            }
        }
        Ok(WeightStore { entries })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The tensor `name` as a constant over the mapped file.
    pub fn constant(&self, name: &str) -> Option<Result<Constant, HfImportError>> {
        let entry = self.entries.get(name)?;
        Some(
            Constant::from_mapped(entry.dtype, entry.shape.clone(), entry.file.clone(), entry.offset, entry.length)
                .map_err(|e| HfImportError::Safetensors {
                    path: entry.path.clone(),
                    message: format!("tensor `{name}`: {e}"),
                }),
        )
    }

    /// The dtype most weights share (the model's compute dtype when the
    /// config names none).
    pub fn dominant_float_dtype(&self) -> Option<DType> {
        let mut counts: HashMap<DType, usize> = HashMap::new();
        for entry in self.entries.values().filter(|e| e.dtype.is_float()) {
            *counts.entry(entry.dtype).or_default() += entry.length;
        }
        counts.into_iter().max_by_key(|(dtype, bytes)| (*bytes, *dtype)).map(|(dtype, _)| dtype)
    }
}

/// One tensor of a safetensors file: where its bytes lie in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetensorsTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// From the start of the file.
    pub offset: usize,
    pub length: usize,
}

/// Validates the header of a safetensors file and lists its tensors: every
/// tensor's bytes lie inside the file and match its dtype and shape.
pub fn parse_safetensors(bytes: &[u8]) -> Result<Vec<SafetensorsTensor>, String> {
    let (header_length, metadata) = SafeTensors::read_metadata(bytes).map_err(|error| error.to_string())?;
    let data_start = 8 + header_length;
    let mut tensors = Vec::new();
    for (name, info) in metadata.tensors() {
        let bad = |message: String| format!("tensor `{name}`: {message}");
        let dtype = dtype_of(info.dtype).map_err(bad)?;
        let (start, end) = info.data_offsets;
        let length = end.checked_sub(start).ok_or_else(|| bad("end offset before start".into()))?;
        let expected = info.shape.iter().try_fold(dtype.size_in_bytes(), |p, &d| p.checked_mul(d));
        let inside = data_start.checked_add(end).is_some_and(|file_end| file_end <= bytes.len());
        if expected != Some(length) || !inside {
            return Err(bad(format!("{length} bytes at {start} do not hold {dtype}{:?}", info.shape)));
        }
        tensors.push(SafetensorsTensor { name, dtype, shape: info.shape.clone(), offset: data_start + start, length });
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(tensors)
}

fn weight_files(directory: &Path) -> Result<Vec<PathBuf>, HfImportError> {
    let index = directory.join("model.safetensors.index.json");
    if index.is_file() {
        let text =
            std::fs::read_to_string(&index).map_err(|source| HfImportError::Io { path: index.clone(), source })?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| HfImportError::Safetensors { path: index.clone(), message: e.to_string() })?;
        let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| HfImportError::Safetensors {
            path: index.clone(),
            message: "no `weight_map` object".into(),
        })?;
        let mut files: Vec<String> = map.values().filter_map(|v| v.as_str().map(str::to_string)).collect();
        files.sort();
        files.dedup();
        return files
            .into_iter()
            .map(|file| {
                let relative = Path::new(&file);
                if relative.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
                    return Err(HfImportError::Safetensors {
                        path: index.clone(),
                        message: format!("shard `{file}` leaves the directory"),
                    });
                }
                Ok(directory.join(relative))
            })
            .collect();
    }
    let single = directory.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(directory)
        .map_err(|source| HfImportError::Io { path: directory.to_path_buf(), source })?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(HfImportError::NoWeights { directory: directory.to_path_buf() });
    }
    Ok(files)
}

fn dtype_of(dtype: Dtype) -> Result<DType, String> {
    Ok(match dtype {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F8_E4M3 => DType::F8E4M3,
        Dtype::I64 => DType::I64,
        Dtype::I32 => DType::I32,
        Dtype::I8 => DType::I8,
        Dtype::U8 => DType::U8,
        Dtype::BOOL => DType::Bool,
        other => return Err(format!("dtype {other:?} is not supported")),
    })
}
