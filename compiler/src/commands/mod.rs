//! The `kiln` commands, one file each: a clap struct of its arguments and a
//! function that runs it. What several commands share is here: the pipeline
//! options, importing with progress, optimizing with `--dump-ir`.

pub mod compile;
pub mod embed;
pub mod eval;
pub mod inspect;
pub mod kernel;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use kiln_compiler::load_model;
use kiln_ir::{print_graph_summary, Graph, SymbolBindings};
use kiln_passes::{default_bounds, MemoryPlan, Phase, Pipeline, PipelineOptions, Precision};

/// Options of the optimization pipeline.
#[derive(clap::Args, Clone)]
pub struct CompileArguments {
    /// Compute precision: f32 (true f32, the default), tf32 (f32 tensors;
    /// matmuls may multiply on tensor cores as tf32, f32 accumulation), f16
    /// or bf16 (f16/bf16 weights and activations, f32 accumulation and statistics).
    #[arg(long, value_name = "PRECISION", value_parser = parse_precision)]
    pub precision: Option<Precision>,
    /// Ranges of the symbols, e.g. `batch=1..64,seq=1..512` (`seq=512` means
    /// `1..512`): the memory plan is sized for the upper ends and the runtime
    /// rejects dims outside them. Default: batch=1..64, seq=1..512.
    #[arg(long, value_name = "SYMBOL=MIN..MAX,...", value_parser = parse_bounds)]
    pub bound: Option<BTreeMap<String, (i64, i64)>>,
}

impl CompileArguments {
    pub fn options(&self, stop_after: Phase) -> PipelineOptions {
        let bounds = match &self.bound {
            Some(ranges) => ranges.iter().map(|(symbol, &(_, max))| (symbol.clone(), max)).collect(),
            None => default_bounds(),
        };
        let precision = self.precision.unwrap_or(Precision::F32);
        PipelineOptions { stop_after, precision, bounds, ..PipelineOptions::default() }
    }

    /// The lower ends of the ranges.
    pub fn minima(&self) -> BTreeMap<String, i64> {
        self.bound.iter().flatten().map(|(symbol, &(min, _))| (symbol.clone(), min)).collect()
    }

    /// Whether any of these options was given (they do not apply to an artifact).
    pub fn given(&self) -> Option<&'static str> {
        if self.precision.is_some() {
            Some("--precision")
        } else if self.bound.is_some() {
            Some("--bound")
        } else {
            None
        }
    }
}

/// A precision `kiln` compiles for.
fn parse_precision(text: &str) -> Result<Precision, String> {
    text.parse::<Precision>()
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
pub fn parse_bindings(text: &str) -> Result<SymbolBindings, String> {
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

pub fn import(model: &Path) -> Result<kiln_ir::Graph> {
    let started = Instant::now();
    let graph = load_model(model)?;
    eprintln!("imported {} ({} nodes) in {:.2?}", model.display(), graph.node_count(), started.elapsed());
    Ok(graph)
}

/// Runs the pipeline up to `stop_after`, reporting each phase's time on stderr
/// and writing the IR after every changing pass into `dump_ir`.
pub fn optimize(graph: &mut Graph, options: &PipelineOptions, dump_ir: Option<&Path>) -> Result<Option<MemoryPlan>> {
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

/// Whether `path` is a file that starts with the artifact magic.
pub fn is_artifact(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 8];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok()
        && &magic == kiln_runtime::artifact::MAGIC
}

/// The name an artifact records for `model`: the file name, or for a
/// directory its last two components (`bert-hf5/hf`, `…_l6_v2/model`).
pub fn model_name_of(model: &Path) -> String {
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
