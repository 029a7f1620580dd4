//! Element types of tensors.

use std::fmt;
use std::str::FromStr;

/// The element type of a tensor, in kiln's graph IR, kernels and artifacts.
///
/// The text form (`f32`, `bf16`, `i64`, …) is what the IR printer writes and
/// [`DType::from_str`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    F16,
    BF16,
    /// 8-bit float, 4 exponent bits, 3 mantissa bits, finite-only (OCP E4M3FN).
    F8E4M3,
    I64,
    I32,
    I8,
    U8,
    /// Unsigned 32-bit integer: packed weights and bit patterns.
    U32,
    /// Unsigned 64-bit integer.
    U64,
    Bool,
    I16,
    U16,
    /// 8-bit float, 5 exponent bits, 2 mantissa bits, with infinities (OCP E5M2).
    F8E5M2,
    /// E4M3 without infinities or negative zero; `0x80` is NaN (ONNX FLOAT8E4M3FNUZ).
    F8E4M3Fnuz,
    /// E5M2 without infinities or negative zero; `0x80` is NaN (ONNX FLOAT8E5M2FNUZ).
    F8E5M2Fnuz,
    /// A power of two `2^(e − 127)`: no sign, no zero; `0xff` is NaN (OCP E8M0, MX block scales).
    F8E8M0,
    /// 4-bit float, 2 exponent bits, 1 mantissa bit: ±{0, 0.5, 1, 1.5, 2, 3, 4, 6} (OCP MX FP4).
    F4E2M1,
    /// Signed 4-bit integer.
    I4,
    /// Unsigned 4-bit integer.
    U4,
    /// Signed 2-bit integer.
    I2,
    /// Unsigned 2-bit integer.
    U2,
    /// 64-bit float: graphs and the reference evaluator only (no kernels).
    F64,
}

impl DType {
    /// Every dtype, in a fixed order (artifacts store dtypes by position: new ones go last).
    pub const ALL: [DType; 23] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F8E4M3,
        DType::I64,
        DType::I32,
        DType::I8,
        DType::U8,
        DType::Bool,
        DType::U32,
        DType::U64,
        DType::I16,
        DType::U16,
        DType::F8E5M2,
        DType::F8E4M3Fnuz,
        DType::F8E5M2Fnuz,
        DType::F8E8M0,
        DType::F4E2M1,
        DType::I4,
        DType::U4,
        DType::I2,
        DType::U2,
        DType::F64,
    ];

    /// Bytes per element in kiln's buffers. Sub-byte types (4- and 2-bit)
    /// take one byte per element there: kiln keeps them unpacked, and only
    /// ONNX's tensors pack them (see [`DType::bits`]).
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::I64 | DType::U64 | DType::F64 => 8,
            DType::F8E4M3
            | DType::F8E5M2
            | DType::F8E4M3Fnuz
            | DType::F8E5M2Fnuz
            | DType::F8E8M0
            | DType::I8
            | DType::U8
            | DType::Bool => 1,
            DType::F4E2M1 | DType::I4 | DType::U4 | DType::I2 | DType::U2 => 1,
        }
    }

    /// Bits of one element's encoding (4 or 2 for the sub-byte types, which
    /// ONNX packs low bits first).
    pub fn bits(self) -> usize {
        match self {
            DType::F4E2M1 | DType::I4 | DType::U4 => 4,
            DType::I2 | DType::U2 => 2,
            other => 8 * other.size_in_bytes(),
        }
    }

    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::F32
                | DType::F64
                | DType::F16
                | DType::BF16
                | DType::F8E4M3
                | DType::F8E5M2
                | DType::F8E4M3Fnuz
                | DType::F8E5M2Fnuz
                | DType::F8E8M0
                | DType::F4E2M1
        )
    }

    pub fn is_integer(self) -> bool {
        matches!(
            self,
            DType::I64
                | DType::I32
                | DType::I16
                | DType::I8
                | DType::U8
                | DType::U16
                | DType::U32
                | DType::U64
                | DType::I4
                | DType::U4
                | DType::I2
                | DType::U2
        )
    }

    /// Unsigned integers: compared, divided and shifted right as unsigned.
    pub fn is_unsigned(self) -> bool {
        matches!(self, DType::U8 | DType::U16 | DType::U32 | DType::U64 | DType::U4 | DType::U2)
    }

    /// The element types kiln's kernels compute with. The others (f64, 16-,
    /// 4- and 2-bit integers, the 8-bit floats but E4M3FN, FP4) exist in graphs
    /// and the reference evaluator only; code generation refuses them by name.
    pub fn has_kernels(self) -> bool {
        matches!(
            self,
            DType::F32
                | DType::F16
                | DType::BF16
                | DType::F8E4M3
                | DType::I64
                | DType::I32
                | DType::I8
                | DType::U8
                | DType::U32
                | DType::U64
                | DType::Bool
        )
    }

    /// The name used in IR text and error messages.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F8E4M3 => "f8e4m3",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::U32 => "u32",
            DType::U64 => "u64",
            DType::Bool => "bool",
            DType::I16 => "i16",
            DType::U16 => "u16",
            DType::F8E5M2 => "f8e5m2",
            DType::F8E4M3Fnuz => "f8e4m3fnuz",
            DType::F8E5M2Fnuz => "f8e5m2fnuz",
            DType::F8E8M0 => "f8e8m0",
            DType::F4E2M1 => "f4e2m1",
            DType::I4 => "i4",
            DType::U4 => "u4",
            DType::I2 => "i2",
            DType::U2 => "u2",
            DType::F64 => "f64",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The text did not name a dtype.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dtype `{0}` (expected one of f32, f16, bf16, f8e4m3, i64, i32, i8, u8, u32, u64, bool, i16, u16, f8e5m2, f8e4m3fnuz, f8e5m2fnuz, f8e8m0, f4e2m1, i4, u4, i2, u2, f64)")]
