//! Elementwise ops with NumPy broadcasting, casts and GELU.

use kiln_runtime::DType;

use super::{checked_element_count, op_error, OpError};
use crate::op::{BinaryOp, GeluApproximation, UnaryOp};
use crate::tensor::{wrap_integers_to, Tensor, TensorData};

/// The broadcast shape of several shapes, or `None` when they do not broadcast.
pub fn broadcast_shape(shapes: &[&[usize]]) -> Option<Vec<usize>> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    (0..rank)
        .map(|i| {
            let mut size = 1;
            for shape in shapes {
                let offset = rank - shape.len();
                if i < offset {
                    continue;
                }
                let d = shape[i - offset];
                if d != 1 {
                    if size != 1 && size != d {
                        return None;
                    }
                    size = d;
                }
            }
            Some(size)
        })
        .collect()
}

/// For each element of `output_shape` (row-major), the offset into a tensor of
/// `input_shape` that broadcasts to it.
pub(crate) fn broadcast_offsets(input_shape: &[usize], output_shape: &[usize]) -> Vec<usize> {
    let rank = output_shape.len();
    let offset = rank - input_shape.len();
    let mut strides = vec![0usize; rank];
    let mut stride = 1;
    for i in (0..input_shape.len()).rev() {
        if input_shape[i] != 1 {
            strides[i + offset] = stride;
        }
        stride *= input_shape[i];
    }
    let total: usize = output_shape.iter().product();
    let mut offsets = Vec::with_capacity(total);
    if total == 0 {
        return offsets;
    }
    let mut index = vec![0usize; rank];
    let mut current = 0usize;
    for _ in 0..total {
        offsets.push(current);
        for axis in (0..rank).rev() {
            index[axis] += 1;
            current += strides[axis];
            if index[axis] < output_shape[axis] {
                break;
            }
            current -= strides[axis] * index[axis];
            index[axis] = 0;
        }
    }
    offsets
}

/// The broadcast shape of two tensors and, per output element, the offset into each.
struct BroadcastPair {
    shape: Vec<usize>,
    offsets_a: Vec<usize>,
    offsets_b: Vec<usize>,
}

fn broadcast_pair(a: &Tensor, b: &Tensor) -> Result<BroadcastPair, OpError> {
    let shape = broadcast_shape(&[&a.shape, &b.shape])
        .ok_or_else(|| OpError(format!("shapes {:?} and {:?} do not broadcast", a.shape, b.shape)))?;
    checked_element_count(&shape)?;
    let offsets_a = broadcast_offsets(&a.shape, &shape);
    let offsets_b = broadcast_offsets(&b.shape, &shape);
    Ok(BroadcastPair { shape, offsets_a, offsets_b })
}

/// The function of a float unary op (but `not` and `is_nan`, matched before)
/// in `f32` or `f64`, with that type's `erf`.
macro_rules! float_unary {
    ($op:expr, $float:ident, $erf:path) => {{
        let f: fn($float) -> $float = match $op {
            UnaryOp::Neg => |x| -x,
            UnaryOp::Abs => $float::abs,
            UnaryOp::Sqrt => $float::sqrt,
            UnaryOp::Reciprocal => |x| 1.0 / x,
            UnaryOp::Exp => $float::exp,
            UnaryOp::Log => $float::ln,
            UnaryOp::Erf => $erf,
            UnaryOp::Tanh => $float::tanh,
            UnaryOp::Sigmoid => |x| 1.0 / (1.0 + (-x).exp()),
            UnaryOp::Sin => $float::sin,
            UnaryOp::Cos => $float::cos,
            UnaryOp::Relu => |x| if x > 0.0 { x } else { 0.0 },
            UnaryOp::Silu => |x| x / (1.0 + (-x).exp()),
            UnaryOp::Floor => $float::floor,
            UnaryOp::Ceil => $float::ceil,
            UnaryOp::Not | UnaryOp::IsNan => unreachable!("matched before"),
        };
        f
    }};
}

