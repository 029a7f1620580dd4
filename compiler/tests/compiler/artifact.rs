//! End to end: every testdata model and the real MiniLM compiled to an
//! artifact, opened by the runtime and run on the simulator device against
//! the stored ONNX Runtime / PyTorch outputs; and every way an artifact or
//! its inputs can be wrong, rejected with a clear error.

use std::sync::Arc;

use kiln_compiler::artifact::{input_symbol_bounds, pack_artifact, ArtifactOptions};
use kiln_compiler::compile::compile;
use kiln_compiler::load_model;
use kiln_compiler::npy::{host_to_tensor, tensor_to_host};
use kiln_passes::{PipelineOptions, Precision};
use kiln_runtime::artifact::Artifact;
use kiln_runtime::{ArtifactError, DType, Device, HostTensor, Model, RunError, Session};
use kiln_targets::target::{target_named, Target};

use crate::common::{assert_close, expected_in, inputs_in, minilm_directory, models, op_models, testdata};

/// Compiles the model at `path` into artifact bytes.
pub fn artifact_bytes(path: &std::path::Path, precision: Precision, targets: &[Arc<dyn Target>]) -> Vec<u8> {
    let graph = load_model(path).expect("imports");
    let options = PipelineOptions { precision, ..PipelineOptions::default() };
    let compiled = compile(graph, &options, targets, &mut |_| {}).expect("compiles");
    let bounds = input_symbol_bounds(&compiled.graph, &options.bounds, &Default::default());
    let options = ArtifactOptions { model_name: "test", precision: precision.name(), bounds: &bounds };
    pack_artifact(&compiled, &options).expect("packs").bytes
}

/// Every single-op model of `testdata/ops` compiled to kernels (lowered to
/// PTX, assembled where ptxas is installed, and to AMDGPU) and run on the
/// simulator matches ONNX Runtime, or is refused at compile time for a reason
/// it names: an element type kiln's kernels lack, or an output that is a
/// constant.
#[test]
fn every_single_op_model_runs_on_the_simulator_or_is_refused_by_name() {
    let mut ran = 0;
    for (name, directory) in op_models() {
        let graph = load_model(&directory.join("model.onnx")).unwrap_or_else(|e| panic!("{name}: {e}"));
        let input_names: Vec<String> = graph.input_values().iter().map(|v| graph.value_name(*v).to_string()).collect();
        let options = PipelineOptions::default();
        // Lowered for NVIDIA (and assembled by ptxas where installed) and AMD too: the kernels of every op reach PTX and AMDGPU code.
        let targets = [target_named("sm_80").expect("a target"), target_named("gfx942").expect("a target")];
        let compiled = match compile(graph, &options, &targets, &mut |_| {}) {
            Ok(compiled) => compiled,
            Err(error) => {
                let message = error.to_string();
                let named = ["not supported by kiln's kernels", "is a constant"];
                assert!(named.iter().any(|reason| message.contains(reason)), "{name}: {message}");
                continue;
            }
        };
        let bounds = input_symbol_bounds(&compiled.graph, &options.bounds, &Default::default());
        let artifact_options = ArtifactOptions { model_name: "test", precision: "f32", bounds: &bounds };
        let bytes = pack_artifact(&compiled, &artifact_options).unwrap_or_else(|e| panic!("{name}: {e}")).bytes;
        let outputs =
            session_for(bytes).run(&host_inputs(&directory, &input_names)).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (output, tensor) in &outputs {
            assert_close(&format!("{name}/{output}"), &host_to_tensor(tensor), &expected_in(&directory, output), 1e-4);
        }
        ran += 1;
    }
    assert!(ran >= 25, "only {ran} single-op models ran on the simulator");
}

fn session_for(bytes: Vec<u8>) -> Session {
    let model = Arc::new(Model::from_artifact(Artifact::from_bytes(bytes).expect("the artifact opens")));
    Session::new(model, Device::sim(false)).expect("a simulator session")
}

fn host_inputs(directory: &std::path::Path, names: &[String]) -> Vec<(String, HostTensor)> {
    let tensors = inputs_in(directory, names);
    names.iter().map(|name| (name.clone(), tensor_to_host(&tensors[name]))).collect()
}

/// The smallest cosine similarity between matching rows (last axis) of two tensors.
fn minimum_row_cosine(got: &[f64], expected: &[f64], row: usize) -> f64 {
    got.chunks(row)
        .zip(expected.chunks(row))
        .map(|(a, b)| {
            let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm(a) == 0.0 && norm(b) == 0.0 {
                1.0
            } else {
                dot / (norm(a) * norm(b))
            }
        })
        .fold(1.0, f64::min)
}

