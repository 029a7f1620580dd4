//! The tensor-core lane maps, checked against tables from an independent
//! source: CUTLASS/CuTe's layouts (NVIDIA/cutlass at commit 7107b05535f8,
//! `include/cute/atom/mma_traits_sm80.hpp` and `copy_traits_sm75.hpp`),
//! transcribed below as shapes and strides with the lines they come from.
//!
//! A CuTe layout maps a (thread, value) coordinate to an index: each mode's
//! coordinate is split column-major over its (flattened) shape and dotted
//! with its strides. MMA layouts index the tile column-major — A as (M, K),
//! B as (N, K), C as (M, N); ldmatrix layouts index bits of the loaded
//! matrices, row after row (128 bits a row, 1024 a matrix). Nothing here
//! reads kiln's own maps to build an expectation: the simulators are run on
//! values placed by the tables, and kiln's map functions are compared with them.

use kiln_runtime::kernel::{load_matrix_element, parse_kernel, MmaKind};
use kiln_runtime::machine::{run_on_arguments, MachineOptions};
use kiln_runtime::sim::{run_kernel, SimArgument, SimBuffer, SimOptions};
use kiln_runtime::{DType, SymbolBindings};

/// A CuTe layout `(thread, value)`, each mode flattened to (shape, stride) pairs.
struct CuteLayout {
    thread: &'static [(usize, usize)],
    value: &'static [(usize, usize)],
}

impl CuteLayout {
    fn index(&self, thread: usize, value: usize) -> usize {
        fn mode(mut coordinate: usize, modes: &[(usize, usize)]) -> usize {
            let mut index = 0;
            for &(shape, stride) in modes {
                index += (coordinate % shape) * stride;
                coordinate /= shape;
            }
            assert_eq!(coordinate, 0, "coordinate outside the mode");
            index
        }
        mode(thread, self.thread) + mode(value, self.value)
    }

    fn values(&self) -> usize {
        self.value.iter().map(|&(shape, _)| shape).product()
    }
}

// mma_traits_sm80.hpp:53-54, SM80_16x8_Row (the f32 accumulator of every m16n8 MMA):
// Shape<Shape<_4,_8>,Shape<_2,_2>>, Stride<Stride<_32,_1>,Stride<_16,_8>>
const C_16X8: CuteLayout = CuteLayout { thread: &[(4, 32), (8, 1)], value: &[(2, 16), (2, 8)] };
// mma_traits_sm80.hpp:87-88, SM80_16x8x16_F16F16F16F16_TN ALayout (bf16 and the f32
// accumulating forms inherit it, :110 and :134):
// Shape<Shape<_4,_8>,Shape<_2,_2,_2>>, Stride<Stride<_32,_1>,Stride<_16,_8,_128>>
const A_16X16: CuteLayout = CuteLayout { thread: &[(4, 32), (8, 1)], value: &[(2, 16), (2, 8), (2, 128)] };
// mma_traits_sm80.hpp:89-90, its BLayout: Shape<Shape<_4,_8>,Shape<_2,_2>>, Stride<Stride<_16,_1>,Stride<_8,_64>>
const B_8X16: CuteLayout = CuteLayout { thread: &[(4, 16), (8, 1)], value: &[(2, 8), (2, 64)] };
// mma_traits_sm80.hpp:172-173, SM80_16x8x8_F32TF32TF32F32_TN ALayout:
// Shape<Shape<_4,_8>,Shape<_2,_2>>, Stride<Stride<_16,_1>,Stride<_8,_64>>
const A_TF32_16X8: CuteLayout = CuteLayout { thread: &[(4, 16), (8, 1)], value: &[(2, 8), (2, 64)] };
// mma_traits_sm80.hpp:174-175, its BLayout: Shape<Shape<_4,_8>,_2>, Stride<Stride<_8,_1>,_32>
const B_TF32_8X8: CuteLayout = CuteLayout { thread: &[(4, 8), (8, 1)], value: &[(2, 32)] };

// copy_traits_sm75.hpp:85-86, SM75_U32x4_LDSM_N DstLayout (x1 and x2 at :51-52 and :68-69
// are its first one and two matrices): Shape<_32,Shape<_32,_4>>, Stride<_32,Stride<_1,_1024>>
const LDSM_N_X4: CuteLayout = CuteLayout { thread: &[(32, 32)], value: &[(32, 1), (4, 1024)] };
// copy_traits_sm75.hpp:136-137, SM75_U16x8_LDSM_T DstLayout (x1, x2 at :102-103, :119-120):
// Shape<Shape<_4,_8>,Shape<_16,_2,_4>>, Stride<Stride<_256,_16>,Stride<_1,_128,_1024>>
const LDSM_T_X4: CuteLayout = CuteLayout { thread: &[(4, 256), (8, 16)], value: &[(16, 1), (2, 128), (4, 1024)] };

