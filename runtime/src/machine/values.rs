//! What the machine's values are and what each operation does to them, lane
//! by lane: the semantics the interpreter of [`crate::sim`] defines, on
//! exact native values instead of f64.
//!
//! A lane holds 64 bits. Float registers hold an f32 (low 32 bits); an f16
//! or bf16 register holds an f32 that is exactly representable in its type
//! (every operation rounds to it). i64 registers hold the integer, i32
//! registers the integer sign-extended, bool registers 0 or 1.

use half::{bf16, f16};

use crate::dtype::{bf16_from_f64, f32_to_f8e4m3, f8e4m3_to_f32};
use crate::kernel::{BinaryOp, UnaryOp};
use crate::DType;

/// The kind of value a register holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Class {
    F32,
    F16,
    BF16,
    I64,
    I32,
    Bool,
}

impl Class {
    /// The class of a register declared (by `let` or a cast) as `dtype`.
    pub(crate) fn declared(dtype: DType) -> Class {
        match dtype {
            DType::F32 | DType::F8E4M3 => Class::F32,
            DType::F16 => Class::F16,
            DType::BF16 => Class::BF16,
            DType::I32 => Class::I32,
            DType::I64 | DType::I8 | DType::U8 => Class::I64,
            DType::Bool => Class::Bool,
        }
    }

    /// The class of a value loaded from memory of `dtype` (kernel IR's
    /// register-type rule, [`crate::kernel::register_type`]).
    pub(crate) fn loaded(dtype: DType) -> Class {
        Class::declared(crate::kernel::register_type(dtype))
    }

    pub(crate) fn is_float(self) -> bool {
        matches!(self, Class::F32 | Class::F16 | Class::BF16)
    }
}

#[inline]
fn f(bits: u64) -> f32 {
    f32::from_bits(bits as u32)
}

#[inline]
fn fb(value: f32) -> u64 {
    value.to_bits() as u64
}

/// The value of `bits` (of `class`) as f64.
#[inline]
pub(crate) fn to_f64(class: Class, bits: u64) -> f64 {
    match class {
        Class::F32 | Class::F16 | Class::BF16 => f(bits) as f64,
        Class::I64 | Class::I32 | Class::Bool => bits as i64 as f64,
    }
}

/// `value` rounded (floats) or converted (integers: truncated, saturating,
/// NaN to 0) to `class`.
#[inline]
pub(crate) fn from_f64(class: Class, value: f64) -> u64 {
    match class {
        Class::F32 => fb(value as f32),
        Class::F16 => fb(f16::from_f64(value).to_f32()),
        Class::BF16 => fb(bf16_from_f64(value).to_f32()),
        Class::I64 => value as i64 as u64,
        Class::I32 => value as i32 as i64 as u64,
        Class::Bool => (value != 0.0) as u64,
    }
}

/// `dst[l] = op(a[l])` for every lane.
pub(crate) fn unary_lanes(op: UnaryOp, class: Class, dst: &mut [u64], a: &[u64]) {
    macro_rules! each {
        ($g:expr) => {
            dst.iter_mut().zip(a).for_each(|(d, &x)| *d = $g(x))
        };
    }
    match (op, class) {
        (UnaryOp::Neg, Class::F32) => each!(|x: u64| fb(-f(x))),
        (UnaryOp::Abs, Class::F32) => each!(|x: u64| fb(f(x).abs())),
        (UnaryOp::Sqrt, Class::F32) => each!(|x: u64| fb(f(x).sqrt())),
        (UnaryOp::Not, Class::Bool) => each!(|x: u64| (x == 0) as u64),
        (UnaryOp::Neg, Class::I64 | Class::I32) => each!(|x: u64| (x as i64).wrapping_neg() as u64),
        (UnaryOp::Abs, Class::I64 | Class::I32) => each!(|x: u64| (x as i64).wrapping_abs() as u64),
        (UnaryOp::Not, _) => each!(|x: u64| from_f64(class, (to_f64(class, x) == 0.0) as u8 as f64)),
        _ => each!(|x: u64| from_f64(class, unary_f64(op, to_f64(class, x)))),
    }
}

/// `op` of `v` in f64 (the interpreter's definition, which the machine shares).
pub(crate) fn unary_f64(op: UnaryOp, v: f64) -> f64 {
    match op {
        UnaryOp::Neg => -v,
        UnaryOp::Abs => v.abs(),
        UnaryOp::Sqrt => v.sqrt(),
        UnaryOp::Rsqrt => 1.0 / v.sqrt(),
        UnaryOp::Exp => v.exp(),
        UnaryOp::Log => v.ln(),
        UnaryOp::Tanh => v.tanh(),
        UnaryOp::Erf => crate::sim::erf_f64(v),
        UnaryOp::Sin => v.sin(),
        UnaryOp::Cos => v.cos(),
        UnaryOp::Not => (v == 0.0) as u8 as f64,
    }
}

