//! How fast the simulator runs real models: useful FLOP/s (the compiler's
//! least FLOPs per launch, summed, over the wall time of one run) of the
//! machine — kiln's fast simulator — and of the tree-walking interpreter it
//! replaced, on the same artifact and inputs, with their ratio.
//!
//! Workloads:
//! - `minilm`: all-MiniLM-L6-v2 on the demo's batch shape (6 texts of 16
//!   tokens; token ids drawn from a fixed seed);
//! - `decode`: one decode-shaped step (batch 1, one token) of a checkpoint
//!   shaped as SmolLM2-135M — hidden 576, 30 layers, 9/3 heads, tied
//!   169 MB embedding as the LM head — with random weights, written by
//!   `scripts/random_checkpoint.py smollm2-135m DIR`.
//!
//! ```text
//! cargo run --release -p kiln-compiler --example simulator_benchmark -- \
//!     --minilm "$(scripts/minilm-dir.sh)" --decoder DIR [--rounds 3] [--no-interpreter]
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kiln_compiler::artifact::{input_symbol_bounds, pack_artifact, ArtifactOptions};
use kiln_compiler::compile::compile;
use kiln_compiler::load_model;
use kiln_passes::PipelineOptions;
use kiln_runtime::artifact::Artifact;
use kiln_runtime::{Device, HostTensor, Model, Session};

struct Arguments {
    minilm: Option<PathBuf>,
    decoder: Option<PathBuf>,
    rounds: usize,
    interpreter: bool,
    /// Print the slowest launches on the machine and the program of the slowest.
    profile: bool,
    /// Print the program of the kernel whose name contains this instead.
    listing: Option<String>,
}

const USAGE: &str = "simulator_benchmark [--minilm DIR] [--decoder DIR] [--rounds N] [--no-interpreter] \
[--profile [--listing KERNEL]]
  Measures useful GFLOP/s of the machine (the fast simulator) on the MiniLM demo batch (6 x 16) and a
  SmolLM2-shaped decode step (scripts/random_checkpoint.py smollm2-135m DIR), against the interpreter.
  --profile prints time per kernel kind, the slowest launches and the program of the slowest (or of the
  kernel named KERNEL, else the first whose name contains it).";

fn arguments() -> Result<Arguments> {
    let mut parsed =
        Arguments { minilm: None, decoder: None, rounds: 3, interpreter: true, profile: false, listing: None };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--minilm" => parsed.minilm = Some(value()?.into()),
            "--decoder" => parsed.decoder = Some(value()?.into()),
            "--rounds" => parsed.rounds = value()?.parse().context("--rounds takes a count")?,
            "--no-interpreter" => parsed.interpreter = false,
            "--profile" => parsed.profile = true,
            "--listing" => parsed.listing = Some(value()?),
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    if parsed.minilm.is_none() && parsed.decoder.is_none() {
        bail!("nothing to measure: give --minilm DIR and/or --decoder DIR");
    }
    Ok(parsed)
}

/// Compiles the model at `path` to an artifact with kernel IR only (no GPU code).
fn model_at(path: &std::path::Path) -> Result<Arc<Model>> {
    let started = Instant::now();
    let graph = load_model(path).with_context(|| format!("importing {}", path.display()))?;
    let options = PipelineOptions::default();
    let compiled = compile(graph, &options, &[], &mut |_| {})?;
    let bounds = input_symbol_bounds(&compiled.graph, &options.bounds, &Default::default());
    let options = ArtifactOptions { model_name: "benchmark", precision: "f32", bounds: &bounds };
    let bytes = pack_artifact(&compiled, &options)?.bytes;
    eprintln!("compiled {} in {:.1}s", path.display(), started.elapsed().as_secs_f64());
    Ok(Arc::new(Model::from_artifact(Artifact::from_bytes(bytes)?)))
}

/// Token ids from a fixed seed in `1000..2000` (inside every vocabulary here).
fn token_ids(count: usize) -> Vec<i64> {
    let mut state = 0x5eedu64;
    (0..count)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            1000 + (state >> 33) as i64 % 1000
        })
        .collect()
}

