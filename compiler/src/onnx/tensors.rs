//! ONNX tensors (initializers, `Constant` attributes) into kiln constants.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use kiln_ir::{Constant, DType};
use memmap2::Mmap;
use onnx_protobuf::TensorProto;

/// ONNX `TensorProto.DataType` codes kiln reads.
pub fn dtype_from_onnx(code: i32) -> Result<DType, String> {
    Ok(match code {
        1 => DType::F32,
        2 => DType::U8,
        3 => DType::I8,
        6 => DType::I32,
        7 => DType::I64,
        9 => DType::Bool,
        10 => DType::F16,
        16 => DType::BF16,
        17 => DType::F8E4M3,
        other => return Err(format!("element type {} is not supported", onnx_type_name(other))),
    })
}

fn onnx_type_name(code: i32) -> String {
    let name = match code {
        0 => "UNDEFINED",
        4 => "UINT16",
        5 => "INT16",
        8 => "STRING",
        11 => "DOUBLE",
        12 => "UINT32",
        13 => "UINT64",
        14 => "COMPLEX64",
        15 => "COMPLEX128",
        18 => "FLOAT8E4M3FNUZ",
        19 => "FLOAT8E5M2",
        20 => "FLOAT8E5M2FNUZ",
        21 => "UINT4",
        22 => "INT4",
        _ => return format!("code {code}"),
    };
    name.to_string()
}

/// External data files of one model, each mapped once.
pub struct ExternalData {
    directory: PathBuf,
    maps: HashMap<String, Arc<Mmap>>,
}

impl ExternalData {
    pub fn new(directory: &Path) -> ExternalData {
        ExternalData { directory: directory.to_path_buf(), maps: HashMap::new() }
    }

    /// The mapped file `location`, relative to the model's directory; paths
    /// that leave that directory are refused.
    fn map(&mut self, location: &str) -> Result<Arc<Mmap>, String> {
        if let Some(map) = self.maps.get(location) {
            return Ok(map.clone());
        }
        let relative = Path::new(location);
        if relative.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(format!("external data location `{location}` leaves the model's directory"));
        }
        let path = self.directory.join(relative);
        let file = std::fs::File::open(&path).map_err(|e| format!("external data file {}: {e}", path.display()))?;
        // SAFETY: the map is read-only; kiln never writes model files while importing them.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| format!("cannot map {}: {e}", path.display()))?;
        let map = Arc::new(map);
        self.maps.insert(location.to_string(), map.clone());
        Ok(map)
    }
}

/// The constant an ONNX tensor holds, from raw data, typed fields or an
/// external data file.
pub fn constant_from_proto(tensor: &TensorProto, external: &mut ExternalData) -> Result<Constant, String> {
    let dtype = dtype_from_onnx(tensor.data_type)?;
    let shape: Vec<usize> = tensor
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dim {d}")))
        .collect::<Result<_, _>>()?;
    let count = shape.iter().try_fold(1usize, |p, &d| p.checked_mul(d)).ok_or("the shape overflows")?;
    let byte_length = count.checked_mul(dtype.size_in_bytes()).ok_or("the shape overflows")?;
    if tensor.data_location.value() == 1 || !tensor.external_data.is_empty() {
        let entry = |key: &str| tensor.external_data.iter().find(|e| e.key == key).map(|e| e.value.as_str());
        let location = entry("location").ok_or("external data without a location")?;
        let offset: usize = entry("offset").unwrap_or("0").parse().map_err(|_| "bad external data offset")?;
        let length: usize = match entry("length") {
            Some(text) => text.parse().map_err(|_| "bad external data length")?,
            None => byte_length,
        };
        if length != byte_length {
            return Err(format!("external data length {length} where {dtype}{shape:?} needs {byte_length} bytes"));
        }
        let map = external.map(location)?;
        return Constant::from_mapped(dtype, shape, map, offset, length)
            .map_err(|_| format!("external data at offset {offset}, length {length} lies outside `{location}`"));
    }
    let bytes = if !tensor.raw_data.is_empty() || count == 0 {
        tensor.raw_data.clone()
    } else {
        typed_field_bytes(tensor, dtype, count)?
    };
    Constant::from_bytes(dtype, shape, bytes).map_err(|e| e.to_string())
}

/// Little-endian bytes from the typed repeated fields of a tensor.
fn typed_field_bytes(tensor: &TensorProto, dtype: DType, count: usize) -> Result<Vec<u8>, String> {
    let check = |found: usize| {
        if found == count {
            Ok(())
        } else {
            Err(format!("{found} values for {count} elements"))
        }
    };
    let mut bytes = Vec::with_capacity(count * dtype.size_in_bytes());
    match dtype {
        DType::F32 => {
            check(tensor.float_data.len())?;
            tensor.float_data.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        }
        DType::I64 => {
            check(tensor.int64_data.len())?;
            tensor.int64_data.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        }
        DType::I32 => {
            check(tensor.int32_data.len())?;
            tensor.int32_data.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        }
        DType::F16 | DType::BF16 => {
            check(tensor.int32_data.len())?;
            tensor.int32_data.iter().for_each(|v| bytes.extend_from_slice(&(*v as u16).to_le_bytes()));
        }
        DType::I8 | DType::U8 | DType::Bool | DType::F8E4M3 => {
            check(tensor.int32_data.len())?;
            tensor.int32_data.iter().for_each(|v| bytes.push(*v as u8));
        }
        DType::U32 => {
            check(tensor.uint64_data.len())?;
            tensor.uint64_data.iter().for_each(|v| bytes.extend_from_slice(&(*v as u32).to_le_bytes()));
        }
        DType::U64 => {
            check(tensor.uint64_data.len())?;
            tensor.uint64_data.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        }
    }
    Ok(bytes)
}