pub fn unary(op: UnaryOp, input: &Tensor) -> Result<Tensor, OpError> {
    match (&input.data, op) {
        (TensorData::Bool(values), UnaryOp::Not) => {
            Ok(Tensor::from_bool(input.shape.clone(), values.iter().map(|v| !v).collect()))
        }
        (TensorData::Float(values), UnaryOp::IsNan) => {
            Ok(Tensor::from_bool(input.shape.clone(), values.iter().map(|v| v.is_nan()).collect()))
        }
        (TensorData::Int(values), UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu) => {
            let f = |v: &i64| match op {
                UnaryOp::Neg => v.wrapping_neg(),
                UnaryOp::Abs => v.wrapping_abs(),
                _ => (*v).max(0),
            };
            Ok(Tensor::from_i64(input.dtype, input.shape.clone(), values.iter().map(f).collect()))
        }
        (TensorData::Double(values), UnaryOp::IsNan) => {
            Ok(Tensor::from_bool(input.shape.clone(), values.iter().map(|v| v.is_nan()).collect()))
        }
        (TensorData::Double(values), _) => {
            let f = float_unary!(op, f64, libm::erf);
            Ok(Tensor::from_f64(input.shape.clone(), values.iter().map(|&x| f(x)).collect()))
        }
        (TensorData::Float(values), _) => {
            let f = float_unary!(op, f32, libm::erff);
            Ok(Tensor::from_f32(input.dtype, input.shape.clone(), values.iter().map(|&x| f(x)).collect()))
        }
        _ => op_error(format!("{} of a {} tensor", op.name(), input.dtype)),
    }
}

/// The predicate of a comparison `op`; any non-comparison op is treated as
/// `GreaterOrEqual`, so callers check [`BinaryOp::is_comparison`] first.
fn comparison<T: PartialOrd>(op: BinaryOp) -> fn(T, T) -> bool {
    match op {
        BinaryOp::Equal => |p, q| p == q,
        BinaryOp::Less => |p, q| p < q,
        BinaryOp::LessOrEqual => |p, q| p <= q,
        BinaryOp::Greater => |p, q| p > q,
        _ => |p, q| p >= q,
    }
}

/// An integer binary op or comparison over `$int` (i64, or u64 for u64
/// tensors) of the broadcast `pairs`, wrapping, as a tensor of `$dtype`.
macro_rules! integer_binary {
    ($op:expr, $int:ty, $x:expr, $y:expr, $pairs:expr, $shape:expr, $dtype:expr) => {{
        let (x, y, op) = ($x, $y, $op);
        if op.is_comparison() {
            let f = comparison::<$int>(op);
            return Ok(Tensor::from_bool($shape, $pairs.map(|(&i, &j)| f(x[i], y[j])).collect()));
        }
        let mut values = Vec::new();
        for (&i, &j) in $pairs {
            let (p, q) = (x[i], y[j]);
            values.push(match op {
                BinaryOp::Add => p.wrapping_add(q),
                BinaryOp::Sub => p.wrapping_sub(q),
                BinaryOp::Mul => p.wrapping_mul(q),
                BinaryOp::Div if q == 0 => return op_error("integer division by zero"),
                BinaryOp::Div => p.wrapping_div(q),
                BinaryOp::Pow => (p as f64).powf(q as f64) as $int,
                BinaryOp::Max => p.max(q),
                BinaryOp::Min => p.min(q),
                _ => return op_error(format!("{} of integer tensors", op.name())),
            } as i64);
        }
        wrap_integers_to($dtype, &mut values);
        Ok(Tensor::from_i64($dtype, $shape, values))
    }};
}

