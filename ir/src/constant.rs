//! Constant tensors held by the graph: weights and small literals.
//!
//! A [`Constant`] keeps its bytes as the file gave them: either owned, or a
//! window into a memory-mapped file, so importing a model never copies its
//! weights. Bytes are little-endian elements of the constant's dtype.

use std::fmt;
use std::sync::Arc;

use kiln_runtime::DType;
use memmap2::Mmap;
use sha2::{Digest, Sha256};

use crate::tensor::{element_count, Tensor, TensorBytesError, TensorType};

/// Where the bytes of a constant live.
#[derive(Clone)]
enum Storage {
    Owned(Arc<[u8]>),
    Mapped { map: Arc<Mmap>, offset: usize, length: usize },
}

/// A constant tensor: dtype, concrete shape and bytes.
#[derive(Clone)]
pub struct Constant {
    dtype: DType,
    shape: Vec<usize>,
    storage: Storage,
    /// [`Constant::content_hash`], computed once (the bytes never change;
    /// clones share what was computed before them).
    hash: std::sync::OnceLock<String>,
}

impl Constant {
    /// A constant over owned bytes; fails when the length does not match.
    pub fn from_bytes(dtype: DType, shape: Vec<usize>, bytes: Vec<u8>) -> Result<Constant, TensorBytesError> {
        check_length(dtype, &shape, bytes.len())?;
        Ok(Constant { dtype, shape, storage: Storage::Owned(bytes.into()), hash: Default::default() })
    }

    /// A constant over `length` bytes at `offset` of a mapped file; fails when
    /// the window leaves the file or the length does not match.
    pub fn from_mapped(
        dtype: DType,
        shape: Vec<usize>,
        map: Arc<Mmap>,
        offset: usize,
        length: usize,
    ) -> Result<Constant, TensorBytesError> {
        check_length(dtype, &shape, length)?;
        if offset.checked_add(length).is_none_or(|end| end > map.len()) {
            return Err(TensorBytesError { dtype, shape, expected: length, found: map.len().saturating_sub(offset) });
        }
        Ok(Constant { dtype, shape, storage: Storage::Mapped { map, offset, length }, hash: Default::default() })
    }

    pub fn from_tensor(tensor: &Tensor) -> Constant {
        Constant {
            dtype: tensor.dtype,
            shape: tensor.shape.clone(),
            storage: Storage::Owned(tensor.to_le_bytes().into()),
            hash: Default::default(),
        }
    }

    pub fn scalar_i64(value: i64) -> Constant {
        Constant::from_tensor(&Tensor::scalar_i64(value))
    }

    pub fn vector_i64(values: &[i64]) -> Constant {
        Constant::from_tensor(&Tensor::from_i64(DType::I64, vec![values.len()], values.to_vec()))
    }

    pub fn scalar_f32(dtype: DType, value: f32) -> Constant {
        Constant::from_tensor(&Tensor::from_f32(dtype, Vec::new(), vec![value]))
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn tensor_type(&self) -> TensorType {
        TensorType::fixed(self.dtype, &self.shape)
    }

    pub fn element_count(&self) -> usize {
        self.bytes().len() / self.dtype.size_in_bytes()
    }

    pub fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Owned(bytes) => bytes,
            Storage::Mapped { map, offset, length } => &map[*offset..*offset + *length],
        }
    }

    /// True when the bytes are a window into a mapped file (not copied).
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped { .. })
    }

    /// The rank-2 constant transposed: its bytes moved element by element in
    /// cache-sized tiles, never decoded (exact in every dtype, and fast for
    /// weight matrices). `None` for other ranks.
    pub fn transposed_2d(&self) -> Option<Constant> {
        let &[rows, columns] = self.shape.as_slice() else { return None };
        let source = self.bytes();
        let mut moved = vec![0u8; source.len()];
        match self.dtype.size_in_bytes() {
            1 => transpose_elements::<1>(source, &mut moved, rows, columns),
            2 => transpose_elements::<2>(source, &mut moved, rows, columns),
            4 => transpose_elements::<4>(source, &mut moved, rows, columns),
            _ => transpose_elements::<8>(source, &mut moved, rows, columns),
        }
        Some(Constant {
            dtype: self.dtype,
            shape: vec![columns, rows],
            storage: Storage::Owned(moved.into()),
            hash: Default::default(),
        })
    }

    /// The value, decoded for evaluation.
    pub fn to_tensor(&self) -> Tensor {
        Tensor::from_le_bytes(self.dtype, self.shape.clone(), self.bytes()).expect("length checked at construction")
    }

    /// The integer values, for small index-like constants.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        self.dtype.is_integer().then(|| self.to_tensor().as_ints().map(<[i64]>::to_vec)).flatten()
    }

    /// SHA-256 of dtype, shape and bytes, as lowercase hex (computed once per constant).
    pub fn content_hash(&self) -> String {
        self.hash
            .get_or_init(|| {
                let mut hasher = Sha256::new();
                hasher.update(self.dtype.name().as_bytes());
                for d in &self.shape {
                    hasher.update((*d as u64).to_le_bytes());
                }
                hasher.update(self.bytes());
                hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
            })
            .clone()
    }
}

/// `to` = the `rows × columns` matrix of `N`-byte elements in `from`,
/// transposed, in tiles that stay in cache.
fn transpose_elements<const N: usize>(from: &[u8], to: &mut [u8], rows: usize, columns: usize) {
    const TILE: usize = 32;
    for row_start in (0..rows).step_by(TILE) {
        for column_start in (0..columns).step_by(TILE) {
            for row in row_start..(row_start + TILE).min(rows) {
                for column in column_start..(column_start + TILE).min(columns) {
                    let at = (row * columns + column) * N;
                    let element: [u8; N] = from[at..at + N].try_into().expect("N bytes");
                    let at = (column * rows + row) * N;
                    to[at..at + N].copy_from_slice(&element);
                }
            }
        }
    }
}

fn check_length(dtype: DType, shape: &[usize], length: usize) -> Result<(), TensorBytesError> {
    let expected = element_count(shape).and_then(|c| c.checked_mul(dtype.size_in_bytes()));
    if expected != Some(length) {
        return Err(TensorBytesError {
            dtype,
            shape: shape.to_vec(),
            expected: expected.unwrap_or(usize::MAX),
            found: length,
        });
    }
    Ok(())
}

impl PartialEq for Constant {
    fn eq(&self, other: &Constant) -> bool {
        self.dtype == other.dtype && self.shape == other.shape && self.bytes() == other.bytes()
    }
}

impl fmt::Debug for Constant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Constant({}{:?}, {} bytes)", self.dtype, self.shape, self.bytes().len())
    }
}
