//! Matmul, reductions, softmax and normalizations.

use super::elementwise::broadcast_shape;
use super::{op_error, OpError};
use crate::op::{normalize_axis, MaskKind, ReduceKind};
use crate::tensor::{Tensor, TensorData};

fn floats<'a>(tensor: &'a Tensor, what: &str) -> Result<&'a [f32], OpError> {
    tensor.as_floats().ok_or_else(|| OpError(format!("{what} must be a float tensor, got {}", tensor.dtype)))
}

/// NumPy `matmul`, f32 accumulation (matrixmultiply's sgemm).
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor, OpError> {
    let (x, y) = (floats(a, "matmul's first input")?, floats(b, "matmul's second input")?);
    if a.shape.is_empty() || b.shape.is_empty() {
        return op_error("matmul of a scalar");
    }
    let a_shape: Vec<usize> = if a.shape.len() == 1 { vec![1, a.shape[0]] } else { a.shape.clone() };
    let b_shape: Vec<usize> = if b.shape.len() == 1 { vec![b.shape[0], 1] } else { b.shape.clone() };
    let (m, k) = (a_shape[a_shape.len() - 2], a_shape[a_shape.len() - 1]);
    let (k2, n) = (b_shape[b_shape.len() - 2], b_shape[b_shape.len() - 1]);
    if k != k2 {
        return op_error(format!("matmul of {:?} and {:?}: inner dims differ", a.shape, b.shape));
    }
    let a_batch = &a_shape[..a_shape.len() - 2];
    let b_batch = &b_shape[..b_shape.len() - 2];
    let batch = broadcast_shape(&[a_batch, b_batch])
        .ok_or_else(|| OpError(format!("matmul batch dims {a_batch:?} and {b_batch:?} do not broadcast")))?;
    let batch_count: usize = batch.iter().product();
    let a_offsets = super::elementwise::broadcast_offsets(a_batch, &batch);
    let b_offsets = super::elementwise::broadcast_offsets(b_batch, &batch);
    let mut output = vec![0f32; batch_count * m * n];
    for index in 0..batch_count {
        let a_start = a_offsets[index] * m * k;
        let b_start = b_offsets[index] * k * n;
        let c = &mut output[index * m * n..(index + 1) * m * n];
        if m == 0 || n == 0 {
            continue;
        }
        // SAFETY: the slices hold m×k, k×n and m×n row-major elements.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                x[a_start..].as_ptr(),
                k as isize,
                1,
                y[b_start..].as_ptr(),
                n as isize,
                1,
                0.0,
                c.as_mut_ptr(),
                n as isize,
                1,
            );
        }
    }
    let mut shape = batch;
    if a.shape.len() > 1 {
        shape.push(m);
    }
    if b.shape.len() > 1 {
        shape.push(n);
    }
    Ok(Tensor::from_f32(a.dtype, shape, output))
}

/// Matmul of the inputs with their last two dims swapped where asked.
pub fn matmul_transposed(a: &Tensor, b: &Tensor, transpose_a: bool, transpose_b: bool) -> Result<Tensor, OpError> {
    let swapped = |t: &Tensor, swap: bool| -> Result<Option<Tensor>, OpError> {
        if !swap {
            return Ok(None);
        }
        let rank = t.shape.len();
        if rank < 2 {
            return op_error("a transposed matmul input needs rank 2 or more");
        }
        let mut permutation: Vec<usize> = (0..rank).collect();
        permutation.swap(rank - 2, rank - 1);
        super::movement::transpose(t, &permutation).map(Some)
    };
    let (a_swapped, b_swapped) = (swapped(a, transpose_a)?, swapped(b, transpose_b)?);
    matmul(a_swapped.as_ref().unwrap_or(a), b_swapped.as_ref().unwrap_or(b))
}

/// The attributes of an [`crate::Op::Attention`], for the evaluator.
pub struct AttentionSettings {
    pub scale: f32,
    pub mask: MaskKind,
    pub mask_fill: f32,
    pub zero_fully_masked_rows: bool,
}

