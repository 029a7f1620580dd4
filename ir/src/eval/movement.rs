//! Ops that move data or compute shapes. Most compute, for each output
//! element, the index of its source element, and then [`take`] the elements.

use kiln_runtime::DType;

use super::elementwise::{broadcast_offsets, broadcast_shape};
use super::{checked_element_count, op_error, OpError};
use crate::infer::{clamp_slice_bounds, shape_range, slice_count};
use crate::op::normalize_axis;
use crate::tensor::{element_count, Tensor, TensorData};

/// The elements of `data` at `indices`, in that order.
fn take(data: &TensorData, indices: &[usize]) -> TensorData {
    match data {
        TensorData::Float(v) => TensorData::Float(indices.iter().map(|&i| v[i]).collect()),
        TensorData::Double(v) => TensorData::Double(indices.iter().map(|&i| v[i]).collect()),
        TensorData::Int(v) => TensorData::Int(indices.iter().map(|&i| v[i]).collect()),
        TensorData::Bool(v) => TensorData::Bool(indices.iter().map(|&i| v[i]).collect()),
    }
}

fn with_shape(input: &Tensor, shape: Vec<usize>) -> Tensor {
    Tensor { dtype: input.dtype, shape, data: input.data.clone() }
}

fn axis_of(axis: i64, rank: usize) -> Result<usize, OpError> {
    normalize_axis(axis, rank).ok_or_else(|| OpError(format!("axis {axis} outside rank {rank}")))
}

fn ints<'a>(tensor: &'a Tensor, what: &str) -> Result<&'a [i64], OpError> {
    tensor.as_ints().ok_or_else(|| OpError(format!("{what} must be integers, got {}", tensor.dtype)))
}

fn row_major_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// Source index for every output element of a strided view: output index
/// `(i0, i1, …)` reads `base + Σ ik·strides[k]`.
fn strided_indices(shape: &[usize], base: isize, strides: &[isize]) -> Vec<usize> {
    let total = element_count(shape).unwrap_or(0);
    let mut indices = Vec::with_capacity(total);
    if total == 0 {
        return indices;
    }
    let mut index = vec![0usize; shape.len()];
    let mut current = base;
    for _ in 0..total {
        indices.push(current as usize);
        for axis in (0..shape.len()).rev() {
            index[axis] += 1;
            current += strides[axis];
            if index[axis] < shape[axis] {
                break;
            }
            current -= strides[axis] * index[axis] as isize;
            index[axis] = 0;
        }
    }
    indices
}

pub fn shape(input: &Tensor, start: i64, end: Option<i64>) -> Tensor {
    let (start, end) = shape_range(start, end, input.shape.len());
    let dims = input.shape[start..end].iter().map(|&d| d as i64).collect::<Vec<_>>();
    Tensor::from_i64(DType::I64, vec![dims.len()], dims)
}

/// The target shape of a reshape, with `0` and `-1` resolved.
pub fn reshape_target(input_shape: &[usize], target: &[i64], allow_zero: bool) -> Result<Vec<usize>, OpError> {
    let total = element_count(input_shape).unwrap_or(0);
    let mut shape = Vec::with_capacity(target.len());
    let mut inferred = None;
    for (i, &dim) in target.iter().enumerate() {
        match dim {
            0 if !allow_zero => shape.push(
                *input_shape
                    .get(i)
                    .ok_or_else(|| OpError(format!("reshape copies dim {i} of shape {input_shape:?}")))?,
            ),
            -1 if inferred.is_none() => {
                inferred = Some(i);
                shape.push(1);
            }
            d if d < 0 => return op_error(format!("reshape to {target:?}")),
            d => shape.push(d as usize),
        }
    }
    if let Some(position) = inferred {
        let known: usize = shape.iter().product();
        if known == 0 || !total.is_multiple_of(known) {
            return op_error(format!("cannot reshape {input_shape:?} to {target:?}"));
        }
        shape[position] = total / known;
    }
    if element_count(&shape) != Some(total) {
        return op_error(format!("cannot reshape {input_shape:?} ({total} elements) to {target:?}"));
    }
    Ok(shape)
}

