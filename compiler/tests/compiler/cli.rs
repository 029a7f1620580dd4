//! The `kiln` command line: inspect, eval, and its errors.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::testdata;

fn kiln(arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln")).args(arguments).output().expect("kiln runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn inspect_prints_the_signature_parameters_and_ops() {
    let model = testdata().join("models/llama-dynamo/model.onnx");
    let output = kiln(&["inspect", model.to_str().expect("utf-8")]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("input_ids: i64[batch, seq]"), "{stdout}");
    assert!(stdout.contains("logits: f32[batch, seq, 512]"), "{stdout}");
    assert!(stdout.contains("matmul"), "{stdout}");
}

#[test]
fn inspect_json_is_one_object_with_the_signature() {
    let model = testdata().join("models/bert-hf5/hf");
    let output = kiln(&["inspect", "--json", model.to_str().expect("utf-8")]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(json["inputs"][0]["name"], "input_ids");
    assert_eq!(json["outputs"][1]["shape"], serde_json::json!(["batch", "64"]));
    assert!(json["params"].as_u64().expect("params") > 100_000);
    assert!(json["ops"]["layer_norm"].as_u64().expect("layer_norm count") == 5);
}

#[test]
fn inspect_ir_prints_the_graph_text() {
    let model = testdata().join("models/qwen2-hf5/hf");
    let output = kiln(&["inspect", "--ir", model.to_str().expect("utf-8")]);
    assert!(output.status.success());
    assert!(text(&output.stdout).contains("rms_norm[axis=-1, epsilon=1e-6]"), "{}", text(&output.stdout));
}

#[test]
fn eval_writes_every_output_and_never_overwrites_without_force() {
    let model = testdata().join("models/distilbert-legacy");
    let out = std::env::temp_dir().join(format!("kiln-cli-eval-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let input = |name: &str| format!("{name}={}", model.join(format!("inputs/{name}.npy")).display());
    let arguments = |force: bool| {
        let mut a = vec![
            "eval".to_string(),
            model.join("model.onnx").display().to_string(),
            "--input".into(),
            input("input_ids"),
            "--input".into(),
            input("attention_mask"),
            "--output-dir".into(),
            out.display().to_string(),
        ];
        if force {
            a.push("--force".into());
        }
        a
    };
    let run = |force: bool| {
        let a = arguments(force);
        kiln(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let first = run(false);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let written = out.join("last_hidden_state.npy");
    let bytes = std::fs::read(&written).expect("written");

    std::fs::write(&written, b"keep me").expect("overwrite by the test");
    let second = run(false);
    assert!(!second.status.success());
    assert!(text(&second.stderr).contains("--force"), "{}", text(&second.stderr));
    assert_eq!(std::fs::read(&written).expect("still there"), b"keep me");

    assert!(run(true).status.success());
    assert_eq!(std::fs::read(&written).expect("rewritten"), bytes);
}

#[test]
fn eval_reads_and_writes_onnx_tensor_proto_files() {
    use kiln_compiler::onnx::{read_tensor_proto, tensor_proto_bytes};
    let case = testdata().join("ops/cast_through_small_types_opset23");
    let scratch = std::env::temp_dir().join(format!("kiln-cli-pb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).expect("scratch");
    let mut arguments = vec!["eval".to_string(), case.join("model.onnx").display().to_string()];
    for name in ["x", "whole"] {
        let tensor = kiln_compiler::npy::read_npy(&case.join(format!("inputs/{name}.npy"))).expect("testdata");
        let path = scratch.join(format!("{name}.pb"));
        std::fs::write(&path, tensor_proto_bytes(name, &tensor)).expect("written");
        arguments.extend(["--input".to_string(), format!("{name}={}", path.display())]);
    }
    let out = scratch.join("out");
    arguments.extend(["--output-dir".into(), out.display().to_string(), "--output-format".into(), "pb".into()]);
    let run = kiln(&arguments.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(run.status.success(), "{}", text(&run.stderr));
    for output in ["e5m2", "int4", "uint16"] {
        let got = read_tensor_proto(&out.join(format!("{output}.pb"))).expect("a TensorProto");
        let expected = kiln_compiler::npy::read_npy(&case.join(format!("expected/{output}.npy"))).expect("testdata");
        assert_eq!(got, expected, "{output}");
    }

    std::fs::write(scratch.join("x.pb"), b"not a tensor").expect("written");
    arguments.push("--force".into());
    let bad = kiln(&arguments.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!bad.status.success());
    let stderr = text(&bad.stderr);
    assert!(stderr.contains("x.pb") && stderr.contains("TensorProto"), "{stderr}");
}

#[test]
fn errors_exit_non_zero_and_name_the_fault() {
    let missing = kiln(&["inspect", "/nonexistent/model.onnx"]);
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("/nonexistent/model.onnx"));

    let model = testdata().join("models/bert-legacy");
    let wrong_input = kiln(&[
        "eval",
        model.join("model.onnx").to_str().expect("utf-8"),
        "--input",
        &format!("input_ids={}", model.join("expected/pooler_output.npy").display()),
        "--output-dir",
        std::env::temp_dir().join("kiln-cli-never").to_str().expect("utf-8"),
    ]);
    assert!(!wrong_input.status.success());
    let stderr = text(&wrong_input.stderr);
    assert!(stderr.contains("input_ids") && stderr.contains("f32"), "{stderr}");
    assert!(!Path::new(&std::env::temp_dir().join("kiln-cli-never")).exists());
}

#[test]
fn inspect_json_reports_kernels_layers_and_the_arena_at_the_bindings() {
    let model = testdata().join("models/llama-dynamo/model.onnx");
    let output = kiln(&["inspect", "--json", "--bind", "batch=4,seq=100", model.to_str().expect("utf-8")]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(json["layers"], 2);
    assert!(json["kernels"].as_u64().expect("kernels") <= 7 * 2 + 4);
    let peak = json["peak_arena_bytes"].as_i64().expect("peak arena bytes");
    // At least the logits of 4 × 100 tokens over a 512-word vocabulary in f32.
    assert!(peak >= 4 * 100 * 512 * 4, "{peak}");
}

#[test]
fn dump_ir_writes_the_graph_after_every_pass_and_stop_after_limits_the_pipeline() {
    let directory = std::env::temp_dir().join(format!("kiln-cli-dump-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    let model = testdata().join("models/bert-hf4/hf");
    let output = kiln(&[
        "inspect",
        "--stop-after",
        "recognize",
        "--dump-ir",
        directory.to_str().expect("utf-8"),
        model.to_str().expect("utf-8"),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let mut names: Vec<String> = std::fs::read_dir(&directory)
        .expect("dump dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into())
        .collect();
    names.sort();
    assert_eq!(names[0], "000-import.ir");
    assert!(names.iter().any(|n| n.contains("-canonicalize-fold_constants.ir")), "{names:?}");
    assert!(names.iter().any(|n| n.contains("-recognize-recognize_attention.ir")), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("-fuse-")), "{names:?}");
    let last = std::fs::read_to_string(directory.join(names.last().expect("a dump"))).expect("readable");
    assert!(last.contains("attention["), "{last}");
    let stdout = text(&output.stdout);
    assert!(stdout.contains("kernels (fusion groups): 0"), "{stdout}");
}

#[test]
fn bad_options_are_refused() {
    let model = testdata().join("models/bert-hf4/hf");
    let model = model.to_str().expect("utf-8");
    for arguments in [
        &["inspect", "--precision", "f64", model][..],
        &["inspect", "--stop-after", "lowering", model][..],
        &["inspect", "--bind", "batch=0", model][..],
        &["inspect", "--bind", "batch", model][..],
    ] {
        let output = kiln(arguments);
        assert!(!output.status.success(), "{arguments:?} was accepted");
        assert!(!text(&output.stderr).is_empty());
    }
    // --roofline describes an artifact's launches at bound dims: it needs --bind, and an artifact.
    let roofline = kiln(&["inspect", model, "--roofline"]);
    assert!(!roofline.status.success(), "--roofline without --bind was accepted");
    let roofline = kiln(&["inspect", model, "--bind", "batch=2,seq=9", "--roofline"]);
    assert!(text(&roofline.stderr).contains("compile"), "{}", text(&roofline.stderr));
    // eval runs the imported graph unless asked for a phase: pipeline options alone are an error.
    let eval = kiln(&["eval", model, "--precision", "bf16", "--input", "x=y.npy", "--output-dir", "out"]);
    assert!(!eval.status.success());
    assert!(text(&eval.stderr).contains("--stop-after"), "{}", text(&eval.stderr));
}

/// `kiln compile MODEL --target sm_80 -o ARTIFACT`, which must succeed.
fn compile_for_sm_80(model: &std::path::Path, artifact: &std::path::Path) {
    let compiled = kiln(&[
        "compile",
        model.to_str().expect("utf-8"),
        "--target",
        "sm_80",
        "-o",
        artifact.to_str().expect("utf-8"),
    ]);
    assert!(compiled.status.success(), "{}", text(&compiled.stderr));
}

#[test]
fn flags_for_models_are_refused_with_an_artifact() {
    let directory = std::env::temp_dir().join(format!("kiln-cli-artifact-flags-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).expect("a temporary directory");
    let artifact = directory.join("model.kiln");
    let model = testdata().join("models/bert-hf5/hf");
    compile_for_sm_80(&model, &artifact);
    let artifact = artifact.to_str().expect("utf-8");
    for (flag, arguments) in [
        ("--stop-after", &["inspect", artifact, "--stop-after", "fuse"][..]),
        ("--ir", &["inspect", artifact, "--ir"][..]),
        ("--dump-ir", &["inspect", artifact, "--dump-ir", "ir"][..]),
        ("--precision", &["inspect", artifact, "--precision", "bf16"][..]),
    ] {
        let output = kiln(arguments);
        assert!(!output.status.success(), "{arguments:?} was accepted");
        let stderr = text(&output.stderr);
        assert!(stderr.contains(flag) && stderr.contains("not to an artifact"), "{stderr}");
    }
    assert!(kiln(&["inspect", artifact]).status.success());
    // --bind means something for an artifact too: the variant each launch runs.
    let launches = kiln(&["inspect", artifact, "--bind", "batch=2,seq=8"]);
    assert!(launches.status.success() && text(&launches.stdout).contains("launches at"), "{}", text(&launches.stderr));
    std::fs::remove_dir_all(&directory).expect("cleaned up");
}

#[test]
fn compile_writes_an_artifact_and_each_kernels_ir_mlir_and_ptx() {
    let directory = std::env::temp_dir().join(format!("kiln-cli-compile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    let model = testdata().join("models/distilbert-hf5/hf");
    let artifact = directory.join("model.kiln");
    let output = kiln(&[
        "compile",
        model.to_str().expect("utf-8"),
        "--target",
        "sm_80,sm_90,gfx942",
        "--bound",
        "batch=1..8,seq=2..128",
        "--emit-dir",
        directory.to_str().expect("utf-8"),
        "-o",
        artifact.to_str().expect("utf-8"),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    // 15 launches; the second layer repeats the first one's kernels, which ship once.
    assert!(stdout.contains("launches: 15"), "{stdout}");
    // The number printed right after `marker`.
    let count_after = |marker: &str| -> usize {
        let count = stdout.split(marker).nth(1).and_then(|rest| rest.split(' ').next());
        count.and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("a count after `{marker}`: {stdout}"))
    };
    let (distinct, generated) = (count_after("kernels: "), count_after(" distinct of "));
    assert!(distinct >= 1 && distinct < generated, "{stdout}");
    assert!(stdout.contains(&format!("kernels: {distinct} distinct")), "{stdout}");
    assert!(stdout.contains("(batch=1..8, seq=2..128)"), "{stdout}");
    assert!(
        stdout.contains("time: import") && stdout.contains("lower gfx942") && stdout.contains(", write "),
        "{stdout}"
    );
    for suffix in [".kir", ".mlir", ".sm_80.ptx", ".sm_90.ptx", ".gfx942.s"] {
        let path = directory.join(format!("g1_matmul{suffix}"));
        assert!(path.is_file(), "{} is missing", path.display());
    }
    let described = kiln(&["inspect", artifact.to_str().expect("utf-8")]);
    assert!(described.status.success(), "{}", text(&described.stderr));
    let description = text(&described.stdout);
    assert!(description.contains("bounds: batch=1..8, seq=2..128"), "{description}");
    assert!(description.contains("model: distilbert-hf5/hf"), "{description}");
    assert!(description.contains("input  input_ids: i64[batch, seq]"), "{description}");
    // With ptxas (scripts/setup.sh installs it) every sm_* target carries a cubin beside its PTX.
    let ptxas = kiln_targets::lower::nvptx::find_ptxas().is_some();
    let nvidia = if ptxas { "(cubin, ptx)" } else { "(ptx)" };
    let code = format!("code: sm_80 {nvidia}, sm_90 {nvidia}, gfx942 (amdgcn-asm)");
    assert!(description.contains(&code), "{description}");
    if ptxas {
        assert!(stdout.contains("code for: sm_80 (cubin+ptx), sm_90 (cubin+ptx), gfx942 (amdgcn-asm)"), "{stdout}");
        assert!(stdout.contains(&format!("ptxas sm_90: {distinct} kernels, at most")), "{stdout}");
        assert!(!stdout.contains("g1_matmul "), "the per-kernel table is for --verbose: {stdout}");
        let verbose = kiln(&["compile", model.to_str().expect("utf-8"), "--target", "sm_90", "--verbose"]);
        let table = text(&verbose.stdout);
        assert!(table.lines().any(|l| l.contains("sm_90 g1_matmul") && l.contains("registers")), "{table}");
    }
    let as_json = kiln(&["inspect", "--json", artifact.to_str().expect("utf-8")]);
    let json: serde_json::Value = serde_json::from_slice(&as_json.stdout).expect("JSON");
    assert_eq!(json["entry_points"][0]["launches"], 15);
    assert_eq!(json["bounds"]["seq"], serde_json::json!([2, 128]));
    assert_eq!(json["entry_points"][0]["inputs"][0]["shape"], serde_json::json!(["batch", "seq"]));

    let again = kiln(&["compile", model.to_str().expect("utf-8"), "-o", artifact.to_str().expect("utf-8")]);
    assert!(!again.status.success(), "an existing artifact was replaced without --force");
    assert!(text(&again.stderr).contains("--force"), "{}", text(&again.stderr));
    let refused = kiln(&["compile", model.to_str().expect("utf-8"), "--target", "sm_80,tpu"]);
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("unknown target `tpu`"), "{}", text(&refused.stderr));
    std::fs::remove_dir_all(&directory).expect("cleans up");
}

#[test]
fn the_artifact_has_one_launch_per_kernel_that_inspect_counts() {
    let directory = std::env::temp_dir().join(format!("kiln-cli-launches-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("temp dir");
    for name in ["bert-hf5", "llama-dynamo", "qwen2-hf4"] {
        let entry = std::fs::read_dir(testdata().join("models").join(name)).expect("model dir");
        let model = entry
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "onnx") || p.join("config.json").exists())
            .expect("a model");
        let inspected = kiln(&["inspect", "--json", model.to_str().expect("utf-8")]);
        let json: serde_json::Value = serde_json::from_slice(&inspected.stdout).expect("JSON");
        let path = directory.join(format!("{name}.kiln"));
        compile_for_sm_80(&model, &path);
        let artifact = kiln_runtime::Artifact::open(&path).expect("opens");
        let launches = artifact.entry_point("forward").expect("forward").launches.len();
        assert_eq!(Some(launches as u64), json["kernels"].as_u64(), "{name}");
    }
    std::fs::remove_dir_all(&directory).expect("cleans up");
}

#[test]
fn compiling_twice_in_two_processes_gives_identical_bytes() {
    let directory = std::env::temp_dir().join(format!("kiln-cli-determinism-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("temp dir");
    let model = testdata().join("models/llama-hf5/hf");
    let mut files = Vec::new();
    // The thread-count variables are read by the libraries kiln links (MLIR,
    // rayon if ever added); neither may change a byte.
    for (index, threads) in ["1", "2"].iter().enumerate() {
        let path = directory.join(format!("{index}.kiln"));
        let output = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args([
                "compile",
                model.to_str().expect("utf-8"),
                "--target",
                "sm_80,gfx90a",
                "-o",
                path.to_str().expect("utf-8"),
            ])
            .env("RAYON_NUM_THREADS", threads)
            .env("OMP_NUM_THREADS", threads)
            .output()
            .expect("kiln runs");
        assert!(output.status.success(), "{}", text(&output.stderr));
        files.push(std::fs::read(&path).expect("written"));
    }
    assert!(files[0] == files[1], "two compilations differ");
    std::fs::remove_dir_all(&directory).expect("cleans up");
}

#[test]
fn run_writes_outputs_from_an_artifact_on_the_simulator_and_refuses_bad_inputs() {
    let directory = std::env::temp_dir().join(format!("kiln-cli-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).expect("temp dir");
    let model_dir = testdata().join("models/bert-hf5");
    let artifact = directory.join("bert.kiln");
    let compiled =
        kiln(&["compile", model_dir.join("hf").to_str().expect("utf-8"), "-o", artifact.to_str().expect("utf-8")]);
    assert!(compiled.status.success(), "{}", text(&compiled.stderr));
    let input = |name: &str| format!("{name}={}", model_dir.join("inputs").join(format!("{name}.npy")).display());
    let outputs = directory.join("out");
    let mut arguments = vec!["run".to_string(), artifact.display().to_string(), "--device".into(), "sim".into()];
    for name in ["input_ids", "attention_mask", "token_type_ids"] {
        arguments.extend(["--input".to_string(), input(name)]);
    }
    arguments.extend(["--output-dir".to_string(), outputs.display().to_string()]);
    let borrowed: Vec<&str> = arguments.iter().map(String::as_str).collect();
    let ran = kiln(&borrowed);
    assert!(ran.status.success(), "{}", text(&ran.stderr));
    let got = kiln_compiler::npy::read_npy(&outputs.join("last_hidden_state.npy")).expect("written");
    let expected = crate::common::expected_in(&model_dir, "last_hidden_state");
    crate::common::assert_close("kiln run bert-hf5", &got, &expected, 1e-3);

    let again = kiln(&borrowed);
    assert!(!again.status.success(), "outputs were replaced without --force");
    let mut wrong = borrowed.clone();
    let bad_input = format!("token_type_ids={}", model_dir.join("expected/pooler_output.npy").display());
    let position = wrong.iter().position(|a| a.starts_with("token_type_ids=")).expect("present");
    wrong[position] = &bad_input;
    wrong.push("--force");
    let refused = kiln(&wrong);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("input `token_type_ids`: dtype f32, the model expects i64"),
        "{}",
        text(&refused.stderr)
    );
    let mut corrupt = std::fs::read(&artifact).expect("artifact");
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 1;
    std::fs::write(&artifact, corrupt).expect("rewritten");
    let refused = kiln(&["inspect", artifact.to_str().expect("utf-8")]);
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("corrupt"), "{}", text(&refused.stderr));
    std::fs::remove_dir_all(&directory).expect("cleans up");
}

/// `--precision tf32` compiles f32 matmuls to tensor-core variants (m16n8k8
/// tf32), which `kiln inspect ARTIFACT --bind` shows for a device with tensor
/// cores, and the portable kernels for one without; `--roofline` models them.
#[test]
fn tf32_artifacts_launch_tensor_core_matmuls_where_the_device_has_them() {
    let model = testdata().join("models/bert-hf4/hf");
    let directory = std::env::temp_dir().join(format!("kiln-cli-tf32-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("a scratch directory");
    let artifact = directory.join("bert.kiln");
    let (model, artifact_path) = (model.to_str().expect("utf-8"), artifact.to_str().expect("utf-8"));
    let compiled = kiln(&["compile", model, "--precision", "tf32", "--target", "sm_80", "-o", artifact_path]);
    assert!(compiled.status.success(), "{}", text(&compiled.stderr));
    let launches = kiln(&["inspect", artifact_path, "--bind", "batch=2,seq=9"]);
    assert!(launches.status.success(), "{}", text(&launches.stderr));
    assert!(text(&launches.stdout).contains("_matmul_tc"), "{}", text(&launches.stdout));
    let portable = kiln(&["inspect", artifact_path, "--bind", "batch=2,seq=9", "--no-tensor-cores"]);
    assert!(!text(&portable.stdout).contains("_matmul_tc"), "{}", text(&portable.stdout));
    let modelled = kiln(&["inspect", artifact_path, "--bind", "batch=2,seq=9", "--roofline", "--gpu", "a100"]);
    let out = text(&modelled.stdout);
    assert!(out.contains("MODEL on a100") && out.contains("total:"), "{out}");
    let unknown = kiln(&["inspect", artifact_path, "--bind", "batch=2,seq=9", "--roofline", "--gpu", "v100"]);
    assert!(text(&unknown.stderr).contains("unknown GPU `v100`"), "{}", text(&unknown.stderr));
    let _ = std::fs::remove_dir_all(&directory);
}

/// `kiln kernel` lowers and simulates one filetest, and names what is wrong with a bad one.
#[test]
fn kiln_kernel_writes_ptx_and_the_simulated_buffers() {
    let directory = std::env::temp_dir().join(format!("kiln-cli-kernel-{}", std::process::id()));
    let kir = testdata().join("kernels/mma_bf16.kir");
    let out = directory.to_str().expect("utf-8");
    let written = kiln(&["kernel", kir.to_str().expect("utf-8"), "-o", out]);
    assert!(written.status.success(), "{}", text(&written.stderr));
    let ptx = std::fs::read_to_string(directory.join("mma_bf16.ptx")).expect("the PTX");
    assert!(ptx.contains("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(directory.join("mma_bf16.json")).expect("the JSON")).expect("JSON");
    assert_eq!(json["threads"], 32);
    // The simulated output is the filetest's expectation.
    let expected = kiln_runtime::kernel::filetest::directives(&std::fs::read_to_string(&kir).expect("reads"))
        .expect("directives")
        .expected;
    let d = json["params"].as_array().expect("params").iter().find(|p| p["name"] == "d").expect("d");
    let simulated: Vec<f64> =
        d["simulated"].as_array().expect("values").iter().map(|v| v.as_f64().expect("a number")).collect();
    assert_eq!(simulated, expected[0].1);
    let again = kiln(&["kernel", kir.to_str().expect("utf-8"), "-o", out]);
    assert!(text(&again.stderr).contains("exists (--force"), "{}", text(&again.stderr));
    let missing = kiln(&["kernel", "no/such.kir", "-o", out]);
    assert!(text(&missing.stderr).contains("no/such.kir"), "{}", text(&missing.stderr));
    let _ = std::fs::remove_dir_all(&directory);
}