/// Reference attention; see [`crate::Op::Attention`] for the contract.
pub fn attention(inputs: &[&Tensor], settings: AttentionSettings) -> Result<Tensor, OpError> {
    let (q, k, v) = (inputs[0], inputs[1], inputs[2]);
    let (Some(qv), Some(kv), Some(vv)) = (q.as_floats(), k.as_floats(), v.as_floats()) else {
        return op_error("attention of non-float tensors");
    };
    if q.shape.len() != 4 || k.shape.len() != 4 || v.shape.len() != 4 {
        return op_error("attention takes rank-4 q, k, v");
    }
    let [batch, query_heads, queries, depth] = [q.shape[0], q.shape[1], q.shape[2], q.shape[3]];
    let [_, kv_heads, keys, _] = [k.shape[0], k.shape[1], k.shape[2], k.shape[3]];
    let value_depth = v.shape[3];
    if k.shape[0] != batch || v.shape[0] != batch || k.shape[3] != depth || v.shape[1] != kv_heads || v.shape[2] != keys
    {
        return op_error(format!("attention of q {:?}, k {:?}, v {:?}", q.shape, k.shape, v.shape));
    }
    if kv_heads == 0 || query_heads % kv_heads != 0 {
        return op_error(format!("{kv_heads} key/value heads for {query_heads} query heads"));
    }
    let keep = if settings.mask.has_padding() {
        let keep = inputs.get(3).ok_or_else(|| OpError("padding mask without key_keep".into()))?;
        if keep.shape != [batch, keys] {
            return op_error(format!("key_keep {:?} for batch {batch} and {keys} keys", keep.shape));
        }
        Some(keep.to_f64_vec().iter().map(|&v| v != 0.0).collect::<Vec<bool>>())
    } else {
        None
    };
    let group = query_heads / kv_heads;
    let mut output = vec![0f32; batch * query_heads * queries * value_depth];
    let mut scores = vec![0f32; keys];
    for b in 0..batch {
        for h in 0..query_heads {
            let kv_head = h / group;
            for i in 0..queries {
                let q_row = &qv[((b * query_heads + h) * queries + i) * depth..][..depth];
                for (j, score) in scores.iter_mut().enumerate() {
                    let k_row = &kv[((b * kv_heads + kv_head) * keys + j) * depth..][..depth];
                    let dot: f64 = q_row.iter().zip(k_row).map(|(&x, &y)| x as f64 * y as f64).sum();
                    let mut s = (dot as f32) * settings.scale;
                    let padded = keep.as_ref().is_some_and(|keep| !keep[b * keys + j]);
                    let future = settings.mask.is_causal() && j + queries > i + keys;
                    if padded || future {
                        s += settings.mask_fill;
                    }
                    *score = s;
                }
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let weights: Vec<f64> = scores.iter().map(|&s| ((s - max) as f64).exp()).collect();
                let total: f64 = weights.iter().sum();
                let out = &mut output[((b * query_heads + h) * queries + i) * value_depth..][..value_depth];
                if max == f32::NEG_INFINITY && settings.zero_fully_masked_rows {
                    continue;
                }
                for (c, slot) in out.iter_mut().enumerate() {
                    let mut sum = 0f64;
                    for (j, weight) in weights.iter().enumerate() {
                        sum += weight * vv[((b * kv_heads + kv_head) * keys + j) * value_depth + c] as f64;
                    }
                    *slot = (sum / total) as f32;
                }
            }
        }
    }
    Ok(Tensor::from_f32(q.dtype, vec![batch, query_heads, queries, value_depth], output))
}

pub fn reduce(input: &Tensor, kind: ReduceKind, axes: &[i64], keep_dims: bool) -> Result<Tensor, OpError> {
    let rank = input.shape.len();
    let axes: Vec<usize> = if axes.is_empty() {
        (0..rank).collect()
    } else {
        axes.iter()
            .map(|&a| normalize_axis(a, rank).ok_or_else(|| OpError(format!("axis {a} outside rank {rank}"))))
            .collect::<Result<_, _>>()?
    };
    let kept_shape: Vec<usize> =
        input.shape.iter().enumerate().map(|(i, &d)| if axes.contains(&i) { 1 } else { d }).collect();
    let output_count: usize = kept_shape.iter().product();
    let reduced_count: usize = axes.iter().map(|&a| input.shape[a]).product();
    // The output index of every input element.
    let targets = super::elementwise::broadcast_offsets(&kept_shape, &input.shape);
    let values = input.to_f64_vec();
    let (initial, combine): (f64, fn(f64, f64) -> f64) = match kind {
        ReduceKind::Sum | ReduceKind::Mean => (0.0, |a, b| a + b),
        ReduceKind::Prod => (1.0, |a, b| a * b),
        ReduceKind::Max => (f64::NEG_INFINITY, f64::max),
        ReduceKind::Min => (f64::INFINITY, f64::min),
    };
    let mut accumulators = vec![initial; output_count];
    for (value, &target) in values.iter().zip(&targets) {
        accumulators[target] = combine(accumulators[target], *value);
    }
    if kind == ReduceKind::Mean {
        accumulators.iter_mut().for_each(|a| *a /= reduced_count as f64);
    }
    let shape = if keep_dims {
        kept_shape
    } else {
        input.shape.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect()
    };
    Ok(match input.data {
        TensorData::Float(_) => Tensor::from_f32(input.dtype, shape, accumulators.iter().map(|&v| v as f32).collect()),
        TensorData::Double(_) => Tensor::from_f64(shape, accumulators),
        TensorData::Int(_) => Tensor::from_i64(input.dtype, shape, accumulators.iter().map(|&v| v as i64).collect()),
        TensorData::Bool(_) => return op_error("reduction of a bool tensor"),
    })
}