pub fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor, OpError> {
    if a.dtype != b.dtype {
        return op_error(format!("{} of {} and {}", op.name(), a.dtype, b.dtype));
    }
    let BroadcastPair { shape, offsets_a: oa, offsets_b: ob } = broadcast_pair(a, b)?;
    let pairs = oa.iter().zip(&ob);
    match (&a.data, &b.data) {
        (TensorData::Float(x), TensorData::Float(y)) => {
            if op.is_comparison() {
                let f = comparison::<f32>(op);
                return Ok(Tensor::from_bool(shape, pairs.map(|(&i, &j)| f(x[i], y[j])).collect()));
            }
            let f: fn(f32, f32) -> f32 = match op {
                BinaryOp::Add => |p, q| p + q,
                BinaryOp::Sub => |p, q| p - q,
                BinaryOp::Mul => |p, q| p * q,
                BinaryOp::Div => |p, q| p / q,
                BinaryOp::Pow => pow_f32,
                BinaryOp::Max => |p, q| {
                    if p.is_nan() || q.is_nan() {
                        f32::NAN
                    } else {
                        p.max(q)
                    }
                },
                BinaryOp::Min => |p, q| {
                    if p.is_nan() || q.is_nan() {
                        f32::NAN
                    } else {
                        p.min(q)
                    }
                },
                _ => return op_error(format!("{} of float tensors", op.name())),
            };
            Ok(Tensor::from_f32(a.dtype, shape, pairs.map(|(&i, &j)| f(x[i], y[j])).collect()))
        }
        (TensorData::Double(x), TensorData::Double(y)) => {
            if op.is_comparison() {
                let f = comparison::<f64>(op);
                return Ok(Tensor::from_bool(shape, pairs.map(|(&i, &j)| f(x[i], y[j])).collect()));
            }
            let f: fn(f64, f64) -> f64 = match op {
                BinaryOp::Add => |p, q| p + q,
                BinaryOp::Sub => |p, q| p - q,
                BinaryOp::Mul => |p, q| p * q,
                BinaryOp::Div => |p, q| p / q,
                BinaryOp::Pow => |p, q| if q == 2.0 { p * p } else { p.powf(q) },
                BinaryOp::Max => |p, q| if p.is_nan() || q.is_nan() { f64::NAN } else { p.max(q) },
                BinaryOp::Min => |p, q| if p.is_nan() || q.is_nan() { f64::NAN } else { p.min(q) },
                _ => return op_error(format!("{} of f64 tensors", op.name())),
            };
            Ok(Tensor::from_f64(shape, pairs.map(|(&i, &j)| f(x[i], y[j])).collect()))
        }
        (TensorData::Int(x), TensorData::Int(y)) if a.dtype == DType::U64 => {
            // u64 elements past 2^63 are held negative: computed, compared and divided as u64.
            let (x, y): (Vec<u64>, Vec<u64>) =
                (x.iter().map(|&v| v as u64).collect(), y.iter().map(|&v| v as u64).collect());
            integer_binary!(op, u64, &x, &y, pairs, shape, a.dtype)
        }
        (TensorData::Int(x), TensorData::Int(y)) => integer_binary!(op, i64, x, y, pairs, shape, a.dtype),
        (TensorData::Bool(x), TensorData::Bool(y)) => {
            let f: fn(bool, bool) -> bool = match op {
                BinaryOp::And => |p, q| p && q,
                BinaryOp::Or => |p, q| p || q,
                BinaryOp::Xor => |p, q| p != q,
                BinaryOp::Equal => |p, q| p == q,
                _ => return op_error(format!("{} of bool tensors", op.name())),
            };
            Ok(Tensor::from_bool(shape, pairs.map(|(&i, &j)| f(x[i], y[j])).collect()))
        }
        _ => op_error(format!("{} of mismatched tensors", op.name())),
    }
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `silu(gate) · up`, broadcast.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor, OpError> {
    let (Some(g), Some(u)) = (gate.as_floats(), up.as_floats()) else {
        return op_error("swiglu of non-float tensors");
    };
    let BroadcastPair { shape, offsets_a, offsets_b } = broadcast_pair(gate, up)?;
    let values = offsets_a.iter().zip(&offsets_b).map(|(&i, &j)| silu(g[i]) * u[j]).collect();
    Ok(Tensor::from_f32(gate.dtype, shape, values))
}

/// RoPE over the last dim, rotate-half or `interleaved` (see `Op::Rope`);
/// `cos` and `sin` broadcast to `x`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, interleaved: bool) -> Result<Tensor, OpError> {
    let (Some(values), Some(c), Some(s)) = (x.as_floats(), cos.as_floats(), sin.as_floats()) else {
        return op_error("rope of non-float tensors");
    };
    let depth = *x.shape.last().ok_or_else(|| OpError("rope of a scalar".into()))?;
    if depth % 2 != 0 {
        return op_error(format!("rope over an odd last dim {depth}"));
    }
    if broadcast_shape(&[&x.shape, &cos.shape, &sin.shape]).as_deref() != Some(&x.shape[..]) {
        return op_error(format!("rope tables {:?} do not broadcast to {:?}", cos.shape, x.shape));
    }
    let (oc, os) = (broadcast_offsets(&cos.shape, &x.shape), broadcast_offsets(&sin.shape, &x.shape));
    let half = depth / 2;
    let output = (0..values.len())
        .map(|i| {
            let position = i % depth;
            let rotated = match (interleaved, position) {
                (true, p) if p % 2 == 0 => -values[i + 1],
                (true, _) => values[i - 1],
                (false, p) if p < half => -values[i + half],
                (false, _) => values[i - half],
            };
            values[i] * c[oc[i]] + rotated * s[os[i]]
        })
        .collect();
    Ok(Tensor::from_f32(x.dtype, x.shape.clone(), output))
}

