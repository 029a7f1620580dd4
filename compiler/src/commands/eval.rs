//! `kiln eval`: the reference evaluator on a model, every output written as
//! `.npy` (or as ONNX `TensorProto` `.pb` files).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use kiln_compiler::npy::{host_to_tensor, read_npy, tensor_to_host, write_npy};
use kiln_compiler::onnx::{read_tensor_proto, tensor_proto_bytes};
use kiln_ir::{evaluate, DType, Tensor};
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
    /// How outputs are written: `npy` (bf16 and the 8-bit floats as f32) or
    /// `pb` (ONNX TensorProto files, as ONNX's test data sets hold them, in
    /// the exact dtype). Inputs are read by extension: `.pb` is a
    /// TensorProto, anything else `.npy`.
    #[arg(long, value_enum, default_value = "npy")]
    pub output_format: OutputFormat,
    #[command(flatten)]
    pub compile: CompileArguments,
}

/// The file format of `kiln eval`'s outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Npy,
    Pb,
}

/// An input file: a TensorProto when it ends in `.pb`, else `.npy`.
fn read_input(path: &std::path::Path) -> Result<Tensor> {
    if path.extension().is_some_and(|extension| extension == "pb") {
        read_tensor_proto(path).map_err(anyhow::Error::msg)
    } else {
        Ok(read_npy(path)?)
    }
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
    let mut inputs: HashMap<String, Tensor> =
        kiln_cli::read_inputs_with(input_arguments, |path| Ok(tensor_to_host(&read_input(path)?)))?
            .into_iter()
            .map(|(name, host)| (name, host_to_tensor(&host)))
            .collect();
    // NumPy's default float is f64: an f64 array for a narrower float input is rounded to it.
    for input in graph.input_values() {
        let wanted = graph.value_type(input).dtype;
        if let Some(tensor) = inputs.get_mut(graph.value_name(input)) {
            if tensor.dtype == DType::F64 && wanted.is_float() && wanted != DType::F64 {
                *tensor = Tensor::from_f64_rounded(wanted, tensor.shape.clone(), tensor.to_f64_vec());
            }
        }
    }
    let names: Vec<&str> = graph.outputs().iter().map(|o| o.name.as_str()).collect();
    let extension = match arguments.output_format {
        OutputFormat::Npy => "npy",
        OutputFormat::Pb => "pb",
    };
    let paths = kiln_cli::output_paths_with_extension(output_dir, names.iter().copied(), extension, force)?;
    let output_paths: BTreeMap<&str, PathBuf> = names.into_iter().zip(paths).collect();
    let started = Instant::now();
    let outputs = evaluate(&graph, &inputs)?;
    eprintln!("evaluated in {:.2?}", started.elapsed());
    std::fs::create_dir_all(output_dir).with_context(|| format!("creating {}", output_dir.display()))?;
    for (name, tensor) in outputs {
        let path = &output_paths[name.as_str()];
        match arguments.output_format {
            OutputFormat::Npy => write_npy(path, &tensor)?,
            OutputFormat::Pb => std::fs::write(path, tensor_proto_bytes(&name, &tensor))
                .with_context(|| format!("writing {}", path.display()))?,
        }
        println!("{name}: {:?} {} -> {}", tensor.shape, tensor.dtype, path.display());
    }
    Ok(())
}
