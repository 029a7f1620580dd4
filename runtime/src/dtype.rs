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
    Bool,
}

impl DType {
    /// Every dtype, in a fixed order.
    pub const ALL: [DType; 9] =
        [DType::F32, DType::F16, DType::BF16, DType::F8E4M3, DType::I64, DType::I32, DType::I8, DType::U8, DType::Bool];

    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I64 => 8,
            DType::F8E4M3 | DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16 | DType::F8E4M3)
    }

    pub fn is_integer(self) -> bool {
        matches!(self, DType::I64 | DType::I32 | DType::I8 | DType::U8)
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
#[error("unknown dtype `{0}` (expected one of f32, f16, bf16, f8e4m3, i64, i32, i8, u8, bool)")]
pub struct UnknownDType(pub String);

impl FromStr for DType {
    type Err = UnknownDType;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        DType::ALL.into_iter().find(|dtype| dtype.name() == text).ok_or_else(|| UnknownDType(text.to_string()))
    }
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
}