pub fn reshape(input: &Tensor, target: &Tensor, allow_zero: bool) -> Result<Tensor, OpError> {
    let shape = reshape_target(&input.shape, ints(target, "reshape's shape")?, allow_zero)?;
    Ok(with_shape(input, shape))
}

pub fn transpose(input: &Tensor, permutation: &[usize]) -> Result<Tensor, OpError> {
    if permutation.len() != input.shape.len() {
        return op_error(format!("permutation {permutation:?} for shape {:?}", input.shape));
    }
    let strides = row_major_strides(&input.shape);
    let shape: Vec<usize> = permutation.iter().map(|&p| input.shape[p]).collect();
    let view_strides: Vec<isize> = permutation.iter().map(|&p| strides[p] as isize).collect();
    let indices = strided_indices(&shape, 0, &view_strides);
    Ok(Tensor { dtype: input.dtype, shape, data: take(&input.data, &indices) })
}

pub fn squeeze(input: &Tensor, axes: &[i64]) -> Result<Tensor, OpError> {
    let rank = input.shape.len();
    let axes: Vec<usize> = if axes.is_empty() {
        (0..rank).filter(|&i| input.shape[i] == 1).collect()
    } else {
        axes.iter().map(|&a| axis_of(a, rank)).collect::<Result<_, _>>()?
    };
    if let Some(&bad) = axes.iter().find(|&&a| input.shape[a] != 1) {
        return op_error(format!("squeezes axis {bad} of size {}", input.shape[bad]));
    }
    let shape = input.shape.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect();
    Ok(with_shape(input, shape))
}

pub fn unsqueeze(input: &Tensor, axes: &[i64]) -> Result<Tensor, OpError> {
    let rank = input.shape.len() + axes.len();
    let axes: Vec<usize> = axes.iter().map(|&a| axis_of(a, rank)).collect::<Result<_, _>>()?;
    let mut rest = input.shape.iter();
    let shape = (0..rank)
        .map(|i| if axes.contains(&i) { Some(1) } else { rest.next().copied() })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| OpError("repeated unsqueeze axes".into()))?;
    Ok(with_shape(input, shape))
}

pub fn flatten(input: &Tensor, axis: i64) -> Result<Tensor, OpError> {
    let rank = input.shape.len() as i64;
    let axis = if axis < 0 { axis + rank } else { axis };
    if !(0..=rank).contains(&axis) {
        return op_error(format!("flatten axis {axis} outside rank {rank}"));
    }
    let (outer, inner) = input.shape.split_at(axis as usize);
    Ok(with_shape(input, vec![outer.iter().product(), inner.iter().product()]))
}

pub fn concat(inputs: &[&Tensor], axis: i64) -> Result<Tensor, OpError> {
    let first = inputs[0];
    let axis = axis_of(axis, first.shape.len())?;
    for other in &inputs[1..] {
        let same_except_axis = other.shape.len() == first.shape.len()
            && other.shape.iter().zip(&first.shape).enumerate().all(|(i, (a, b))| i == axis || a == b);
        if other.dtype != first.dtype || !same_except_axis {
            return op_error(format!("concat of {:?} and {:?} on axis {axis}", first.shape, other.shape));
        }
    }
    let outer: usize = first.shape[..axis].iter().product();
    let inner: usize = first.shape[axis + 1..].iter().product();
    let mut shape = first.shape.clone();
    shape[axis] = inputs.iter().map(|t| t.shape[axis]).sum();
    // Concatenate as one flat list of (input, index) reads.
    let mut reads: Vec<(usize, usize)> = Vec::with_capacity(element_count(&shape).unwrap_or(0));
    for o in 0..outer {
        for (which, tensor) in inputs.iter().enumerate() {
            let block = tensor.shape[axis] * inner;
            reads.extend((o * block..(o + 1) * block).map(|i| (which, i)));
        }
    }
    let data = match &first.data {
        TensorData::Float(_) => TensorData::Float(
            reads
                .iter()
                .map(|&(w, i)| inputs[w].as_floats().map(|v| v[i]))
                .collect::<Option<_>>()
                .ok_or_else(mismatch)?,
        ),
        TensorData::Double(_) => TensorData::Double(
            reads
                .iter()
                .map(|&(w, i)| inputs[w].as_doubles().map(|v| v[i]))
                .collect::<Option<_>>()
                .ok_or_else(mismatch)?,
        ),
        TensorData::Int(_) => TensorData::Int(
            reads
                .iter()
                .map(|&(w, i)| inputs[w].as_ints().map(|v| v[i]))
                .collect::<Option<_>>()
                .ok_or_else(mismatch)?,
        ),
        TensorData::Bool(_) => TensorData::Bool(
            reads
                .iter()
                .map(|&(w, i)| inputs[w].as_bools().map(|v| v[i]))
                .collect::<Option<_>>()
                .ok_or_else(mismatch)?,
        ),
    };
    Ok(Tensor { dtype: first.dtype, shape, data })
}

