//! `kiln-run`: runs a `.kiln` artifact on a machine that has only a GPU
//! driver (or nothing: the simulator), with no compiler inside.

use clap::{Parser, Subcommand};
use kiln_cli::{describe_artifact, open_artifact, run_artifact, RunArguments};

/// kiln-run: run a compiled kiln artifact (CUDA, else the kernel simulator).
///
/// `kiln-run ARTIFACT --input NAME=FILE.npy ... --output-dir DIR` runs it;
/// `kiln-run inspect ARTIFACT` describes it.
#[derive(Parser)]
#[command(name = "kiln-run", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: Option<RunArguments>,
}

#[derive(Subcommand)]
enum Command {
    /// Describe an artifact: signature, bounds, kernels, weights, targets.
    Inspect { artifact: std::path::PathBuf },
}

fn main() {
    let cli = Cli::parse();
    let result = match (cli.command, cli.run) {
        (Some(Command::Inspect { artifact }), _) => {
            open_artifact(&artifact).map(|opened| print!("{}", describe_artifact(&artifact, &opened)))
        }
        (None, Some(arguments)) => run_artifact(&arguments),
        (None, None) => Err(anyhow::anyhow!("nothing to do; see kiln-run --help")),
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
