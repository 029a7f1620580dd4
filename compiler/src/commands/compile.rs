//! `kiln compile`: a model into one `.kiln` artifact.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use kiln_compiler::artifact::{input_symbol_bounds, pack_artifact, write_file_atomically, ArtifactOptions};
use kiln_compiler::compile::{compile, emit};
use kiln_ir::SymbolBindings;
use kiln_passes::Phase;
use kiln_targets::target::{target_named, Target};

use super::{import, model_name_of, CompileArguments};

/// Compile a model into one `.kiln` artifact: optimize, generate one kernel
/// per fusion group, lower to each target, pack weights, kernels, code and
/// memory plan; `--emit-dir` also writes every kernel's IR, MLIR and PTX.
#[derive(clap::Args)]
pub struct Arguments {
    /// A .onnx file or a safetensors model directory.
    pub model: PathBuf,
    /// Targets, comma-separated: sm_80, sm_90 (PTX, and a cubin when ptxas is
    /// installed), gfx90a, gfx942 (AMDGPU assembly).
    #[arg(long, value_delimiter = ',', default_value = "sm_80,sm_90", value_parser = target_named)]
    pub target: Vec<Arc<dyn Target>>,
    #[command(flatten)]
    pub compile: CompileArguments,
    /// Write each kernel's `.kir`, `.mlir`, `.<sm>.ptx` and `.<gfx>.s` here.
    #[arg(long, value_name = "DIR")]
    pub emit_dir: Option<PathBuf>,
    /// The artifact to write.
    #[arg(short = 'o', long = "output", value_name = "OUT.kiln")]
    pub output: Option<PathBuf>,
    /// Replace OUT.kiln if it exists.
    #[arg(long)]
    pub force: bool,
    /// Also print ptxas's registers, spills and shared memory for every kernel.
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

/// Runs `kiln compile`.
pub fn run(arguments: &Arguments) -> Result<()> {
    let Arguments { model, target: targets, compile: pipeline, emit_dir, output, force, verbose } = arguments;
    let (model, verbose, emit_dir) = (model.as_path(), *verbose, emit_dir.as_deref());
    let output = output.as_deref().map(|path| (path, *force));
    let arguments = pipeline;
    let options = arguments.options(Phase::Plan);
    if let Some((path, false)) = output {
        if path.exists() {
            bail!("{} exists; pass --force to replace it", path.display());
        }
    }
    let started = Instant::now();
    let graph = import(model)?;
    let imported = started.elapsed();
    eprintln!("  imported {} in {imported:.2?}", model.display());
    let mut compiled = compile(graph, &options, targets, &mut |step| eprintln!("  {step}"))?;
    compiled.phase_times.insert(0, ("import".to_string(), imported));
    if let Some(directory) = emit_dir {
        let files = emit(&compiled, targets, directory)?;
        eprintln!("  wrote {files} files to {}", directory.display());
    }
    let bounds = input_symbol_bounds(&compiled.graph, &options.bounds, &arguments.minima());
    let maxima: SymbolBindings = bounds.iter().map(|(s, &(_, max))| (s.clone(), max)).collect();
    let peak = compiled.plan.arena_bytes.evaluate(&maxima).unwrap_or(-1);
    let mut packed = None;
    if let Some((path, force)) = output {
        let started = Instant::now();
        let model_name = model_name_of(model);
        let artifact_options =
            ArtifactOptions { model_name: &model_name, precision: options.precision.name(), bounds: &bounds };
        let artifact = pack_artifact(&compiled, &artifact_options)?;
        write_file_atomically(path, &artifact.bytes, force)?;
        eprintln!("  wrote {} in {:.2?}", path.display(), started.elapsed());
        compiled.phase_times.push(("write".to_string(), started.elapsed()));
        packed = Some(artifact);
    }
    let bound_text: Vec<String> = bounds.iter().map(|(s, (min, max))| format!("{s}={min}..{max}")).collect();
    let variants = compiled.kernels.iter().filter(|k| !k.when.is_empty()).count();
    println!(
        "kernels: {} distinct of {} generated ({variants} of them shape-bucket variants)",
        compiled.distinct_kernels().count(),
        compiled.kernels.len()
    );
    println!("fusion groups: {}", compiled.graph.groups().len());
    let formats = |target: &str| -> String {
        let names: Vec<&str> = compiled.code.iter().filter(|o| o.target == target).map(|o| o.format.name()).collect();
        format!("{target} ({})", names.join("+"))
    };
    println!("code for: {}", compiled.targets().into_iter().map(formats).collect::<Vec<_>>().join(", "));
    println!("peak arena at the bounds ({}): {peak} bytes", bound_text.join(", "));
    match (&packed, output) {
        (Some(artifact), Some((path, _))) => {
            println!("launches: {}", artifact.launches);
            println!("weight bytes: {}", artifact.weight_bytes);
            println!("artifact: {} ({} bytes)", path.display(), artifact.bytes.len());
        }
        _ => println!("artifact: none written (pass -o OUT.kiln)"),
    }
    let phases: Vec<String> = compiled.phase_times.iter().map(|(phase, time)| format!("{phase} {time:.2?}")).collect();
    println!("time: {} (total {:.2?})", phases.join(", "), started.elapsed());
    for (assembler, target, kernels) in &compiled.resource_reports {
        let worst = |f: fn(&kiln_targets::target::KernelResources) -> u32| kernels.iter().map(f).max().unwrap_or(0);
        let spills: u32 = kernels.iter().map(|k| k.spill_stores + k.spill_loads).sum();
        println!(
            "{assembler} {target}: {} kernels, at most {} registers and {} B shared, {spills} B spilled{}",
            kernels.len(),
            worst(|k| k.registers),
            worst(|k| k.shared_bytes),
            if verbose { ":" } else { " (--verbose: per kernel)" }
        );
        if verbose {
            for kernel in kernels {
                println!(
                    "  {target} {:<22} {:>3} registers, {:>4} B spill stores, {:>4} B spill loads, {:>6} B shared",
                    kernel.name, kernel.registers, kernel.spill_stores, kernel.spill_loads, kernel.shared_bytes
                );
            }
        }
    }
    Ok(())
}
