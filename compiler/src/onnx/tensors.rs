//! ONNX tensors (initializers, `Constant` attributes) into kiln constants.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use kiln_ir::{Constant, DType, Tensor};
use memmap2::Mmap;
use onnx_protobuf::{Message, TensorProto};

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
        4 => DType::U16,
        11 => DType::F64,
        5 => DType::I16,
        12 => DType::U32,
        13 => DType::U64,
        18 => DType::F8E4M3Fnuz,
        19 => DType::F8E5M2,
        20 => DType::F8E5M2Fnuz,
        21 => DType::U4,
        22 => DType::I4,
        23 => DType::F4E2M1,
        24 => DType::F8E8M0,
        25 => DType::U2,
        26 => DType::I2,
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
        27 => "FLOAT6E2M3",
        28 => "FLOAT6E3M2",
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
    // Sub-byte elements are packed in ONNX's tensors (low bits first) and one per byte in kiln's.
    let byte_length = if dtype.bits() < 8 {
        count.checked_mul(dtype.bits()).ok_or("the shape overflows")?.div_ceil(8)
    } else {
        count.checked_mul(dtype.size_in_bytes()).ok_or("the shape overflows")?
    };
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
        if dtype.bits() < 8 {
            let packed = offset.checked_add(length).and_then(|end| map.get(offset..end)).ok_or_else(|| {
                format!("external data at offset {offset}, length {length} lies outside `{location}`")
            })?;
            return Constant::from_bytes(dtype, shape, unpack_sub_byte(packed, dtype, count))
                .map_err(|e| e.to_string());
        }
        return Constant::from_mapped(dtype, shape, map, offset, length)
            .map_err(|_| format!("external data at offset {offset}, length {length} lies outside `{location}`"));
    }
    let bytes = if dtype.bits() < 8 {
        let packed: Vec<u8> = if !tensor.raw_data.is_empty() || count == 0 {
            tensor.raw_data.clone()
        } else {
            tensor.int32_data.iter().map(|&v| v as u8).collect()
        };
        if packed.len() != byte_length {
            return Err(format!("{} packed bytes where {dtype}{shape:?} needs {byte_length}", packed.len()));
        }
        unpack_sub_byte(&packed, dtype, count)
    } else if !tensor.raw_data.is_empty() || count == 0 {
        tensor.raw_data.clone()
    } else {
        typed_field_bytes(tensor, dtype, count)?
    };
    Constant::from_bytes(dtype, shape, bytes).map_err(|e| e.to_string())
}

/// `count` sub-byte elements packed low bits first, one per byte (integers
/// sign-extended for the signed types; FP4 codes as they are).
fn unpack_sub_byte(packed: &[u8], dtype: DType, count: usize) -> Vec<u8> {
    let bits = dtype.bits();
    let per_byte = 8 / bits;
    let mask = (1u8 << bits) - 1;
    (0..count)
        .map(|index| {
            let code = (packed[index / per_byte] >> (bits * (index % per_byte))) & mask;
            match dtype {
                DType::I4 | DType::I2 => kiln_runtime::dtype::wrap_integer(dtype, code as i64) as u8,
                _ => code,
            }
        })
        .collect()
}

/// Sub-byte elements, one per byte, packed low bits first as ONNX stores them.
pub fn pack_sub_byte(unpacked: &[u8], dtype: DType) -> Vec<u8> {
    let bits = dtype.bits();
    let per_byte = 8 / bits;
    let mask = (1u8 << bits) - 1;
    let mut packed = vec![0u8; (unpacked.len() * bits).div_ceil(8)];
    for (index, &code) in unpacked.iter().enumerate() {
        packed[index / per_byte] |= (code & mask) << (bits * (index % per_byte));
    }
    packed
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
    // Grown as the fields are read: `count` comes from the file and is checked against them first.
    let mut bytes = Vec::new();
    match dtype {
        DType::F64 => {
            check(tensor.double_data.len())?;
            tensor.double_data.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        }
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
        DType::I16 | DType::U16 => {
            check(tensor.int32_data.len())?;
            tensor.int32_data.iter().for_each(|v| bytes.extend_from_slice(&(*v as u16).to_le_bytes()));
        }
        DType::I8
        | DType::U8
        | DType::Bool
        | DType::F8E4M3
        | DType::F8E5M2
        | DType::F8E4M3Fnuz
        | DType::F8E5M2Fnuz
        | DType::F8E8M0 => {
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
        DType::F4E2M1 | DType::I4 | DType::U4 | DType::I2 | DType::U2 => {
            unreachable!("sub-byte tensors are unpacked by the caller")
        }
    }
    Ok(bytes)
}

/// The ONNX element type code of `dtype` (the inverse of [`dtype_from_onnx`]).
pub fn dtype_to_onnx(dtype: DType) -> i32 {
    (0..=26).find(|&code| dtype_from_onnx(code) == Ok(dtype)).expect("every kiln dtype has an ONNX code")
}

/// Reads a file holding one serialized ONNX `TensorProto` (`.pb`: how ONNX's
/// test data sets store inputs and outputs, and the one file format that
/// holds bfloat16, the 8-bit floats and the packed 4- and 2-bit types).
pub fn read_tensor_proto(path: &Path) -> Result<Tensor, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let proto = TensorProto::parse_from_bytes(&bytes)
        .map_err(|e| format!("{}: not an ONNX TensorProto: {e}", path.display()))?;
    let directory = path.parent().unwrap_or(Path::new("."));
    let constant = constant_from_proto(&proto, &mut ExternalData::new(directory))
        .map_err(|message| format!("{}: {message}", path.display()))?;
    Ok(constant.to_tensor())
}

/// `tensor` as a serialized ONNX `TensorProto` named `name` (raw little-endian
/// data; sub-byte elements packed as ONNX packs them).
pub fn tensor_proto_bytes(name: &str, tensor: &Tensor) -> Vec<u8> {
    let mut proto = TensorProto::new();
    proto.name = name.to_string();
    proto.data_type = dtype_to_onnx(tensor.dtype);
    proto.dims = tensor.shape.iter().map(|&d| d as i64).collect();
    let bytes = tensor.to_le_bytes();
    proto.raw_data = if tensor.dtype.bits() < 8 { pack_sub_byte(&bytes, tensor.dtype) } else { bytes };
    proto.write_to_bytes().expect("a TensorProto serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_byte_tensors_unpack_low_bits_first_and_pack_back() {
        let mut proto = TensorProto::new();
        proto.data_type = 22; // INT4
        proto.dims = vec![3];
        proto.raw_data = vec![0x78, 0x01]; // -8, 7 | 1 (and a zero pad nibble)
        let constant = constant_from_proto(&proto, &mut ExternalData::new(Path::new("."))).expect("an int4 tensor");
        let tensor = constant.to_tensor();
        assert_eq!(tensor.as_ints(), Some(&[-8, 7, 1][..]));
        let written = TensorProto::parse_from_bytes(&tensor_proto_bytes("t", &tensor)).expect("parses");
        assert_eq!((written.data_type, written.raw_data), (22, vec![0x78, 0x01]));
        proto.raw_data = vec![0x78];
        assert!(constant_from_proto(&proto, &mut ExternalData::new(Path::new("."))).is_err(), "one byte short");
    }

    #[test]
    fn every_kiln_dtype_has_an_onnx_code_that_maps_back() {
        for dtype in DType::ALL {
            assert_eq!(dtype_from_onnx(dtype_to_onnx(dtype)), Ok(dtype));
        }
    }
}