fn mismatch() -> OpError {
    OpError("inputs of mismatched dtypes".into())
}

pub fn slice(input: &Tensor, starts: &Tensor, ends: &Tensor, axes: &Tensor, steps: &Tensor) -> Result<Tensor, OpError> {
    let (starts, ends) = (ints(starts, "slice starts")?, ints(ends, "slice ends")?);
    let (axes, steps) = (ints(axes, "slice axes")?, ints(steps, "slice steps")?);
    if starts.len() != ends.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return op_error("slice starts, ends, axes and steps differ in length");
    }
    let rank = input.shape.len();
    let strides = row_major_strides(&input.shape);
    let mut shape = input.shape.clone();
    let mut view_strides: Vec<isize> = strides.iter().map(|&s| s as isize).collect();
    let mut base: isize = 0;
    for i in 0..axes.len() {
        let axis = axis_of(axes[i], rank)?;
        let step = steps[i];
        if step == 0 {
            return op_error("slice step 0");
        }
        let dim = input.shape[axis] as i64;
        let (start, end) = clamp_slice_bounds(dim, starts[i], ends[i], step);
        shape[axis] = slice_count(start, end, step) as usize;
        if shape[axis] > 0 {
            base += start as isize * strides[axis] as isize;
        }
        view_strides[axis] = (step as isize).wrapping_mul(strides[axis] as isize);
    }
    let indices = strided_indices(&shape, base, &view_strides);
    Ok(Tensor { dtype: input.dtype, shape, data: take(&input.data, &indices) })
}

pub fn gather(data: &Tensor, indices: &Tensor, axis: i64) -> Result<Tensor, OpError> {
    let axis = axis_of(axis, data.shape.len())?;
    let index_values = ints(indices, "gather indices")?;
    let size = data.shape[axis];
    let outer: usize = data.shape[..axis].iter().product();
    let inner: usize = data.shape[axis + 1..].iter().product();
    let mut sources = Vec::with_capacity(outer * index_values.len() * inner);
    for o in 0..outer {
        for &index in index_values {
            let normalized = if index < 0 { index + size as i64 } else { index };
            if !(0..size as i64).contains(&normalized) {
                return op_error(format!("index {index} out of range for axis {axis} of size {size}"));
            }
            let start = (o * size + normalized as usize) * inner;
            sources.extend(start..start + inner);
        }
    }
    let mut shape = data.shape[..axis].to_vec();
    shape.extend_from_slice(&indices.shape);
    shape.extend_from_slice(&data.shape[axis + 1..]);
    Ok(Tensor { dtype: data.dtype, shape, data: take(&data.data, &sources) })
}

