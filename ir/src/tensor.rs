//! Tensor types (symbolic) and tensor values (concrete).
//!
//! A [`TensorType`] is what the graph knows statically: a dtype and a shape of
//! symbolic [`Dim`]s. A [`Tensor`] is a concrete value that the reference
//! evaluator computes with. Its elements live in one of four numeric domains:
//! every float dtype up to 32 bits is held as `f32` values that are exactly
//! representable in that dtype (so f16/bf16 arithmetic is "compute in f32,
//! round on store"), f64 as `f64`, every integer dtype as `i64` values in that
//! dtype's range, and `bool` as `bool`.

use std::fmt;

use half::{bf16, f16};
use kiln_runtime::dtype::wrap_integer;
pub use kiln_runtime::dtype::{f32_to_f8e4m3, f32_to_small_float, f8e4m3_to_f32, small_float_to_f32};
use kiln_runtime::{DType, Dim};

/// The static type of a graph value: dtype and symbolic shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

impl TensorType {
    pub fn new(dtype: DType, shape: Vec<Dim>) -> TensorType {
        TensorType { dtype, shape }
    }

    /// A type whose dims are all constants.
    pub fn fixed(dtype: DType, shape: &[usize]) -> TensorType {
        TensorType { dtype, shape: shape.iter().map(|&d| Dim::constant(d as i64)).collect() }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The shape as numbers, when every dim is a constant.
    pub fn constant_shape(&self) -> Option<Vec<usize>> {
        self.shape.iter().map(|d| d.as_constant().and_then(|v| usize::try_from(v).ok())).collect()
    }

    /// The number of elements, as a dim expression.
    pub fn element_count(&self) -> Dim {
        self.shape.iter().fold(Dim::constant(1), |product, dim| &product * dim)
    }
}

impl fmt::Display for TensorType {
    /// `f32[batch, seq, 64]`; a scalar prints as `f32[]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (index, dim) in self.shape.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{dim}")?;
        }
        f.write_str("]")
    }
}

/// The elements of a [`Tensor`], in row-major order. See the module docs.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    Float(Vec<f32>),
    /// f64 elements (the one dtype wider than the `Float` domain).
    Double(Vec<f64>),
    Int(Vec<i64>),
    Bool(Vec<bool>),
}

