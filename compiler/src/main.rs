//! The `kiln` command line.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use kiln_compiler::compile::{compile, emit, Target};
use kiln_compiler::npy::{read_npy, write_npy};
use kiln_compiler::{load_model, summary};
use kiln_ir::SymbolBindings;
use kiln_ir::{evaluate, print_graph_summary, Graph, Tensor};
use kiln_passes::{default_bounds, MemoryPlan, Phase, Pipeline, PipelineOptions, Precision};

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
        /// Write the IR text after import and after every pass that changed it
        /// into DIR (`000-import.ir`, `001-canonicalize-fold_shapes.ir`, …).
        #[arg(long, value_name = "DIR")]
        dump_ir: Option<PathBuf>,
        /// Run the pipeline up to and including this phase before describing the model.
        #[arg(long, value_name = "PHASE", default_value = "plan")]
        stop_after: Phase,
        #[command(flatten)]
        compile: CompileArguments,
        /// Report the arena size for these symbol values, e.g. `batch=8,seq=128`.
        #[arg(long, value_name = "SYMBOL=N,...", value_parser = parse_bindings)]
        bind: Option<SymbolBindings>,
    },
    /// Compile a model: optimize, generate one kernel per fusion group, lower to
    /// each target; `--emit-dir` writes every kernel's IR, MLIR and PTX.
    Compile {
        /// A .onnx file or a safetensors model directory.
        model: PathBuf,
        /// Targets, comma-separated: sm_80, sm_90 (PTX), gfx90a, gfx942 (AMDGPU assembly).
        #[arg(long, value_delimiter = ',', default_value = "sm_80,sm_90")]
        target: Vec<Target>,
        #[command(flatten)]
        compile: CompileArguments,
        /// Write each kernel's `.kir`, `.mlir`, `.<sm>.ptx` and `.<gfx>.s` here.
        #[arg(long, value_name = "DIR")]
        emit_dir: Option<PathBuf>,
        /// The artifact to write (the artifact format arrives with the runtime; see the note this prints).
        #[arg(short = 'o', long = "output", value_name = "OUT.kiln")]
        output: Option<PathBuf>,
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
        /// Evaluate the graph after this phase of the pipeline (canonicalize,
        /// recognize, fuse, layout, precision, plan); default: the imported graph.
        #[arg(long, value_name = "PHASE")]
        stop_after: Option<Phase>,
        #[command(flatten)]
        compile: CompileArguments,
    },
}

/// Options of the optimization pipeline.
#[derive(clap::Args, Clone)]
struct CompileArguments {
    /// Compute precision: f32 (true f32), tf32 (f32 storage, TF32 matmuls),
    /// f16 or bf16 (f16/bf16 weights and activations, f32 accumulation and statistics).
    #[arg(long, value_name = "PRECISION", default_value = "f32")]
    precision: Precision,
    /// Largest values of the symbols, e.g. `batch=64,seq=512` (the memory plan is sized for them).
    #[arg(long, value_name = "SYMBOL=N,...", value_parser = parse_bindings)]
    bound: Option<SymbolBindings>,
}

impl CompileArguments {
    fn options(&self, stop_after: Phase) -> PipelineOptions {
        PipelineOptions {
            stop_after,
            precision: self.precision,
            bounds: self.bound.clone().unwrap_or_else(default_bounds),
            ..PipelineOptions::default()
        }
    }
}

/// `batch=8,seq=128` → bindings; also accepts ranges `seq=1..512` (their upper end).
fn parse_bindings(text: &str) -> Result<SymbolBindings, String> {
    text.split(',')
        .map(|pair| {
            let (name, value) = pair.split_once('=').ok_or_else(|| format!("`{pair}` is not SYMBOL=N"))?;
            let value = value.rsplit("..").next().unwrap_or(value);
            let value: i64 = value.trim().parse().map_err(|_| format!("`{pair}`: `{value}` is not a number"))?;
            if value < 1 {
                return Err(format!("`{pair}`: a dim is at least 1"));
            }
            Ok((name.trim().to_string(), value))
        })
        .collect()
}

fn main() {
    if let Err(error) = run(Cli::parse()) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Inspect { model, ir, json, dump_ir, stop_after, compile, bind } => {
            inspect(&model, ir, json, dump_ir.as_deref(), &compile.options(stop_after), bind.as_ref())
        }
        Command::Compile { model, target, compile, emit_dir, output } => {
            compile_model(&model, &target, &compile.options(Phase::Plan), emit_dir.as_deref(), output.as_deref())
        }
        Command::Eval { model, inputs, output_dir, force, stop_after, compile } => {
            let options = stop_after.map(|phase| compile.options(phase));
            eval(&model, &inputs, &output_dir, force, options.as_ref())
        }
    }
}

