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
}

impl DType {
    /// Every dtype, in a fixed order (artifacts store dtypes by position: new ones go last).
    pub const ALL: [DType; 11] = [
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
    ];

    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I64 | DType::U64 => 8,
            DType::F8E4M3 | DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16 | DType::F8E4M3)
    }

    pub fn is_integer(self) -> bool {
        matches!(self, DType::I64 | DType::I32 | DType::I8 | DType::U8 | DType::U32 | DType::U64)
    }

    /// Unsigned integers: compared, divided and shifted right as unsigned.
    pub fn is_unsigned(self) -> bool {
        matches!(self, DType::U8 | DType::U32 | DType::U64)
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
#[error("unknown dtype `{0}` (expected one of f32, f16, bf16, f8e4m3, i64, i32, i8, u8, u32, u64, bool)")]
pub struct UnknownDType(pub String);

impl FromStr for DType {
    type Err = UnknownDType;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        DType::ALL.into_iter().find(|dtype| dtype.name() == text).ok_or_else(|| UnknownDType(text.to_string()))
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
    let sign = if byte & 0x80 != 0 { -1.0 } else { 1.0 };
    let exponent = ((byte >> 3) & 0x0f) as i32;
    let mantissa = (byte & 0x07) as f32;
    if exponent == 0x0f && byte & 0x07 == 0x07 {
        return f32::NAN;
    }
    if exponent == 0 {
        sign * mantissa / 8.0 * 2f32.powi(-6)
    } else {
        sign * (1.0 + mantissa / 8.0) * 2f32.powi(exponent - 7)
    }
}

/// Encodes f32 as OCP E4M3FN with round-to-nearest-even, saturating to ±448
/// (ONNX `Cast` with `saturate=1`); NaN becomes `0x7f`.
pub fn f32_to_f8e4m3(value: f32) -> u8 {
    if value.is_nan() {
        return 0x7f;
    }
    let sign = if value.is_sign_negative() { 0x80u8 } else { 0 };
    let magnitude = value.abs().min(448.0);
    // Scan the 127 finite non-negative codes for the nearest; ties go to the even code.
    let mut best = 0u8;
    let mut best_distance = f32::INFINITY;
    for code in 0u8..=0x7e {
        let distance = (f8e4m3_to_f32(code) - magnitude).abs();
        if distance < best_distance || (distance == best_distance && code % 2 == 0) {
            best = code;
            best_distance = distance;
        }
    }
    sign | best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for dtype in DType::ALL {
            assert_eq!(dtype.name().parse::<DType>(), Ok(dtype));
        }
        assert!("f64".parse::<DType>().is_err());
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
