//! Host tensors: the inputs and outputs a [`crate::Session`] exchanges with
//! its caller, and the element conversions executors need.

use crate::dtype::{
    f32_to_f8e4m3, f32_to_small_float, f8e4m3_to_f32, integer_bounds, small_float_to_f32, wrap_integer,
};
use crate::DType;

/// A dense, C-order tensor in host memory: little-endian element bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// The bytes do not fit the dtype and shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{bytes} bytes do not hold a {dtype} tensor of shape {shape:?}")]
pub struct ShapeMismatch {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: usize,
}

impl HostTensor {
    /// A tensor from raw little-endian bytes; their length must fit.
    pub fn new(dtype: DType, shape: Vec<usize>, bytes: Vec<u8>) -> Result<HostTensor, ShapeMismatch> {
        let expected = shape
            .iter()
            .try_fold(dtype.size_in_bytes(), |product, &d| product.checked_mul(d))
            .filter(|&n| n == bytes.len());
        match expected {
            Some(_) => Ok(HostTensor { dtype, shape, bytes }),
            None => Err(ShapeMismatch { dtype, shape, bytes: bytes.len() }),
        }
    }

    /// A tensor of `dtype` from values (rounded to the dtype).
    pub fn from_f64(dtype: DType, shape: Vec<usize>, values: &[f64]) -> HostTensor {
        let mut bytes = vec![0u8; values.len() * dtype.size_in_bytes()];
        encode_elements(dtype, values, &mut bytes);
        HostTensor { dtype, shape, bytes }
    }

    pub fn from_i64(shape: Vec<usize>, values: &[i64]) -> HostTensor {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        HostTensor { dtype: DType::I64, shape, bytes }
    }

    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> HostTensor {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        HostTensor { dtype: DType::F32, shape, bytes }
    }

    pub fn element_count(&self) -> usize {
        self.shape.iter().product()
    }

    /// Every element as f64 (exact for every dtype but i64 and u64 beyond 2⁵³).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        decode_elements(self.dtype, &self.bytes)
    }
}

/// Decodes little-endian elements of `dtype` (a trailing partial element is ignored).
pub fn decode_elements(dtype: DType, bytes: &[u8]) -> Vec<f64> {
    let chunks = bytes.chunks_exact(dtype.size_in_bytes());
    match dtype {
        DType::F32 => chunks.map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect(),
        DType::F16 => chunks.map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64()).collect(),
        DType::BF16 => chunks.map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64()).collect(),
        DType::F8E4M3 => chunks.map(|c| f8e4m3_to_f32(c[0]) as f64).collect(),
        DType::I64 => chunks.map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f64).collect(),
        DType::I32 => chunks.map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect(),
        DType::I8 => chunks.map(|c| c[0] as i8 as f64).collect(),
        DType::U8 => chunks.map(|c| c[0] as f64).collect(),
        DType::U32 => chunks.map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect(),
        DType::U64 => chunks.map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")) as f64).collect(),
        DType::Bool => chunks.map(|c| (c[0] != 0) as u8 as f64).collect(),
        DType::F64 => chunks.map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect(),
        DType::I16 => chunks.map(|c| i16::from_le_bytes([c[0], c[1]]) as f64).collect(),
        DType::U16 => chunks.map(|c| u16::from_le_bytes([c[0], c[1]]) as f64).collect(),
        // Sub-byte integers sit one per byte, as their value.
        DType::I4 | DType::U4 | DType::I2 | DType::U2 => {
            chunks.map(|c| wrap_integer(dtype, c[0] as i64) as f64).collect()
        }
        small_float => chunks.map(|c| small_float_to_f32(small_float, c[0]) as f64).collect(),
    }
}

/// Encodes `values` as little-endian elements of `dtype` into `out`
/// (`values.len() × size` bytes; floats round to nearest, integers truncate).
pub fn encode_elements(dtype: DType, values: &[f64], out: &mut [u8]) {
    let size = dtype.size_in_bytes();
    for (value, slot) in values.iter().zip(out.chunks_exact_mut(size)) {
        match dtype {
            DType::F32 => slot.copy_from_slice(&(*value as f32).to_le_bytes()),
            DType::F16 => slot.copy_from_slice(&half::f16::from_f64(*value).to_le_bytes()),
            DType::BF16 => slot.copy_from_slice(&crate::dtype::bf16_from_f64(*value).to_le_bytes()),
            DType::F8E4M3 => slot[0] = f32_to_f8e4m3(*value as f32),
            DType::I64 => slot.copy_from_slice(&(*value as i64).to_le_bytes()),
            DType::I32 => slot.copy_from_slice(&(*value as i32).to_le_bytes()),
            DType::I8 => slot[0] = *value as i8 as u8,
            DType::U8 => slot[0] = *value as u8,
            DType::U32 => slot.copy_from_slice(&(*value as u32).to_le_bytes()),
            DType::U64 => slot.copy_from_slice(&(*value as u64).to_le_bytes()),
            DType::Bool => slot[0] = (*value != 0.0) as u8,
            DType::F64 => slot.copy_from_slice(&value.to_le_bytes()),
            DType::I16 => slot.copy_from_slice(&(*value as i16).to_le_bytes()),
            DType::U16 => slot.copy_from_slice(&(*value as u16).to_le_bytes()),
            DType::I4 | DType::U4 | DType::I2 | DType::U2 => {
                let (low, high) = integer_bounds(dtype).expect("a narrow integer");
                slot[0] = value.clamp(low as f64, high as f64) as i64 as u8;
            }
            small_float => slot[0] = f32_to_small_float(small_float, *value as f32, true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_round_trip_in_every_dtype() {
        let values = [0.5, -1.0, 3.0, 0.0];
        for dtype in DType::ALL {
            let expected: Vec<f64> = match dtype {
                // Unsigned conversions saturate (as Rust's `as` does): -1.0 becomes 0.
                DType::U8 | DType::U16 | DType::U32 | DType::U64 => vec![0.0, 0.0, 3.0, 0.0],
                DType::U4 | DType::U2 => vec![0.0, 0.0, 3.0, 0.0],
                // 3 is past i2's largest value, 1; the conversion saturates.
                DType::I2 => vec![0.0, -1.0, 1.0, 0.0],
                // E8M0 holds powers of two only: 0.5 stays, -1 loses its sign, 3 rounds up to 4, 0 is its smallest, 2^-127.
                DType::F8E8M0 => vec![0.5, 1.0, 4.0, 2f64.powi(-127)],
                DType::Bool => vec![1.0, 1.0, 1.0, 0.0],
                d if d.is_integer() => vec![0.0, -1.0, 3.0, 0.0],
                _ => values.to_vec(),
            };
            let tensor = HostTensor::from_f64(dtype, vec![4], &values);
            assert_eq!(tensor.bytes.len(), 4 * dtype.size_in_bytes());
            assert_eq!(tensor.to_f64_vec(), expected, "{dtype}");
        }
    }

    #[test]
    fn new_checks_the_byte_count() {
        assert!(HostTensor::new(DType::F32, vec![2, 3], vec![0; 24]).is_ok());
        assert!(HostTensor::new(DType::F32, vec![2, 3], vec![0; 20]).is_err());
        assert!(HostTensor::new(DType::F32, vec![usize::MAX, 3], vec![]).is_err());
    }
}