/// Splits a shape at `axis` into (outer, axis size, inner) for row-wise ops.
fn split_at_axis(shape: &[usize], axis: i64) -> Result<(usize, usize, usize), OpError> {
    let axis = normalize_axis(axis, shape.len())
        .ok_or_else(|| OpError(format!("axis {axis} outside rank {}", shape.len())))?;
    Ok((shape[..axis].iter().product(), shape[axis], shape[axis + 1..].iter().product()))
}

/// Softmax along `axis`; a row whose maximum is −∞ (all masked) gives NaN,
/// as in ONNX Runtime and PyTorch.
pub fn softmax(input: &Tensor, axis: i64) -> Result<Tensor, OpError> {
    if let Some(x) = input.as_doubles() {
        let output = softmax_rows(x, &input.shape, axis, f64::NEG_INFINITY, f64::max)?;
        return Ok(Tensor::from_f64(input.shape.clone(), output));
    }
    let x = floats(input, "softmax's input")?;
    let output = softmax_rows(x, &input.shape, axis, f32::NEG_INFINITY, f32::max)?;
    Ok(Tensor::from_f32(input.dtype, input.shape.clone(), output.into_iter().map(|v| v as f32).collect()))
}

/// Softmax of the rows along `axis`: each row's maximum subtracted in the
/// element type, exponentials and their sum in f64.
fn softmax_rows<T: Copy + std::ops::Sub<Output = T> + Into<f64>>(
    x: &[T],
    shape: &[usize],
    axis: i64,
    lowest: T,
    max: fn(T, T) -> T,
) -> Result<Vec<f64>, OpError> {
    let (outer, size, inner) = split_at_axis(shape, axis)?;
    let mut output = vec![0f64; x.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| o * size * inner + j * inner + i;
            let row_max = (0..size).map(|j| x[at(j)]).fold(lowest, max);
            let sum: f64 = (0..size).map(|j| (x[at(j)] - row_max).into().exp()).sum();
            for j in 0..size {
                output[at(j)] = (x[at(j)] - row_max).into().exp() / sum;
            }
        }
    }
    Ok(output)
}

/// Rows (dims before `axis`) × columns (dims from `axis` on), with the scale
/// (and bias) checked to hold one value per column.
fn normalized_rows(input: &Tensor, axis: i64, parameters: &[&Tensor]) -> Result<(usize, usize), OpError> {
    let rank = input.shape.len();
    let axis = normalize_axis(axis, rank).ok_or_else(|| OpError(format!("axis {axis} outside rank {rank}")))?;
    let columns: usize = input.shape[axis..].iter().product();
    let rows: usize = input.shape[..axis].iter().product();
    for parameter in parameters {
        if parameter.element_count() != columns {
            return op_error(format!("parameter of shape {:?} for rows of {columns}", parameter.shape));
        }
    }
    Ok((rows, columns))
}

pub fn layer_norm(
    input: &Tensor,
    scale: &Tensor,
    bias: Option<&Tensor>,
    axis: i64,
    epsilon: f32,
) -> Result<Tensor, OpError> {
    let x = floats(input, "layer_norm's input")?;
    let gamma = floats(scale, "layer_norm's scale")?;
    let beta = bias.map(|b| floats(b, "layer_norm's bias")).transpose()?;
    let parameters: Vec<&Tensor> = std::iter::once(scale).chain(bias).collect();
    let (rows, columns) = normalized_rows(input, axis, &parameters)?;
    let mut output = vec![0f32; x.len()];
    for r in 0..rows {
        let row = &x[r * columns..(r + 1) * columns];
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / columns as f64;
        let variance = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / columns as f64;
        let inverse = 1.0 / (variance + epsilon as f64).sqrt();
        for c in 0..columns {
            let normalized = ((row[c] as f64 - mean) * inverse) as f32;
            output[r * columns + c] = normalized * gamma[c] + beta.map_or(0.0, |b| b[c]);
        }
    }
    Ok(Tensor::from_f32(input.dtype, input.shape.clone(), output))
}

