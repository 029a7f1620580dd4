//! What the machine's values are and what each operation does to them, lane
//! by lane: the semantics the interpreter of [`crate::sim`] defines, on
//! exact native values instead of f64.
//!
//! A lane holds 64 bits. Float registers hold an f32 (low 32 bits); an f16
//! or bf16 register holds an f32 that is exactly representable in its type
//! (every operation rounds to it). i64 and u64 registers hold the integer's
//! bits, i32 registers the integer sign-extended, u32 registers it
//! zero-extended, bool registers 0 or 1.

use half::{bf16, f16};

use crate::dtype::{
    bf16_from_f64, f32_to_f8e4m3, f32_to_small_float, f8e4m3_to_f32, integer_bounds, small_float_to_f32, wrap_integer,
};
use crate::kernel::{BinaryOp, Rounding, UnaryOp};
use crate::DType;

/// The kind of value a register holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Class {
    F32,
    F16,
    BF16,
    I64,
    I32,
    U32,
    U64,
    Bool,
}

impl Class {
    /// The class of a register declared (by `let` or a cast) as `dtype`.
    pub(crate) fn declared(dtype: DType) -> Class {
        match dtype {
            d if d.is_float() && !matches!(d, DType::F16 | DType::BF16) => Class::F32,
            DType::F16 => Class::F16,
            DType::BF16 => Class::BF16,
            DType::I32 => Class::I32,
            DType::U32 => Class::U32,
            DType::U64 => Class::U64,
            DType::Bool => Class::Bool,
            _ => Class::I64,
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

    pub(crate) fn is_unsigned(self) -> bool {
        matches!(self, Class::U32 | Class::U64)
    }

    /// Bits of an integer register of this class (bool counts as 64: its
    /// 0/1 is already canonical).
    fn integer_bits(self) -> u32 {
        match self {
            Class::I32 | Class::U32 => 32,
            _ => 64,
        }
    }
}

/// `bits` as an integer of `class`'s width and signedness, canonical in a
/// lane: sign-extended for i32, zero-extended for u32.
#[inline]
fn wrap(class: Class, bits: u64) -> u64 {
    match class {
        Class::I32 => bits as i32 as i64 as u64,
        Class::U32 => bits & 0xffff_ffff,
        Class::Bool => (bits != 0) as u64,
        _ => bits,
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
        Class::U32 | Class::U64 => bits as f64,
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
        Class::U32 => value as u32 as u64,
        Class::U64 => value as u64,
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
        (UnaryOp::Neg, Class::I64 | Class::I32) => each!(|x: u64| wrap(class, (x as i64).wrapping_neg() as u64)),
        (UnaryOp::Abs, Class::I64 | Class::I32) => each!(|x: u64| wrap(class, (x as i64).wrapping_abs() as u64)),
        (UnaryOp::Neg, Class::U32 | Class::U64) => each!(|x: u64| wrap(class, x.wrapping_neg())),
        (UnaryOp::Abs, Class::U32 | Class::U64) => each!(|x: u64| x),
        (UnaryOp::BitNot, _) => each!(|x: u64| wrap(class, !x)),
        (UnaryOp::Not, _) => each!(|x: u64| from_f64(class, (to_f64(class, x) == 0.0) as u8 as f64)),
        _ => {
            // A transcendental of a value every lane holds (a softmax's
            // running maximum after a butterfly reduction) is computed once.
            if let Some((&first, rest)) = a.split_first() {
                if rest.iter().all(|&x| x == first) {
                    dst.fill(from_f64(class, unary_f64(op, to_f64(class, first))));
                    return;
                }
            }
            each!(|x: u64| from_f64(class, unary_f64(op, to_f64(class, x))))
        }
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
        UnaryOp::BitNot => !(v as i64) as f64,
    }
}

/// `acc + a × b` on f32 register bits, rounded after each operation.
#[inline(always)]
pub(crate) fn mul_add(acc: u64, a: u64, b: u64) -> u64 {
    fb(f(acc) + f(a) * f(b))
}

/// `a × b + c` on f32 register bits with one rounding (`fma.rn.f32`).
#[inline(always)]
pub(crate) fn fma(a: u64, b: u64, c: u64) -> u64 {
    fb(f(a).mul_add(f(b), f(c)))
}

/// The class of `op`'s result on operands of `class`.
pub(crate) fn binary_class(op: BinaryOp, class: Class) -> Class {
    if op.is_comparison() {
        Class::Bool
    } else {
        class
    }
}

/// `a op b` for one uniform value: the index arithmetic of i64 inline,
/// everything else as [`binary_lanes`] defines it.
#[inline]
pub(crate) fn binary_scalar(op: BinaryOp, class: Class, a: u64, b: u64) -> u64 {
    if class == Class::I64 {
        let (x, y) = (a as i64, b as i64);
        match op {
            BinaryOp::Add => return x.wrapping_add(y) as u64,
            BinaryOp::Sub => return x.wrapping_sub(y) as u64,
            BinaryOp::Mul => return x.wrapping_mul(y) as u64,
            BinaryOp::Min => return x.min(y) as u64,
            BinaryOp::Max => return x.max(y) as u64,
            BinaryOp::Lt => return (x < y) as u64,
            _ => {}
        }
    }
    let mut out = [0];
    binary_lanes(op, class, &mut out, &[a], &[b]);
    out[0]
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
    if op.is_bitwise() {
        let width = class.integer_bits();
        match op {
            BinaryOp::Shl => each!(|x: u64, y: u64| wrap(class, x.wrapping_shl(y as u32 % width))),
            BinaryOp::Shr if class.is_unsigned() => each!(|x: u64, y: u64| x.wrapping_shr(y as u32 % width)),
            BinaryOp::Shr => each!(|x: u64, y: u64| (x as i64).wrapping_shr(y as u32 % width) as u64),
            BinaryOp::BitAnd => each!(|x: u64, y: u64| x & y),
            BinaryOp::BitOr => each!(|x: u64, y: u64| x | y),
            _ => each!(|x: u64, y: u64| x ^ y),
        }
        return;
    }
    // One definition of integer arithmetic per width and signedness: lanes
    // hold the canonical form (`wrap`), operations run in the native type.
    macro_rules! integers {
        ($t:ty) => {
            match op {
                BinaryOp::Add => each!(|x: u64, y: u64| wrap(class, (x as $t).wrapping_add(y as $t) as u64)),
                BinaryOp::Sub => each!(|x: u64, y: u64| wrap(class, (x as $t).wrapping_sub(y as $t) as u64)),
                BinaryOp::Mul => each!(|x: u64, y: u64| wrap(class, (x as $t).wrapping_mul(y as $t) as u64)),
                BinaryOp::Div => {
                    each!(|x: u64, y: u64| wrap(class, (x as $t).checked_div(y as $t).unwrap_or(0) as u64))
                }
                BinaryOp::Rem => {
                    each!(|x: u64, y: u64| wrap(class, (x as $t).checked_rem(y as $t).unwrap_or(0) as u64))
                }
                BinaryOp::Pow => {
                    each!(|x: u64, y: u64| wrap(class, ((x as $t) as f64).powf((y as $t) as f64) as $t as u64))
                }
                BinaryOp::Max => each!(|x: u64, y: u64| wrap(class, (x as $t).max(y as $t) as u64)),
                BinaryOp::Min => each!(|x: u64, y: u64| wrap(class, (x as $t).min(y as $t) as u64)),
                BinaryOp::Lt => each!(|x: u64, y: u64| ((x as $t) < (y as $t)) as u64),
                BinaryOp::Le => each!(|x: u64, y: u64| ((x as $t) <= (y as $t)) as u64),
                BinaryOp::Eq => each!(|x: u64, y: u64| ((x as $t) == (y as $t)) as u64),
                BinaryOp::Ne => each!(|x: u64, y: u64| ((x as $t) != (y as $t)) as u64),
                BinaryOp::And => each!(|x: u64, y: u64| (x != 0 && y != 0) as u64),
                BinaryOp::Or => each!(|x: u64, y: u64| (x != 0 || y != 0) as u64),
                _ => unreachable!("bitwise operations are handled above"),
            }
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
            _ => unreachable!("the verifier refuses bitwise operations on floats"),
        },
        Class::F16 | Class::BF16 => {
            let result = binary_class(op, class);
            each!(|x: u64, y: u64| from_f64(result, binary_f64(op, to_f64(class, x), to_f64(class, y))))
        }
        Class::I64 | Class::Bool => integers!(i64),
        Class::I32 => integers!(i32),
        Class::U32 => integers!(u32),
        Class::U64 => integers!(u64),
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
        _ => unreachable!("the verifier refuses bitwise operations on floats"),
    }
}

/// `bits` of class `from` as a value of class `to`, as a GPU conversion gives
/// it (floats to integers truncate toward zero, saturating, NaN to 0;
/// integers sign-extend (signed sources) or zero-extend (unsigned and bool
/// sources) and wrap to narrower integers).
#[inline]
pub(crate) fn convert(from: Class, to: Class, bits: u64) -> u64 {
    match (from, to) {
        _ if from == to => bits,
        (_, Class::Bool) => (to_f64(from, bits) != 0.0) as u64,
        (Class::F16 | Class::BF16, Class::F32) => bits,
        _ if !from.is_float() && !to.is_float() => wrap(to, bits),
        (Class::U32 | Class::U64, Class::F32) => fb(bits as f32),
        (_, Class::F32) if !from.is_float() => fb(bits as i64 as f32),
        _ => from_f64(to, to_f64(from, bits)),
    }
}

/// `bits` of class `from` converted to class `to` with `rounding` (the
/// verifier's rounding conversions: float → integer, integer → f32, f32 →
/// f16/bf16). Float → integer saturates with NaN to 0, as PTX's `cvt` does.
pub(crate) fn convert_rounded(from: Class, to: Class, rounding: Rounding, bits: u64) -> u64 {
    if from.is_float() && !to.is_float() {
        let value = to_f64(from, bits);
        let rounded = match rounding {
            Rounding::Nearest => value.round_ties_even(),
            Rounding::Zero => value.trunc(),
            Rounding::Down => value.floor(),
            Rounding::Up => value.ceil(),
        };
        return if to == Class::Bool { (rounded != 0.0) as u64 } else { from_f64(to, rounded) };
    }
    if !from.is_float() && to == Class::F32 {
        let exact: i128 = if from.is_unsigned() { bits as i128 } else { bits as i64 as i128 };
        let nearest = if from.is_unsigned() { bits as f32 } else { bits as i64 as f32 };
        // |integer| < 2^64, so the nearest f32 is finite and an exact i128.
        let order = (nearest as i128).cmp(&exact);
        return fb(f32::from_bits(directed(nearest.to_bits() as u64, order, rounding, 32) as u32));
    }
    if from == Class::F32 && matches!(to, Class::F16 | Class::BF16) {
        let value = f(bits);
        let nearest = if to == Class::F16 { f16::from_f32(value).to_bits() } else { bf16::from_f32(value).to_bits() };
        let decode = |b: u16| if to == Class::F16 { f16::from_bits(b).to_f32() } else { bf16::from_bits(b).to_f32() };
        let Some(order) = decode(nearest).partial_cmp(&value) else {
            return fb(value);
        };
        return fb(decode(directed(nearest as u64, order, rounding, 16) as u16));
    }
    convert(from, to, bits)
}

/// The sign-magnitude float (of `width` bits) `rounding` picks, given the
/// nearest one `nearest` and how it compares with the exact value.
fn directed(nearest: u64, order: std::cmp::Ordering, rounding: Rounding, width: u32) -> u64 {
    use std::cmp::Ordering::{Greater, Less};
    let sign = 1u64 << (width - 1);
    // The neighbour one step toward -inf (`down`) or +inf.
    let step = |bits: u64, down: bool| -> u64 {
        let negative = bits & sign != 0;
        match (bits & !sign == 0, down) {
            (true, true) => sign | 1,
            (true, false) => 1,
            _ if negative == down => bits + 1,
            _ => bits - 1,
        }
    };
    let positive = nearest & sign == 0;
    match (rounding, order) {
        (Rounding::Down, Greater) => step(nearest, true),
        (Rounding::Up, Less) => step(nearest, false),
        (Rounding::Zero, Greater) if positive => step(nearest, true),
        (Rounding::Zero, Less) if !positive => step(nearest, false),
        _ => nearest,
    }
}

/// Register bits of a same-width register read as class `to`.
#[inline]
pub(crate) fn bitcast(to: Class, bits: u64) -> u64 {
    match to {
        Class::I32 => bits as u32 as i32 as i64 as u64,
        Class::F32 | Class::U32 => bits & 0xffff_ffff,
        _ => bits,
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
        DType::U32 => raw & 0xffff_ffff,
        DType::U64 => raw,
        DType::Bool => (raw as u8 != 0) as u64,
        DType::I16 => raw as u16 as i16 as i64 as u64,
        DType::U16 => raw as u16 as u64,
        // Sub-byte integers sit one per byte, as their value.
        DType::I4 | DType::U4 | DType::I2 | DType::U2 => wrap_integer(dtype, raw as i64) as u64,
        DType::F64 => fb(f64::from_bits(raw) as f32),
        small_float => fb(small_float_to_f32(small_float, raw as u8)),
    }
}

/// The element of memory of `dtype` that storing `bits` (of `class`) writes:
/// floats round to nearest even, integers keep their low bits (as `st` of a
/// narrower integer does), floats stored to integers truncate, saturating.
#[inline]
pub(crate) fn encode(dtype: DType, class: Class, bits: u64) -> u64 {
    match (dtype, class) {
        (DType::F32, Class::F32 | Class::F16 | Class::BF16) => bits & 0xffff_ffff,
        (DType::F16, c) if c.is_float() => f16::from_f32(f(bits)).to_bits() as u64,
        (DType::BF16, c) if c.is_float() => bf16::from_f32(f(bits)).to_bits() as u64,
        (DType::Bool, _) => (to_f64(class, bits) != 0.0) as u64,
        (d, c) if d.is_integer() && !c.is_float() && d.bits() < 8 => wrap_integer(d, bits as i64) as u8 as u64,
        (d, c) if d.is_integer() && !c.is_float() => bits & (u64::MAX >> (64 - 8 * d.size_in_bytes())),
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
        DType::U32 => value as u32 as u64,
        DType::U64 => value as u64,
        DType::Bool => (value != 0.0) as u64,
        DType::F64 => value.to_bits(),
        DType::I16 => value as i16 as u16 as u64,
        DType::U16 => value as u16 as u64,
        DType::I4 | DType::U4 | DType::I2 | DType::U2 => {
            let (low, high) = integer_bounds(dtype).expect("a narrow integer");
            (value.clamp(low as f64, high as f64) as i64 as u8) as u64
        }
        small_float => f32_to_small_float(small_float, value as f32, true) as u64,
    }
}