/// Useful FLOPs of one run, and the median wall time of `rounds` runs.
fn measure(
    model: &Arc<Model>,
    device: Device,
    inputs: &[(String, HostTensor)],
    rounds: usize,
) -> Result<(i64, Duration)> {
    let mut session = Session::new(model.clone(), device)?;
    let flops = session.profile(inputs, 1)?.iter().map(|launch| launch.flops).sum();
    let mut times = Vec::new();
    for _ in 0..rounds.max(1) {
        let started = Instant::now();
        session.run(inputs)?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok((flops, times[times.len() / 2]))
}

/// The twelve slowest launches on the machine, and the compiled program of the slowest.
fn profile(model: &Arc<Model>, inputs: &[(String, HostTensor)], listing: Option<&str>) -> Result<()> {
    let mut session = Session::new(model.clone(), Device::sim(false))?;
    let mut launches = session.profile(inputs, 1)?;
    launches.sort_by_key(|launch| std::cmp::Reverse(launch.median()));
    // Time and useful FLOPs per kernel kind (the name after the group).
    let mut kinds: std::collections::BTreeMap<String, (Duration, i64, usize)> = Default::default();
    for launch in &launches {
        let kind = launch.kernel.split_once('_').map_or(launch.kernel.as_str(), |(_, kind)| kind).to_string();
        let entry = kinds.entry(kind).or_default();
        entry.0 += launch.median();
        entry.1 += launch.flops;
        entry.2 += 1;
    }
    for (kind, (time, flops, count)) in &kinds {
        let rate = *flops as f64 / time.as_secs_f64() / 1e9;
        println!("  {kind:>18}: {count:>4} launches {:>9.2?} {rate:>7.3} GFLOP/s", time);
    }
    for launch in launches.iter().take(12) {
        let rate = launch.flops as f64 / launch.median().as_secs_f64() / 1e9;
        println!("  {:>9.2?} {:>7.3} GFLOP/s  {}", launch.median(), rate, launch.kernel);
    }
    let shown = match listing {
        Some(part) => {
            let kernels = &model.artifact.kernel_ir;
            let exact = kernels.iter().find(|k| k.name == part);
            exact.or_else(|| kernels.iter().find(|k| k.name.contains(part))).map(|k| k.name.clone())
        }
        None => launches.first().map(|slowest| slowest.kernel.clone()),
    };
    if let Some(name) = shown {
        let kernel = model.artifact.kernel_ir.iter().find(|k| k.name == name).context("the kernel")?;
        let program = kiln_runtime::machine::Program::compile(kernel, 32)?;
        println!("{}\n{}", kiln_runtime::kernel::print_kernel(kernel), program.listing());
    }
    Ok(())
}

fn report(name: &str, model: &Arc<Model>, inputs: &[(String, HostTensor)], arguments: &Arguments) -> Result<()> {
    if arguments.profile {
        profile(model, inputs, arguments.listing.as_deref())?;
    }
    let (flops, machine) = measure(model, Device::sim(false), inputs, arguments.rounds)?;
    let rate = |time: Duration| flops as f64 / time.as_secs_f64() / 1e9;
    println!(
        "{name}: {:.3} GFLOP per run; machine {:.3}s = {:.2} GFLOP/s",
        flops as f64 / 1e9,
        machine.as_secs_f64(),
        rate(machine)
    );
    if arguments.interpreter {
        let interpreter = Device { executor: Some("interpreter".into()), ordinal: 0, check: false };
        let (_, old) = measure(model, interpreter, inputs, 1)?;
        println!(
            "{name}: interpreter {:.3}s = {:.3} GFLOP/s; machine / interpreter = {:.1}x",
            old.as_secs_f64(),
            rate(old),
            old.as_secs_f64() / machine.as_secs_f64()
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let arguments = arguments()?;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("simulator benchmark on {threads} cores");
    if let Some(path) = &arguments.minilm {
        let model = model_at(path)?;
        let (batch, seq) = (6, 16);
        let inputs = vec![
            ("input_ids".to_string(), HostTensor::from_i64(vec![batch, seq], &token_ids(batch * seq))),
            ("attention_mask".to_string(), HostTensor::from_i64(vec![batch, seq], &vec![1; batch * seq])),
            ("token_type_ids".to_string(), HostTensor::from_i64(vec![batch, seq], &vec![0; batch * seq])),
        ];
        report("minilm batch 6 x 16", &model, &inputs, &arguments)?;
    }
    if let Some(path) = &arguments.decoder {
        let model = model_at(path)?;
        let inputs = vec![
            ("input_ids".to_string(), HostTensor::from_i64(vec![1, 1], &token_ids(1))),
            ("attention_mask".to_string(), HostTensor::from_i64(vec![1, 1], &[1])),
        ];
        report("decode step (SmolLM2-135M shape, 1 token)", &model, &inputs, &arguments)?;
    }
    Ok(())
}
