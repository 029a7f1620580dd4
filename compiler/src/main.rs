//! The `kiln` command line: one file per command in `commands/`.

mod commands;

use clap::{Parser, Subcommand};

/// kiln: an ahead-of-time compiler for transformer models.
///
/// MODEL is a `.onnx` file (external data files beside it) or a Hugging Face
/// directory holding `config.json` and `*.safetensors`.
#[derive(Parser)]
#[command(name = "kiln", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Inspect(commands::inspect::Arguments),
    Compile(commands::compile::Arguments),
    /// Run a compiled artifact on CUDA or in the kernel simulator and write
    /// every output as .npy (the same as the standalone `kiln-run`).
    Run(kiln_cli::RunArguments),
    Embed(commands::embed::Arguments),
    Eval(commands::eval::Arguments),
    Kernel(commands::kernel::Arguments),
}

fn main() {
    let result = match Cli::parse().command {
        Command::Inspect(arguments) => commands::inspect::run(&arguments),
        Command::Compile(arguments) => commands::compile::run(&arguments),
        Command::Run(arguments) => kiln_cli::run_artifact(&arguments),
        Command::Embed(arguments) => commands::embed::run(&arguments),
        Command::Eval(arguments) => commands::eval::run(&arguments),
        Command::Kernel(arguments) => commands::kernel::run(&arguments),
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