/// `acc + a × b` on f32 register bits, rounded after each operation.
#[inline(always)]
pub(crate) fn mul_add(acc: u64, a: u64, b: u64) -> u64 {
    fb(f(acc) + f(a) * f(b))
}

/// The class of `op`'s result on operands of `class`.
pub(crate) fn binary_class(op: BinaryOp, class: Class) -> Class {
    if op.is_comparison() {
        Class::Bool
    } else {
        class
    }
}

/// `dst[l] = a[l] op b[l]` for every lane (operands of `class`).
pub(crate) fn binary_lanes(op: BinaryOp, class: Class, dst: &mut [u64], a: &[u64], b: &[u64]) {
    macro_rules! each {
        ($g:expr) => {
            for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
                *d = $g(x, y);
            }
        };
    }
    macro_rules! floats {
        ($g:expr) => {
            each!(|x: u64, y: u64| fb($g(f(x), f(y))))
        };
    }
    macro_rules! float_test {
        ($g:expr) => {
            each!(|x: u64, y: u64| $g(f(x), f(y)) as u64)
        };
    }
    macro_rules! ints {
        ($g:expr) => {
            each!(|x: u64, y: u64| $g(x as i64, y as i64) as u64)
        };
    }
    macro_rules! ints32 {
        ($g:expr) => {
            each!(|x: u64, y: u64| $g(x as i32, y as i32) as i64 as u64)
        };
    }
    match class {
        Class::F32 => match op {
            BinaryOp::Add => floats!(|p: f32, q: f32| p + q),
            BinaryOp::Sub => floats!(|p: f32, q: f32| p - q),
            BinaryOp::Mul => floats!(|p: f32, q: f32| p * q),
            BinaryOp::Div => floats!(|p: f32, q: f32| p / q),
            BinaryOp::Rem => floats!(|p: f32, q: f32| p % q),
            BinaryOp::Pow => floats!(|p: f32, q: f32| if q == 2.0 { p * p } else { (p as f64).powf(q as f64) as f32 }),
            BinaryOp::Max => floats!(|p: f32, q: f32| p.max(q)),
            BinaryOp::Min => floats!(|p: f32, q: f32| p.min(q)),
            BinaryOp::Lt => float_test!(|p: f32, q: f32| p < q),
            BinaryOp::Le => float_test!(|p: f32, q: f32| p <= q),
            BinaryOp::Eq => float_test!(|p: f32, q: f32| p == q),
            BinaryOp::Ne => float_test!(|p: f32, q: f32| p != q),
            BinaryOp::And => floats!(|p: f32, q: f32| (p != 0.0 && q != 0.0) as u8 as f32),
            BinaryOp::Or => floats!(|p: f32, q: f32| (p != 0.0 || q != 0.0) as u8 as f32),
        },
        Class::F16 | Class::BF16 => {
            let result = binary_class(op, class);
            each!(|x: u64, y: u64| from_f64(result, binary_f64(op, to_f64(class, x), to_f64(class, y))))
        }
        Class::I64 | Class::Bool => match op {
            BinaryOp::Add => ints!(|p: i64, q: i64| p.wrapping_add(q)),
            BinaryOp::Sub => ints!(|p: i64, q: i64| p.wrapping_sub(q)),
            BinaryOp::Mul => ints!(|p: i64, q: i64| p.wrapping_mul(q)),
            BinaryOp::Div => ints!(|p: i64, q: i64| p.checked_div(q).unwrap_or(0)),
            BinaryOp::Rem => ints!(|p: i64, q: i64| p.checked_rem(q).unwrap_or(0)),
            BinaryOp::Pow => ints!(|p: i64, q: i64| (p as f64).powf(q as f64) as i64),
            BinaryOp::Max => ints!(|p: i64, q: i64| p.max(q)),
            BinaryOp::Min => ints!(|p: i64, q: i64| p.min(q)),
            BinaryOp::Lt => ints!(|p: i64, q: i64| p < q),
            BinaryOp::Le => ints!(|p: i64, q: i64| p <= q),
            BinaryOp::Eq => ints!(|p: i64, q: i64| p == q),
            BinaryOp::Ne => ints!(|p: i64, q: i64| p != q),
            BinaryOp::And => ints!(|p: i64, q: i64| p != 0 && q != 0),
            BinaryOp::Or => ints!(|p: i64, q: i64| p != 0 || q != 0),
        },
        Class::I32 => match op {
            BinaryOp::Add => ints32!(|p: i32, q: i32| p.wrapping_add(q)),
            BinaryOp::Sub => ints32!(|p: i32, q: i32| p.wrapping_sub(q)),
            BinaryOp::Mul => ints32!(|p: i32, q: i32| p.wrapping_mul(q)),
            BinaryOp::Div => ints32!(|p: i32, q: i32| p.checked_div(q).unwrap_or(0)),
            BinaryOp::Rem => ints32!(|p: i32, q: i32| p.checked_rem(q).unwrap_or(0)),
            BinaryOp::Pow => ints32!(|p: i32, q: i32| (p as f64).powf(q as f64) as i32),
            BinaryOp::Max => ints32!(|p: i32, q: i32| p.max(q)),
            BinaryOp::Min => ints32!(|p: i32, q: i32| p.min(q)),
            BinaryOp::Lt => ints32!(|p: i32, q: i32| (p < q) as i32),
            BinaryOp::Le => ints32!(|p: i32, q: i32| (p <= q) as i32),
            BinaryOp::Eq => ints32!(|p: i32, q: i32| (p == q) as i32),
            BinaryOp::Ne => ints32!(|p: i32, q: i32| (p != q) as i32),
            BinaryOp::And => ints32!(|p: i32, q: i32| (p != 0 && q != 0) as i32),
            BinaryOp::Or => ints32!(|p: i32, q: i32| (p != 0 || q != 0) as i32),
        },
    }
}

