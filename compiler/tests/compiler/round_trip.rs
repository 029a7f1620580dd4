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