pub struct UnknownDType(pub String);

impl FromStr for DType {
    type Err = UnknownDType;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        DType::ALL.into_iter().find(|dtype| dtype.name() == text).ok_or_else(|| UnknownDType(text.to_string()))
    }
}

/// `value` wrapped into an integer dtype's range, as a two's-complement
/// cast keeps the low bits (u64 keeps all 64 bits, so values past 2^63 read negative).
pub fn wrap_integer(dtype: DType, value: i64) -> i64 {
    match dtype {
        DType::I32 => value as i32 as i64,
        DType::I16 => value as i16 as i64,
        DType::I8 => value as i8 as i64,
        DType::U8 => value as u8 as i64,
        DType::U16 => value as u16 as i64,
        DType::U32 => value as u32 as i64,
        DType::I4 => ((value as u8) << 4) as i8 as i64 >> 4,
        DType::U4 => value & 0xf,
        DType::I2 => ((value as u8) << 6) as i8 as i64 >> 6,
        DType::U2 => value & 0x3,
        _ => value,
    }
}

/// The smallest and largest values of an integer dtype narrower than 64 bits.
pub fn integer_bounds(dtype: DType) -> Option<(i64, i64)> {
    let bits = dtype.bits() as u32;
    match dtype {
        DType::I64 | DType::U64 => None,
        d if d.is_unsigned() => Some((0, (1i64 << bits) - 1)),
        d if d.is_integer() => Some((-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1)),
        _ => None,
    }
}

/// `value` rounded to the nearest bf16 (ties to even), as `cvt.rn.bf16`
/// rounds. (`half::bf16::from_f64` can round down values just above a
/// midpoint, e.g. 152.50002 to 152, so kiln does not use it.) Rounds to f32
/// with round-to-odd first, which keeps the one rounding to bf16 exact.
pub fn bf16_from_f64(value: f64) -> half::bf16 {
    let nearest = value as f32;
    let odd = if nearest.is_finite() && nearest as f64 != value && nearest.to_bits() & 1 == 0 {
        // Inexact and even: the odd neighbour on the value's side of `nearest`.
        let toward_zero = (nearest as f64).abs() > value.abs();
        f32::from_bits(if toward_zero { nearest.to_bits() - 1 } else { nearest.to_bits() + 1 })
    } else {
        nearest
    };
    half::bf16::from_f32(odd)
}

/// Decodes an OCP E4M3FN byte (bias 7, no infinities, `S.1111.111` is NaN).
pub fn f8e4m3_to_f32(byte: u8) -> f32 {
    small_float_to_f32(DType::F8E4M3, byte)
}

/// Encodes f32 as OCP E4M3FN with round-to-nearest-even, saturating to ±448
/// (ONNX `Cast` with `saturate=1`); NaN becomes `0x7f`.
pub fn f32_to_f8e4m3(value: f32) -> u8 {
    f32_to_small_float(DType::F8E4M3, value, true)
}

