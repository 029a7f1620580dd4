//! The optimization pipeline on every testdata model and the real MiniLM:
//! evaluation equivalence after every pass, recognizers, kernel counts,
//! precision error and the memory plan.

use std::collections::HashMap;

use kiln_compiler::load_model;
use kiln_ir::{evaluate, DType, Graph, KernelKind, Op, SymbolBindings, Tensor};
use kiln_passes::fuse::contract::GroupContract;
use kiln_passes::fuse::form_fusion_groups::{role, Role};
use kiln_passes::plan::{BufferKind, ALIGNMENT};
use kiln_passes::{MemoryPlan, Phase, Pipeline, PipelineOptions, Precision};

use crate::common::{minilm_directory, models, random_model_inputs, Random};

/// Equal within `tolerance · max |expected|`, NaN matching NaN.
fn close(got: &Tensor, expected: &Tensor, tolerance: f64) -> Result<(), String> {
    if got.shape != expected.shape {
        return Err(format!("shape {:?} vs {:?}", got.shape, expected.shape));
    }
    let (a, b) = (got.to_f64_vec(), expected.to_f64_vec());
    let scale = b.iter().filter(|v| v.is_finite()).fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
    for (index, (x, y)) in a.iter().zip(&b).enumerate() {
        let same = (x.is_nan() && y.is_nan()) || (x - y).abs() <= tolerance * scale;
        if !same {
            return Err(format!("element {index}: {x} vs {y} (scale {scale})"));
        }
    }
    Ok(())
}

fn options(stop_after: Phase, precision: Precision) -> PipelineOptions {
    PipelineOptions { verify_each_pass: true, stop_after, precision, ..PipelineOptions::default() }
}

