//! What the warp-collective tensor-core instructions compute, on raw bits:
//! the one definition the interpreter ([`crate::sim`]) and the machine share.
//!
//! Lane maps are [`crate::kernel::MmaKind`]'s and
//! [`crate::kernel::load_matrix_element`]; they are tested against tables
//! transcribed from CUTLASS/CuTe (`runtime/tests/runtime/tensor_core_layouts.rs`),
//! not against themselves.

use half::{bf16, f16};

use crate::kernel::{load_matrix_element, MmaKind};

/// Lanes of a warp for the collectives (NVIDIA's).
pub(crate) const WARP: usize = 32;

/// `ldmatrix` of `rows.len() / 8` matrices: `rows[8i + r]` is row `r` of
/// matrix `i` (eight 16-bit elements). Returns per lane the registers it
/// receives, one per matrix, the lower column (or row, transposed) in the
/// low half.
pub(crate) fn load_matrix(rows: &[[u16; 8]], transpose: bool) -> Vec<Vec<u32>> {
    let matrices = rows.len() / 8;
    (0..WARP)
        .map(|lane| {
            (0..matrices)
                .map(|matrix| {
                    let half = |half: usize| {
                        let (row, column) = load_matrix_element(lane, half, transpose);
                        rows[8 * matrix + row][column] as u32
                    };
                    half(0) | (half(1) << 16)
                })
                .collect()
        })
        .collect()
}

/// The value of one input element: a 16-bit half of a register, or a tf32.
fn element(kind: MmaKind, register: u32, half: usize) -> f64 {
    let bits = (register >> (16 * half)) as u16;
    match kind {
        MmaKind::Bf16M16N8K16 => bf16::from_bits(bits).to_f64(),
        MmaKind::F16M16N8K16 => f16::from_bits(bits).to_f64(),
        // tf32 keeps the sign, the exponent and the top 10 mantissa bits.
        MmaKind::Tf32M16N8K8 => f32::from_bits(register & !0x1fff) as f64,
    }
}

/// `mma.sync` of one warp: `a[lane]` (4 registers), `b[lane]` (2) and the
/// accumulators `c[lane]` (4 f32) as the lanes hold them; returns the new
/// accumulators per lane. Each output element is the exact sum of its K
/// products and its accumulator (f64, exact for these inputs up to the
/// accumulator's alignment), rounded once to f32.
pub(crate) fn mma(kind: MmaKind, a: &[[u32; 4]], b: &[[u32; 2]], c: &[[f32; 4]]) -> Vec<[f32; 4]> {
    let k = kind.k();
    let mut a_tile = [[0f64; 16]; 16];
    let mut b_tile = [[0f64; 8]; 16];
    let halves = kind.elements_per_register();
    for lane in 0..WARP {
        for half in 0..halves {
            for register in 0..4 {
                let (row, column) = kind.a_element(lane, register, half);
                a_tile[row][column] = element(kind, a[lane][register], half);
            }
            for register in 0..2 {
                let (row, column) = kind.b_element(lane, register, half);
                b_tile[row][column] = element(kind, b[lane][register], half);
            }
        }
    }
    let mut d_tile = [[0f32; 8]; 16];
    for (row, d_row) in d_tile.iter_mut().enumerate() {
        for (column, d) in d_row.iter_mut().enumerate() {
            let lane = 4 * (row % 8) + column / 2;
            let register = 2 * (row / 8) + column % 2;
            let mut sum = c[lane][register] as f64;
            for kk in 0..k {
                sum += a_tile[row][kk] * b_tile[kk][column];
            }
            *d = sum as f32;
        }
    }
    (0..WARP)
        .map(|lane| {
            let mut out = [0f32; 4];
            for (register, slot) in out.iter_mut().enumerate() {
                let (row, column) = MmaKind::c_element(lane, register);
                *slot = d_tile[row][column];
            }
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accumulator_map_inverts_the_lane_of_each_output() {
        for lane in 0..WARP {
            for register in 0..4 {
                let (row, column) = MmaKind::c_element(lane, register);
                assert_eq!((4 * (row % 8) + column / 2, 2 * (row / 8) + column % 2), (lane, register));
            }
        }
    }
}
