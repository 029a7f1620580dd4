//! A one-kernel artifact built by hand — `y = x · w + 1` over a `batch × 4`
//! input — for the tests of the runtime and of the command-line tools, and as
//! a worked example of what the compiler writes.

use crate::artifact::manifest::{
    ArenaBuffer, Argument, ArgumentSource, EntryPoint, KernelInfo, Launch, Manifest, MemoryPlan, SymbolBound,
    TensorSignature, Variant, WeightInfo,
};
use crate::artifact::{write_artifact, ArtifactParts, WeightsBlob};
use crate::kernel::build::{add, f32, global_thread_index, load, mul, param, var};
use crate::kernel::{BinaryOp, Expr, Kernel, Param, Stmt, Var};
use crate::{DType, Dim};

/// The kernel: `y[i] = x[i] · w[i % 4] + 1` for `i < 4·batch`.
pub fn scale_kernel() -> Kernel {
    let i = Var(0);
    let n = Expr::Binary(BinaryOp::Mul, Box::new(param(3)), Box::new(crate::kernel::build::i64(4)));
    let w_index = Expr::Binary(BinaryOp::Rem, Box::new(var(i)), Box::new(crate::kernel::build::i64(4)));
    Kernel {
        name: "g0_elementwise".into(),
        params: vec![
            Param::Buffer { name: "x".into(), dtype: DType::F32, writable: false },
            Param::Buffer { name: "w".into(), dtype: DType::F32, writable: false },
            Param::Buffer { name: "y".into(), dtype: DType::F32, writable: true },
            Param::Scalar { name: "batch".into(), dtype: DType::I64 },
        ],
        block_threads: 64,
        grid_blocks: Dim::parse("(4*batch + 63)/64").expect("a valid dim"),
        shared: Vec::new(),
        body: vec![
            Stmt::Let { var: i, dtype: DType::I64, value: global_thread_index() },
            Stmt::If {
                condition: Expr::Binary(BinaryOp::Lt, Box::new(var(i)), Box::new(n)),
                then: vec![Stmt::Store {
                    buffer: 2,
                    index: var(i),
                    value: add(mul(load(0, var(i)), load(1, w_index)), f32(1.0)),
                }],
                otherwise: Vec::new(),
            },
        ],
    }
}

/// The weight `w`.
pub const SCALE_WEIGHTS: [f32; 4] = [0.5, -2.0, 3.0, 0.25];

fn signature(name: &str) -> Option<TensorSignature> {
    Some(TensorSignature { name: name.into(), dtype: "f32".into(), shape: vec!["batch".into(), "4".into()] })
}

/// The artifact's bytes: input `x: f32[batch, 4]` (batch 1..=100), output `y`, one launch.
pub fn scale_artifact() -> Vec<u8> {
    let kernel = scale_kernel();
    let mut blob = WeightsBlob::default();
    let weight_bytes: Vec<u8> = SCALE_WEIGHTS.iter().flat_map(|v| v.to_le_bytes()).collect();
    let offset = blob.push(&weight_bytes);
    let arena = |name: &str, kind: &str, offset: &str| ArenaBuffer {
        tensor: signature(name),
        kind: kind.into(),
        offset: offset.into(),
        bytes: "256*((16*batch + 255)/256)".into(),
    };
    let argument = |source| Argument { source: Some(source) };
    let manifest = Manifest {
        model_name: "scale".into(),
        producer: "hand-written test".into(),
        precision: "f32".into(),
        bounds: vec![SymbolBound { symbol: "batch".into(), min: 1, max: 100 }],
        weights: vec![WeightInfo { name: "w".into(), dtype: "f32".into(), shape: vec![4], offset, bytes: 16 }],
        kernels: vec![KernelInfo::describe(&kernel)],
        memory: Some(MemoryPlan {
            arena_bytes: "512*((16*batch + 255)/256)".into(),
            buffers: vec![arena("x", "input", "0"), arena("y", "output", "256*((16*batch + 255)/256)")],
        }),
        entry_points: vec![EntryPoint {
            name: "forward".into(),
            inputs: vec![0],
            outputs: vec![1],
            launches: vec![Launch {
                group: "g0".into(),
                variants: vec![Variant {
                    ranges: Vec::new(),
                    kernel: 0,
                    arguments: vec![
                        argument(ArgumentSource::Arena(0)),
                        argument(ArgumentSource::Weight(0)),
                        argument(ArgumentSource::Arena(1)),
                        argument(ArgumentSource::Symbol("batch".into())),
                    ],
                    dims: Vec::new(),
                }],
                flops: "4*batch".into(),
                bytes: "32*batch + 16".into(),
            }],
        }],
        ..Manifest::default()
    };
    let parts = ArtifactParts { manifest, weights: &blob.bytes, kernels: vec![&kernel], code: Vec::new() };
    let mut bytes = Vec::new();
    write_artifact(parts, &mut bytes).expect("writing to memory");
    bytes
}

/// What the artifact computes for `x`.
pub fn scale_expected(x: &[f32]) -> Vec<f64> {
    x.iter().enumerate().map(|(i, v)| (v * SCALE_WEIGHTS[i % 4] + 1.0) as f64).collect()
}