/// (row, column) of a column-major index into a tile with `rows` rows.
fn column_major(index: usize, rows: usize) -> (usize, usize) {
    (index % rows, index / rows)
}

#[test]
fn mma_fragment_maps_match_cute() {
    for lane in 0..32 {
        // A and B values of m16n8k16 (bf16 and f16): value v = half + 2 × register.
        for value in 0..A_16X16.values() {
            let expected = column_major(A_16X16.index(lane, value), 16);
            for kind in [MmaKind::Bf16M16N8K16, MmaKind::F16M16N8K16] {
                assert_eq!(
                    kind.a_element(lane, value / 2, value % 2),
                    expected,
                    "{kind:?} A, lane {lane}, value {value}"
                );
            }
        }
        for value in 0..B_8X16.values() {
            let (n, k) = column_major(B_8X16.index(lane, value), 8);
            for kind in [MmaKind::Bf16M16N8K16, MmaKind::F16M16N8K16] {
                assert_eq!(
                    kind.b_element(lane, value / 2, value % 2),
                    (k, n),
                    "{kind:?} B, lane {lane}, value {value}"
                );
            }
        }
        // tf32: one element per register.
        for value in 0..A_TF32_16X8.values() {
            let expected = column_major(A_TF32_16X8.index(lane, value), 16);
            assert_eq!(MmaKind::Tf32M16N8K8.a_element(lane, value, 0), expected, "tf32 A, lane {lane}");
        }
        for value in 0..B_TF32_8X8.values() {
            let (n, k) = column_major(B_TF32_8X8.index(lane, value), 8);
            assert_eq!(MmaKind::Tf32M16N8K8.b_element(lane, value, 0), (k, n), "tf32 B, lane {lane}");
        }
        for value in 0..C_16X8.values() {
            assert_eq!(MmaKind::c_element(lane, value), column_major(C_16X8.index(lane, value), 16), "C, lane {lane}");
        }
    }
}

/// The element (matrix, row, column) a bit of the loaded matrices belongs to.
fn ldmatrix_element(bit: usize) -> (usize, usize, usize) {
    (bit / 1024, (bit % 1024) / 128, (bit % 128) / 16)
}

#[test]
fn ldmatrix_lane_maps_match_cute() {
    for lane in 0..32 {
        for (layout, transpose) in [(&LDSM_N_X4, false), (&LDSM_T_X4, true)] {
            for matrix in 0..4 {
                for half in 0..2 {
                    // The first bit of 16-bit half `half` of register `matrix`.
                    let value = 16 * half + 32 * matrix;
                    let (found_matrix, row, column) = ldmatrix_element(layout.index(lane, value));
                    assert_eq!(found_matrix, matrix);
                    let kiln = load_matrix_element(lane, half, transpose);
                    assert_eq!(kiln, (row, column), "lane {lane}, matrix {matrix}, half {half}, transpose {transpose}");
                }
            }
        }
    }
}

/// A kernel that loads 4 matrices by ldmatrix from a shared copy of `x`
/// (lane `l` gives row `l % 8` of matrix `l / 8`, rows 8 elements apart)
/// and writes lane `l`'s register `i` to `out[4l + i]`.
fn ldmatrix_kernel(transpose: bool) -> String {
    let op = if transpose { "ldmatrix_trans" } else { "ldmatrix" };
    format!(
        "kernel probe(in x: bf16*, out y: u32*) threads 32 blocks 1 {{
  shared s: bf16[256] align 128
  let v0: i64 = i64(lane)
  for v1 in 0..8 by 1 {{
    s[((v1 * 32) + v0)] = x[((v1 * 32) + v0)]
  }}
  barrier
  let v2, v3, v4, v5: u32 = {op} s[(v0 * 8)]
  y[(v0 * 4)] = v2
  y[((v0 * 4) + 1)] = v3
  y[((v0 * 4) + 2)] = v4
  y[((v0 * 4) + 3)] = v5
}}"
    )
}

fn run_both(kernel: &str, arguments: Vec<SimArgument>) -> Vec<Vec<SimArgument>> {
    let kernel = parse_kernel(kernel).unwrap();
    kiln_runtime::kernel::verify_kernel(&kernel).unwrap();
    let bindings = SymbolBindings::new();
    let mut interpreted = arguments.clone();
    run_kernel(&kernel, &mut interpreted, &bindings, SimOptions::default()).unwrap();
    let mut machine = arguments.clone();
    run_on_arguments(&kernel, &mut machine, &bindings, MachineOptions { check: true, ..MachineOptions::default() })
        .unwrap();
    vec![interpreted, machine]
}