fn import(model: &Path) -> Result<kiln_ir::Graph> {
    let started = Instant::now();
    let graph = load_model(model)?;
    eprintln!("imported {} ({} nodes) in {:.2?}", model.display(), graph.node_count(), started.elapsed());
    Ok(graph)
}

/// Runs the pipeline up to `stop_after`, reporting each phase's time on stderr
/// and writing the IR after every changing pass into `dump_ir`.
fn optimize(graph: &mut Graph, options: &PipelineOptions, dump_ir: Option<&Path>) -> Result<Option<MemoryPlan>> {
    if let Some(directory) = dump_ir {
        std::fs::create_dir_all(directory).with_context(|| format!("creating {}", directory.display()))?;
        std::fs::write(directory.join("000-import.ir"), print_graph_summary(graph))?;
    }
    let mut step = 0;
    let mut write_error = None;
    let mut phase_started = Instant::now();
    let mut current_phase = None;
    let pipeline = Pipeline::new(options.clone());
    let plan = pipeline.run(graph, &mut |phase, pass, graph| {
        if current_phase != Some(phase) {
            if let Some(previous) = current_phase {
                eprintln!("  {previous:<12} {:.2?}", phase_started.elapsed());
            }
            current_phase = Some(phase);
            phase_started = Instant::now();
        }
        if let Some(directory) = dump_ir {
            step += 1;
            let path = directory.join(format!("{step:03}-{phase}-{pass}.ir"));
            if let Err(error) = std::fs::write(&path, print_graph_summary(graph)) {
                write_error.get_or_insert(anyhow::anyhow!("writing {}: {error}", path.display()));
            }
        }
    })?;
    if let Some(previous) = current_phase {
        eprintln!("  {previous:<12} {:.2?}", phase_started.elapsed());
    }
    if let Some(error) = write_error {
        return Err(error);
    }
    eprintln!("optimized to {} nodes (through phase {})", graph.node_count(), options.stop_after);
    Ok(plan)
}

fn inspect(
    model: &Path,
    ir: bool,
    json: bool,
    dump_ir: Option<&Path>,
    options: &PipelineOptions,
    bind: Option<&SymbolBindings>,
) -> Result<()> {
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

fn eval(
    model: &Path,
    input_arguments: &[String],
    output_dir: &Path,
    force: bool,
    options: Option<&PipelineOptions>,
) -> Result<()> {
    let mut graph = import(model)?;
    if let Some(options) = options {
        optimize(&mut graph, options, None)?;
    }
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

fn compile_model(
    model: &Path,
    targets: &[Target],
    options: &PipelineOptions,
    emit_dir: Option<&Path>,
    output: Option<&Path>,
) -> Result<()> {
    let graph = import(model)?;
    let compiled = compile(graph, options, targets, &mut |step| eprintln!("  {step}"))?;
    if let Some(directory) = emit_dir {
        let files = emit(&compiled, targets, directory)?;
        eprintln!("wrote {files} files to {}", directory.display());
    }
    let bound = compiled.plan.arena_bytes.evaluate(&options.bounds_for(&compiled.graph)).unwrap_or(-1);
    println!(
        "kernels: {}, fusion groups: {}, code for: {}, peak arena at the bounds: {bound} bytes",
        compiled.kernels.len(),
        compiled.graph.groups().len(),
        compiled.ptx.iter().chain(&compiled.amdgpu).map(|(chip, _)| chip.as_str()).collect::<Vec<_>>().join(", ")
    );
    // What ptxas makes of each kernel, when ptxas is installed (scripts/setup.sh).
    if let Some(ptxas) = kiln_targets::lower::nvptx::find_ptxas() {
        for (chip, ptx) in &compiled.ptx {
            match kiln_targets::lower::nvptx::assemble(&ptxas, ptx, chip) {
                Ok(kernels) => {
                    for kernel in kernels {
                        println!(
                            "  {chip} {:<22} {:>3} registers, {:>4} B spill stores, {:>4} B spill loads, {:>6} B shared",
                            kernel.name, kernel.registers, kernel.spill_stores, kernel.spill_loads, kernel.shared_bytes
                        );
                    }
                }
                Err(log) => bail!("ptxas rejects the {chip} code:\n{log}"),
            }
        }
    }
    if let Some(path) = output {
        eprintln!("note: -o {}: the artifact format is not implemented yet; nothing was written there", path.display());
    }
    Ok(())
}

/// An output name made safe as a file name (`/` and other separators become `_`).
fn file_name_of(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' { c } else { '_' }).collect()
}
