//! The `kiln` command line.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use kiln_compiler::npy::{read_npy, write_npy};
use kiln_compiler::{load_model, summary};
use kiln_ir::{evaluate, print_graph_summary, Tensor};

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
    /// Describe a model: inputs and outputs with symbolic shapes, parameters, op histogram.
    Inspect {
        /// A .onnx file or a safetensors model directory.
        model: PathBuf,
        /// Print the graph IR text.
        #[arg(long)]
        ir: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run a model with the reference evaluator and write every output as .npy.
    Eval {
        /// A .onnx file or a safetensors model directory.
        model: PathBuf,
        /// A model input: NAME=FILE.npy (repeat for each input).
        #[arg(long = "input", value_name = "NAME=FILE.npy", required = true)]
        inputs: Vec<String>,
        /// Where `<output name>.npy` files are written (created if missing).
        #[arg(long, value_name = "DIR")]
        output_dir: PathBuf,
        /// Replace output files that already exist.
        #[arg(long)]
        force: bool,
    },
}

fn main() {
    if let Err(error) = run(Cli::parse()) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Inspect { model, ir, json } => inspect(&model, ir, json),
        Command::Eval { model, inputs, output_dir, force } => eval(&model, &inputs, &output_dir, force),
    }
}

fn import(model: &Path) -> Result<kiln_ir::Graph> {
    let started = Instant::now();
    let graph = load_model(model)?;
    eprintln!("imported {} ({} nodes) in {:.2?}", model.display(), graph.node_count(), started.elapsed());
    Ok(graph)
}

fn inspect(model: &Path, ir: bool, json: bool) -> Result<()> {
    let graph = import(model)?;
    let summary = summary::ModelSummary::of(&graph);
    if json {
        println!("{}", serde_json::to_string_pretty(&summary.to_json())?);
    } else {
        print!("{summary}");
    }
    if ir {
        print!("{}", print_graph_summary(&graph));
    }
    Ok(())
}

fn eval(model: &Path, input_arguments: &[String], output_dir: &Path, force: bool) -> Result<()> {
    let graph = import(model)?;
    let mut inputs: HashMap<String, Tensor> = HashMap::new();
    for argument in input_arguments {
        let Some((name, file)) = argument.split_once('=') else {
            bail!("--input `{argument}` is not NAME=FILE.npy");
        };
        let tensor = read_npy(Path::new(file)).with_context(|| format!("input `{name}`"))?;
        if inputs.insert(name.to_string(), tensor).is_some() {
            bail!("input `{name}` is given twice");
        }
    }
    let output_paths: BTreeMap<String, PathBuf> = graph
        .outputs()
        .iter()
        .map(|o| (o.name.clone(), output_dir.join(format!("{}.npy", file_name_of(&o.name)))))
        .collect();
    if !force {
        if let Some(existing) = output_paths.values().find(|p| p.exists()) {
            bail!("{} exists; pass --force to replace it", existing.display());
        }
    }
    let started = Instant::now();
    let outputs = evaluate(&graph, &inputs)?;
    eprintln!("evaluated in {:.2?}", started.elapsed());
    std::fs::create_dir_all(output_dir).with_context(|| format!("creating {}", output_dir.display()))?;
    for (name, tensor) in outputs {
        let path = &output_paths[&name];
        write_npy(path, &tensor)?;
        println!("{name}: {:?} {} -> {}", tensor.shape, tensor.dtype, path.display());
    }
    Ok(())
}

/// An output name made safe as a file name (`/` and other separators become `_`).
fn file_name_of(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' { c } else { '_' }).collect()
}
