//! The runtime never links LLVM or MLIR: a serving machine needs only this
//! crate (and `kiln-run` from kiln-cli) and a GPU driver. The runtime library
//! has no command-line dependencies either.

use std::process::Command;

const COMPILER_CRATES: [&str; 5] = ["melior", "mlir-sys", "inkwell", "llvm-sys", "tblgen"];
const COMMAND_LINE_CRATES: [&str; 2] = ["clap", "anyhow"];

/// The crates `package` depends on (normal and build edges), down to `depth` levels.
fn dependencies_of(package: &str, depth: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["tree", "--package", package, "--edges", "normal,build", "--prefix", "none", "--format", "{p}"])
        .args(["--depth", depth])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let tree = String::from_utf8_lossy(&output.stdout);
    let crates: Vec<String> =
        tree.lines().filter_map(|line| line.split_whitespace().next()).map(String::from).collect();
    assert!(crates.iter().any(|c| c == package), "{tree}");
    crates
}

#[test]
fn runtime_and_kiln_run_depend_on_no_llvm_or_mlir_crate() {
    for package in ["kiln-runtime", "kiln-cli"] {
        let crates = dependencies_of(package, "100");
        for forbidden in COMPILER_CRATES {
            assert!(!crates.iter().any(|c| c == forbidden), "{package} depends on {forbidden}: {crates:?}");
        }
    }
}

/// clap and anyhow are the binaries' (kiln-cli's); the runtime names neither.
/// (anyhow still reaches the build through prost's derive macro, which runs at
/// compile time and links nothing into the library.)
#[test]
fn the_runtime_library_has_no_command_line_dependencies() {
    let crates = dependencies_of("kiln-runtime", "1");
    for forbidden in COMMAND_LINE_CRATES {
        assert!(!crates.iter().any(|c| c == forbidden), "kiln-runtime depends on {forbidden}: {crates:?}");
    }
}
