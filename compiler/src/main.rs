//! The `kiln` command line.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use kiln_compiler::artifact::{input_symbol_bounds, pack_artifact, write_file_atomically, ArtifactOptions};
use kiln_compiler::compile::{compile, emit, Target};
use kiln_compiler::npy::{host_to_tensor, write_npy};
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
    /// Describe a model (inputs and outputs with symbolic shapes, parameters,
    /// op histogram, kernels) or a compiled `.kiln` artifact.
    Inspect {
        /// A .onnx file, a safetensors model directory, or a .kiln artifact.
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
    /// Compile a model into one `.kiln` artifact: optimize, generate one kernel
    /// per fusion group, lower to each target, pack weights, kernels, code and
    /// memory plan; `--emit-dir` also writes every kernel's IR, MLIR and PTX.
    Compile {
        /// A .onnx file or a safetensors model directory.
        model: PathBuf,
        /// Targets, comma-separated: sm_80, sm_90 (PTX, and a cubin when ptxas is
        /// installed), gfx90a, gfx942 (AMDGPU assembly).
        #[arg(long, value_delimiter = ',', default_value = "sm_80,sm_90")]
        target: Vec<Target>,
        #[command(flatten)]
        compile: CompileArguments,
        /// Write each kernel's `.kir`, `.mlir`, `.<sm>.ptx` and `.<gfx>.s` here.
        #[arg(long, value_name = "DIR")]
        emit_dir: Option<PathBuf>,
        /// The artifact to write.
        #[arg(short = 'o', long = "output", value_name = "OUT.kiln")]
        output: Option<PathBuf>,
        /// Replace OUT.kiln if it exists.
        #[arg(long)]
        force: bool,
        /// Also print ptxas's registers, spills and shared memory for every kernel.
        #[arg(long, short = 'v')]
        verbose: bool,
    },
    /// Run a compiled artifact on CUDA or in the kernel simulator and write
    /// every output as .npy (the same as the standalone `kiln-run`).
    Run(kiln_runtime::cli::RunArguments),
    /// Embed texts with a compiled sentence encoder (tokenizer.json, mean
    /// pooling and normalization as modules.json says) and print the cosine
    /// similarity of every query with every document.
    Embed {
        /// A `.kiln` artifact of a BERT-style encoder.
        artifact: PathBuf,
        /// The model's directory: tokenizer.json, modules.json and the pooling config.
        #[arg(long, value_name = "DIR")]
        model_dir: PathBuf,
        /// A query (repeat).
        #[arg(long = "query", value_name = "TEXT", required = true)]
        queries: Vec<String>,
        /// A document, e.g. an ad title (repeat).
        #[arg(long = "document", value_name = "TEXT", required = true)]
        documents: Vec<String>,
        /// auto (CUDA when present, else the simulator), cuda, cuda:N or sim.
        #[arg(long, default_value = "auto")]
        device: kiln_runtime::Device,
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
    /// Ranges of the symbols, e.g. `batch=1..64,seq=1..512` (`seq=512` means
    /// `1..512`): the memory plan is sized for the upper ends and the runtime
    /// rejects dims outside them. Default: batch=1..64, seq=1..512.
    #[arg(long, value_name = "SYMBOL=MIN..MAX,...", value_parser = parse_bounds)]
    bound: Option<BTreeMap<String, (i64, i64)>>,
}

impl CompileArguments {
    fn options(&self, stop_after: Phase) -> PipelineOptions {
        let bounds = match &self.bound {
            Some(ranges) => ranges.iter().map(|(symbol, &(_, max))| (symbol.clone(), max)).collect(),
            None => default_bounds(),
        };
        PipelineOptions { stop_after, precision: self.precision, bounds, ..PipelineOptions::default() }
    }

    /// The lower ends of the ranges.
    fn minima(&self) -> BTreeMap<String, i64> {
        self.bound.iter().flatten().map(|(symbol, &(min, _))| (symbol.clone(), min)).collect()
    }
}

/// `batch=1..64,seq=512` → `{batch: (1, 64), seq: (1, 512)}`.
fn parse_bounds(text: &str) -> Result<BTreeMap<String, (i64, i64)>, String> {
    text.split(',')
        .map(|pair| {
            let (name, range) = pair.split_once('=').ok_or_else(|| format!("`{pair}` is not SYMBOL=MIN..MAX"))?;
            let number = |value: &str| -> Result<i64, String> {
                let value: i64 = value.trim().parse().map_err(|_| format!("`{pair}`: `{value}` is not a number"))?;
                if value < 1 {
                    return Err(format!("`{pair}`: a dim is at least 1"));
                }
                Ok(value)
            };
            let (min, max) = match range.split_once("..") {
                Some((min, max)) => (number(min)?, number(max.trim_start_matches('='))?),
                None => (1, number(range)?),
            };
            if min > max {
                return Err(format!("`{pair}`: the range is empty"));
            }
            Ok((name.trim().to_string(), (min, max)))
        })
        .collect()
}

/// `batch=8,seq=128` → bindings.
fn parse_bindings(text: &str) -> Result<SymbolBindings, String> {
    text.split(',')
        .map(|pair| {
            let (name, value) = pair.split_once('=').ok_or_else(|| format!("`{pair}` is not SYMBOL=N"))?;
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
        Command::Inspect { model, json, .. } if is_artifact(&model) => {
            let artifact = kiln_runtime::cli::open_artifact(&model)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&artifact_json(&artifact))?);
            } else {
                print!("{}", kiln_runtime::cli::describe_artifact(&model, &artifact));
            }
            Ok(())
        }
        Command::Inspect { model, ir, json, dump_ir, stop_after, compile, bind } => {
            inspect(&model, ir, json, dump_ir.as_deref(), &compile.options(stop_after), bind.as_ref())
        }
        Command::Compile { model, target, compile, emit_dir, output, force, verbose } => {
            let output = output.as_deref().map(|path| (path, force));
            compile_model(&model, &target, &compile, emit_dir.as_deref(), output, verbose)
        }
        Command::Run(arguments) => kiln_runtime::cli::run_artifact(&arguments),
        Command::Embed { artifact, model_dir, queries, documents, device } => {
            similarity_table(&artifact, &model_dir, &queries, &documents, device)
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
    let inputs: HashMap<String, Tensor> = kiln_runtime::cli::read_inputs(input_arguments)?
        .into_iter()
        .map(|(name, host)| (name, host_to_tensor(&host)))
        .collect();
    let names: Vec<&str> = graph.outputs().iter().map(|o| o.name.as_str()).collect();
    let paths = kiln_runtime::cli::output_paths(output_dir, names.iter().copied(), force)?;
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

/// Whether `path` is a file that starts with the artifact magic.
fn is_artifact(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 8];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok()
        && &magic == kiln_runtime::artifact::MAGIC
}

fn compile_model(
    model: &Path,
    targets: &[Target],
    arguments: &CompileArguments,
    emit_dir: Option<&Path>,
    output: Option<(&Path, bool)>,
    verbose: bool,
) -> Result<()> {
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
    println!("kernels: {}", compiled.kernels.len());
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
    for (chip, kernels) in &compiled.ptxas_reports {
        let worst =
            |f: fn(&kiln_targets::lower::nvptx::KernelResources) -> u32| kernels.iter().map(f).max().unwrap_or(0);
        let spills: u32 = kernels.iter().map(|k| k.spill_stores + k.spill_loads).sum();
        println!(
            "ptxas {chip}: {} kernels, at most {} registers and {} B shared, {spills} B spilled{}",
            kernels.len(),
            worst(|k| k.registers),
            worst(|k| k.shared_bytes),
            if verbose { ":" } else { " (--verbose: per kernel)" }
        );
        if verbose {
            for kernel in kernels {
                println!(
                    "  {chip} {:<22} {:>3} registers, {:>4} B spill stores, {:>4} B spill loads, {:>6} B shared",
                    kernel.name, kernel.registers, kernel.spill_stores, kernel.spill_loads, kernel.shared_bytes
                );
            }
        }
    }
    Ok(())
}

fn similarity_table(
    artifact: &Path,
    model_dir: &Path,
    queries: &[String],
    documents: &[String],
    device: kiln_runtime::Device,
) -> Result<()> {
    use kiln_compiler::embed::{cosine, embed};
    let model = std::sync::Arc::new(kiln_runtime::Model::from_artifact(kiln_runtime::cli::open_artifact(artifact)?));
    let mut session = kiln_runtime::Session::new(model, device)?;
    let texts: Vec<String> = queries.iter().chain(documents).cloned().collect();
    let started = Instant::now();
    let vectors = embed(&mut session, model_dir, &texts)?;
    let elapsed = started.elapsed();
    let width = queries.iter().map(|q| q.chars().count()).max().unwrap_or(0).min(40);
    let short = |text: &str, n: usize| -> String {
        let cut: String = text.chars().take(n).collect();
        if cut.chars().count() < text.chars().count() {
            format!("{}…", cut.chars().take(n - 1).collect::<String>())
        } else {
            cut
        }
    };
    println!("cosine similarity (rows: queries, columns: documents)");
    for (index, document) in documents.iter().enumerate() {
        println!("  [{}] {document}", index + 1);
    }
    print!("{:width$}", "");
    for index in 0..documents.len() {
        print!("  {:>6}", format!("[{}]", index + 1));
    }
    println!();
    for (query_index, query) in queries.iter().enumerate() {
        print!("{:width$}", short(query, width));
        for document_index in 0..documents.len() {
            let similarity = cosine(&vectors[query_index], &vectors[queries.len() + document_index]);
            print!("  {similarity:>6.3}");
        }
        println!();
    }
    println!(
        "{} texts in {elapsed:.2?} ({:.1} texts/s) on {}",
        texts.len(),
        texts.len() as f64 / elapsed.as_secs_f64(),
        session.device_description()
    );
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

/// The name an artifact records for `model`: the file name, or for a
/// directory its last two components (`bert-hf5/hf`, `…_l6_v2/model`).
fn model_name_of(model: &Path) -> String {
    let components: Vec<String> = model
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    let keep = if model.is_dir() { 2 } else { 1 };
    components[components.len().saturating_sub(keep)..].join("/")
}
