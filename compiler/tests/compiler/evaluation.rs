//! The reference evaluator reproduces ONNX Runtime and PyTorch on every
//! testdata model and on the real MiniLM.

use kiln_compiler::load_model;
use kiln_ir::evaluate;

use crate::common::{assert_close, expected_in, inputs_in, minilm_directory, models, op_models, testdata};

#[test]
fn every_testdata_model_matches_its_reference() {
    let models = models();
    assert!(models.len() >= 20, "testdata/models.json lists {} models", models.len());
    for model in models {
        let graph = load_model(&model.model).unwrap_or_else(|e| panic!("{}: {e}", model.name));
        let outputs = evaluate(&graph, &inputs_in(&model.directory, &model.inputs))
            .unwrap_or_else(|e| panic!("{}: {e}", model.name));
        let names: Vec<&str> = outputs.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, model.outputs, "{}: outputs", model.name);
        for (name, tensor) in &outputs {
            assert_close(&format!("{}/{name}", model.name), tensor, &expected_in(&model.directory, name), 1e-4);
        }
    }
}

#[test]
fn minilm_matches_pytorch_on_real_sentences() {
    let graph = load_model(&minilm_directory()).expect("MiniLM imports");
    let directory = testdata().join("minilm");
    let names = ["input_ids", "attention_mask", "token_type_ids"].map(String::from);
    let started = std::time::Instant::now();
    let outputs = evaluate(&graph, &inputs_in(&directory, &names)).expect("MiniLM evaluates");
    eprintln!("MiniLM-L6 evaluated in {:.2?}", started.elapsed());
    let (name, hidden) = &outputs[0];
    assert_eq!(name, "last_hidden_state");
    assert_close("minilm/last_hidden_state", hidden, &expected_in(&directory, name), 1e-4);
}

#[test]
fn safetensors_weights_are_mapped_not_copied() {
    let graph = load_model(&testdata().join("models/llama-hf4/hf")).expect("sharded llama imports");
    let mut mapped = 0;
    for node in graph.node_indices() {
        if let kiln_ir::Op::Constant(constant) = &graph.node(node).op {
            if constant.element_count() > 16 {
                assert!(constant.is_mapped(), "{} was copied", graph.node(node).name);
                mapped += 1;
            }
        }
    }
    assert!(mapped >= 10, "only {mapped} mapped weights");
}

/// Every single-op model of `testdata/ops` (contrib and recent-opset ops, made
/// by `testdata/make_op_testdata.py`) matches ONNX Runtime.
#[test]
fn single_op_models_match_onnx_runtime() {
    let models = op_models();
    assert!(models.len() >= 9, "{} op models", models.len());
    for (name, directory) in models {
        let graph = load_model(&directory.join("model.onnx")).unwrap_or_else(|e| panic!("{name}: {e}"));
        let input_names: Vec<String> = graph.input_values().iter().map(|v| graph.value_name(*v).to_string()).collect();
        let outputs = evaluate(&graph, &inputs_in(&directory, &input_names)).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (output, tensor) in &outputs {
            assert_close(&format!("{name}/{output}"), tensor, &expected_in(&directory, output), 1e-4);
        }
    }
}
