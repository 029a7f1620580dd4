//! `kiln-run`: runs a `.kiln` artifact on a machine that has only a GPU
//! driver (or nothing: the simulator), with no compiler inside.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;
use kiln_cli::{describe_artifact, open_artifact, run_artifact, RunArguments};

/// kiln-run: run a compiled kiln artifact (CUDA, else the kernel simulator).
///
/// `kiln-run ARTIFACT --input NAME=FILE.npy ... --output-dir DIR` runs it;
/// `kiln-run inspect ARTIFACT` describes it (signature, bounds, kernels,
/// weights, code per target).
#[derive(Parser)]
#[command(name = "kiln-run", version)]
struct Run {
    #[command(flatten)]
    run: RunArguments,
}

/// Describe an artifact: signature, bounds, kernels, weights, code per target.
#[derive(Parser)]
#[command(name = "kiln-run inspect", version)]
struct Inspect {
    artifact: PathBuf,
}

fn main() {
    let arguments: Vec<OsString> = std::env::args_os().collect();
    let result = if arguments.get(1).is_some_and(|a| a == "inspect") {
        let inspect = Inspect::parse_from(&arguments[1..]);
        open_artifact(&inspect.artifact).map(|opened| print!("{}", describe_artifact(&inspect.artifact, &opened)))
    } else {
        run_artifact(&Run::parse_from(arguments).run)
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