/// Also replays each model's launches over the arena its run left (as a
/// CUDA graph replay or a benchmark does, inputs not copied in again): the
/// replay must reproduce the run, which fails if the memory plan lets an
/// activation overwrite an input after the input's last reader.
#[test]
fn every_testdata_model_runs_from_its_artifact_on_the_simulator_device_and_replays_identically() {
    for model in models() {
        let mut session = session_for(artifact_bytes(&model.model, Precision::F32, &[]));
        let benchmark = session.benchmark(&host_inputs(&model.directory, &model.inputs), 2, 1).expect("runs");
        assert_eq!(benchmark.replay_mismatch(), None, "{}: a replay differs from the first run", model.name);
        let outputs = benchmark.outputs;
        assert_eq!(outputs.len(), model.outputs.len(), "{}", model.name);
        for ((name, got), expected_name) in outputs.iter().zip(&model.outputs) {
            assert_eq!(name, expected_name, "{}: output order", model.name);
            let expected = expected_in(&model.directory, name);
            assert_close(&format!("{}/{name}", model.name), &host_to_tensor(got), &expected, 1e-3);
        }
    }
}

#[test]
fn bf16_artifacts_keep_every_row_within_cosine_0_999_of_the_reference() {
    for model in models() {
        let mut session = session_for(artifact_bytes(&model.model, Precision::Bf16, &[]));
        let outputs = session.run(&host_inputs(&model.directory, &model.inputs)).expect("runs");
        for (name, got) in &outputs {
            let expected = expected_in(&model.directory, name);
            assert_eq!(got.shape, expected.shape, "{}/{name}", model.name);
            // One-wide rows (a cross-encoder's scores) are compared as one column.
            let row = match *got.shape.last().expect("rank ≥ 1") {
                1 => got.element_count(),
                width => width,
            };
            let (got, expected) = (got.to_f64_vec(), expected.to_f64_vec());
            let cosine = minimum_row_cosine(&got, &expected, row);
            let scale = expected.iter().fold(0f64, |m, v| m.max(v.abs()));
            let difference = got.iter().zip(&expected).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
            eprintln!(
                "{}/{name} bf16: minimum row cosine {cosine:.6}, max |diff| {:.2e} of max |expected|",
                model.name,
                difference / scale
            );
            assert!(cosine >= 0.999, "{}/{name}: minimum row cosine {cosine}", model.name);
            assert!(difference <= 0.05 * scale, "{}/{name}: max |diff| {difference} (scale {scale})", model.name);
        }
    }
}

#[test]
fn the_real_minilm_runs_from_its_artifact_with_ptx_inside() {
    let directory = testdata().join("minilm");
    let bytes = artifact_bytes(&minilm_directory(), Precision::F32, &[target_named("sm_80").expect("a target")]);
    let artifact = Artifact::from_bytes(bytes.clone()).expect("opens");
    assert_eq!(artifact.targets(), ["sm_80"]);
    assert!(artifact.code("sm_80").expect("PTX").contains(".entry"));
    if kiln_targets::lower::nvptx::find_ptxas().is_some() {
        let cubin = artifact.code_objects().find(|o| o.format == kiln_runtime::artifact::CodeFormat::Cubin);
        let cubin = cubin.expect("ptxas is installed, so the artifact carries an sm_80 cubin");
        assert_eq!(cubin.target, "sm_80");
        assert!(cubin.bytes.starts_with(b"\x7fELF"), "a cubin is an ELF file");
    }
    let mut session = session_for(bytes);
    let started = std::time::Instant::now();
    let outputs =
        session.run(&host_inputs(&directory, &["input_ids".into(), "attention_mask".into(), "token_type_ids".into()]));
    eprintln!("MiniLM ran on the simulator device in {:.2?}", started.elapsed());
    let outputs = outputs.expect("runs");
    let (name, hidden) = &outputs[0];
    assert_close(&format!("minilm/{name}"), &host_to_tensor(hidden), &expected_in(&directory, name), 1e-3);
}

#[test]
fn the_sanitizer_finds_nothing_wrong_when_a_whole_model_runs_with_checks_on() {
    let model = models().into_iter().find(|m| m.name == "llama-hf5").expect("llama-hf5");
    let artifact = Artifact::from_bytes(artifact_bytes(&model.model, Precision::F32, &[])).expect("opens");
    let mut session = Session::new(Arc::new(Model::from_artifact(artifact)), Device::sim(true)).expect("session");
    let outputs = session.run(&host_inputs(&model.directory, &model.inputs)).expect("runs clean");
    let expected = expected_in(&model.directory, &outputs[0].0);
    assert_close("llama-hf5 (checked)", &host_to_tensor(&outputs[0].1), &expected, 1e-3);
}

