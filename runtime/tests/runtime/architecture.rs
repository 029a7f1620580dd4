//! The runtime never links LLVM or MLIR: a serving machine needs only this
//! crate and a GPU driver.

use std::process::Command;

const COMPILER_CRATES: [&str; 5] = ["melior", "mlir-sys", "inkwell", "llvm-sys", "tblgen"];

#[test]
fn runtime_depends_on_no_llvm_or_mlir_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["tree", "--package", "kiln-runtime", "--edges", "normal,build", "--prefix", "none", "--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let tree = String::from_utf8_lossy(&output.stdout);
    let crates: Vec<&str> = tree.lines().filter_map(|line| line.split_whitespace().next()).collect();
    assert!(crates.contains(&"kiln-runtime"), "{tree}");
    for forbidden in COMPILER_CRATES {
        assert!(!crates.contains(&forbidden), "kiln-runtime depends on {forbidden}:\n{tree}");
    }
}