pub fn rms_norm(input: &Tensor, scale: &Tensor, axis: i64, epsilon: f32) -> Result<Tensor, OpError> {
    let x = floats(input, "rms_norm's input")?;
    let gamma = floats(scale, "rms_norm's scale")?;
    let (rows, columns) = normalized_rows(input, axis, &[scale])?;
    let mut output = vec![0f32; x.len()];
    for r in 0..rows {
        let row = &x[r * columns..(r + 1) * columns];
        let mean_square = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / columns as f64;
        let inverse = 1.0 / (mean_square + epsilon as f64).sqrt();
        for c in 0..columns {
            output[r * columns + c] = (row[c] as f64 * inverse) as f32 * gamma[c];
        }
    }
    Ok(Tensor::from_f32(input.dtype, input.shape.clone(), output))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_runtime::DType;

    fn floats(shape: &[usize], values: &[f32]) -> Tensor {
        Tensor::from_f32(DType::F32, shape.to_vec(), values.to_vec())
    }

    #[test]
    fn matmul_broadcasts_batches() {
        let a = floats(&[2, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
        let b = floats(&[2, 1], &[10.0, 1.0]);
        let c = matmul(&a, &b).unwrap();
        assert_eq!(c.shape, vec![2, 1, 1]);
        assert_eq!(c.as_floats().unwrap(), &[12.0, 34.0]);
    }

    #[test]
    fn reduce_mean_keeps_dims() {
        let r = reduce(&floats(&[2, 2], &[1.0, 3.0, 5.0, 7.0]), ReduceKind::Mean, &[-1], true).unwrap();
        assert_eq!(r.shape, vec![2, 1]);
        assert_eq!(r.as_floats().unwrap(), &[2.0, 6.0]);
    }

    #[test]
    fn softmax_of_a_fully_masked_row_is_nan() {
        let s = softmax(&floats(&[2, 2], &[0.0, 0.0, f32::NEG_INFINITY, f32::NEG_INFINITY]), -1).unwrap();
        assert_eq!(&s.as_floats().unwrap()[..2], &[0.5, 0.5]);
        assert!(s.as_floats().unwrap()[2].is_nan());
    }

    fn attention_over_masked_keys(mask_fill: f32, zero_fully_masked_rows: bool) -> Vec<f32> {
        // One query over two keys, both padded: the row is fully masked.
        let q = floats(&[1, 1, 1, 2], &[1.0, 2.0]);
        let k = floats(&[1, 1, 2, 2], &[0.5, -1.0, 3.0, 0.25]);
        let v = floats(&[1, 1, 2, 2], &[10.0, 20.0, 30.0, 40.0]);
        let keep = Tensor::from_i64(DType::I64, vec![1, 2], vec![0, 0]);
        let settings = AttentionSettings { scale: 1.0, mask: MaskKind::Padding, mask_fill, zero_fully_masked_rows };
        attention(&[&q, &k, &v, &keep], settings).unwrap().as_floats().unwrap().to_vec()
    }

    #[test]
    fn a_fully_masked_row_with_the_lowest_finite_fill_is_the_mean_of_v() {
        assert_eq!(attention_over_masked_keys(f32::MIN, false), vec![20.0, 30.0]);
    }

    #[test]
    fn a_fully_masked_row_with_an_infinite_fill_is_zero_with_the_guard_and_nan_without() {
        assert_eq!(attention_over_masked_keys(f32::NEG_INFINITY, true), vec![0.0, 0.0]);
        assert!(attention_over_masked_keys(f32::NEG_INFINITY, false).iter().all(|v| v.is_nan()));
    }

    #[test]
    fn causal_attention_sees_keys_up_to_the_query() {
        let q = floats(&[1, 1, 2, 1], &[0.0, 0.0]);
        let k = floats(&[1, 1, 2, 1], &[0.0, 0.0]);
        let v = floats(&[1, 1, 2, 1], &[4.0, 8.0]);
        let settings = AttentionSettings {
            scale: 1.0,
            mask: MaskKind::Causal,
            mask_fill: f32::NEG_INFINITY,
            zero_fully_masked_rows: false,
        };
        assert_eq!(attention(&[&q, &k, &v], settings).unwrap().as_floats().unwrap(), &[4.0, 6.0]);
    }

    #[test]
    fn layer_norm_normalizes_rows() {
        let one = floats(&[2], &[1.0, 1.0]);
        let n = layer_norm(&floats(&[1, 2], &[1.0, 3.0]), &one, None, -1, 0.0).unwrap();
        assert_eq!(n.as_floats().unwrap(), &[-1.0, 1.0]);
    }
}