/// Runs the pipeline, checking after every pass that the graph still computes
/// what the imported one does on `inputs`.
fn run_checking_every_pass(name: &str, graph: &mut Graph, inputs: &[HashMap<String, Tensor>]) -> Option<MemoryPlan> {
    let references: Vec<Vec<(String, Tensor)>> =
        inputs.iter().map(|i| evaluate(graph, i).expect("the imported graph evaluates")).collect();
    let mut checked = 0;
    let plan = Pipeline::new(options(Phase::Plan, Precision::F32))
        .run(graph, &mut |phase, pass, after| {
            checked += 1;
            for (input, reference) in inputs.iter().zip(&references) {
                let outputs = evaluate(after, input).unwrap_or_else(|e| panic!("{name}: after {phase}/{pass}: {e}"));
                for ((output, got), (_, expected)) in outputs.iter().zip(reference) {
                    if let Err(problem) = close(got, expected, 1e-4) {
                        panic!("{name}: after {phase}/{pass}, `{output}` differs: {problem}");
                    }
                }
            }
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(checked >= 5, "{name}: only {checked} passes changed the graph");
    plan
}

fn count(graph: &Graph, name: &str) -> usize {
    graph.node_indices().filter(|&n| graph.node(n).op.name() == name).count()
}

#[test]
fn every_pass_preserves_every_testdata_model_on_padded_random_model_inputs() {
    for model in models() {
        let mut graph = load_model(&model.model).expect("imports");
        let static_shape = graph.value_type(graph.input_values()[0]).constant_shape();
        let inputs: Vec<_> = match static_shape {
            Some(shape) => vec![random_model_inputs(&graph, shape[0], shape[1], 1, true)],
            None => vec![random_model_inputs(&graph, 3, 6, 1, true), random_model_inputs(&graph, 4, 9, 2, true)],
        };
        run_checking_every_pass(&model.name, &mut graph, &inputs);
    }
}

#[test]
fn every_pass_preserves_minilm() {
    let mut graph = load_model(&minilm_directory()).expect("MiniLM imports");
    let inputs = vec![random_model_inputs(&graph, 3, 8, 7, true)];
    run_checking_every_pass("minilm", &mut graph, &inputs);
    let groups = graph.groups().len();
    assert_eq!(count(&graph, "attention"), 6);
    assert!(groups <= 7 * 6 + 4, "MiniLM has {groups} kernels");
}

/// The expected layer count of each testdata family.
const LAYERS: usize = 2;

#[test]
fn recognizers_find_every_block_of_every_exporter() {
    for model in models() {
        let mut graph = load_model(&model.model).expect("imports");
        Pipeline::new(options(Phase::Recognize, Precision::F32))
            .run(&mut graph, &mut |_, _, _| {})
            .expect("recognizes");
        let name = &model.name;
        assert_eq!(count(&graph, "attention"), LAYERS, "{name}: attention");
        for leftover in
            ["softmax", "reduce_mean", "erf", "sqrt", "reciprocal", "pow", "sigmoid", "neg", "is_nan", "shape"]
        {
            assert_eq!(count(&graph, leftover), 0, "{name}: `{leftover}` left after recognition");
        }
        let decoder = model.model.to_string_lossy().contains("llama")
            || model.model.to_string_lossy().contains("qwen2")
            || model.model.to_string_lossy().contains("mistral");
        if decoder {
            assert_eq!(count(&graph, "rms_norm"), 2 * LAYERS + 1, "{name}: rms_norm");
            assert_eq!(count(&graph, "rope"), 2 * LAYERS, "{name}: rope");
            assert_eq!(count(&graph, "swiglu"), LAYERS, "{name}: swiglu");
            let causal = graph.node_indices().all(|n| match &graph.node(n).op {
                Op::Attention { mask, .. } => mask.is_causal() && mask.has_padding(),
                _ => true,
            });
            assert!(causal, "{name}: decoder attention must be causal with padding");
        } else {
            assert_eq!(count(&graph, "layer_norm"), 2 * LAYERS + 1, "{name}: layer_norm");
            assert_eq!(count(&graph, "gelu"), LAYERS, "{name}: gelu");
        }
    }
}

#[test]
fn canonicalize_leaves_no_shape_computation() {
    for model in models() {
        let mut graph = load_model(&model.model).expect("imports");
        Pipeline::new(options(Phase::Canonicalize, Precision::F32))
            .run(&mut graph, &mut |_, _, _| {})
            .expect("canonicalizes");
        for node in graph.node_indices() {
            let op = &graph.node(node).op;
            assert!(!matches!(op, Op::Shape { .. }), "{}: a shape op is left", model.name);
            let shape_input = match op {
                Op::Reshape { .. } | Op::Expand | Op::ConstantOfShape { .. } => {
                    Some(graph.inputs_of(node)[op.input_arity().minimum - 1])
                }
                _ => None,
            };
            if let Some(shape) = shape_input {
                let direct = matches!(graph.node(shape.node).op, Op::Constant(_) | Op::Dims { .. });
                assert!(direct, "{}: `{}` takes its shape from a computation", model.name, graph.node(node).name);
            }
        }
    }
}

#[test]
fn every_model_fits_seven_kernels_per_layer_plus_four() {
    for model in models() {
        let mut graph = load_model(&model.model).expect("imports");
        Pipeline::new(options(Phase::Fuse, Precision::F32)).run(&mut graph, &mut |_, _, _| {}).expect("fuses");
        let kernels = graph.groups().len();
        assert!(kernels <= 7 * LAYERS + 4, "{}: {kernels} kernels", model.name);
        for node in graph.node_indices() {
            let grouped = graph.node(node).group.is_some();
            let folded = matches!(role(&graph, node), Role::Source | Role::View);
            assert!(
                grouped != folded,
                "{}: `{}` is {}",
                model.name,
                graph.node(node).name,
                if grouped { "a view in a group" } else { "in no group" }
            );
        }
        for &id in graph.groups().keys() {
            let contract = GroupContract::of(&graph, id).expect("a contract");
            assert!(!contract.outputs.is_empty(), "{}: g{id} writes nothing", model.name);
            for input in &contract.inputs {
                assert_ne!(graph.node(input.source.node).group, Some(id), "{}: g{id} reads itself", model.name);
            }
            // Only an embedding gather may carry a norm after it; nothing carries a second matmul or attention.
            let second_anchor = contract.prologue.iter().chain(&contract.epilogue).any(|&n| match graph.node(n).op {
                Op::MatMul { .. } | Op::Attention { .. } => true,
                Op::LayerNorm { .. } | Op::RmsNorm { .. } | Op::Softmax { .. } => contract.kind != KernelKind::Gather,
                _ => false,
            });
            assert!(!second_anchor, "{}: g{id} has a second anchor", model.name);
        }
    }
}

/// The lowest cosine similarity between matching rows (last axis) of two tensors.
fn minimum_row_cosine(a: &Tensor, b: &Tensor) -> f64 {
    let width = *a.shape.last().expect("rank ≥ 1");
    let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
    x.chunks(width)
        .zip(y.chunks(width))
        .map(|(p, q)| {
            let dot: f64 = p.iter().zip(q).map(|(u, v)| u * v).sum();
            let norms = p.iter().map(|u| u * u).sum::<f64>().sqrt() * q.iter().map(|v| v * v).sum::<f64>().sqrt();
            if norms == 0.0 {
                1.0
            } else {
                dot / norms
            }
        })
        .fold(1.0, f64::min)
}

#[test]
fn bf16_and_f16_stay_within_cosine_0_999_of_f32() {
    for model in models() {
        let imported = load_model(&model.model).expect("imports");
        let (batch, seq) = match imported.value_type(imported.input_values()[0]).constant_shape() {
            Some(shape) => (shape[0], shape[1]),
            None => (3, 7),
        };
        // No fully padded sequence: its rows carry no meaning to compare.
        let inputs = random_model_inputs(&imported, batch, seq, 3, false);
        let reference = evaluate(&imported, &inputs).expect("f32");
        for precision in [Precision::Bf16, Precision::F16] {
            let mut graph = imported.clone();
            Pipeline::new(options(Phase::Precision, precision)).run(&mut graph, &mut |_, _, _| {}).expect("lowers");
            let lowered_weights = graph.node_indices().any(|n| matches!(&graph.node(n).op, Op::Constant(c) if c.element_count() > 1000 && c.dtype() != DType::F32 && c.dtype().is_float()));
            assert!(lowered_weights, "{}: no weight in {}", model.name, precision.name());
            let outputs = evaluate(&graph, &inputs).expect("the lowered graph evaluates");
            for ((name, got), (_, expected)) in outputs.iter().zip(&reference) {
                assert_eq!(got.dtype, expected.dtype, "{}: output dtype", model.name);
                let cosine = minimum_row_cosine(got, expected);
                eprintln!("{} {name} {}: minimum row cosine {cosine:.6}", model.name, precision.name());
                assert!(cosine >= 0.999, "{}: {name} in {}: minimum row cosine {cosine}", model.name, precision.name());
            }
        }
    }
}

#[test]
fn the_memory_plan_reuses_memory_without_overlap() {
    for model in models() {
        let mut graph = load_model(&model.model).expect("imports");
        let plan = Pipeline::new(options(Phase::Plan, Precision::F32))
            .run(&mut graph, &mut |_, _, _| {})
            .expect("plans")
            .expect("a plan");
        let static_shape = graph.value_type(graph.input_values()[0]).constant_shape();
        let mut random = Random(11);
        for _ in 0..20 {
            let bindings: SymbolBindings = match &static_shape {
                Some(_) => SymbolBindings::new(),
                None => [
                    ("batch".to_string(), 1 + (random.next() % 64) as i64),
                    ("seq".to_string(), 1 + (random.next() % 512) as i64),
                ]
                .into(),
            };
            check_plan(&model.name, &plan, &bindings);
        }
    }
}

fn check_plan(name: &str, plan: &MemoryPlan, bindings: &SymbolBindings) {
    let evaluate = |d: &kiln_ir::Dim| d.evaluate(bindings).unwrap_or_else(|e| panic!("{name}: {e}"));
    let spans: Vec<(i64, i64, usize, usize, &str)> = plan
        .buffers
        .iter()
        .map(|b| (evaluate(&b.offset), evaluate(&b.bytes), b.first, b.last, b.name.as_str()))
        .collect();
    let arena = evaluate(&plan.arena_bytes);
    for &(offset, bytes, _, _, buffer) in &spans {
        assert!(offset % ALIGNMENT == 0 && bytes % ALIGNMENT == 0, "{name}: `{buffer}` is not {ALIGNMENT}-aligned");
        assert!(offset + bytes <= arena, "{name}: `{buffer}` ends past the arena");
    }
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            let live_together = a.2 <= b.3 && b.2 <= a.3;
            let overlap = a.0 < b.0 + b.1 && b.0 < a.0 + a.1;
            assert!(
                !(live_together && overlap),
                "{name}: `{}` and `{}` overlap while both live at {bindings:?}",
                a.4,
                b.4
            );
        }
    }
    let steps = plan.order.len() + 1;
    let peak_live = (0..steps)
        .map(|step| spans.iter().filter(|s| s.2 <= step && step <= s.3).map(|s| s.1).sum::<i64>())
        .max()
        .unwrap_or(0);
    assert!(
        arena as f64 <= 1.15 * peak_live as f64,
        "{name}: arena {arena} > 1.15 × the largest live sum {peak_live} at {bindings:?}"
    );
    assert!(plan.buffers.iter().any(|b| b.kind == BufferKind::Output));
}

