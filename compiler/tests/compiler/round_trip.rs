//! The IR text form round-trips on every testdata model: the text, the
//! constants (by hash) and the evaluation of the re-parsed graph.

use std::collections::BTreeMap;

use kiln_compiler::load_model;
use kiln_ir::{evaluate, parse_graph, print_graph, Graph, Op};

use crate::common::{inputs_in, models};

fn constant_hashes(graph: &Graph) -> BTreeMap<String, String> {
    graph
        .node_indices()
        .filter_map(|n| match &graph.node(n).op {
            Op::Constant(constant) => Some((graph.node(n).outputs[0].name.clone(), constant.content_hash())),
            _ => None,
        })
        .collect()
}

#[test]
fn every_testdata_model_round_trips_through_text() {
    for model in models() {
        let graph = load_model(&model.model).unwrap_or_else(|e| panic!("{}: {e}", model.name));
        let text = print_graph(&graph);
        let parsed = parse_graph(&text).unwrap_or_else(|e| panic!("{}: {e}", model.name));
        assert!(parsed == graph, "{}: parse(print(g)) != g", model.name);
        assert_eq!(print_graph(&parsed), text, "{}: print(parse(print(g))) != print(g)", model.name);
        assert_eq!(constant_hashes(&parsed), constant_hashes(&graph), "{}: constants", model.name);
        let inputs = inputs_in(&model.directory, &model.inputs);
        let before = evaluate(&graph, &inputs).expect("evaluates");
        let after = evaluate(&parsed, &inputs).expect("re-parsed graph evaluates");
        assert_eq!(after, before, "{}: evaluation after the round trip", model.name);
    }
}

/// Kernel IR's text form round-trips too: every kernel generated for every
/// testdata model, at every precision, passes the verifier and parses back
/// to the same kernel.
#[test]
fn every_generated_kernel_round_trips_through_text() {
    use kiln_passes::{Phase, Pipeline, PipelineOptions, Precision};
    use kiln_runtime::kernel::{parse_kernel, print_kernel};
    let mut kernels = 0;
    for precision in [Precision::F32, Precision::F16, Precision::Bf16] {
        for model in models() {
            let mut graph = load_model(&model.model).unwrap_or_else(|e| panic!("{}: {e}", model.name));
            let options = PipelineOptions { stop_after: Phase::Precision, precision, ..PipelineOptions::default() };
            Pipeline::new(options).run(&mut graph, &mut |_, _, _| {}).expect("optimizes");
            for &group in graph.groups().keys() {
                let kernel = kiln_targets::generate::generate_kernel(&graph, group).expect("generates").kernel;
                kiln_runtime::kernel::verify_kernel(&kernel).unwrap_or_else(|e| panic!("{}: {e}", model.name));
                let text = print_kernel(&kernel);
                let parsed =
                    parse_kernel(&text).unwrap_or_else(|e| panic!("{} {}: {e}\n{text}", model.name, kernel.name));
                if parsed != kernel {
                    let grid = format!("{:?} vs {:?}", parsed.grid_blocks, kernel.grid_blocks);
                    let statement = parsed.body.iter().zip(&kernel.body).position(|(a, b)| a != b);
                    let shown = statement.map(|i| {
                        let (a, b) = (format!("{:?}", parsed.body[i]), format!("{:?}", kernel.body[i]));
                        let at = a.chars().zip(b.chars()).position(|(x, y)| x != y).unwrap_or(0);
                        let from = at.saturating_sub(200);
                        format!(
                            "parsed …{}…\nkernel …{}…",
                            &a[from..(at + 100).min(a.len())],
                            &b[from..(at + 100).min(b.len())]
                        )
                    });
                    panic!(
                        "{} {}: parse(print(k)) != k; grid {grid}; first differing statement {shown:?}",
                        model.name, kernel.name
                    );
                }
                kernels += 1;
            }
        }
    }
    assert!(kernels > 100, "{kernels} kernels");
}
