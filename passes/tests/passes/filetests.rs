//! Filetests: `testdata/passes/<pass>/*.ir` is parsed, rewritten by `<pass>`
//! (then dead code is removed), verified, snapshotted (insta, IR text), and
//! evaluated before and after on random inputs — including a fully padded
//! sequence for graphs with an `attention_mask` — which must agree.

use std::collections::HashMap;
use std::path::Path;

use kiln_ir::{evaluate, parse_graph, print_graph_summary, verify, DType, Graph, SymbolBindings, Tensor};
use kiln_passes::canonicalize::{
    collapse_view_chains::CollapseViewChains, eliminate_common_subexpressions::EliminateCommonSubexpressions,
    eliminate_dead_code::EliminateDeadCode, fold_constants::FoldConstants, fold_shapes::FoldShapes,
    fold_transposes_into_matmul::FoldTransposesIntoMatmul, remove_identities::RemoveIdentities,
};
use kiln_passes::fuse::{form_fusion_groups::FormFusionGroups, merge_projections::MergeProjections};
use kiln_passes::layout::pack_matmul_weights::PackMatmulWeights;
use kiln_passes::precision::lower_precision::LowerPrecision;
use kiln_passes::recognize::{
    recognize_attention::RecognizeAttention, recognize_gelu::RecognizeGelu, recognize_layer_norm::RecognizeLayerNorm,
    recognize_rms_norm::RecognizeRmsNorm, recognize_rope::RecognizeRope, recognize_silu::RecognizeSilu,
};
use kiln_passes::{Pass, Precision};

fn pass_named(name: &str) -> Box<dyn Pass> {
    match name {
        "fold_shapes" => Box::new(FoldShapes),
        "fold_constants" => Box::new(FoldConstants),
        "remove_identities" => Box::new(RemoveIdentities),
        "fold_transposes_into_matmul" => Box::new(FoldTransposesIntoMatmul),
        "collapse_view_chains" => Box::new(CollapseViewChains),
        "eliminate_common_subexpressions" => Box::new(EliminateCommonSubexpressions),
        "eliminate_dead_code" => Box::new(EliminateDeadCode),
        "recognize_layer_norm" => Box::new(RecognizeLayerNorm),
        "recognize_rms_norm" => Box::new(RecognizeRmsNorm),
        "recognize_gelu" => Box::new(RecognizeGelu),
        "recognize_silu" => Box::new(RecognizeSilu),
        "recognize_rope" => Box::new(RecognizeRope),
        "recognize_attention" => Box::new(RecognizeAttention),
        "merge_projections" => Box::new(MergeProjections),
        "form_fusion_groups" => Box::new(FormFusionGroups),
        "pack_matmul_weights" => Box::new(PackMatmulWeights),
        "lower_precision" => Box::new(LowerPrecision { precision: Precision::Bf16 }),
        other => panic!("testdata/passes/{other}: no pass of that name"),
    }
}

/// Deterministic pseudo-random numbers.
struct Random(u64);

impl Random {
    fn unit(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

fn random_inputs(graph: &Graph, bindings: &SymbolBindings, seed: u64) -> HashMap<String, Tensor> {
    let mut random = Random(seed);
    graph
        .input_values()
        .into_iter()
        .map(|input| {
            let ty = graph.value_type(input);
            let shape: Vec<usize> = ty.shape.iter().map(|d| d.evaluate(bindings).unwrap() as usize).collect();
            let count = shape.iter().product::<usize>();
            let name = graph.value_name(input).to_string();
            let tensor = match ty.dtype {
                dtype if dtype.is_float() => {
                    Tensor::from_f32(dtype, shape, (0..count).map(|_| random.unit()).collect())
                }
                DType::Bool => Tensor::from_bool(shape, (0..count).map(|_| random.unit() > 0.0).collect()),
                dtype => {
                    // Masks: row 0 full, the last row fully padded, the others right-padded.
                    let (rows, columns) = (shape[0], count / shape[0].max(1));
                    let values = (0..count)
                        .map(|i| {
                            let (row, column) = (i / columns, i % columns);
                            let length = if row == 0 {
                                columns
                            } else if row + 1 == rows {
                                0
                            } else {
                                1 + row % columns
                            };
                            (column < length) as i64
                        })
                        .collect();
                    Tensor::from_i64(dtype, shape, values)
                }
            };
            (name, tensor)
        })
        .collect()
}

fn assert_agree(file: &str, before: &[(String, Tensor)], after: &[(String, Tensor)], tolerance: f64) {
    for ((name, expected), (_, got)) in before.iter().zip(after) {
        assert_eq!(got.shape, expected.shape, "{file}: `{name}` shape");
        let (a, b) = (got.to_f64_vec(), expected.to_f64_vec());
        let scale = b.iter().filter(|v| v.is_finite()).fold(1e-30f64, |m, v| m.max(v.abs()));
        for (x, y) in a.iter().zip(&b) {
            let same = (x.is_nan() && y.is_nan()) || (x - y).abs() <= tolerance * scale;
            assert!(same, "{file}: `{name}` differs after the pass: {x} vs {y}");
        }
    }
}

#[test]
fn every_pass_filetest() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/passes");
    let mut directories: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    directories.sort();
    let mut files = 0;
    for directory in directories {
        let pass_name = directory.file_name().unwrap().to_string_lossy().to_string();
        let pass = pass_named(&pass_name);
        let mut inputs: Vec<_> = std::fs::read_dir(&directory).unwrap().map(|e| e.unwrap().path()).collect();
        inputs.sort();
        for path in inputs.into_iter().filter(|p| p.extension().is_some_and(|e| e == "ir")) {
            let file = format!("{pass_name}/{}", path.file_name().unwrap().to_string_lossy());
            let text = std::fs::read_to_string(&path).unwrap();
            let before = parse_graph(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
            verify(&before).unwrap_or_else(|e| panic!("{file}: {e}"));
            let mut after = before.clone();
            let mut changed = false;
            for _ in 0..16 {
                let round = pass.run(&mut after).unwrap_or_else(|e| panic!("{file}: {e}"));
                EliminateDeadCode.run(&mut after).unwrap();
                verify(&after).unwrap_or_else(|e| panic!("{file}: the pass left an invalid graph: {e}"));
                changed |= round;
                if !round || pass_name == "lower_precision" {
                    break;
                }
            }
            assert!(changed, "{file}: the pass changed nothing");
            let stem = path.file_stem().unwrap().to_string_lossy().to_string();
            insta::assert_snapshot!(format!("{pass_name}__{stem}"), print_graph_summary(&after));
            let tolerance = if pass_name == "lower_precision" { 2e-2 } else { 1e-5 };
            for (seed, bindings) in
                [(1, [("batch", 3), ("seq", 5)]), (2, [("batch", 2), ("seq", 1)])].into_iter().enumerate()
            {
                let bindings: SymbolBindings = bindings.1.iter().map(|(k, v)| (k.to_string(), *v)).collect();
                let inputs = random_inputs(&before, &bindings, seed as u64 + 1);
                let expected = evaluate(&before, &inputs).unwrap_or_else(|e| panic!("{file}: {e}"));
                let got = evaluate(&after, &inputs).unwrap_or_else(|e| panic!("{file}: after: {e}"));
                assert_agree(&file, &expected, &got, tolerance);
            }
            files += 1;
        }
    }
    assert!(files >= 17, "only {files} filetests");
}