/// The kernels of a fused graph — kind and ops of each group — sorted, so
/// independent groups numbered in another order still compare equal.
fn group_signature(graph: &Graph) -> Vec<(KernelKind, Vec<&'static str>)> {
    let mut kernels: Vec<(KernelKind, Vec<&'static str>)> = graph
        .groups()
        .keys()
        .map(|&id| {
            let ops: Vec<&'static str> = graph.group_nodes(id).iter().map(|&n| graph.node(n).op.name()).collect();
            (graph.groups()[&id].kind, ops)
        })
        .collect();
    kernels.sort();
    kernels
}

#[test]
fn safetensors_imports_fuse_to_the_same_kernels_as_the_onnx_exports() {
    let fused = |name: &str| {
        let model = models().into_iter().find(|m| m.name == name).unwrap_or_else(|| panic!("{name}"));
        let mut graph = load_model(&model.model).expect("imports");
        Pipeline::new(options(Phase::Fuse, Precision::F32)).run(&mut graph, &mut |_, _, _| {}).expect("fuses");
        group_signature(&graph)
    };
    for (checkpoint, exports) in [
        ("bert-hf5", &["bert-legacy", "bert-dynamo"][..]),
        ("cross-encoder-hf5", &["cross-encoder-legacy", "cross-encoder-dynamo"][..]),
        ("distilbert-hf5", &["distilbert-legacy", "distilbert-dynamo"][..]),
        ("llama-hf5", &["llama-legacy", "llama-dynamo"][..]),
        ("qwen2-hf5", &["qwen2-legacy", "qwen2-dynamo"][..]),
    ] {
        let expected = fused(checkpoint);
        for export in exports {
            assert_eq!(fused(export), expected, "{export} fuses differently from {checkpoint}");
        }
    }
}