/// The layout of an 8-bit-or-smaller float with sign, exponent and mantissa fields.
struct SmallFloat {
    exponent_bits: u32,
    mantissa_bits: u32,
    bias: i32,
    /// IEEE-style: the all-ones exponent holds ±infinity (mantissa 0) and NaNs.
    infinities: bool,
    /// "FNUZ": no negative zero; the sign-only code is the one NaN.
    unsigned_zero: bool,
    /// E4M3FN: the all-ones code (either sign) is NaN, every other code finite.
    nan_all_ones: bool,
}

fn layout(dtype: DType) -> SmallFloat {
    let (exponent_bits, mantissa_bits, bias, infinities, unsigned_zero, nan_all_ones) = match dtype {
        DType::F8E4M3 => (4, 3, 7, false, false, true),
        DType::F8E5M2 => (5, 2, 15, true, false, false),
        DType::F8E4M3Fnuz => (4, 3, 8, false, true, false),
        DType::F8E5M2Fnuz => (5, 2, 16, false, true, false),
        DType::F4E2M1 => (2, 1, 1, false, false, false),
        other => panic!("{other} is not a small float with sign, exponent and mantissa"),
    };
    SmallFloat { exponent_bits, mantissa_bits, bias, infinities, unsigned_zero, nan_all_ones }
}

/// The values of a small float's non-negative finite codes, indexed by code
/// (in every format they are the codes from 0 up, ascending in value).
fn finite_magnitudes(dtype: DType) -> &'static [f32] {
    static TABLES: [std::sync::OnceLock<Vec<f32>>; 5] = [const { std::sync::OnceLock::new() }; 5];
    let slot = match dtype {
        DType::F8E4M3 => 0,
        DType::F8E5M2 => 1,
        DType::F8E4M3Fnuz => 2,
        DType::F8E5M2Fnuz => 3,
        DType::F4E2M1 => 4,
        other => panic!("{other} is not a small float with sign, exponent and mantissa"),
    };
    TABLES[slot].get_or_init(|| {
        let f = layout(dtype);
        let sign_bit = 1u8 << (f.exponent_bits + f.mantissa_bits);
        (0..sign_bit).map(|code| small_float_to_f32(dtype, code)).take_while(|v| v.is_finite()).collect()
    })
}

/// The value of `code` in a small float dtype (8-bit floats and FP4; an FP4
/// code is the byte's low four bits). E8M0 codes are powers of two.
pub fn small_float_to_f32(dtype: DType, code: u8) -> f32 {
    if dtype == DType::F8E8M0 {
        return if code == 0xff { f32::NAN } else { 2f32.powi(code as i32 - 127) };
    }
    let f = layout(dtype);
    let width = 1 + f.exponent_bits + f.mantissa_bits;
    let code = code & ((1u16 << width) - 1) as u8;
    let sign_bit = 1u8 << (width - 1);
    let magnitude = code & (sign_bit - 1);
    let exponent = (magnitude >> f.mantissa_bits) as i32;
    let mantissa = (magnitude & ((1 << f.mantissa_bits) - 1)) as f32;
    let all_ones_exponent = exponent == (1 << f.exponent_bits) - 1;
    if (f.unsigned_zero && code == sign_bit) || (f.nan_all_ones && magnitude == sign_bit - 1) {
        return f32::NAN;
    }
    let sign = if code & sign_bit != 0 { -1.0 } else { 1.0 };
    if f.infinities && all_ones_exponent {
        return if mantissa == 0.0 { sign * f32::INFINITY } else { f32::NAN };
    }
    let scale = (1u32 << f.mantissa_bits) as f32;
    if exponent == 0 {
        sign * mantissa / scale * 2f32.powi(1 - f.bias)
    } else {
        sign * (1.0 + mantissa / scale) * 2f32.powi(exponent - f.bias)
    }
}

/// Where an 8-bit float's unsaturated conversion overflows: magnitudes above
/// the threshold (or equal to it, when `.1` is true) become infinity or NaN
/// rather than the largest finite value. `None` for other dtypes and FP4
/// (which always saturates).
pub fn overflow_threshold(dtype: DType) -> Option<(f32, bool)> {
    if !dtype.is_float() || dtype.bits() != 8 {
        return None;
    }
    if dtype == DType::F8E8M0 {
        return Some((2f32.powi(127), false));
    }
    let largest = (0..0x80u8).filter(|&code| small_float_to_f32(dtype, code).is_finite()).max()?;
    let (max, below) = (small_float_to_f32(dtype, largest), small_float_to_f32(dtype, largest - 1));
    // Halfway to the next step; a tie rounds to the even code, past `largest` when it is odd.
    Some((max + (max - below) / 2.0, largest % 2 == 1))
}

