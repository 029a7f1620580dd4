//! A small artifact built by hand — one kernel, `y = x · w + 1` over a
//! `batch × 4` input — written, opened, run through the library and through
//! the `kiln-run` binary; and the kernel IR codec on its own.

use std::process::Command;
use std::sync::Arc;

use kiln_runtime::artifact::manifest::{
    ArenaBuffer, Argument, ArgumentSource, EntryPoint, KernelInfo, Launch, Manifest, MemoryPlan, SymbolBound,
    TensorSignature, Variant, WeightInfo,
};
use kiln_runtime::artifact::{write_artifact, ArtifactParts, WeightsBlob};
use kiln_runtime::kernel::build::{add, f32, global_thread_index, load, mul, param, var};
use kiln_runtime::kernel::codec::{decode_kernels, encode_kernels};
use kiln_runtime::kernel::{BinaryOp, Expr, Kernel, Param, Stmt, Var};
use kiln_runtime::npy::{read_npy, write_npy};
use kiln_runtime::{Artifact, DType, Device, Dim, HostTensor, Model, RunError, Session};

/// `y[i] = x[i] · w[i % 4] + 1` for `i < 4·batch`.
fn scale_kernel() -> Kernel {
    let i = Var(0);
    let n = Expr::Binary(BinaryOp::Mul, Box::new(param(3)), Box::new(kiln_runtime::kernel::build::i64(4)));
    let w_index = Expr::Binary(BinaryOp::Rem, Box::new(var(i)), Box::new(kiln_runtime::kernel::build::i64(4)));
    Kernel {
        name: "g0_elementwise".into(),
        params: vec![
            Param::Buffer { name: "x".into(), dtype: DType::F32, writable: false },
            Param::Buffer { name: "w".into(), dtype: DType::F32, writable: false },
            Param::Buffer { name: "y".into(), dtype: DType::F32, writable: true },
            Param::Scalar { name: "batch".into(), dtype: DType::I64 },
        ],
        block_threads: 64,
        grid_blocks: Dim::parse("(4*batch + 63)/64").unwrap(),
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

const WEIGHTS: [f32; 4] = [0.5, -2.0, 3.0, 0.25];

fn signature(name: &str) -> Option<TensorSignature> {
    Some(TensorSignature { name: name.into(), dtype: "f32".into(), shape: vec!["batch".into(), "4".into()] })
}

fn scale_artifact() -> Vec<u8> {
    let kernel = scale_kernel();
    let mut blob = WeightsBlob::default();
    let weight_bytes: Vec<u8> = WEIGHTS.iter().flat_map(|v| v.to_le_bytes()).collect();
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
                }],
                flops: "4*batch".into(),
                bytes: "32*batch + 16".into(),
            }],
        }],
        ..Manifest::default()
    };
    let parts = ArtifactParts { manifest, weights: &blob.bytes, kernels: vec![&kernel], code: Vec::new() };
    let mut bytes = Vec::new();
    write_artifact(parts, &mut bytes).unwrap();
    bytes
}

fn expected(x: &[f32]) -> Vec<f64> {
    x.iter().enumerate().map(|(i, v)| (v * WEIGHTS[i % 4] + 1.0) as f64).collect()
}

#[test]
fn the_kernel_codec_round_trips_and_rejects_garbage() {
    let kernel = scale_kernel();
    let bytes = encode_kernels(&[&kernel, &kernel]);
    assert_eq!(decode_kernels(&bytes).unwrap(), vec![kernel.clone(), kernel]);
    for length in 0..bytes.len() {
        assert!(decode_kernels(&bytes[..length]).is_err(), "a blob cut to {length} bytes decoded");
    }
    // A store through the scalar parameter is caught by the decoder, not the simulator.
    let mut broken = scale_kernel();
    broken.body[1] = Stmt::Store { buffer: 3, index: var(Var(0)), value: f32(0.0) };
    assert!(decode_kernels(&encode_kernels(&[&broken])).unwrap_err().message.contains("not a buffer parameter"));
}