pub fn gather_nd(data: &Tensor, indices: &Tensor, batch_dims: i64) -> Result<Tensor, OpError> {
    let index_values = ints(indices, "gather_nd indices")?;
    let batch_dims = batch_dims as usize;
    let depth = *indices.shape.last().ok_or_else(|| OpError("gather_nd of scalar indices".into()))?;
    if batch_dims + depth > data.shape.len() || batch_dims >= indices.shape.len() {
        return op_error(format!("gather_nd of {:?} by {:?}", data.shape, indices.shape));
    }
    let batch: usize = data.shape[..batch_dims].iter().product();
    let slice_shape = &data.shape[batch_dims + depth..];
    let slice_size: usize = slice_shape.iter().product();
    let per_batch_data: usize = data.shape[batch_dims..].iter().product();
    let tuples = index_values.len() / depth.max(1);
    let tuples_per_batch = tuples / batch.max(1);
    let strides = row_major_strides(&data.shape[batch_dims..batch_dims + depth]);
    let mut sources = Vec::with_capacity(tuples * slice_size);
    for t in 0..tuples {
        let b = t / tuples_per_batch.max(1);
        let mut offset = 0usize;
        for k in 0..depth {
            let size = data.shape[batch_dims + k] as i64;
            let index = index_values[t * depth + k];
            let normalized = if index < 0 { index + size } else { index };
            if !(0..size).contains(&normalized) {
                return op_error(format!("gather_nd index {index} out of range for size {size}"));
            }
            offset += normalized as usize * strides[k];
        }
        let start = b * per_batch_data + offset * slice_size;
        sources.extend(start..start + slice_size);
    }
    let mut shape = indices.shape[..indices.shape.len() - 1].to_vec();
    shape.extend_from_slice(slice_shape);
    Ok(Tensor { dtype: data.dtype, shape, data: take(&data.data, &sources) })
}

pub fn expand(input: &Tensor, shape: &Tensor) -> Result<Tensor, OpError> {
    let target: Vec<usize> = ints(shape, "expand's shape")?
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| OpError(format!("expand to negative dim {d}"))))
        .collect::<Result<_, _>>()?;
    let shape = broadcast_shape(&[&input.shape, &target])
        .ok_or_else(|| OpError(format!("cannot expand {:?} to {target:?}", input.shape)))?;
    checked_element_count(&shape)?;
    let offsets = broadcast_offsets(&input.shape, &shape);
    Ok(Tensor { dtype: input.dtype, shape, data: take(&input.data, &offsets) })
}

pub fn range(start: &Tensor, limit: &Tensor, delta: &Tensor) -> Result<Tensor, OpError> {
    match (&start.data, &limit.data, &delta.data) {
        (TensorData::Int(s), TensorData::Int(l), TensorData::Int(d))
            if s.len() == 1 && l.len() == 1 && d.len() == 1 =>
        {
            let (s, l, d) = (s[0], l[0], d[0]);
            if d == 0 {
                return op_error("range with delta 0");
            }
            let count = ((l as f64 - s as f64) / d as f64).ceil().max(0.0) as usize;
            checked_element_count(&[count])?;
            Ok(Tensor::from_i64(start.dtype, vec![count], (0..count).map(|i| s + i as i64 * d).collect()))
        }
        (TensorData::Float(s), TensorData::Float(l), TensorData::Float(d))
            if s.len() == 1 && l.len() == 1 && d.len() == 1 =>
        {
            let (s, l, d) = (s[0], l[0], d[0]);
            if d == 0.0 {
                return op_error("range with delta 0");
            }
            let count = ((l - s) / d).ceil().max(0.0) as usize;
            checked_element_count(&[count])?;
            Ok(Tensor::from_f32(start.dtype, vec![count], (0..count).map(|i| s + i as f32 * d).collect()))
        }
        _ => op_error("range takes three scalars of one numeric dtype"),
    }
}

pub fn constant_of_shape(shape: &Tensor, dtype: DType, value: f64) -> Result<Tensor, OpError> {
    let shape: Vec<usize> = ints(shape, "constant_of_shape's shape")?
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| OpError(format!("negative dim {d}"))))
        .collect::<Result<_, _>>()?;
    let count = checked_element_count(&shape)?;
    Ok(match dtype {
        DType::Bool => Tensor::from_bool(shape, vec![value != 0.0; count]),
        d if d.is_float() => Tensor::from_f32(d, shape, vec![value as f32; count]),
        d => Tensor::from_i64(d, shape, vec![value as i64; count]),
    })
}