/// `value` encoded in a small float dtype, rounded to nearest (ties to the
/// even code). Beyond the largest finite value, `saturate` clamps to it (ONNX
/// `Cast` with `saturate=1`, the default); otherwise the result is infinity
/// where the dtype has one and NaN where not. FP4 always saturates (ONNX's
/// cast to it does). E8M0 rounds up to the next power of two and saturates,
/// as ONNX's `round_mode="up"` does, and drops the sign.
pub fn f32_to_small_float(dtype: DType, value: f32, saturate: bool) -> u8 {
    if dtype == DType::F8E8M0 {
        let bits = value.to_bits();
        let exponent = (bits >> 23) & 0xff;
        if exponent == 0xff {
            return 0xff;
        }
        if bits & 0x7fff_ffff == 0x0040_0000 {
            return 0; // 2^-127, the smallest code's value (a subnormal f32).
        }
        let round_up = bits & 0x7f_ffff != 0 && exponent != 0xfe;
        return (exponent + round_up as u32) as u8;
    }
    let f = layout(dtype);
    let width = 1 + f.exponent_bits + f.mantissa_bits;
    let sign_bit = 1u8 << (width - 1);
    let nan = if f.unsigned_zero { sign_bit } else { sign_bit - 1 };
    let saturate = saturate || dtype == DType::F4E2M1;
    if value.is_nan() {
        // FP4 has no NaN: ONNX's reference (ml_dtypes) gives negative zero.
        return if dtype == DType::F4E2M1 { sign_bit } else { nan };
    }
    let sign = if value.is_sign_negative() { sign_bit } else { 0 };
    let table = finite_magnitudes(dtype);
    let largest = table.len() - 1;
    let magnitude = value.abs();
    let max = table[largest];
    let overflow_code = if f.infinities { (((1u16 << f.exponent_bits) - 1) << f.mantissa_bits) as u8 } else { nan };
    if magnitude > max {
        // The code after `largest` stands one step beyond it; a tie goes to the even code.
        let step = max - table[largest - 1];
        let beyond = magnitude > max + step / 2.0 || (magnitude == max + step / 2.0 && largest % 2 == 1);
        if !beyond || saturate {
            return sign | largest as u8;
        }
        return if f.infinities { sign | overflow_code } else { nan };
    }
    // The nearest of the two codes around the magnitude; a tie goes to the even one.
    let above = table.partition_point(|&v| v < magnitude);
    let best = match above {
        0 => 0,
        _ => {
            let (low, high) = (above - 1, above);
            let (below_by, above_by) = (magnitude - table[low], table[high] - magnitude);
            if below_by < above_by || (below_by == above_by && low % 2 == 0) {
                low as u8
            } else {
                high as u8
            }
        }
    };
    if best == 0 && f.unsigned_zero {
        0
    } else {
        sign | best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for dtype in DType::ALL {
            assert_eq!(dtype.name().parse::<DType>(), Ok(dtype));
        }
        assert!("f128".parse::<DType>().is_err());
    }

    #[test]
    fn small_floats_encode_as_their_ocp_and_onnx_definitions_say() {
        // E5M2 (bias 15) has infinities; saturation clamps to 57344 instead.
        assert_eq!(f32_to_small_float(DType::F8E5M2, 1.0, true), 0x3c);
        assert_eq!(f32_to_small_float(DType::F8E5M2, f32::INFINITY, false), 0x7c);
        assert_eq!(f32_to_small_float(DType::F8E5M2, 1e6, true), 0x7b);
        assert_eq!(small_float_to_f32(DType::F8E5M2, 0x7b), 57344.0);
        assert_eq!(small_float_to_f32(DType::F8E5M2, 0xfc), f32::NEG_INFINITY);
        // FNUZ (bias 8): no negative zero, 0x80 is the NaN.
        assert_eq!(f32_to_small_float(DType::F8E4M3Fnuz, 1.0, true), 0x40);
        assert_eq!(f32_to_small_float(DType::F8E4M3Fnuz, -0.0, true), 0x00);
        assert_eq!(f32_to_small_float(DType::F8E4M3Fnuz, f32::NAN, true), 0x80);
        assert!(small_float_to_f32(DType::F8E5M2Fnuz, 0x80).is_nan());
        assert_eq!(f32_to_small_float(DType::F8E4M3Fnuz, 1e6, false), 0x80, "overflow without saturation is NaN");
        // FP4: ties go to the even code; beyond 6 it saturates.
        assert_eq!(f32_to_small_float(DType::F4E2M1, 2.5, false), 0x4);
        assert_eq!(f32_to_small_float(DType::F4E2M1, -0.75, false), 0xa);
        assert_eq!(f32_to_small_float(DType::F4E2M1, 100.0, false), 0x7);
        assert_eq!(small_float_to_f32(DType::F4E2M1, 0xf), -6.0);
        // E8M0 rounds up to a power of two and has no sign.
        assert_eq!(f32_to_small_float(DType::F8E8M0, 1.0, true), 127);
        assert_eq!(f32_to_small_float(DType::F8E8M0, -3.0, true), 129);
        assert!(small_float_to_f32(DType::F8E8M0, 0xff).is_nan());
        // E4M3FN keeps its historical codes.
        for code in 0..=255u8 {
            let value = f8e4m3_to_f32(code);
            if !value.is_nan() {
                assert_eq!(f32_to_f8e4m3(value), code, "{code:#x}");
            }
        }
    }

    #[test]
    fn overflow_thresholds_split_saturated_from_overflowing_conversions() {
        assert_eq!(overflow_threshold(DType::F8E4M3), Some((464.0, false)));
        assert_eq!(overflow_threshold(DType::F8E5M2), Some((61440.0, true)));
        for dtype in [DType::F8E4M3, DType::F8E5M2, DType::F8E4M3Fnuz, DType::F8E5M2Fnuz] {
            let (threshold, inclusive) = overflow_threshold(dtype).expect("an 8-bit float");
            let below = f32::from_bits(threshold.to_bits() - 1);
            let above = f32::from_bits(threshold.to_bits() + 1);
            assert!(small_float_to_f32(dtype, f32_to_small_float(dtype, below, false)).is_finite(), "{dtype}");
            assert!(!small_float_to_f32(dtype, f32_to_small_float(dtype, above, false)).is_finite(), "{dtype}");
            let at = small_float_to_f32(dtype, f32_to_small_float(dtype, threshold, false));
            assert_eq!(!at.is_finite(), inclusive, "{dtype}");
        }
        assert_eq!(overflow_threshold(DType::F4E2M1), None);
    }

    #[test]
    fn narrow_integers_wrap_as_twos_complement() {
        assert_eq!(wrap_integer(DType::I4, 7), 7);
        assert_eq!(wrap_integer(DType::I4, 8), -8);
        assert_eq!(wrap_integer(DType::U4, -1), 15);
        assert_eq!(wrap_integer(DType::I2, 3), -1);
        assert_eq!(wrap_integer(DType::U16, 65536 + 5), 5);
        assert_eq!(integer_bounds(DType::I4), Some((-8, 7)));
        assert_eq!(integer_bounds(DType::U2), Some((0, 3)));
    }

    /// The bf16 nearest `value` by comparing the two neighbours it lies between.
    fn nearest_bf16(value: f64) -> u16 {
        let below = half::bf16::from_f32(value as f32); // some bf16 near value
        let mut best = below.to_bits();
        for candidate in [below.to_bits().wrapping_sub(1), below.to_bits(), below.to_bits().wrapping_add(1)] {
            let distance = |bits: u16| (half::bf16::from_bits(bits).to_f64() - value).abs();
            let (d, b) = (distance(candidate), distance(best));
            if d < b || (d == b && candidate & 1 == 0) {
                best = candidate;
            }
        }
        best
    }

    #[test]
    fn f64_to_bf16_rounds_to_nearest_even_including_just_above_a_midpoint() {
        assert_eq!(bf16_from_f64(152.500_02).to_f32(), 153.0);
        assert_eq!(bf16_from_f64(152.5).to_f32(), 152.0, "a tie goes to even");
        let mut state = 7u64;
        for _ in 0..200_000 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            // Values in bf16's normal range with f64 precision.
            let value = f64::from_bits((state >> 12) | (0x3f0u64 << 52)) * if state & 1 == 0 { 1.0 } else { -1.0 };
            assert_eq!(bf16_from_f64(value).to_bits(), nearest_bf16(value), "{value:e}");
            let single = value as f32;
            assert_eq!(bf16_from_f64(single as f64), half::bf16::from_f32(single), "{single:e}");
        }
    }
}