#[test]
fn a_hand_built_artifact_runs_through_a_simulator_session() {
    let artifact = Artifact::from_bytes(scale_artifact()).unwrap();
    assert_eq!(artifact.kernel_ir, vec![scale_kernel()]);
    let model = Arc::new(Model::from_artifact(artifact));
    let mut session = Session::new(model.clone(), Device::Sim { check: true }).unwrap();
    for batch in [1usize, 17, 100] {
        let x: Vec<f32> = (0..batch * 4).map(|i| i as f32 * 0.25 - 3.0).collect();
        let outputs = session.run(&[("x".into(), HostTensor::from_f32(vec![batch, 4], &x))]).unwrap();
        assert_eq!(outputs[0].0, "y");
        assert_eq!(outputs[0].1.shape, vec![batch, 4]);
        assert_eq!(outputs[0].1.to_f64_vec(), expected(&x));
    }
    let error = session.run(&[("x".into(), HostTensor::from_f32(vec![101, 4], &[0.0; 404]))]).unwrap_err();
    assert!(matches!(error, RunError::OutOfBounds { value: 101, .. }), "{error}");
    let error = session.run(&[("x".into(), HostTensor::from_f32(vec![2, 3], &[0.0; 6]))]).unwrap_err();
    assert!(matches!(error, RunError::InputShape { .. }), "{error}");
    // Device-resident tensors belong to CUDA sessions.
    let error = session.upload(&HostTensor::from_f32(vec![1, 4], &[0.0; 4])).err().unwrap();
    assert!(matches!(error, RunError::NotOnDevice), "{error}");
    // The session is Send and the model Sync: another thread can run its own session.
    let other = std::thread::spawn(move || {
        let mut session = Session::new(model, Device::Sim { check: false }).unwrap();
        session.run(&[("x".into(), HostTensor::from_f32(vec![1, 4], &[1.0; 4]))]).unwrap()
    });
    assert_eq!(other.join().unwrap()[0].1.to_f64_vec(), expected(&[1.0; 4]));
}

#[test]
fn a_manifest_that_binds_a_weight_to_a_writable_parameter_is_corrupt() {
    let bytes = scale_artifact();
    let artifact = Artifact::from_bytes(bytes).unwrap();
    let mut manifest = artifact.manifest.clone();
    manifest.entry_points[0].launches[0].variants[0].arguments[2] =
        Argument { source: Some(ArgumentSource::Weight(0)) };
    let kernel = scale_kernel();
    let parts = ArtifactParts { manifest, weights: artifact.weights_blob(), kernels: vec![&kernel], code: Vec::new() };
    let mut rewritten = Vec::new();
    write_artifact(parts, &mut rewritten).unwrap();
    let error = Artifact::from_bytes(rewritten).unwrap_err();
    assert!(error.to_string().contains("parameter `y`: a writable parameter bound to a weight"), "{error}");
}

#[test]
fn kiln_run_runs_an_artifact_and_stays_small() {
    let directory = std::env::temp_dir().join(format!("kiln-run-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    let artifact = directory.join("scale.kiln");
    std::fs::write(&artifact, scale_artifact()).unwrap();
    let x: Vec<f32> = (0..12).map(|i| i as f32).collect();
    let input = directory.join("x.npy");
    write_npy(&input, &HostTensor::from_f32(vec![3, 4], &x)).unwrap();
    let binary = env!("CARGO_BIN_EXE_kiln-run");
    let output = Command::new(binary)
        .args([artifact.to_str().unwrap(), "--device", "sim", "--check", "--input"])
        .arg(format!("x={}", input.display()))
        .arg("--output-dir")
        .arg(directory.join("out"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let y = read_npy(&directory.join("out/y.npy")).unwrap();
    assert_eq!(y.to_f64_vec(), expected(&x));

    let described = Command::new(binary).args(["inspect", artifact.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&described.stdout);
    assert!(text.contains("input  x: f32[batch, 4]") && text.contains("bounds: batch=1..100"), "{text}");

    let no_gpu = Command::new(binary)
        .args([artifact.to_str().unwrap(), "--device", "cuda:3", "--input"])
        .arg(format!("x={}", input.display()))
        .arg("--output-dir")
        .arg(directory.join("cuda"))
        .output()
        .unwrap();
    if kiln_runtime::device::cuda::device_count() < 4 {
        assert!(!no_gpu.status.success());
        let stderr = String::from_utf8_lossy(&no_gpu.stderr);
        assert!(stderr.contains("no CUDA driver") || stderr.contains("CUDA device 3 does not exist"), "{stderr}");
    }

    let size = std::fs::metadata(binary).unwrap().len();
    eprintln!("kiln-run: {:.1} MiB", size as f64 / (1 << 20) as f64);
    assert!(size < 40 << 20, "kiln-run is {size} bytes");
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn models_are_shared_across_threads_and_sessions_move_between_them() {
    fn send_and_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_and_sync::<Model>();
    send_and_sync::<Arc<Model>>();
    send::<Session>();
}
