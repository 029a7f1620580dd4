//! NumPy `.npy` files: reading model inputs and writing outputs (shared by
//! `kiln` and `kiln-run`).

use std::path::Path;

use crate::tensor::{encode_elements, HostTensor};
use crate::DType;

/// A file that is not a `.npy` kiln can read, or could not be written.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a .npy file kiln reads: {message}")]
    Format { path: String, message: String },
}

/// Reads a C-order `.npy` array of f64, f32, f16, i64, i32, i16, i8, u64,
/// u32, u16, u8 or bool, in its own dtype (see [`narrow_f64`] for runs of
/// artifacts, whose kernels have no f64).
pub fn read_npy(path: &Path) -> Result<HostTensor, NpyError> {
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io { path: path.display().to_string(), source })?;
    parse_npy(&bytes).map_err(|message| NpyError::Format { path: path.display().to_string(), message })
}

/// Parses the bytes of a `.npy` file.
pub fn parse_npy(bytes: &[u8]) -> Result<HostTensor, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("missing the NUMPY magic".into());
    }
    let major = bytes[6];
    let (header_length, header_start): (usize, usize) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        _ => return Err(format!("format version {major} is not supported")),
    };
    let header_end =
        header_start.checked_add(header_length).filter(|&end| end <= bytes.len()).ok_or("truncated header")?;
    let header = std::str::from_utf8(&bytes[header_start..header_end]).map_err(|_| "header is not text")?;
    let field = |key: &str| -> Result<&str, String> {
        let start = header.find(&format!("'{key}':")).ok_or(format!("header has no '{key}'"))? + key.len() + 3;
        Ok(header[start..].trim_start())
    };
    let descr = field("descr")?;
    let descr = descr.strip_prefix('\'').and_then(|d| d.split('\'').next()).ok_or("bad descr")?;
    if field("fortran_order")?.starts_with("True") {
        return Err("Fortran-order arrays are not supported".into());
    }
    let shape_text = field("shape")?;
    let shape_text = shape_text.strip_prefix('(').and_then(|s| s.split(')').next()).ok_or("bad shape")?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("bad dim `{s}`")))
        .collect::<Result<_, _>>()?;
    let data = &bytes[header_end..];
    let dtype = match descr {
        "<f8" => DType::F64,
        "<f4" => DType::F32,
        "<f2" => DType::F16,
        "<i8" => DType::I64,
        "<i4" => DType::I32,
        "<i2" => DType::I16,
        "|i1" => DType::I8,
        "<u8" => DType::U64,
        "<u4" => DType::U32,
        "<u2" => DType::U16,
        "|u1" => DType::U8,
        "|b1" => DType::Bool,
        other => return Err(format!("dtype `{other}` is not supported")),
    };
    HostTensor::new(dtype, shape, data.to_vec()).map_err(|e| e.to_string())
}

/// An f64 tensor as f32 (any other unchanged): NumPy's default float is
/// f64, and a model input never is in an artifact, so runs narrow it.
pub fn narrow_f64(tensor: HostTensor) -> HostTensor {
    if tensor.dtype != DType::F64 {
        return tensor;
    }
    HostTensor::from_f64(DType::F32, tensor.shape.clone(), &tensor.to_f64_vec())
}

/// Writes `tensor` as a `.npy` file (bf16 and f8 values are written as f32).
pub fn write_npy(path: &Path, tensor: &HostTensor) -> Result<(), NpyError> {
    std::fs::write(path, npy_bytes(tensor)).map_err(|source| NpyError::Io { path: path.display().to_string(), source })
}

/// The bytes of a `.npy` file holding `tensor` (bf16 and f8 values as f32).
pub fn npy_bytes(tensor: &HostTensor) -> Vec<u8> {
    let (descr, data) = match tensor.dtype {
        DType::F32 => ("<f4", tensor.bytes.clone()),
        DType::F64 => ("<f8", tensor.bytes.clone()),
        d if d.is_float() && !matches!(d, DType::F16) => {
            let values = tensor.to_f64_vec();
            let mut bytes = vec![0u8; values.len() * 4];
            encode_elements(DType::F32, &values, &mut bytes);
            ("<f4", bytes)
        }
        DType::F16 => ("<f2", tensor.bytes.clone()),
        DType::I64 => ("<i8", tensor.bytes.clone()),
        DType::I32 => ("<i4", tensor.bytes.clone()),
        DType::I8 => ("|i1", tensor.bytes.clone()),
        DType::U8 => ("|u1", tensor.bytes.clone()),
        DType::U32 => ("<u4", tensor.bytes.clone()),
        DType::U64 => ("<u8", tensor.bytes.clone()),
        DType::Bool => ("|b1", tensor.bytes.clone()),
        DType::I16 => ("<i2", tensor.bytes.clone()),
        DType::U16 => ("<u2", tensor.bytes.clone()),
        // One element per byte, as its value.
        DType::I4 | DType::I2 => ("|i1", tensor.bytes.clone()),
        DType::U4 | DType::U2 => ("|u1", tensor.bytes.clone()),
        float => unreachable!("{float} is written as f32 above"),
    };
    let shape = match tensor.shape.len() {
        1 => format!("({},)", tensor.shape[0]),
        _ => format!("({})", tensor.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&data);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_bytes() {
        let tensor = HostTensor::from_i64(vec![2, 3], &[1, 2, 3, 4, 5, 6]);
        let path = std::env::temp_dir().join(format!("kiln-npy-{}.npy", std::process::id()));
        write_npy(&path, &tensor).unwrap();
        assert_eq!(read_npy(&path).unwrap(), tensor);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn rejects_truncated_and_foreign_files() {
        assert!(parse_npy(b"").is_err());
        assert!(parse_npy(b"\x93NUMPY\x01\x00\xff\x00{").is_err());
        assert!(parse_npy(b"PK\x03\x04 not numpy at all").is_err());
    }
}