fn bert() -> (Vec<u8>, Vec<(String, HostTensor)>) {
    let model = models().into_iter().find(|m| m.name == "bert-hf5").expect("bert-hf5");
    (artifact_bytes(&model.model, Precision::F32, &[]), host_inputs(&model.directory, &model.inputs))
}

#[test]
fn every_truncation_and_every_flipped_section_byte_is_rejected_without_panicking() {
    let (bytes, _) = bert();
    let step = (bytes.len() / 97).max(1);
    for length in (0..bytes.len()).step_by(step).chain([bytes.len() - 1]) {
        let result = Artifact::from_bytes(bytes[..length].to_vec());
        assert!(result.is_err(), "a file truncated to {length} bytes opened");
    }
    let covered = Artifact::from_bytes(bytes.clone()).expect("opens").covered_ranges().to_vec();
    let mut covered_positions = 0;
    for position in (0..bytes.len()).step_by(step) {
        let mut corrupted = bytes.clone();
        corrupted[position] ^= 0x5a;
        match Artifact::from_bytes(corrupted) {
            Err(ArtifactError::Corrupt(_) | ArtifactError::Truncated(_) | ArtifactError::NotAnArtifact) => {}
            Err(ArtifactError::Version { .. }) if (8..12).contains(&position) => {}
            // Only the zero padding between sections lies outside every checksum.
            Ok(_) if bytes[position] == 0 && !covered.iter().any(|range| range.contains(&position)) => {}
            other => panic!("flipping byte {position}: {other:?}"),
        }
        covered_positions += covered.iter().any(|range| range.contains(&position)) as usize;
    }
    assert!(covered_positions > 90, "the sampled bytes mostly lie in checksummed ranges ({covered_positions})");
}

#[test]
fn wrong_inputs_are_rejected_with_errors_that_name_them() {
    let (bytes, inputs) = bert();
    let mut session = session_for(bytes);
    let renamed: Vec<_> =
        inputs.iter().map(|(n, t)| (if n == "input_ids" { "ids".into() } else { n.clone() }, t.clone())).collect();
    let error = session.run(&renamed).expect_err("unknown name");
    assert!(matches!(&error, RunError::UnknownInput { name, .. } if name == "ids"), "{error}");

    let missing: Vec<_> = inputs.iter().filter(|(n, _)| n != "attention_mask").cloned().collect();
    let error = session.run(&missing).expect_err("missing input");
    assert!(matches!(&error, RunError::MissingInput(name) if name == "attention_mask"), "{error}");

    let mut wrong_dtype = inputs.clone();
    let ids = &wrong_dtype[0].1;
    wrong_dtype[0].1 = HostTensor::from_f64(DType::I32, ids.shape.clone(), &ids.to_f64_vec());
    let error = session.run(&wrong_dtype).expect_err("wrong dtype");
    assert!(matches!(&error, RunError::InputDType { found, .. } if found == "i32"), "{error}");

    let mut wrong_shape = inputs.clone();
    let mask = &wrong_shape[1].1;
    let (batch, seq) = (mask.shape[0], mask.shape[1]);
    wrong_shape[1].1 = HostTensor::from_i64(vec![batch, seq - 1], &vec![1; batch * (seq - 1)]);
    let error = session.run(&wrong_shape).expect_err("mismatched seq");
    assert!(matches!(&error, RunError::InputShape { name, .. } if name == "attention_mask"), "{error}");

    let too_long: Vec<_> =
        inputs.iter().map(|(n, _)| (n.clone(), HostTensor::from_i64(vec![1, 513], &vec![1; 513]))).collect();
    let error = session.run(&too_long).expect_err("seq beyond the bound");
    assert!(matches!(&error, RunError::OutOfBounds { symbol, value: 513, max: 512, .. } if symbol == "seq"), "{error}");
    eprintln!("{error}");
}

#[test]
fn a_cuda_session_without_a_driver_says_so() {
    if kiln_runtime::device::cuda::device_count() > 0 {
        return; // A machine with a GPU runs this path for real (scripts/gpu/).
    }
    let (bytes, _) = bert();
    let model = Arc::new(Model::from_artifact(Artifact::from_bytes(bytes).expect("opens")));
    let error = Session::new(model, Device::cuda(0)).err().expect("no CUDA here");
    let text = error.to_string();
    assert!(text.contains("CUDA") && (text.contains("driver") || text.contains("does not exist")), "{text}");
}