/// `x^y` as ONNX defines it, with `x^2` exact (exporters write it for variances).
fn pow_f32(x: f32, y: f32) -> f32 {
    if y == 2.0 {
        x * x
    } else {
        x.powf(y)
    }
}

pub fn select(condition: &Tensor, x: &Tensor, y: &Tensor) -> Result<Tensor, OpError> {
    let Some(conditions) = condition.as_bools() else {
        return op_error("where's condition is not bool");
    };
    if x.dtype != y.dtype {
        return op_error(format!("where of {} and {}", x.dtype, y.dtype));
    }
    let shape = broadcast_shape(&[&condition.shape, &x.shape, &y.shape]).ok_or_else(|| {
        OpError(format!("shapes {:?}, {:?}, {:?} do not broadcast", condition.shape, x.shape, y.shape))
    })?;
    let (oc, ox, oy) = (
        broadcast_offsets(&condition.shape, &shape),
        broadcast_offsets(&x.shape, &shape),
        broadcast_offsets(&y.shape, &shape),
    );
    let pick = |i: usize| conditions[oc[i]];
    let data = match (&x.data, &y.data) {
        (TensorData::Float(a), TensorData::Float(b)) => {
            TensorData::Float((0..shape.iter().product()).map(|i| if pick(i) { a[ox[i]] } else { b[oy[i]] }).collect())
        }
        (TensorData::Double(a), TensorData::Double(b)) => {
            TensorData::Double((0..shape.iter().product()).map(|i| if pick(i) { a[ox[i]] } else { b[oy[i]] }).collect())
        }
        (TensorData::Int(a), TensorData::Int(b)) => {
            TensorData::Int((0..shape.iter().product()).map(|i| if pick(i) { a[ox[i]] } else { b[oy[i]] }).collect())
        }
        (TensorData::Bool(a), TensorData::Bool(b)) => {
            TensorData::Bool((0..shape.iter().product()).map(|i| if pick(i) { a[ox[i]] } else { b[oy[i]] }).collect())
        }
        _ => return op_error("where of mismatched tensors"),
    };
    Ok(Tensor { dtype: x.dtype, shape, data })
}

pub fn cast(input: &Tensor, to: DType) -> Tensor {
    let shape = input.shape.clone();
    if to == DType::Bool {
        return Tensor::from_bool(shape, input.to_f64_vec().iter().map(|&v| v != 0.0).collect());
    }
    if to == DType::F32 {
        if let TensorData::Int(values) = &input.data {
            // Rounded once, straight from the integer (through f64 would round twice past 2^53).
            let unsigned = input.dtype == DType::U64;
            let values = values.iter().map(|&v| if unsigned { v as u64 as f32 } else { v as f32 }).collect();
            return Tensor::from_f32(to, shape, values);
        }
    }
    if to.is_float() {
        // Every other source reads exactly as f64, rounded to `to` once.
        let mut values = input.to_f64_vec();
        saturate_to_small_float(to, &mut values);
        return Tensor::from_f64_rounded(to, shape, values);
    }
    // Non-finite values have no integer; kiln gives 0, as ONNX Runtime does.
    // u64 takes values up to 2^64 (held as their bits).
    let truncate = |v: f64| match (v.is_finite(), to) {
        (false, _) => 0,
        (true, DType::U64) => v.trunc() as u64 as i64,
        (true, _) => v.trunc() as i64,
    };
    let ints: Vec<i64> = match &input.data {
        TensorData::Float(values) => values.iter().map(|&v| truncate(v as f64)).collect(),
        TensorData::Double(values) => values.iter().map(|&v| truncate(v)).collect(),
        TensorData::Int(values) => values.clone(),
        TensorData::Bool(values) => values.iter().map(|&v| v as i64).collect(),
    };
    Tensor::from_i64(to, shape, ints)
}

/// Clamps values to a small float's largest finite value (keeping NaN), as
/// ONNX's `Cast` to the 8-bit floats does by default (`saturate=1`).
fn saturate_to_small_float(to: DType, values: &mut [f64]) {
    if to.is_float() && to.bits() <= 8 {
        let largest = (0..=255u8)
            .map(|code| kiln_runtime::dtype::small_float_to_f32(to, code) as f64)
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max);
        // E8M0 keeps infinities, which it encodes as its NaN, as ONNX's reference does.
        let keep = |v: f64| v.is_nan() || (to == DType::F8E8M0 && v.is_infinite());
        values.iter_mut().filter(|v| !keep(**v)).for_each(|v| *v = v.clamp(-largest, largest));
    }
}

