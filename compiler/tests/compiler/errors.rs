//! Bad input gets a typed error naming the file, node or tensor at fault —
//! never a panic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kiln_compiler::hf::HfImportError;
use kiln_compiler::onnx::{import_onnx, OnnxImportError};
use kiln_compiler::{load_model, LoadError};
use kiln_ir::{evaluate, DType, EvalError, Tensor};
use onnx_protobuf::{Message, ModelProto, NodeProto, OperatorSetIdProto};

use crate::common::{inputs_in, models, testdata};

/// A fresh empty directory for one test.
fn scratch(test: &str) -> PathBuf {
    let directory = std::env::temp_dir().join(format!("kiln-errors-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).expect("temp dir");
    directory
}

fn write(path: &Path, bytes: &[u8]) -> PathBuf {
    std::fs::write(path, bytes).expect("write");
    path.to_path_buf()
}

#[test]
fn empty_truncated_and_random_onnx_files_are_errors_naming_the_file() {
    let directory = scratch("onnx-bytes");
    let original = std::fs::read(testdata().join("models/bert-legacy/model.onnx")).expect("testdata");
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect();
    let cases = [
        ("empty.onnx", Vec::new()),
        ("truncated.onnx", original[..original.len() / 3].to_vec()),
        ("header-only.onnx", original[..64].to_vec()),
        ("random.onnx", random),
    ];
    for (name, bytes) in cases {
        let path = write(&directory.join(name), &bytes);
        let error = import_onnx(&path).expect_err(name);
        assert!(error.to_string().contains(name), "{name}: {error}");
    }
}

#[test]
fn a_missing_external_data_file_is_named() {
    let directory = scratch("external");
    let path = directory.join("model.onnx");
    std::fs::copy(testdata().join("models/bert-dynamo/model.onnx"), &path).expect("copy");
    let error = import_onnx(&path).expect_err("no model.onnx.data beside it");
    assert!(matches!(error, OnnxImportError::Tensor { .. }), "{error}");
    assert!(error.to_string().contains("model.onnx.data"), "{error}");
}

/// A model whose nodes use `op_types` (default domain, opset 23), chained on one input.
fn model_with_ops(op_types: &[&str]) -> Vec<u8> {
    let mut model = ModelProto::new();
    model.ir_version = 10;
    let mut opset = OperatorSetIdProto::new();
    opset.version = 23;
    model.opset_import.push(opset);
    let graph = model.graph.mut_or_insert_default();
    for (index, op_type) in op_types.iter().enumerate() {
        let mut node = NodeProto::new();
        node.op_type = op_type.to_string();
        node.name = format!("node{index}");
        node.input.push(if index == 0 { "x".into() } else { format!("v{}", index - 1) });
        node.output.push(format!("v{index}"));
        graph.node.push(node);
    }
    model.write_to_bytes().expect("serializes")
}

#[test]
fn unsupported_ops_are_all_listed_at_once_with_their_nodes() {
    let directory = scratch("unsupported");
    let path = write(&directory.join("m.onnx"), &model_with_ops(&["Einsum", "Relu", "NonZero", "TopK", "TopK"]));
    let error = import_onnx(&path).expect_err("unsupported ops");
    let OnnxImportError::UnsupportedOps { ops, .. } = &error else { panic!("{error}") };
    let listed: Vec<&str> = ops.0.keys().map(String::as_str).collect();
    assert_eq!(listed, ["ai.onnx::Einsum", "ai.onnx::NonZero", "ai.onnx::TopK"]);
    assert!(error.to_string().contains("not supported"), "{error}");
    assert_eq!(ops.0["ai.onnx::TopK"], ["node3", "node4"]);
    assert!(error.to_string().contains("node0"), "{error}");
}

#[test]
fn opsets_1_to_28_are_read_and_others_refused() {
    let directory = scratch("opset");
    for version in [0, 29] {
        let mut model = ModelProto::parse_from_bytes(&model_with_ops(&["Relu"])).expect("parses");
        model.opset_import[0].version = version;
        let path = write(&directory.join(format!("opset{version}.onnx")), &model.write_to_bytes().expect("serializes"));
        let error = import_onnx(&path).expect_err("outside the range");
        assert!(matches!(error, OnnxImportError::UnsupportedOpset { version: v, .. } if v == version), "{error}");
        assert!(error.to_string().contains("1 to 28"), "{error}");
    }
    // A real model (Gemm, unchanged in meaning since Gemm-7) read at each opset.
    let gemm = std::fs::read(testdata().join("ops/gemm_transposed_scaled/model.onnx")).expect("testdata");
    for version in [7, 11, 13, 24, 25, 28] {
        let mut model = ModelProto::parse_from_bytes(&gemm).expect("parses");
        let default_domain = model.opset_import.iter_mut().find(|o| o.domain.is_empty()).expect("default domain");
        default_domain.version = version;
        let path = write(&directory.join(format!("opset{version}.onnx")), &model.write_to_bytes().expect("serializes"));
        import_onnx(&path).unwrap_or_else(|e| panic!("opset {version}: {e}"));
    }
}

#[test]
fn op_versions_that_an_old_opset_selects_and_kiln_lacks_are_refused_by_name() {
    let directory = scratch("op_versions");
    // Relu-6 is implemented at opset 6; Gemm-6 (legacy `broadcast`) is not, and Trilu did not exist at opset 6.
    let mut model = ModelProto::parse_from_bytes(&model_with_ops(&["Relu", "Gemm", "Trilu"])).expect("parses");
    model.opset_import[0].version = 6;
    let path = write(&directory.join("opset6.onnx"), &model.write_to_bytes().expect("serializes"));
    let error = import_onnx(&path).expect_err("Gemm-6 and Trilu at opset 6");
    let OnnxImportError::UnsupportedOps { ops, .. } = &error else { panic!("{error}") };
    let listed: Vec<&str> = ops.0.keys().map(String::as_str).collect();
    assert_eq!(
        listed,
        [
            "ai.onnx::Gemm-6 (what opset 6 selects; kiln implements Gemm-7 and later)",
            "ai.onnx::Trilu (not defined at opset 6; ONNX added it at opset 14)"
        ]
    );
    assert!(error.to_string().contains("not supported"), "{error}");
}

fn hf_directory(test: &str, config: &str, weights: &[u8]) -> PathBuf {
    let directory = scratch(test);
    write(&directory.join("config.json"), config.as_bytes());
    write(&directory.join("model.safetensors"), weights);
    directory
}

fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

const BERT_CONFIG: &str = r#"{"model_type": "bert", "architectures": ["BertModel"], "hidden_size": 4,
    "num_hidden_layers": 1, "num_attention_heads": 1}"#;

#[test]
fn safetensors_with_impossible_lengths_or_offsets_are_errors_naming_the_file() {
    let mut huge = u64::MAX.to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    let outside = safetensors(r#"{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}"#, &[0; 8]);
    let mismatched = safetensors(r#"{"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}"#, &[0; 16]);
    for (name, bytes) in
        [("huge-header", huge), ("outside", outside), ("mismatched", mismatched), ("empty", Vec::new())]
    {
        let directory = hf_directory(name, BERT_CONFIG, &bytes);
        let error = load_model(&directory).expect_err(name);
        assert!(matches!(error, LoadError::HuggingFace(HfImportError::Safetensors { .. })), "{name}: {error}");
        assert!(error.to_string().contains("model.safetensors"), "{name}: {error}");
    }
}

#[test]
fn unknown_model_types_and_missing_tensors_are_named() {
    let empty_weights = safetensors("{}", &[]);
    let directory = hf_directory("model-type", r#"{"model_type": "gpt_neox"}"#, &empty_weights);
    let error = load_model(&directory).expect_err("gpt_neox");
    assert!(error.to_string().contains("gpt_neox") && error.to_string().contains("config.json"), "{error}");

    let directory = hf_directory("missing-tensor", BERT_CONFIG, &empty_weights);
    let error = load_model(&directory).expect_err("no weights");
    assert!(matches!(error, LoadError::HuggingFace(HfImportError::MissingTensor { .. })), "{error}");
    assert!(error.to_string().contains("embeddings.word_embeddings.weight"), "{error}");

    let directory = hf_directory("bad-json", "{ not json", &empty_weights);
    assert!(matches!(
        load_model(&directory).expect_err("bad json"),
        LoadError::HuggingFace(HfImportError::Config { .. })
    ));
}

#[test]
fn inputs_of_the_wrong_dtype_shape_or_name_are_named() {
    let model = models().into_iter().find(|m| m.name == "bert-legacy").expect("bert-legacy");
    let graph = load_model(&model.model).expect("imports");
    let good = inputs_in(&model.directory, &model.inputs);
    let input_error = |inputs: &HashMap<String, Tensor>| match evaluate(&graph, inputs) {
        Err(EvalError::Input { name, problem }) => format!("{name}: {problem}"),
        other => panic!("expected an input error, got {other:?}"),
    };

    let mut wrong_dtype = good.clone();
    wrong_dtype.insert("input_ids".into(), Tensor::from_f32(DType::F32, vec![2, 7], vec![1.0; 14]));
    assert!(input_error(&wrong_dtype).starts_with("input_ids: dtype f32"));

    let mut wrong_rank = good.clone();
    wrong_rank.insert("attention_mask".into(), Tensor::from_i64(DType::I64, vec![14], vec![1; 14]));
    assert!(input_error(&wrong_rank).starts_with("attention_mask: shape [14]"));

    let mut disagreeing = good.clone();
    disagreeing.insert("token_type_ids".into(), Tensor::from_i64(DType::I64, vec![2, 5], vec![0; 10]));
    assert!(input_error(&disagreeing).contains("`seq`"), "{}", input_error(&disagreeing));

    let mut missing = good.clone();
    missing.remove("token_type_ids");
    assert!(input_error(&missing).starts_with("token_type_ids: missing"));

    let mut unknown = good;
    unknown.insert("position_ids".into(), Tensor::from_i64(DType::I64, vec![2, 7], vec![0; 14]));
    assert!(input_error(&unknown).starts_with("position_ids: the model has no such input"));
}

#[test]
fn out_of_range_token_ids_are_an_error_naming_the_node() {
    let model = models().into_iter().find(|m| m.name == "bert-hf5").expect("bert-hf5");
    let graph = load_model(&model.model).expect("imports");
    let mut inputs = inputs_in(&model.directory, &model.inputs);
    inputs.insert("input_ids".into(), Tensor::from_i64(DType::I64, vec![2, 7], vec![5000; 14]));
    let error = evaluate(&graph, &inputs).expect_err("id 5000 of a 1000-word vocabulary");
    assert!(matches!(error, EvalError::Node { op: "gather", .. }), "{error}");
}

#[test]
fn split_sizes_known_only_at_run_time_are_not_supported_and_say_why() {
    let directory = scratch("split-runtime");
    let original = std::fs::read(testdata().join("ops/split_sizes_input/model.onnx")).expect("testdata");
    let mut model = ModelProto::parse_from_bytes(&original).expect("parses");
    let graph = model.graph.mut_or_insert_default();
    graph.initializer.retain(|tensor| tensor.name != "sizes");
    let mut sizes = graph.input[0].clone();
    sizes.name = "sizes".into();
    let tensor = sizes.type_.mut_or_insert_default().mut_tensor_type();
    tensor.elem_type = 7; // INT64
    let shape = tensor.shape.mut_or_insert_default();
    shape.dim.truncate(1);
    shape.dim[0].set_dim_value(2);
    graph.input.push(sizes);
    let path = write(&directory.join("split.onnx"), &model.write_to_bytes().expect("serializes"));
    let error = import_onnx(&path).expect_err("sizes are a graph input");
    let text = error.to_string();
    assert!(text.contains("not supported") && text.contains("run time") && text.contains("Split"), "{text}");
}