impl TensorData {
    pub fn len(&self) -> usize {
        match self {
            TensorData::Float(v) => v.len(),
            TensorData::Double(v) => v.len(),
            TensorData::Int(v) => v.len(),
            TensorData::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A concrete tensor value.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// Bytes that do not hold a tensor of the stated dtype and shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{dtype}{shape:?} needs {expected} bytes, found {found}")]
pub struct TensorBytesError {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub expected: usize,
    pub found: usize,
}

/// Number of elements of a shape; `None` on overflow.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |product, &d| product.checked_mul(d))
}

impl Tensor {
    /// A float tensor of dtype `dtype`; values are rounded to the dtype (an
    /// f64 tensor holds them as they are).
    pub fn from_f32(dtype: DType, shape: Vec<usize>, mut values: Vec<f32>) -> Tensor {
        debug_assert!(dtype.is_float());
        if dtype == DType::F64 {
            return Tensor::from_f64(shape, values.into_iter().map(f64::from).collect());
        }
        round_floats_to(dtype, &mut values);
        Tensor { dtype, shape, data: TensorData::Float(values) }
    }

    /// An f64 tensor.
    pub fn from_f64(shape: Vec<usize>, values: Vec<f64>) -> Tensor {
        Tensor { dtype: DType::F64, shape, data: TensorData::Double(values) }
    }

    /// Float values of dtype `dtype` computed in f64: rounded to the dtype
    /// (once, so f32 arithmetic computed in f64 is exact f32 arithmetic).
    pub fn from_f64_rounded(dtype: DType, shape: Vec<usize>, values: Vec<f64>) -> Tensor {
        match dtype {
            DType::F64 => Tensor::from_f64(shape, values),
            DType::BF16 => {
                let values = values.into_iter().map(|v| kiln_runtime::dtype::bf16_from_f64(v).to_f32()).collect();
                Tensor { dtype, shape, data: TensorData::Float(values) }
            }
            DType::F16 => Tensor {
                dtype,
                shape,
                data: TensorData::Float(values.into_iter().map(|v| f16::from_f64(v).to_f32()).collect()),
            },
            _ => Tensor::from_f32(dtype, shape, values.into_iter().map(|v| v as f32).collect()),
        }
    }

    /// An integer tensor of dtype `dtype`; values wrap into the dtype's range.
    pub fn from_i64(dtype: DType, shape: Vec<usize>, mut values: Vec<i64>) -> Tensor {
        debug_assert!(dtype.is_integer());
        wrap_integers_to(dtype, &mut values);
        Tensor { dtype, shape, data: TensorData::Int(values) }
    }

    pub fn from_bool(shape: Vec<usize>, values: Vec<bool>) -> Tensor {
        Tensor { dtype: DType::Bool, shape, data: TensorData::Bool(values) }
    }

    /// A scalar (rank 0) tensor.
    pub fn scalar_i64(value: i64) -> Tensor {
        Tensor::from_i64(DType::I64, Vec::new(), vec![value])
    }

    pub fn element_count(&self) -> usize {
        self.data.len()
    }

    pub fn as_floats(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::Float(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_doubles(&self) -> Option<&[f64]> {
        match &self.data {
            TensorData::Double(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_ints(&self) -> Option<&[i64]> {
        match &self.data {
            TensorData::Int(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_bools(&self) -> Option<&[bool]> {
        match &self.data {
            TensorData::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The values as f64, whatever the domain (for comparisons and printing).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.data {
            TensorData::Float(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::Double(v) => v.clone(),
            // u64 elements past 2^63 are held negative; they read as their unsigned value.
            TensorData::Int(v) if self.dtype == DType::U64 => v.iter().map(|&x| x as u64 as f64).collect(),
            TensorData::Int(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| if x { 1.0 } else { 0.0 }).collect(),
        }
    }

    /// Reads little-endian bytes of `dtype` elements.
    pub fn from_le_bytes(dtype: DType, shape: Vec<usize>, bytes: &[u8]) -> Result<Tensor, TensorBytesError> {
        let count = element_count(&shape);
        let expected = count.and_then(|c| c.checked_mul(dtype.size_in_bytes()));
        if expected != Some(bytes.len()) {
            return Err(TensorBytesError {
                dtype,
                shape,
                expected: expected.unwrap_or(usize::MAX),
                found: bytes.len(),
            });
        }
        let size = dtype.size_in_bytes();
        let chunks = bytes.chunks_exact(size);
        let data = match dtype {
            DType::F32 => TensorData::Float(chunks.map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
            DType::F16 => TensorData::Float(chunks.map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()),
            DType::BF16 => TensorData::Float(chunks.map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()),
            DType::F8E4M3 => TensorData::Float(chunks.map(|c| f8e4m3_to_f32(c[0])).collect()),
            DType::I64 => TensorData::Int(
                chunks.map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect(),
            ),
            DType::I32 => {
                TensorData::Int(chunks.map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect())
            }
            DType::I8 => TensorData::Int(chunks.map(|c| c[0] as i8 as i64).collect()),
            DType::U8 => TensorData::Int(chunks.map(|c| c[0] as i64).collect()),
            DType::U32 => {
                TensorData::Int(chunks.map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect())
            }
            // u64 elements keep their bits in the i64 (values past 2^63 read negative).
            DType::U64 => TensorData::Int(
                chunks.map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as i64).collect(),
            ),
            DType::Bool => TensorData::Bool(chunks.map(|c| c[0] != 0).collect()),
            DType::F64 => TensorData::Double(
                chunks.map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect(),
            ),
            DType::I16 => TensorData::Int(chunks.map(|c| i16::from_le_bytes([c[0], c[1]]) as i64).collect()),
            DType::U16 => TensorData::Int(chunks.map(|c| u16::from_le_bytes([c[0], c[1]]) as i64).collect()),
            // Sub-byte integers sit one per byte, as their value.
            DType::I4 | DType::U4 | DType::I2 | DType::U2 => {
                TensorData::Int(chunks.map(|c| wrap_integer(dtype, c[0] as i64)).collect())
            }
            small_float => TensorData::Float(chunks.map(|c| small_float_to_f32(small_float, c[0])).collect()),
        };
        Ok(Tensor { dtype, shape, data })
    }

    /// Little-endian bytes of the elements in `self.dtype`.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.element_count() * self.dtype.size_in_bytes());
        match (&self.data, self.dtype) {
            (TensorData::Float(v), DType::F32) => v.iter().for_each(|x| bytes.extend_from_slice(&x.to_le_bytes())),
            (TensorData::Double(v), _) => v.iter().for_each(|x| bytes.extend_from_slice(&x.to_le_bytes())),
            (TensorData::Float(v), DType::F16) => {
                v.iter().for_each(|x| bytes.extend_from_slice(&f16::from_f32(*x).to_le_bytes()))
            }
            (TensorData::Float(v), DType::BF16) => {
                v.iter().for_each(|x| bytes.extend_from_slice(&bf16::from_f32(*x).to_le_bytes()))
            }
            (TensorData::Float(v), DType::F8E4M3) => v.iter().for_each(|x| bytes.push(f32_to_f8e4m3(*x))),
            // The values are the dtype's own, so nothing saturates (an E5M2 infinity stays one).
            (TensorData::Float(v), small_float) => {
                v.iter().for_each(|x| bytes.push(f32_to_small_float(small_float, *x, false)))
            }
            (TensorData::Int(v), DType::I16 | DType::U16) => {
                v.iter().for_each(|x| bytes.extend_from_slice(&(*x as i16).to_le_bytes()))
            }
            (TensorData::Int(v), DType::I64 | DType::U64) => {
                v.iter().for_each(|x| bytes.extend_from_slice(&x.to_le_bytes()))
            }
            (TensorData::Int(v), DType::I32 | DType::U32) => {
                v.iter().for_each(|x| bytes.extend_from_slice(&(*x as i32).to_le_bytes()))
            }
            (TensorData::Int(v), _) => v.iter().for_each(|x| bytes.push(*x as u8)),
            (TensorData::Bool(v), _) => v.iter().for_each(|x| bytes.push(*x as u8)),
        }
        bytes
    }
}

/// Rounds f32 values to the nearest value of a float dtype (identity for
/// f32). E4M3FN saturates at ±448 (as kiln's kernels convert); `Cast`
/// saturates every 8-bit float (see `eval::elementwise::cast`).
pub fn round_floats_to(dtype: DType, values: &mut [f32]) {
    match dtype {
        DType::F16 => values.iter_mut().for_each(|x| *x = f16::from_f32(*x).to_f32()),
        DType::BF16 => values.iter_mut().for_each(|x| *x = bf16::from_f32(*x).to_f32()),
        DType::F8E4M3 => values.iter_mut().for_each(|x| *x = f8e4m3_to_f32(f32_to_f8e4m3(*x))),
        // The other small floats round without saturating: past the largest
        // value is infinity (E5M2) or NaN (the FNUZ types); FP4 and E8M0 saturate by definition.
        DType::F8E5M2 | DType::F8E4M3Fnuz | DType::F8E5M2Fnuz | DType::F8E8M0 | DType::F4E2M1 => {
            values.iter_mut().for_each(|x| *x = small_float_to_f32(dtype, f32_to_small_float(dtype, *x, false)))
        }
        _ => {}
    }
}

/// Wraps i64 values into an integer dtype's range, as a two's-complement cast does.
pub fn wrap_integers_to(dtype: DType, values: &mut [i64]) {
    values.iter_mut().for_each(|x| *x = wrap_integer(dtype, *x));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_in_every_dtype() {
        for dtype in DType::ALL {
            let tensor = match dtype {
                d if d.is_float() => Tensor::from_f32(d, vec![2, 2], vec![0.5, -1.25, 3.0, 0.0]),
                DType::Bool => Tensor::from_bool(vec![2, 2], vec![true, false, false, true]),
                d => Tensor::from_i64(d, vec![2, 2], vec![1, -2, 3, 4]),
            };
            let bytes = tensor.to_le_bytes();
            assert_eq!(bytes.len(), 4 * dtype.size_in_bytes());
            assert_eq!(Tensor::from_le_bytes(dtype, vec![2, 2], &bytes).unwrap(), tensor, "{dtype}");
        }
    }

    #[test]
    fn rejects_bytes_of_the_wrong_length() {
        assert!(Tensor::from_le_bytes(DType::F32, vec![3], &[0; 8]).is_err());
    }

    #[test]
    fn f8e4m3_encodes_known_values() {
        assert_eq!(f32_to_f8e4m3(1.0), 0x38);
        assert_eq!(f32_to_f8e4m3(448.0), 0x7e);
        assert_eq!(f32_to_f8e4m3(1e6), 0x7e);
        assert_eq!(f32_to_f8e4m3(-2.0), 0xc0);
        assert_eq!(f8e4m3_to_f32(0x01), 2f32.powi(-9));
        assert!(f8e4m3_to_f32(0x7f).is_nan());
    }

    #[test]
    fn lower_precision_floats_round_on_construction() {
        let t = Tensor::from_f32(DType::BF16, vec![1], vec![1.0 + 1.0 / 512.0]);
        assert_eq!(t.as_floats().unwrap(), &[1.0]);
    }
}