fn buffer(dtype: DType, data: Vec<f64>) -> SimArgument {
    SimArgument::Buffer(SimBuffer { dtype, data })
}

fn data(argument: &SimArgument) -> &[f64] {
    match argument {
        SimArgument::Buffer(buffer) => &buffer.data,
        SimArgument::Scalar(_) => panic!("a scalar"),
    }
}

#[test]
fn the_simulators_ldmatrix_delivers_what_cute_says() {
    // Element (matrix, row, column) holds 64·matrix + 8·row + column, its own index (exact in bf16).
    let x: Vec<f64> = (0..256).map(|i| i as f64).collect();
    for (layout, transpose) in [(&LDSM_N_X4, false), (&LDSM_T_X4, true)] {
        let arguments = vec![buffer(DType::BF16, x.clone()), buffer(DType::U32, vec![0.0; 128])];
        for run in run_both(&ldmatrix_kernel(transpose), arguments) {
            let out = data(&run[1]);
            for lane in 0..32 {
                for matrix in 0..4 {
                    let register = out[4 * lane + matrix] as u32;
                    for half in 0..2usize {
                        let (m, row, column) = ldmatrix_element(layout.index(lane, 16 * half + 32 * matrix));
                        let expected = (64 * m + 8 * row + column) as f32;
                        let found = half::bf16::from_bits((register >> (16 * half)) as u16).to_f32();
                        assert_eq!(found, expected, "lane {lane} register {matrix} half {half} transpose {transpose}");
                    }
                }
            }
        }
    }
}

/// A kernel that runs one mma of `kind` on registers read per lane from
/// `a` (4 per lane), `b` (2) and accumulators from `c` (4), writing the
/// accumulators back to `d` — no layout of its own.
fn mma_kernel(kind: MmaKind) -> String {
    format!(
        "kernel probe(in a: u32*, in b: u32*, in c: f32*, out d: f32*) threads 32 blocks 1 {{
  let v0: i64 = i64(lane)
  let v1: f32 = c[(v0 * 4)]
  let v2: f32 = c[((v0 * 4) + 1)]
  let v3: f32 = c[((v0 * 4) + 2)]
  let v4: f32 = c[((v0 * 4) + 3)]
  mma.{} (v1, v2, v3, v4) += (a[(v0 * 4)], a[((v0 * 4) + 1)], a[((v0 * 4) + 2)], a[((v0 * 4) + 3)]) * (b[(v0 * 2)], b[((v0 * 2) + 1)])
  d[(v0 * 4)] = v1
  d[((v0 * 4) + 1)] = v2
  d[((v0 * 4) + 2)] = v3
  d[((v0 * 4) + 3)] = v4
}}",
        kind.name()
    )
}

#[test]
fn the_simulators_mma_computes_the_product_of_tiles_placed_by_cute() {
    let cases = [
        (MmaKind::Bf16M16N8K16, &A_16X16, &B_8X16, 16),
        (MmaKind::F16M16N8K16, &A_16X16, &B_8X16, 16),
        (MmaKind::Tf32M16N8K8, &A_TF32_16X8, &B_TF32_8X8, 8),
    ];
    for (kind, a_layout, b_layout, k) in cases {
        // Small integers: every product and sum is exact in every format.
        let a_tile: Vec<Vec<f32>> =
            (0..16).map(|m| (0..k).map(|kk| ((m * 3 + kk * 5) % 7) as f32 - 3.0).collect()).collect();
        let b_tile: Vec<Vec<f32>> =
            (0..k).map(|kk| (0..8).map(|n| ((kk * 2 + n * 3) % 5) as f32 - 2.0).collect()).collect();
        let c_tile: Vec<Vec<f32>> = (0..16).map(|m| (0..8).map(|n| (m + n) as f32).collect()).collect();
        let bits = |value: f32| -> u32 {
            match kind {
                MmaKind::Bf16M16N8K16 => half::bf16::from_f32(value).to_bits() as u32,
                MmaKind::F16M16N8K16 => half::f16::from_f32(value).to_bits() as u32,
                MmaKind::Tf32M16N8K8 => value.to_bits(),
            }
        };
        let per_register = if kind == MmaKind::Tf32M16N8K8 { 1 } else { 2 };
        let mut a = vec![0u32; 128];
        let mut b = vec![0u32; 64];
        let mut c = vec![0f64; 128];
        for lane in 0..32 {
            for value in 0..a_layout.values() {
                let (m, kk) = column_major(a_layout.index(lane, value), 16);
                a[4 * lane + value / per_register] |= bits(a_tile[m][kk]) << (16 * (value % per_register));
            }
            for value in 0..b_layout.values() {
                let (n, kk) = column_major(b_layout.index(lane, value), 8);
                b[2 * lane + value / per_register] |= bits(b_tile[kk][n]) << (16 * (value % per_register));
            }
            for value in 0..4 {
                let (m, n) = column_major(C_16X8.index(lane, value), 16);
                c[4 * lane + value] = c_tile[m][n] as f64;
            }
        }
        let arguments = vec![
            buffer(DType::U32, a.iter().map(|&x| x as f64).collect()),
            buffer(DType::U32, b.iter().map(|&x| x as f64).collect()),
            buffer(DType::F32, c),
            buffer(DType::F32, vec![0.0; 128]),
        ];
        for run in run_both(&mma_kernel(kind), arguments) {
            let d = data(&run[3]);
            for lane in 0..32 {
                for value in 0..4 {
                    let (m, n) = column_major(C_16X8.index(lane, value), 16);
                    let expected: f32 = (0..k).map(|kk| a_tile[m][kk] * b_tile[kk][n]).sum::<f32>() + c_tile[m][n];
                    assert_eq!(d[4 * lane + value] as f32, expected, "{kind:?}: D({m}, {n}) in lane {lane}");
                }
            }
        }
    }
}