pub fn trilu(input: &Tensor, upper: bool, diagonal: i64) -> Result<Tensor, OpError> {
    let rank = input.shape.len();
    if rank < 2 {
        return op_error("trilu needs rank 2 or more");
    }
    let (rows, columns) = (input.shape[rank - 2], input.shape[rank - 1]);
    let keep = |i: usize| {
        let (row, column) = ((i / columns) % rows, i % columns);
        let offset = column as i64 - row as i64;
        if upper {
            offset >= diagonal
        } else {
            offset <= diagonal
        }
    };
    let data = match &input.data {
        TensorData::Float(v) => {
            TensorData::Float(v.iter().enumerate().map(|(i, &x)| if keep(i) { x } else { 0.0 }).collect())
        }
        TensorData::Double(v) => {
            TensorData::Double(v.iter().enumerate().map(|(i, &x)| if keep(i) { x } else { 0.0 }).collect())
        }
        TensorData::Int(v) => {
            TensorData::Int(v.iter().enumerate().map(|(i, &x)| if keep(i) { x } else { 0 }).collect())
        }
        TensorData::Bool(v) => TensorData::Bool(v.iter().enumerate().map(|(i, &x)| keep(i) && x).collect()),
    };
    Ok(Tensor { dtype: input.dtype, shape: input.shape.clone(), data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iota(shape: &[usize]) -> Tensor {
        let n = shape.iter().product::<usize>();
        Tensor::from_i64(DType::I64, shape.to_vec(), (0..n as i64).collect())
    }

    fn vector(values: &[i64]) -> Tensor {
        Tensor::from_i64(DType::I64, vec![values.len()], values.to_vec())
    }

    #[test]
    fn transposes_like_numpy() {
        let t = transpose(&iota(&[2, 3]), &[1, 0]).unwrap();
        assert_eq!(t.shape, vec![3, 2]);
        assert_eq!(t.as_ints().unwrap(), &[0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn slices_with_clamping_negative_ends_and_steps() {
        let x = iota(&[2, 5]);
        let s = slice(&x, &vector(&[1]), &vector(&[i64::MAX]), &vector(&[1]), &vector(&[2])).unwrap();
        assert_eq!(s.as_ints().unwrap(), &[1, 3, 6, 8]);
        let s = slice(&x, &vector(&[-1]), &vector(&[-100]), &vector(&[1]), &vector(&[-1])).unwrap();
        assert_eq!(s.as_ints().unwrap(), &[4, 3, 2, 1, 0, 9, 8, 7, 6, 5]);
    }

    #[test]
    fn gathers_rows_with_negative_indices() {
        let g = gather(&iota(&[3, 2]), &vector(&[2, -3]), 0).unwrap();
        assert_eq!(g.as_ints().unwrap(), &[4, 5, 0, 1]);
        assert!(gather(&iota(&[3, 2]), &vector(&[3]), 0).is_err());
    }

    #[test]
    fn gather_nd_picks_tuples_per_batch() {
        let data = iota(&[2, 3, 2]);
        let indices = Tensor::from_i64(DType::I64, vec![2, 1], vec![2, 0]);
        let g = gather_nd(&data, &indices, 1).unwrap();
        assert_eq!(g.shape, vec![2, 2]);
        assert_eq!(g.as_ints().unwrap(), &[4, 5, 6, 7]);
    }

    #[test]
    fn reshape_copies_zero_and_infers_minus_one() {
        assert_eq!(reshape_target(&[2, 3, 4], &[0, -1], false).unwrap(), vec![2, 12]);
        assert!(reshape_target(&[2, 3], &[4, -1], false).is_err());
    }

    #[test]
    fn trilu_keeps_the_lower_triangle() {
        let t = trilu(&iota(&[3, 3]), false, 0).unwrap();
        assert_eq!(t.as_ints().unwrap(), &[0, 0, 0, 3, 4, 0, 6, 7, 8]);
    }

    #[test]
    fn concat_joins_along_an_axis() {
        let c = concat(&[&iota(&[2, 1]), &iota(&[2, 2])], 1).unwrap();
        assert_eq!(c.as_ints().unwrap(), &[0, 0, 1, 1, 2, 3]);
    }
}
