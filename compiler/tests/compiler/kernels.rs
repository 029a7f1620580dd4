//! Every fusion group of every testdata model, generated as a kernel and run
//! in the simulator (sanitizer on) against the reference evaluator, at random
//! batch and sequence sizes, with fresh random inputs and poisoned outputs.

use std::collections::HashMap;

use kiln_compiler::load_model;
use kiln_ir::eval::evaluate_all;

use kiln_ir::{Graph, SymbolBindings, Tensor};
use kiln_passes::{Phase, Pipeline, PipelineOptions, Precision};
use kiln_runtime::sim::{run_kernel, SimArgument, SimBuffer, SimOptions};
use kiln_targets::generate::{generate_kernel, generate_variants, ParamBinding};

use crate::common::{models, random_model_inputs, testdata};

/// A seed that differs between runs (printed, so a failure can be replayed
/// with `KILN_TEST_SEED`).
fn run_seed() -> u64 {
    match std::env::var("KILN_TEST_SEED") {
        Ok(text) => text.parse().expect("KILN_TEST_SEED is a number"),
        Err(_) => {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
        }
    }
}

fn fused(graph: &mut Graph, precision: Precision) {
    let options = PipelineOptions { stop_after: Phase::Precision, precision, ..PipelineOptions::default() };
    Pipeline::new(options).run(graph, &mut |_, _, _| {}).expect("optimizes");
}

/// Runs every group's kernel in the simulator and compares its outputs with
/// the evaluator's values; returns the failures.
pub fn check_every_group(
    name: &str,
    graph: &Graph,
    inputs: &HashMap<String, Tensor>,
    bindings: &SymbolBindings,
    seed: u64,
    tolerance: f64,
) -> Vec<String> {
    check_every_group_with_warps(name, graph, inputs, bindings, seed, tolerance, 32)
}

