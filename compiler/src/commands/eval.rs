//! `kiln eval`: the reference evaluator on a model, every output written as `.npy`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use kiln_compiler::npy::{host_to_tensor, write_npy};
use kiln_ir::{evaluate, Tensor};
use kiln_passes::Phase;

use super::{import, optimize, CompileArguments};

/// Run a model with the reference evaluator and write every output as .npy.
#[derive(clap::Args)]
pub struct Arguments {
    /// A .onnx file or a safetensors model directory.
    pub model: PathBuf,
    #[command(flatten)]
    pub io: kiln_cli::TensorFiles,
    /// Evaluate the graph after this phase of the pipeline (canonicalize,
    /// recognize, fuse, layout, precision, plan); default: the imported graph.
    #[arg(long, value_name = "PHASE")]
    pub stop_after: Option<Phase>,
    #[command(flatten)]
    pub compile: CompileArguments,
}

/// Runs `kiln eval`.
pub fn run(arguments: &Arguments) -> Result<()> {
    let options = arguments.stop_after.map(|phase| arguments.compile.options(phase));
    if options.is_none() {
        if let Some(flag) = arguments.compile.given() {
            bail!("{flag} shapes the pipeline, which `kiln eval` runs only with --stop-after PHASE");
        }
    }
    let (model, input_arguments, output_dir, force) =
        (arguments.model.as_path(), &arguments.io.inputs, arguments.io.output_dir.as_path(), arguments.io.force);
    let options = options.as_ref();
    let mut graph = import(model)?;
    if let Some(options) = options {
        optimize(&mut graph, options, None)?;
    }
    let inputs: HashMap<String, Tensor> =
        kiln_cli::read_inputs(input_arguments)?.into_iter().map(|(name, host)| (name, host_to_tensor(&host))).collect();
    let names: Vec<&str> = graph.outputs().iter().map(|o| o.name.as_str()).collect();
    let paths = kiln_cli::output_paths(output_dir, names.iter().copied(), force)?;
    let output_paths: BTreeMap<&str, PathBuf> = names.into_iter().zip(paths).collect();
    let started = Instant::now();
    let outputs = evaluate(&graph, &inputs)?;
    eprintln!("evaluated in {:.2?}", started.elapsed());
    std::fs::create_dir_all(output_dir).with_context(|| format!("creating {}", output_dir.display()))?;
    for (name, tensor) in outputs {
        let path = &output_paths[name.as_str()];
        write_npy(path, &tensor)?;
        println!("{name}: {:?} {} -> {}", tensor.shape, tensor.dtype, path.display());
    }
    Ok(())
}
