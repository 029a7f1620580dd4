//! `kiln inspect`: what a model becomes, or what an artifact holds.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use kiln_compiler::summary;
use kiln_ir::{print_graph_summary, SymbolBindings};
use kiln_passes::Phase;

use super::{import, is_artifact, optimize, parse_bindings, CompileArguments};

/// Describe a model (inputs and outputs with symbolic shapes, parameters, op
/// histogram, kernels) or a compiled `.kiln` artifact.
#[derive(clap::Args)]
pub struct Arguments {
    /// A .onnx file, a safetensors model directory, or a .kiln artifact.
    pub model: PathBuf,
    /// Print the graph IR text (models only).
    #[arg(long)]
    pub ir: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Write the IR text after import and after every pass that changed it
    /// into DIR (`000-import.ir`, `001-canonicalize-fold_shapes.ir`, …; models only).
    #[arg(long, value_name = "DIR")]
    pub dump_ir: Option<PathBuf>,
    /// Run the pipeline up to and including this phase before describing the
    /// model (default: plan; models only).
    #[arg(long, value_name = "PHASE")]
    pub stop_after: Option<Phase>,
    #[command(flatten)]
    pub compile: CompileArguments,
    /// Symbol values, e.g. `batch=8,seq=128`: for a model, the arena size at
    /// them; for an artifact, which kernel variant each launch runs there.
    #[arg(long, value_name = "SYMBOL=N,...", value_parser = parse_bindings)]
    pub bind: Option<SymbolBindings>,
    /// With --bind on an artifact: each launch's FLOPs, least bytes, roofline
    /// floor and the cost model's estimate on --gpu (a model, not a measurement).
    #[arg(long, requires = "bind")]
    pub roofline: bool,
    /// The GPU --roofline models: h100, h200, a100 or l4.
    #[arg(long, value_name = "NAME", default_value = "h100", requires = "roofline")]
    pub gpu: String,
    /// With --bind on an artifact: the variants a device without tensor cores
    /// (before sm_80, AMD) runs.
    #[arg(long, requires = "bind")]
    pub no_tensor_cores: bool,
}

/// Runs `kiln inspect`.
pub fn run(arguments: &Arguments) -> Result<()> {
    if !is_artifact(&arguments.model) {
        return inspect_model(arguments);
    }
    let not_for_artifacts = [
        (arguments.ir, "--ir"),
        (arguments.dump_ir.is_some(), "--dump-ir"),
        (arguments.stop_after.is_some(), "--stop-after"),
    ];
    let flag = not_for_artifacts.iter().find(|(given, _)| *given).map(|(_, flag)| *flag);
    if let Some(flag) = flag.or_else(|| arguments.compile.given()) {
        bail!(
            "{flag} applies to a model, not to an artifact: {} was compiled already (inspect its model to see \
             the pipeline)",
            arguments.model.display()
        );
    }
    let artifact = kiln_cli::open_artifact(&arguments.model)?;
    if let Some(bindings) = &arguments.bind {
        let gpu = match arguments.roofline {
            true => Some(kiln_targets::cost_model::GpuSpec::named(&arguments.gpu).map_err(anyhow::Error::msg)?),
            false => None,
        };
        let tensor_cores = !arguments.no_tensor_cores;
        let rows = kiln_compiler::launch_plan::launch_rows(&artifact, bindings, tensor_cores, gpu.as_ref())
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("the launches of {} at these dims", arguments.model.display()))?;
        print!("{}", kiln_compiler::launch_plan::describe(&rows, bindings, tensor_cores, gpu.as_ref()));
        return Ok(());
    }
    if arguments.json {
        println!("{}", serde_json::to_string_pretty(&artifact_json(&artifact))?);
    } else {
        print!("{}", kiln_cli::describe_artifact(&arguments.model, &artifact));
    }
    Ok(())
}

/// Describes a model through the pipeline.
fn inspect_model(arguments: &Arguments) -> Result<()> {
    let Arguments { model, ir, json, dump_ir, stop_after, compile, bind, roofline, .. } = arguments;
    if *roofline {
        bail!("--roofline describes an artifact's launches: compile {} first", model.display());
    }
    let (ir, json, dump_ir, bind) = (*ir, *json, dump_ir.as_deref(), bind.as_ref());
    let options = &compile.options(stop_after.unwrap_or(Phase::Plan));
    let mut graph = import(model)?;
    let plan = optimize(&mut graph, options, dump_ir)?;
    let mut summary = summary::ModelSummary::of(&graph);
    if let Some(bindings) = bind {
        let plan = plan.as_ref().context("--bind needs the plan phase (drop --stop-after)")?;
        let bytes =
            plan.arena_bytes_at(bindings).with_context(|| format!("evaluating the arena size {}", plan.arena_bytes))?;
        summary.peak_arena_bytes = Some(bytes);
    }
    summary.arena_bytes = plan.as_ref().map(|p| p.arena_bytes.to_string());
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

/// What `kiln inspect ARTIFACT --json` prints.
fn artifact_json(artifact: &kiln_runtime::Artifact) -> serde_json::Value {
    use serde_json::json;
    let manifest = &artifact.manifest;
    let tensor = |slot: usize| {
        let spec = &artifact.slots[slot].tensor;
        json!({"name": spec.name, "dtype": spec.dtype.name(), "shape": spec.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>()})
    };
    let maxima: SymbolBindings = artifact.bounds.iter().map(|(s, &(_, max))| (s.clone(), max)).collect();
    json!({
        "model": manifest.model_name,
        "producer": manifest.producer,
        "precision": manifest.precision,
        "format_version": kiln_runtime::artifact::FORMAT_VERSION,
        "file_bytes": artifact.file_bytes(),
        "bounds": artifact.bounds.iter().map(|(s, (min, max))| (s.clone(), json!([min, max]))).collect::<serde_json::Map<_, _>>(),
        "entry_points": artifact.entry_points.iter().map(|entry| json!({
            "name": entry.name,
            "launches": entry.launches.len(),
            "inputs": entry.inputs.iter().map(|&s| tensor(s)).collect::<Vec<_>>(),
            "outputs": entry.outputs.iter().map(|&s| tensor(s)).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "kernels": artifact.kernels.len(),
        "weights": artifact.weights.len(),
        "weight_bytes": artifact.weight_total_bytes(),
        "arena_bytes": artifact.arena_bytes.to_string(),
        "peak_arena_bytes": artifact.arena_bytes.evaluate(&maxima).ok(),
        "targets": artifact.targets(),
        "code": artifact.code_objects().map(|o| json!({"target": o.target, "format": o.format.name(), "bytes": o.bytes.len()})).collect::<Vec<_>>(),
    })
}