/// A kernel that stores its accumulators in the wrong places (c1 and c2
/// swapped: D(g, 2t+1) written as D(g+8, 2t)) is caught: its output is not
/// the product the filetest expects, on either simulator.
#[test]
fn a_wrong_accumulator_layout_is_caught() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/kernels/mma_bf16.kir");
    let text = std::fs::read_to_string(path).unwrap();
    let broken = text
        .replace("d[(((v20 * 8) + v21) + 1)] = v12", "d[(((v20 * 8) + v21) + 1)] = v13")
        .replace("d[(((v20 + 8) * 8) + v21)] = v13", "d[(((v20 + 8) * 8) + v21)] = v12");
    assert_ne!(broken, text, "the stores to swap are in mma_bf16.kir");
    let directives = kiln_runtime::kernel::filetest::directives(&text).unwrap();
    let kernel = parse_kernel(&broken).unwrap();
    let arguments: Vec<SimArgument> = kernel
        .params
        .iter()
        .map(|param| {
            let (_, data) = directives.buffers.iter().find(|(name, _)| name == param.name()).unwrap();
            let dtype = match param {
                kiln_runtime::kernel::Param::Buffer { dtype, .. } => *dtype,
                kiln_runtime::kernel::Param::Scalar { .. } => unreachable!("no scalars"),
            };
            buffer(dtype, data.clone())
        })
        .collect();
    let (_, expected) = &directives.expected[0];
    for run in run_both(&broken, arguments) {
        assert_ne!(data(&run[3]), expected.as_slice(), "the swapped layout went unnoticed");
    }
}

/// Malformed collectives — an ldmatrix of three matrices, a cp.async of 24
/// bytes — are refused by the verifier, by the artifact codec and by both
/// simulators, with an error, never a panic.
#[test]
fn malformed_collectives_are_errors_everywhere() {
    use kiln_runtime::kernel::codec::{decode_kernels, encode_kernels};
    for (body, problem) in [
        ("  let v1, v2, v3: u32 = ldmatrix s[(v0 * 8)]\n", "ldmatrix of 3 matrices"),
        ("  cp_async(s[0], x[0], 12, 12)\n", "a cp.async of 24 bytes"),
    ] {
        let text = format!(
            "kernel bad(in x: bf16*, out y: u32*) threads 32 blocks 1 {{\n  shared s: bf16[256] align 128\n  let v0: i64 = i64(lane)\n{body}}}"
        );
        let kernel = parse_kernel(&text).unwrap();
        let verified = kiln_runtime::kernel::verify_kernel(&kernel).unwrap_err();
        assert!(verified.to_string().contains(problem), "{verified}");
        let decoded = decode_kernels(&encode_kernels(&[&kernel])).unwrap_err();
        assert!(decoded.to_string().contains(problem), "{decoded}");
        let arguments = vec![buffer(DType::BF16, vec![0.0; 256]), buffer(DType::U32, vec![0.0; 32])];
        let interpreted = run_kernel(&kernel, &mut arguments.clone(), &SymbolBindings::new(), SimOptions::default());
        assert!(interpreted.unwrap_err().to_string().contains(problem));
        let machine =
            run_on_arguments(&kernel, &mut arguments.clone(), &SymbolBindings::new(), MachineOptions::default());
        assert!(machine.unwrap_err().to_string().contains(problem));
    }
}