/// As [`check_every_group`], with warps of `warp_size` lanes (64: AMD wave64).
pub fn check_every_group_with_warps(
    name: &str,
    graph: &Graph,
    inputs: &HashMap<String, Tensor>,
    bindings: &SymbolBindings,
    seed: u64,
    tolerance: f64,
    warp_size: usize,
) -> Vec<String> {
    let values = evaluate_all(graph, inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut failures = Vec::new();
    for &group in graph.groups().keys() {
        let generated = match generate_kernel(graph, group) {
            Ok(generated) => generated,
            Err(error) => {
                failures.push(format!("{name}: {error}"));
                continue;
            }
        };
        let mut arguments = simulator_arguments(&generated, &values, bindings);
        let options = SimOptions { seed, warp_size, ..SimOptions::default() };
        let started = std::time::Instant::now();
        let result = run_kernel(&generated.kernel, &mut arguments, bindings, options);
        if std::env::var("KILN_TEST_TIMING").is_ok() {
            let size = kiln_runtime::kernel::print_kernel(&generated.kernel).len();
            eprintln!(
                "{name} g{group} {:?}: {:.2?} ({size} bytes of kernel text)",
                graph.groups()[&group].kind,
                started.elapsed()
            );
        }
        if let Err(error) = result {
            failures.push(format!("{name}: g{group}: {error}"));
            continue;
        }
        for (binding, argument) in generated.bindings.iter().zip(&arguments) {
            let (ParamBinding::Output(value), SimArgument::Buffer(buffer)) = (binding, argument) else { continue };
            if let Err(problem) = compare(&buffer.data, &values[value], tolerance) {
                failures.push(format!("{name}: g{group} output `{}`: {problem}", graph.value_name(*value)));
            }
        }
    }
    failures
}

/// A kernel's arguments from the evaluator's `values`: inputs as evaluated,
/// outputs poisoned with NaN, symbols as bound.
fn simulator_arguments(
    generated: &kiln_targets::generate::GeneratedKernel,
    values: &HashMap<kiln_ir::graph::ValueRef, Tensor>,
    bindings: &SymbolBindings,
) -> Vec<SimArgument> {
    generated
        .bindings
        .iter()
        .map(|binding| match binding {
            ParamBinding::Input(value) => {
                let tensor = &values[value];
                SimArgument::Buffer(SimBuffer { dtype: tensor.dtype, data: tensor.to_f64_vec() })
            }
            ParamBinding::Output(value) => {
                let tensor = &values[value];
                SimArgument::Buffer(SimBuffer { dtype: tensor.dtype, data: vec![f64::NAN; tensor.element_count()] })
            }
            ParamBinding::Symbol(symbol) => SimArgument::Scalar(bindings[symbol] as f64),
        })
        .collect()
}

fn compare(got: &[f64], expected: &Tensor, tolerance: f64) -> Result<(), String> {
    let expected = expected.to_f64_vec();
    let scale = expected.iter().filter(|v| v.is_finite()).fold(1e-30f64, |m, v| m.max(v.abs()));
    for (index, (x, y)) in got.iter().zip(&expected).enumerate() {
        let same = (x.is_nan() && y.is_nan()) || (x - y).abs() <= tolerance * scale || x == y;
        if !same {
            return Err(format!("element {index}: kernel {x}, evaluator {y} (scale {scale})"));
        }
    }
    Ok(())
}

#[test]
fn every_group_of_every_model_runs_correctly_in_the_simulator() {
    let seed = run_seed();
    eprintln!("kernel test seed {seed} (replay with KILN_TEST_SEED={seed})");
    let mut failures = Vec::new();
    let only = std::env::var("KILN_TEST_MODEL").ok();
    for (index, model) in models().into_iter().enumerate().filter(|(_, m)| only.as_ref().is_none_or(|o| &m.name == o)) {
        let mut graph = load_model(&model.model).expect("imports");
        fused(&mut graph, Precision::F32);
        let mut random = seed.wrapping_add(index as u64 * 7919);
        let mut next = || {
            random = random.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (random >> 33) as usize
        };
        let static_shape = graph.value_type(graph.input_values()[0]).constant_shape();
        let (batch, seq) = match &static_shape {
            Some(shape) => (shape[0], shape[1]),
            None => (1 + next() % 3, 1 + next() % 13),
        };
        let bindings: SymbolBindings = if static_shape.is_some() {
            SymbolBindings::new()
        } else {
            [("batch".into(), batch as i64), ("seq".into(), seq as i64)].into()
        };
        let inputs = random_model_inputs(&graph, batch, seq, next() as u64, true);
        failures.extend(check_every_group(&model.name, &graph, &inputs, &bindings, next() as u64, 1e-4));
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// `.param` entries of each `.entry` in PTX text, by kernel name.
fn entry_parameters(ptx: &str) -> Vec<(String, usize)> {
    let mut entries = Vec::new();
    let mut lines = ptx.lines();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.trim().strip_prefix(".visible .entry ") {
            let name = rest.split('(').next().unwrap_or_default().to_string();
            let mut count = 0;
            for parameter in lines.by_ref() {
                if parameter.trim().starts_with(".param") {
                    count += 1;
                }
                if parameter.contains(')') {
                    break;
                }
            }
            entries.push((name, count));
        }
    }
    entries
}

#[test]
fn every_kernel_lowers_to_ptx_that_ptxas_accepts_for_sm_80_and_sm_90() {
    use kiln_targets::lower::nvptx::{assemble, find_libdevice, find_ptxas, lower_to_ptx};
    let libdevice = find_libdevice();
    let ptxas = find_ptxas();
    if std::env::var("KILN_REQUIRE_PTXAS").is_ok() {
        assert!(
            ptxas.is_some() && libdevice.is_some(),
            "KILN_REQUIRE_PTXAS is set but ptxas or libdevice is missing (run scripts/setup.sh)"
        );
    }
    let only = std::env::var("KILN_TEST_MODEL").ok();
    for model in models().into_iter().filter(|m| only.as_ref().is_none_or(|o| &m.name == o)) {
        let mut graph = load_model(&model.model).expect("imports");
        fused(&mut graph, Precision::F32);
        // Every variant of every group, shape-bucket variants included.
        let generated: Vec<_> =
            graph.groups().keys().flat_map(|&g| generate_variants(&graph, g).expect("generates")).collect();
        let kernels: Vec<_> = generated.iter().map(|g| &g.kernel).collect();
        for chip in ["sm_80", "sm_90"] {
            let ptx = lower_to_ptx(&kernels, chip, libdevice.as_deref())
                .unwrap_or_else(|e| panic!("{}: {chip}: {e}", model.name));
            assert!(ptx.contains(&format!(".target {chip}")), "{}", model.name);
            let entries = entry_parameters(&ptx);
            assert_eq!(entries.len(), kernels.len(), "{}: entries", model.name);
            for kernel in &kernels {
                let count = entries.iter().find(|(name, _)| name == &kernel.name).map(|(_, c)| *c);
                assert_eq!(count, Some(kernel.params.len()), "{}: {} parameters", model.name, kernel.name);
                let block = format!(".reqntid {}, 1, 1", kernel.block_threads);
                assert!(ptx.contains(&block), "{}: {} lacks {block}", model.name, kernel.name);
            }
            if let Some(ptxas) = &ptxas {
                let assembly =
                    assemble(ptxas, &ptx, chip).unwrap_or_else(|log| panic!("{}: ptxas {chip}:\n{log}", model.name));
                assert!(assembly.cubin.starts_with(b"\x7fELF"), "{}: {chip} cubin is an ELF file", model.name);
                for kernel in assembly.kernels {
                    eprintln!(
                        "{} {chip} {}: {} registers, {} B spill stores, {} B spill loads, {} B shared",
                        model.name,
                        kernel.name,
                        kernel.registers,
                        kernel.spill_stores,
                        kernel.spill_loads,
                        kernel.shared_bytes
                    );
                }
            }
        }
    }
}

#[test]
fn every_group_runs_correctly_in_f16_and_bf16() {
    let seed = run_seed();
    eprintln!("kernel test seed {seed} (replay with KILN_TEST_SEED={seed})");
    let mut failures = Vec::new();
    for name in ["bert-hf5", "llama-hf5", "qwen2-dynamo", "distilbert-legacy"] {
        let model = models().into_iter().find(|m| m.name == name).expect("a testdata model");
        for precision in [Precision::F16, Precision::Bf16] {
            let mut graph = load_model(&model.model).expect("imports");
            fused(&mut graph, precision);
            let bindings: SymbolBindings = [("batch".into(), 2), ("seq".into(), 5)].into();
            let inputs = random_model_inputs(&graph, 2, 5, seed, true);
            // The kernels round once per store, the evaluator after every op: compare loosely.
            failures.extend(check_every_group(
                &format!("{name} {}", precision.name()),
                &graph,
                &inputs,
                &bindings,
                seed,
                3e-2,
            ));
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// The kernels of a small model, fixed shapes, for snapshots.
fn snapshot_kernels() -> Vec<kiln_targets::generate::GeneratedKernel> {
    let model = models().into_iter().find(|m| m.name == "llama-dynamo").expect("a model with every kernel kind");
    let mut graph = load_model(&model.model).expect("imports");
    fused(&mut graph, Precision::F32);
    graph.groups().keys().map(|&g| generate_kernel(&graph, g).expect("generates")).collect()
}

#[test]
fn snapshots_of_one_kernel_of_each_kind_as_kernel_ir_mlir_and_ptx() {
    use kiln_targets::lower::nvptx::{lower_to_ptx, nvptx_module};
    let kernels = snapshot_kernels();
    let mut seen = std::collections::BTreeSet::new();
    for generated in &kernels {
        let kind = generated.kernel.name.split_once('_').map(|(_, kind)| kind.to_string()).expect("g<N>_<kind>");
        if !seen.insert(kind.clone()) {
            continue;
        }
        let kernel = &generated.kernel;
        insta::assert_snapshot!(format!("kernel_ir_{kind}"), kiln_runtime::kernel::print_kernel(kernel));
        // No libdevice path in the snapshot: it differs between machines.
        insta::assert_snapshot!(format!("mlir_{kind}"), nvptx_module(&[kernel], "sm_90", None).expect("lowers"));
        let ptx =
            lower_to_ptx(&[kernel], "sm_90", kiln_targets::lower::nvptx::find_libdevice().as_deref()).expect("PTX");
        insta::assert_snapshot!(format!("ptx_{kind}"), ptx);
    }
    assert_eq!(seen.len(), 5, "kinds seen: {seen:?}");
    // The one-row variant of the first matmul against an n-by-k weight.
    let model = models().into_iter().find(|m| m.name == "llama-dynamo").expect("the snapshot model");
    let mut graph = load_model(&model.model).expect("imports");
    fused(&mut graph, Precision::F32);
    let skinny = graph
        .groups()
        .keys()
        .flat_map(|&g| generate_variants(&graph, g).expect("generates"))
        .find(|g| g.kernel.name.ends_with("_matmul_rows1"))
        .expect("a one-row variant");
    insta::assert_snapshot!("kernel_ir_matmul_rows1", kiln_runtime::kernel::print_kernel(&skinny.kernel));
}

#[test]
fn every_group_runs_correctly_in_wave64_and_lowers_to_amdgpu_that_llvm_mc_accepts() {
    use kiln_targets::lower::amdgpu::{assemble_amdgpu, find_llvm_mc, lower_to_amdgpu};
    let seed = run_seed();
    eprintln!("kernel test seed {seed} (replay with KILN_TEST_SEED={seed})");
    let llvm_mc = find_llvm_mc().expect("llvm-mc of LLVM 22 (scripts/setup.sh installs it)");
    let mut failures = Vec::new();
    let only = std::env::var("KILN_TEST_MODEL").ok();
    for model in models().into_iter().filter(|m| only.as_ref().is_none_or(|o| &m.name == o)) {
        let mut graph = load_model(&model.model).expect("imports");
        fused(&mut graph, Precision::F32);
        let static_shape = graph.value_type(graph.input_values()[0]).constant_shape();
        let (batch, seq, bindings): (usize, usize, SymbolBindings) = match &static_shape {
            Some(shape) => (shape[0], shape[1], SymbolBindings::new()),
            None => (2, 6, [("batch".into(), 2), ("seq".into(), 6)].into()),
        };
        let inputs = random_model_inputs(&graph, batch, seq, seed, true);
        failures.extend(check_every_group_with_warps(
            &format!("{} wave64", model.name),
            &graph,
            &inputs,
            &bindings,
            seed,
            1e-4,
            64,
        ));
        // Every variant of every group, shape-bucket variants included.
        let generated: Vec<_> =
            graph.groups().keys().flat_map(|&g| generate_variants(&graph, g).expect("generates")).collect();
        let kernels: Vec<_> = generated.iter().map(|g| &g.kernel).collect();
        for chip in ["gfx90a", "gfx942"] {
            let assembly = lower_to_amdgpu(&kernels, chip).unwrap_or_else(|e| panic!("{}: {chip}: {e}", model.name));
            assert!(assembly.contains(&format!("amdgcn-amd-amdhsa--{chip}")), "{}: {chip}", model.name);
            assemble_amdgpu(&llvm_mc, &assembly, chip)
                .unwrap_or_else(|log| panic!("{}: llvm-mc {chip}:\n{log}", model.name));
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_kernel_of_the_real_minilm_runs_correctly_in_the_simulator_and_assembles() {
    let mut graph = load_model(&crate::common::minilm_directory()).expect("MiniLM imports");
    fused(&mut graph, Precision::F32);
    let seed = run_seed();
    let bindings: SymbolBindings = [("batch".into(), 2), ("seq".into(), 3)].into();
    let inputs = random_model_inputs(&graph, 2, 3, seed, false);
    let failures = check_every_group("minilm", &graph, &inputs, &bindings, seed, 1e-4);
    assert!(failures.is_empty(), "seed {seed}: {}", failures.join("\n"));
    let generated: Vec<_> = graph.groups().keys().map(|&g| generate_kernel(&graph, g).expect("generates")).collect();
    let kernels: Vec<_> = generated.iter().map(|g| &g.kernel).collect();
    let libdevice = kiln_targets::lower::nvptx::find_libdevice();
    let ptx = kiln_targets::lower::nvptx::lower_to_ptx(&kernels, "sm_90", libdevice.as_deref()).expect("PTX");
    if let Some(ptxas) = kiln_targets::lower::nvptx::find_ptxas() {
        kiln_targets::lower::nvptx::assemble(&ptxas, &ptx, "sm_90").expect("ptxas accepts MiniLM's kernels");
    }
}

#[test]
fn elementwise_kernels_move_whole_vectors_where_the_layout_allows() {
    let text = r#"graph {
  input %x : f32[batch, seq, 8]
  input %y : f32[batch, seq, 8]
  input %t : f32[seq, batch, 8]
  %bias = constant : f32[8] dense<[0.5, -1.0, 2.0, 0.25, 0.0, 1.5, -0.75, 3.0]>
  %sum = add(%x, %y) : f32[batch, seq, 8]
  %biased = add(%sum, %bias) : f32[batch, seq, 8]
  %turned = transpose[permutation=[1, 0, 2]](%t) : f32[batch, seq, 8]
  %z = mul(%biased, %turned) : f32[batch, seq, 8]
  output "z" = %z
}"#;
    let mut graph = kiln_ir::parse_graph(text).expect("parses");
    fused(&mut graph, Precision::F32);
    let groups: Vec<_> = graph.groups().keys().copied().collect();
    assert_eq!(groups.len(), 1, "one elementwise kernel");
    let generated = generate_kernel(&graph, groups[0]).expect("generates");
    let printed = kiln_runtime::kernel::print_kernel(&generated.kernel);
    // x and y are read where the output is written: one 16-byte load each; t
    // goes through a transpose and is read element by element.
    assert!(printed.contains("x.v4[") && printed.contains("y.v4["), "{printed}");
    assert!(!printed.contains("t.v4["), "{printed}");
    assert!(printed.contains("z.v4["), "{printed}");
    let libdevice = kiln_targets::lower::nvptx::find_libdevice();
    let ptx =
        kiln_targets::lower::nvptx::lower_to_ptx(&[&generated.kernel], "sm_80", libdevice.as_deref()).expect("lowers");
    assert_eq!(ptx.matches("ld.global.v4").count(), 2, "{ptx}");
    assert_eq!(ptx.matches("st.global.v4").count(), 1, "{ptx}");
    for (batch, seq) in [(1usize, 1usize), (3, 5), (2, 17)] {
        let mut random = crate::common::Random(batch as u64 * 31 + seq as u64);
        let mut values =
            |count: usize| -> Vec<f32> { (0..count).map(|_| (random.next() % 2000) as f32 / 1000.0 - 1.0).collect() };
        let count = batch * seq * 8;
        let inputs: HashMap<String, Tensor> = [
            ("x".to_string(), Tensor::from_f32(kiln_ir::DType::F32, vec![batch, seq, 8], values(count))),
            ("y".to_string(), Tensor::from_f32(kiln_ir::DType::F32, vec![batch, seq, 8], values(count))),
            ("t".to_string(), Tensor::from_f32(kiln_ir::DType::F32, vec![seq, batch, 8], values(count))),
        ]
        .into();
        let bindings: SymbolBindings = [("batch".into(), batch as i64), ("seq".into(), seq as i64)].into();
        let failures = check_every_group("vectors", &graph, &inputs, &bindings, run_seed(), 1e-6);
        assert!(failures.is_empty(), "{failures:?}");
    }
}

/// The kernel IR filetests (`testdata/kernels/*.kir`) on the lowering side:
/// each kernel the verifier accepts has its MLIR snapshotted and lowers to
/// PTX that ptxas accepts for sm_90 (when ptxas is installed).
#[test]
fn every_kir_filetest_kernel_lowers_and_its_mlir_is_snapshotted() {
    use kiln_targets::lower::nvptx::{assemble, find_libdevice, find_ptxas, lower_to_ptx, nvptx_module};
    let directory = testdata().join("kernels");
    let mut files: Vec<_> = std::fs::read_dir(&directory)
        .expect("testdata/kernels")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "kir"))
        .collect();
    files.sort();
    let (libdevice, ptxas) = (find_libdevice(), find_ptxas());
    let mut lowered = 0;
    for path in files {
        let name = path.file_stem().expect("a name").to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).expect("reads");
        let kernel = kiln_runtime::kernel::parse_kernel(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        if kiln_runtime::kernel::verify_kernel(&kernel).is_err() {
            continue; // A filetest of a kernel the verifier refuses: nothing to lower.
        }
        let mlir = nvptx_module(&[&kernel], "sm_90", None).unwrap_or_else(|e| panic!("{name}: {e}"));
        insta::assert_snapshot!(format!("kir_{name}_mlir"), mlir);
        let ptx = lower_to_ptx(&[&kernel], "sm_90", libdevice.as_deref()).unwrap_or_else(|e| panic!("{name}: {e}"));
        // `// expect ptx: cvt.rmi.s32.f32, fma.rn.f32` names instructions the PTX must hold.
        for line in text.lines().filter_map(|l| l.trim().strip_prefix("// expect ptx:")) {
            for instruction in line.split(',').map(str::trim) {
                // The whole opcode: followed by its operands, `;` or the line's end.
                let found = ptx.lines().any(|l| {
                    let rest = l.trim_start().strip_prefix(instruction);
                    rest.is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', ';']))
                });
                assert!(found, "{name}: the PTX has no `{instruction}`:\n{ptx}");
            }
        }
        if let Some(ptxas) = &ptxas {
            assemble(ptxas, &ptx, "sm_90").unwrap_or_else(|log| panic!("{name}: ptxas:\n{log}"));
        }
        // AMD lowers it too, or names the operation it has no lowering for.
        if let Err(error) = kiln_targets::lower::amdgpu::lower_to_amdgpu(&[&kernel], "gfx942") {
            assert!(error.contains("has no AMDGPU lowering"), "{name}: gfx942: {error}");
        }
        lowered += 1;
    }
    assert!(lowered >= 4, "{lowered} .kir kernels lowered");
}

/// AMD lowers `fma` and the directed float→integer conversions to the
/// hardware's own instructions (no ROCm device libraries are linked).
#[test]
fn fma_and_directed_float_to_integer_lower_to_amdgpu_instructions() {
    let kernel = kiln_runtime::kernel::parse_kernel(
        "kernel amd_ops(in x: f32*, out y: f32*, out z: i32*) threads 64 blocks 1 {
  let v0: i64 = i64(thread)
  y[v0] = fma(x[v0], x[v0], 1.0)
  z[v0] = (convert(i32, rm, x[v0]) + convert(i32, rn, x[v0]))
}
",
    )
    .expect("parses");
    let assembly = kiln_targets::lower::amdgpu::lower_to_amdgpu(&[&kernel], "gfx942").expect("lowers");
    for instruction in ["v_fma", "v_floor_f32", "v_rndne_f32", "v_cvt_i32_f32"] {
        assert!(assembly.contains(instruction), "no {instruction} in:\n{assembly}");
    }
}

/// The text of `kernel` without its own and its parameters' names (what
/// differs between the layers of a model).
fn anonymous_text(kernel: &kiln_runtime::kernel::Kernel) -> String {
    let mut anonymous = kernel.clone();
    anonymous.name.clear();
    anonymous.params.iter_mut().for_each(|param| match param {
        kiln_runtime::kernel::Param::Buffer { name, .. } | kiln_runtime::kernel::Param::Scalar { name, .. } => {
            name.clear()
        }
    });
    kiln_runtime::kernel::print_kernel(&anonymous)
}

/// Runs every tensor-core variant of `graph`'s groups (whatever its row
/// bucket: the kernels compute any shape) on the checked machine and, with
/// `interpreter`, the checked interpreter, against the evaluator, and once
/// with the machine's counters, which must find no shared-memory bank conflict; a kernel
/// equal to one in `seen` (up to names: the same layer shape) runs once.
/// Returns the failures and how many kernels ran.
fn check_tensor_core_variants(
    name: &str,
    graph: &Graph,
    inputs: &HashMap<String, Tensor>,
    bindings: &SymbolBindings,
    seed: u64,
    interpreter: bool,
    seen: &mut std::collections::HashSet<String>,
) -> (Vec<String>, usize) {
    use kiln_runtime::machine::{run_on_arguments, MachineOptions};
    let values = evaluate_all(graph, inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (mut failures, mut ran) = (Vec::new(), 0);
    for &group in graph.groups().keys() {
        let variants = generate_variants(graph, group).unwrap_or_else(|e| panic!("{name}: {e}"));
        for generated in variants.into_iter().filter(|v| v.kernel.uses_tensor_cores()) {
            if !seen.insert(anonymous_text(&generated.kernel)) {
                continue;
            }
            let arguments = simulator_arguments(&generated, &values, bindings);
            let kernel = &generated.kernel;
            let mut runs = Vec::new();
            if interpreter {
                let mut interpreted = arguments.clone();
                let started = std::time::Instant::now();
                let options = SimOptions { seed, ..SimOptions::default() };
                let result = run_kernel(kernel, &mut interpreted, bindings, options);
                runs.push(("interpreter", result, interpreted, started.elapsed()));
            }
            // The swizzled stages: neither the cp.async stores nor the fragment loads conflict.
            let mut counted = arguments.clone();
            let counting = MachineOptions { counters: true, seed, ..MachineOptions::default() };
            match run_on_arguments(kernel, &mut counted, bindings, counting) {
                Ok(counters) if counters.shared_conflict_wavefronts > 0 => failures.push(format!(
                    "{name}: {}: {} shared-memory conflict wavefronts of {}",
                    kernel.name, counters.shared_conflict_wavefronts, counters.shared_wavefronts
                )),
                Ok(_) => {}
                Err(error) => failures.push(format!("{name}: {} (counted): {error}", kernel.name)),
            }
            let mut machine = arguments;
            let started = std::time::Instant::now();
            let checked = MachineOptions { check: true, seed, ..MachineOptions::default() };
            let result = run_on_arguments(kernel, &mut machine, bindings, checked).map(|_| ());
            runs.push(("checked machine", result, machine, started.elapsed()));
            ran += 1;
            for (simulator, result, arguments, time) in runs {
                if std::env::var("KILN_TEST_TIMING").is_ok() {
                    eprintln!("{name} {} on the {simulator}: {time:.2?}", kernel.name);
                }
                if let Err(error) = result {
                    failures.push(format!("{name}: {} ({simulator}): {error}", kernel.name));
                    continue;
                }
                for (binding, argument) in generated.bindings.iter().zip(&arguments) {
                    let (ParamBinding::Output(value), SimArgument::Buffer(buffer)) = (binding, argument) else {
                        continue;
                    };
                    // bf16 outputs round once where the evaluator rounds per op: a few ulps of bf16.
                    if let Err(problem) = compare(&buffer.data, &values[value], 3e-2) {
                        let output = graph.value_name(*value);
                        failures.push(format!("{name}: {} ({simulator}) `{output}`: {problem}", kernel.name));
                    }
                }
            }
        }
    }
    (failures, ran)
}

#[test]
fn tensor_core_matmuls_match_the_evaluator_in_bf16_f16_and_tf32_at_ragged_shapes() {
    let seed = run_seed();
    eprintln!("kernel test seed {seed} (replay with KILN_TEST_SEED={seed})");
    let mut failures = Vec::new();
    let mut sources: Vec<(String, std::path::PathBuf)> = models().into_iter().map(|m| (m.name, m.model)).collect();
    sources.push(("minilm".into(), crate::common::minilm_directory()));
    let only = std::env::var("KILN_TEST_MODEL").ok();
    sources.retain(|(name, _)| only.as_ref().is_none_or(|o| name == o));
    let mut total = 0;
    // Rows (batch·seq) that are no multiple of any tile: 7, and 3·45 = 135.
    // The small models run on both checked simulators; MiniLM (its kernels
    // take seconds on the interpreter) on the checked machine, each
    // precision at one of the shapes, each distinct kernel once.
    for (name, path) in sources {
        let small = name != "minilm";
        for precision in [Precision::F16, Precision::Bf16, Precision::Tf32] {
            let mut graph = load_model(&path).expect("imports");
            fused(&mut graph, precision);
            let (mut ran, mut seen) = (0, std::collections::HashSet::new());
            let static_shape = graph.value_type(graph.input_values()[0]).constant_shape();
            let fixed = static_shape.as_ref().map(|shape| [(shape[0], shape[1])]);
            let shapes: &[(usize, usize)] = match (&fixed, small, precision) {
                (Some(fixed), _, _) => fixed,
                (None, true, _) => &[(1, 7), (3, 45)],
                (None, false, Precision::Bf16) => &[(3, 45)],
                (None, false, _) => &[(1, 7)],
            };
            for &(batch, seq) in shapes {
                let bindings: SymbolBindings = match static_shape {
                    Some(_) => SymbolBindings::new(),
                    None => [("batch".into(), batch as i64), ("seq".into(), seq as i64)].into(),
                };
                let inputs = random_model_inputs(&graph, batch, seq, seed, true);
                let label = format!("{name} {} {batch}x{seq}", precision.name());
                let (found, count) =
                    check_tensor_core_variants(&label, &graph, &inputs, &bindings, seed, small, &mut seen);
                failures.extend(found);
                ran += count;
            }
            total += ran;
            let must_have = ["bert-hf5", "llama-hf5", "qwen2-dynamo", "distilbert-legacy", "minilm"];
            if ran == 0 && must_have.contains(&name.as_str()) {
                failures.push(format!("{name} {}: no tensor-core kernel", precision.name()));
            }
        }
    }
    // Every model with a matmul against a weight has tensor-core kernels; MiniLM surely does.
    assert!(total >= 12, "{total} tensor-core kernels ran");
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// The mma, ldmatrix and cp.async statements of the loop of `body` that
/// holds the mma instructions (the main loop), and its trip count.
fn main_loop_counts(body: &[kiln_runtime::kernel::Stmt]) -> Option<(usize, usize, usize, usize)> {
    use kiln_runtime::kernel::Stmt;
    fn count(body: &[Stmt], what: &dyn Fn(&Stmt) -> bool) -> usize {
        body.iter()
            .map(|stmt| {
                what(stmt) as usize
                    + match stmt {
                        Stmt::If { then, otherwise, .. } => count(then, what) + count(otherwise, what),
                        Stmt::For { body, .. } => count(body, what),
                        _ => 0,
                    }
            })
            .sum()
    }
    body.iter().find_map(|stmt| match stmt {
        Stmt::For {
            body, end: kiln_runtime::kernel::Expr::Literal(kiln_runtime::kernel::Literal::I64(trips)), ..
        } if count(body, &|s| matches!(s, Stmt::MatrixMultiplyAccumulate { .. })) > 0 => Some((
            count(body, &|s| matches!(s, Stmt::MatrixMultiplyAccumulate { .. })),
            count(body, &|s| matches!(s, Stmt::LoadMatrix { .. })),
            count(body, &|s| matches!(s, Stmt::AsyncCopy { .. })),
            *trips as usize,
        )),
        _ => None,
    })
}

/// The tensor-core matmuls of MiniLM in bf16, f16 and tf32, assembled for
/// sm_80 and sm_90 and read back as SASS: the main loop issues one HMMA per
/// kernel-IR mma, one LDSM per ldmatrix and one LDGSTS.E.BYPASS.128 per
/// cp.async (times ptxas's unroll factor), and no other loads (tf32 reads its
/// fragments by LDS), stores or FFMA; no kernel touches local memory or spills.
#[test]
fn tensor_core_matmul_main_loops_are_hmma_ldsm_and_ldgsts_in_sass() {
    use kiln_targets::lower::nvptx::{assemble, find_libdevice, find_ptxas, lower_to_ptx};
    use kiln_targets::lower::sass::{disassemble, find_nvdisasm, functions, Function};
    let (Some(ptxas), Some(nvdisasm)) = (find_ptxas(), find_nvdisasm()) else {
        assert!(std::env::var_os("KILN_REQUIRE_PTXAS").is_none(), "ptxas and nvdisasm are required (scripts/setup.sh)");
        eprintln!("skipped: ptxas or nvdisasm is not installed (scripts/setup.sh installs both)");
        return;
    };
    let (mut kernels, mut seen) = (Vec::new(), std::collections::HashSet::new());
    for precision in [Precision::Bf16, Precision::F16, Precision::Tf32] {
        let mut graph = load_model(&crate::common::minilm_directory()).expect("MiniLM imports");
        fused(&mut graph, precision);
        for &group in graph.groups().keys() {
            for generated in generate_variants(&graph, group).expect("generates") {
                if generated.kernel.uses_tensor_cores() && seen.insert(anonymous_text(&generated.kernel)) {
                    let mut kernel = generated.kernel.clone();
                    kernel.name = format!("{}_{}", kernel.name, precision.name());
                    kernels.push(kernel);
                }
            }
        }
    }
    assert!(kernels.len() >= 2, "{} tensor-core kernels", kernels.len());
    let references: Vec<&kiln_runtime::kernel::Kernel> = kernels.iter().collect();
    for chip in ["sm_80", "sm_90"] {
        let ptx = lower_to_ptx(&references, chip, find_libdevice().as_deref()).expect("lowers");
        let assembly = assemble(&ptxas, &ptx, chip).unwrap_or_else(|log| panic!("ptxas {chip}:\n{log}"));
        let listing = disassemble(&nvdisasm, &assembly.cubin).expect("disassembles");
        let sass = functions(&listing);
        for kernel in &kernels {
            let name = &kernel.name;
            let function =
                sass.iter().find(|f| &f.name == name).unwrap_or_else(|| panic!("{chip}: no SASS for {name}"));
            let resources = assembly.kernels.iter().find(|k| &k.name == name).expect("a resource report");
            assert_eq!((resources.spill_stores, resources.spill_loads), (0, 0), "{chip} {name} spills");
            let local = Function::count(&function.instructions, "LDL") + Function::count(&function.instructions, "STL");
            assert_eq!(local, 0, "{chip} {name} uses local memory");
            let (mma, ldmatrix, copies, trips) = main_loop_counts(&kernel.body).expect("a main loop");
            // tf32 fragments come by 32-bit shared loads (ldmatrix moves 16-bit elements).
            let tf32 = name.ends_with("_tf32");
            let hmma_opcode = if tf32 { "HMMA.1688.F32.TF32" } else { "HMMA.16816.F32" };
            // A loop ptxas kept (maybe unrolled some times), or the fully unrolled steps: from
            // the first barrier (the prologue's copies precede it) to the last LDSM (the
            // epilogue's stores may mingle with the last HMMAs after it), where the last
            // STAGES − 1 steps copy nothing.
            let (body, unroll, copying_steps) = match function.hottest_loop("HMMA") {
                Some(body) => {
                    let unroll = Function::count(body, hmma_opcode) / mma;
                    (body, unroll, unroll)
                }
                None => {
                    let instructions = &function.instructions;
                    let first =
                        instructions.iter().position(|i| i.opcode().starts_with("BAR.SYNC")).expect("a barrier");
                    let fragment_load = |i: &kiln_targets::lower::sass::Instruction| {
                        i.opcode().starts_with("LDSM") || (tf32 && i.opcode().starts_with("LDS"))
                    };
                    let last = instructions.iter().rposition(fragment_load).expect("a fragment load");
                    let stages = kiln_targets::generate::tensor_core_matmul::STAGES as usize;
                    let all_hmma = Function::count(instructions, hmma_opcode);
                    assert_eq!(all_hmma, trips * mma, "{chip} {name}: HMMA of the unrolled main loop");
                    (&instructions[first..=last], trips, trips.saturating_sub(stages - 1))
                }
            };
            let hmma = Function::count(body, hmma_opcode);
            let unrolled = function.hottest_loop("HMMA").is_none();
            assert!(unrolled || hmma == unroll * mma, "{chip} {name}: HMMA in the main loop ({mma} mma a step)");
            assert!(unroll >= 1, "{chip} {name}: no HMMA in the main loop");
            assert_eq!(Function::count(body, "LDSM.16.M88.4"), unroll * ldmatrix, "{chip} {name}: LDSM");
            let ldgsts = Function::count(body, "LDGSTS.E.BYPASS.128");
            assert_eq!(ldgsts, copying_steps * copies, "{chip} {name}: LDGSTS");
            assert_eq!(Function::count(body, "LDGSTS"), ldgsts, "{chip} {name}: every cp.async is 16 bytes");
            let plain = |opcode: &str| {
                body.iter().filter(|i| i.opcode() == opcode || i.opcode().starts_with(&format!("{opcode}."))).count()
            };
            let forbidden: &[&str] =
                if tf32 { &["LDG", "STS", "STG", "FFMA"] } else { &["LDG", "LDS", "STS", "STG", "FFMA"] };
            for &opcode in forbidden {
                assert_eq!(plain(opcode), 0, "{chip} {name}: {opcode} in the main loop");
            }
            // The cost model's register estimate (which chooses variants before ptxas runs) is close.
            let tile = kiln_targets::generate::tensor_core_matmul::TileConfig::ALL
                .into_iter()
                .find(|t| name.contains(&format!("_{}_", t.name())))
                .expect("a tile in the name");
            let estimated = tile.model(if tf32 { 4 } else { 2 }).registers;
            let off = (estimated - resources.registers as i64).abs();
            assert!(
                off <= 24,
                "{chip} {name}: {} registers, the cost model estimates {estimated}",
                resources.registers
            );
            let threads = kernel.block_threads;
            let by_registers = 65536 / (threads * resources.registers.max(1));
            let by_shared = (228 * 1024) / (kernel.shared_bytes() as u32).max(1);
            let occupancy = by_registers.min(by_shared).min(2048 / threads);
            eprintln!(
                "{chip} {name}: {} registers, {} B shared, {} threads: {occupancy} blocks/SM on sm_90 ({} warps), \
                 main loop {hmma} HMMA (unrolled {unroll}x)",
                resources.registers,
                kernel.shared_bytes(),
                threads,
                occupancy * threads / 32
            );
        }
    }
}

/// The tensor-core edges the models do not reach: K = 40 (a multiple of 8
/// but not of a stage, so the last stage's k chunks are zero-filled), N = 72
/// (no multiple of any tile), ragged rows, and a batched B (an activation
/// `[batch, n, k]`, each batch its own blocks), under `--precision tf32`
/// (f32 graph inputs stay stored tensors the copies read).
#[test]
fn tensor_core_matmuls_handle_k_tails_and_batched_operands() {
    let weight: Vec<String> = (0..72 * 40).map(|i| format!("{:.4}", ((i * 37 % 101) as f32 - 50.0) / 64.0)).collect();
    let text = format!(
        "graph {{
  input %x : f32[batch, seq, 40]
  input %y : f32[batch, 72, 40]
  %w = constant : f32[72, 40] dense<[{}]>
  %a = matmul[transpose_b=true](%x, %w) : f32[batch, seq, 72]
  %b = matmul[transpose_b=true](%x, %y) : f32[batch, seq, 72]
  output \"a\" = %a
  output \"b\" = %b
}}",
        weight.join(", ")
    );
    let mut graph = kiln_ir::text::parse_graph(&text).expect("parses");
    fused(&mut graph, Precision::Tf32);
    let seed = run_seed();
    let mut failures = Vec::new();
    let mut ran = 0;
    for (batch, seq) in [(1, 7), (3, 45)] {
        let bindings: SymbolBindings = [("batch".into(), batch as i64), ("seq".into(), seq as i64)].into();
        let values = |count: usize, salt: usize| -> Vec<f32> {
            (0..count).map(|i| (((i * 7919 + salt + seed as usize % 1000) % 97) as f32 - 48.0) / 32.0).collect()
        };
        let inputs: HashMap<String, Tensor> = [
            ("x".to_string(), Tensor::from_f32(kiln_ir::DType::F32, vec![batch, seq, 40], values(batch * seq * 40, 1))),
            ("y".to_string(), Tensor::from_f32(kiln_ir::DType::F32, vec![batch, 72, 40], values(batch * 72 * 40, 2))),
        ]
        .into();
        let label = format!("k40 tf32 {batch}x{seq}");
        let (found, count) =
            check_tensor_core_variants(&label, &graph, &inputs, &bindings, seed, true, &mut Default::default());
        failures.extend(found);
        ran += count;
    }
    // Both matmuls, every tile: the weight's and the batched one's.
    assert!(ran >= 4, "{ran} tensor-core kernels ran");
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