#[test]
fn kiln_embed_tokenizes_like_the_model_s_own_python_tokenizer() {
    let directory = testdata().join("minilm");
    let sentences: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(directory.join("sentences.json")).expect("sentences"))
            .expect("JSON");
    let batch =
        kiln_compiler::embed::tokenize(&minilm_directory().join("tokenizer.json"), &sentences, 128).expect("tokenizes");
    // testdata/minilm/inputs were written by transformers' AutoTokenizer (testdata/make_testdata.py).
    let expected = host_inputs(&directory, &["input_ids".into(), "attention_mask".into(), "token_type_ids".into()]);
    for ((name, got), (expected_name, want)) in batch.inputs.iter().zip(&expected) {
        assert_eq!(name, expected_name);
        assert_eq!(got, want, "{name}");
    }
}

/// Decode-shaped runs — one token, or a few rows — launch the skinny matmul
/// variants (row buckets `1` and `2..=4` of `batch·seq`), and more rows the
/// tiled kernel; every shape still matches the reference. A causal decoder's
/// logits over a prefix of unmasked tokens are the reference's logits there,
/// so each run takes the first `seq` tokens of the first `batch` sequences
/// (both unmasked for at least five tokens in the testdata).
#[test]
fn decoders_launch_the_skinny_matmul_variant_of_their_row_bucket_and_match_the_reference_and_the_interpreter() {
    // Decoders: logits over (batch, seq, vocab), with symbolic dims.
    let decoders: Vec<_> = models()
        .into_iter()
        .filter(|m| m.outputs == ["logits"] && !m.name.ends_with("-static"))
        .filter(|m| expected_in(&m.directory, "logits").shape.len() == 3)
        .collect();
    assert!(decoders.len() >= 5, "the testdata has decoders");
    for model in decoders {
        let bytes = artifact_bytes(&model.model, Precision::F32, &[]);
        let shared = Arc::new(Model::from_artifact(Artifact::from_bytes(bytes).expect("the artifact opens")));
        let mut session = Session::new(shared.clone(), Device::sim(false)).expect("a simulator session");
        let interpreter = Device { executor: Some("interpreter".into()), ordinal: 0, check: true };
        let mut checked = Session::new(shared, interpreter).expect("an interpreter session");
        let tensors = inputs_in(&model.directory, &model.inputs);
        let expected = expected_in(&model.directory, "logits");
        let (full_seq, vocab) = (expected.shape[1], expected.shape[2]);
        for (batch, seq, kernel_suffix) in
            [(1, 1, "_matmul_rows1"), (2, 2, "_matmul_rows4"), (1, 3, "_matmul_rows4"), (2, 5, "_matmul")]
        {
            let prefix = |values: Vec<f64>, width: usize| -> Vec<f64> {
                (0..batch).flat_map(|b| values[b * full_seq * width..][..seq * width].to_vec()).collect()
            };
            let inputs: Vec<(String, HostTensor)> = model
                .inputs
                .iter()
                .map(|name| {
                    let values: Vec<i64> = prefix(tensors[name].to_f64_vec(), 1).iter().map(|&v| v as i64).collect();
                    (name.clone(), HostTensor::from_i64(vec![batch, seq], &values))
                })
                .collect();
            let what = format!("{} at batch {batch}, seq {seq}", model.name);
            let launched = session.profile(&inputs, 1).unwrap_or_else(|e| panic!("{what}: {e}"));
            let matmuls: Vec<&str> =
                launched.iter().map(|l| l.kernel.as_str()).filter(|k| k.contains("_matmul")).collect();
            assert!(!matmuls.is_empty(), "{what}: no matmul launched");
            assert!(
                matmuls.iter().any(|k| k.ends_with(kernel_suffix)),
                "{what}: expected a `…{kernel_suffix}` launch among {matmuls:?}"
            );
            let outputs = session.run(&inputs).unwrap_or_else(|e| panic!("{what}: {e}"));
            // The machine's fused and affine paths against the checked interpreter, bit for bit.
            let oracle = checked.run(&inputs).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(outputs[0].1.bytes == oracle[0].1.bytes, "{what}: the machine and the interpreter differ");
            let reference = kiln_ir::Tensor::from_f32(
                kiln_ir::DType::F32,
                vec![batch, seq, vocab],
                prefix(expected.to_f64_vec(), vocab).iter().map(|&v| v as f32).collect(),
            );
            assert_close(&what, &host_to_tensor(&outputs[0].1), &reference, 1e-3);
        }
    }
}