fn binary_f64(op: BinaryOp, p: f64, q: f64) -> f64 {
    match op {
        BinaryOp::Add => p + q,
        BinaryOp::Sub => p - q,
        BinaryOp::Mul => p * q,
        BinaryOp::Div => p / q,
        BinaryOp::Rem => p % q,
        BinaryOp::Pow if q == 2.0 => p * p,
        BinaryOp::Pow => p.powf(q),
        BinaryOp::Max => p.max(q),
        BinaryOp::Min => p.min(q),
        BinaryOp::Lt => (p < q) as u8 as f64,
        BinaryOp::Le => (p <= q) as u8 as f64,
        BinaryOp::Eq => (p == q) as u8 as f64,
        BinaryOp::Ne => (p != q) as u8 as f64,
        BinaryOp::And => (p != 0.0 && q != 0.0) as u8 as f64,
        BinaryOp::Or => (p != 0.0 || q != 0.0) as u8 as f64,
    }
}

/// `bits` of class `from` as a value of class `to`, as a GPU conversion gives
/// it (floats to integers truncate toward zero, saturating, NaN to 0).
#[inline]
pub(crate) fn convert(from: Class, to: Class, bits: u64) -> u64 {
    match (from, to) {
        _ if from == to => bits,
        (Class::I32, Class::I64) | (Class::Bool, Class::I64 | Class::I32) => bits,
        (Class::I64, Class::I32) => bits as i32 as i64 as u64,
        (Class::F16 | Class::BF16, Class::F32) => bits,
        (_, Class::Bool) => (to_f64(from, bits) != 0.0) as u64,
        (_, Class::F32) if !from.is_float() => fb((bits as i64 as f64) as f32),
        _ => from_f64(to, to_f64(from, bits)),
    }
}

/// The register bits of element `raw` (its little-endian bytes, zero-extended)
/// of memory of `dtype`, in the class a load gives ([`Class::loaded`]).
#[inline(always)]
pub(crate) fn decode(dtype: DType, raw: u64) -> u64 {
    match dtype {
        DType::F32 => raw,
        DType::F16 => fb(f16::from_bits(raw as u16).to_f32()),
        DType::BF16 => fb(bf16::from_bits(raw as u16).to_f32()),
        DType::F8E4M3 => fb(f8e4m3_to_f32(raw as u8)),
        DType::I64 => raw,
        DType::I32 => raw as u32 as i32 as i64 as u64,
        DType::I8 => raw as u8 as i8 as i64 as u64,
        DType::U8 => raw as u8 as u64,
        DType::Bool => (raw as u8 != 0) as u64,
    }
}

/// The element of memory of `dtype` that storing `bits` (of `class`) writes:
/// floats round to nearest even, integers convert as the interpreter's
/// stores do (through f64, saturating).
#[inline]
pub(crate) fn encode(dtype: DType, class: Class, bits: u64) -> u64 {
    match (dtype, class) {
        (DType::F32, Class::F32 | Class::F16 | Class::BF16) => bits & 0xffff_ffff,
        (DType::F16, c) if c.is_float() => f16::from_f32(f(bits)).to_bits() as u64,
        (DType::BF16, c) if c.is_float() => bf16::from_f32(f(bits)).to_bits() as u64,
        (DType::I64, Class::I64 | Class::I32 | Class::Bool) => bits,
        (DType::Bool, _) => (to_f64(class, bits) != 0.0) as u64,
        _ => encode_f64(dtype, to_f64(class, bits)),
    }
}

/// The element of memory of `dtype` closest to `value` (floats round to
/// nearest even; integers truncate, saturating).
#[inline]
pub(crate) fn encode_f64(dtype: DType, value: f64) -> u64 {
    match dtype {
        DType::F32 => (value as f32).to_bits() as u64,
        DType::F16 => f16::from_f64(value).to_bits() as u64,
        DType::BF16 => bf16_from_f64(value).to_bits() as u64,
        DType::F8E4M3 => f32_to_f8e4m3(value as f32) as u64,
        DType::I64 => value as i64 as u64,
        DType::I32 => value as i32 as u32 as u64,
        DType::I8 => value as i8 as u8 as u64,
        DType::U8 => value as u8 as u64,
        DType::Bool => (value != 0.0) as u64,
    }
}