pub fn gelu(approximation: GeluApproximation, input: &Tensor) -> Result<Tensor, OpError> {
    let Some(values) = input.as_floats() else {
        return op_error(format!("gelu of a {} tensor", input.dtype));
    };
    let f: fn(f32) -> f32 = match approximation {
        GeluApproximation::None => |x| 0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2)),
        GeluApproximation::Tanh => |x| {
            let inner = (2.0 / std::f32::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            0.5 * x * (1.0 + inner.tanh())
        },
    };
    Ok(Tensor::from_f32(input.dtype, input.shape.clone(), values.iter().map(|&x| f(x)).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(shape: &[usize], values: &[f32]) -> Tensor {
        Tensor::from_f32(DType::F32, shape.to_vec(), values.to_vec())
    }

    #[test]
    fn adds_with_broadcasting() {
        let a = floats(&[2, 1], &[1.0, 2.0]);
        let b = floats(&[3], &[10.0, 20.0, 30.0]);
        let sum = binary(BinaryOp::Add, &a, &b).unwrap();
        assert_eq!(sum.shape, vec![2, 3]);
        assert_eq!(sum.as_floats().unwrap(), &[11.0, 21.0, 31.0, 12.0, 22.0, 32.0]);
    }

    #[test]
    fn rejects_shapes_that_do_not_broadcast() {
        assert!(binary(BinaryOp::Add, &floats(&[2], &[1.0, 2.0]), &floats(&[3], &[1.0, 2.0, 3.0])).is_err());
    }

    #[test]
    fn bool_logic_is_exact() {
        let p = Tensor::from_bool(vec![4], vec![true, true, false, false]);
        let q = Tensor::from_bool(vec![4], vec![true, false, true, false]);
        assert_eq!(binary(BinaryOp::And, &p, &q).unwrap().as_bools().unwrap(), &[true, false, false, false]);
        assert_eq!(binary(BinaryOp::Or, &p, &q).unwrap().as_bools().unwrap(), &[true, true, true, false]);
        assert_eq!(binary(BinaryOp::Xor, &p, &q).unwrap().as_bools().unwrap(), &[false, true, true, false]);
    }

    #[test]
    fn casts_truncate_toward_zero_and_wrap() {
        let t = cast(&floats(&[3], &[-1.7, 2.9, 300.0]), DType::I8);
        assert_eq!(t.as_ints().unwrap(), &[-1, 2, 44]);
    }

    #[test]
    fn casts_round_once_and_reach_the_whole_u64_range() {
        let big = Tensor::from_i64(DType::I64, vec![1], vec![(1 << 60) + (1 << 36) + 1]);
        assert_eq!(cast(&big, DType::F32).as_floats().unwrap(), &[((1u64 << 60) + (1 << 37)) as f32]);
        let huge = floats(&[1], &[1e19]);
        assert_eq!(cast(&huge, DType::U64).to_f64_vec(), vec![1e19f32 as u64 as f64]);
        let infinite = floats(&[2], &[f32::INFINITY, 3.0]);
        let scales = cast(&infinite, DType::F8E8M0);
        assert!(scales.as_floats().unwrap()[0].is_nan(), "E8M0 encodes infinity as its NaN");
        assert_eq!(scales.as_floats().unwrap()[1], 4.0, "E8M0 rounds up to a power of two");
    }

    #[test]
    fn u64_beyond_i64_compares_and_divides_as_unsigned() {
        let big = Tensor::from_i64(DType::U64, vec![1], vec![(1u64 << 63) as i64 + 6]);
        let two = Tensor::from_i64(DType::U64, vec![1], vec![2]);
        assert_eq!(binary(BinaryOp::Greater, &big, &two).unwrap().as_bools().unwrap(), &[true]);
        assert_eq!(binary(BinaryOp::Div, &big, &two).unwrap().to_f64_vec(), vec![((1u64 << 62) + 3) as f64]);
    }

    #[test]
    fn integer_division_by_zero_is_an_error() {
        let a = Tensor::from_i64(DType::I64, vec![1], vec![3]);
        let b = Tensor::from_i64(DType::I64, vec![1], vec![0]);
        assert!(binary(BinaryOp::Div, &a, &b).is_err());
    }
}
