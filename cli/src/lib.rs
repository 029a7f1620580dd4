//! What `kiln run` and `kiln-run` share: their arguments, the run itself,
//! and the description `kiln inspect ARTIFACT` prints. Command-line code lives
//! here, so the runtime library needs neither clap nor anyhow.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use kiln_runtime::artifact::{Artifact, BufferRole};
use kiln_runtime::npy::{narrow_f64, read_npy, write_npy};
use kiln_runtime::{Device, HostTensor, Model, Session};

/// Inputs from `.npy` files, outputs to `.npy` files: what `kiln run`,
/// `kiln-run` and `kiln eval` take.
#[derive(clap::Args, Clone, Debug)]
pub struct TensorFiles {
    /// A model input: NAME=FILE.npy (repeat for each input).
    #[arg(long = "input", value_name = "NAME=FILE.npy")]
    pub inputs: Vec<String>,
    /// Where `<output name>.npy` files are written (created if missing).
    #[arg(long, value_name = "DIR")]
    pub output_dir: PathBuf,
    /// Replace output files that already exist.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of a run.
#[derive(clap::Args, Clone, Debug)]
pub struct RunArguments {
    /// A `.kiln` artifact written by `kiln compile -o`.
    pub artifact: PathBuf,
    /// Where to run: auto (CUDA device 0 when a GPU and driver are present,
    /// else the simulator), cuda, cuda:N, sim, or interpreter (the
    /// simulator's slow, independent reference implementation).
    #[arg(long, default_value = "auto")]
    pub device: Device,
    /// Turn the simulator's sanitizer checks on (out-of-bounds and misaligned
    /// accesses, shared-memory races by happens-before, uninitialized shared
    /// reads, global bytes written by two blocks, divergent barriers,
    /// deadlocks); ignored on CUDA.
    #[arg(long)]
    pub check: bool,
    #[command(flatten)]
    pub io: TensorFiles,
    /// After the run, time rounds of this many back-to-back executions of
    /// the launches (inputs left on the device; on CUDA with events around
    /// each round and CUDA graphs) and print the median time per call; the
    /// outputs after the last replay must equal the first run's.
    #[arg(long, default_value_t = 0)]
    pub repeat: usize,
    /// Rounds of `--repeat` calls to take the median of.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub rounds: u64,
    /// After the run, time every launch alone this many times (on CUDA:
    /// events around each launch, no graph) and print each one's median
    /// beside the compiler's least FLOPs and bytes for it.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub profile: usize,
}

/// An output name made safe as a file name (`/` and other separators become `_`).
pub fn file_name_of(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' { c } else { '_' }).collect()
}

/// Opens and validates an artifact; errors name the file once.
pub fn open_artifact(path: &Path) -> Result<Artifact> {
    Artifact::open(path).map_err(|error| match error {
        kiln_runtime::ArtifactError::Io { .. } => anyhow::Error::new(error),
        other => anyhow::Error::new(other).context(path.display().to_string()),
    })
}

/// `DIR/<name>.npy` for each output name; an existing file is an error
/// unless `force` (nothing the user has is replaced without asking).
pub fn output_paths<'a>(directory: &Path, names: impl Iterator<Item = &'a str>, force: bool) -> Result<Vec<PathBuf>> {
    output_paths_with_extension(directory, names, "npy", force)
}

/// `DIR/<name>.EXTENSION` for each output name, as [`output_paths`].
pub fn output_paths_with_extension<'a>(
    directory: &Path,
    names: impl Iterator<Item = &'a str>,
    extension: &str,
    force: bool,
) -> Result<Vec<PathBuf>> {
    let paths: Vec<PathBuf> = names.map(|name| directory.join(format!("{}.{extension}", file_name_of(name)))).collect();
    if !force {
        if let Some(existing) = paths.iter().find(|p| p.exists()) {
            bail!("{} exists; pass --force to replace it", existing.display());
        }
    }
    Ok(paths)
}

/// Reads `NAME=FILE.npy` arguments.
pub fn read_inputs(arguments: &[String]) -> Result<Vec<(String, HostTensor)>> {
    read_inputs_with(arguments, |path| Ok(narrow_f64(read_npy(path)?)))
}

/// Reads `NAME=FILE` arguments, each file with `read` (which names the file in its errors).
pub fn read_inputs_with(
    arguments: &[String],
    read: impl Fn(&Path) -> Result<HostTensor>,
) -> Result<Vec<(String, HostTensor)>> {
    let mut inputs: Vec<(String, HostTensor)> = Vec::new();
    for argument in arguments {
        let Some((name, file)) = argument.split_once('=') else {
            bail!("--input `{argument}` is not NAME=FILE.npy");
        };
        if inputs.iter().any(|(n, _)| n == name) {
            bail!("input `{name}` is given twice");
        }
        let tensor = read(Path::new(file)).with_context(|| format!("input `{name}`"))?;
        inputs.push((name.to_string(), tensor));
    }
    Ok(inputs)
}

/// Opens the artifact, runs it on the inputs and writes every output as `.npy`.
pub fn run_artifact(arguments: &RunArguments) -> Result<()> {
    let started = Instant::now();
    let model = Arc::new(Model::from_artifact(open_artifact(&arguments.artifact)?));
    eprintln!("opened {} in {:.2?}", arguments.artifact.display(), started.elapsed());
    let inputs = read_inputs(&arguments.io.inputs)?;
    let artifact = &model.artifact;
    let entry = artifact.entry_point("forward").context("the artifact has no `forward` entry point")?;
    let names = entry.outputs.iter().map(|&slot| artifact.slots[slot].tensor.name.as_str());
    let output_paths = output_paths(&arguments.io.output_dir, names, arguments.io.force)?;
    let device = arguments.device.clone().with_check(arguments.check);
    let started = Instant::now();
    let mut session = Session::new(model.clone(), device)?;
    eprintln!("device: {} (ready in {:.2?})", session.device_description(), started.elapsed());
    let started = Instant::now();
    let outputs = if arguments.repeat == 0 {
        let outputs = session.run(&inputs)?;
        eprintln!("ran in {:.2?}", started.elapsed());
        outputs
    } else {
        let benchmark = session.benchmark(&inputs, arguments.repeat, arguments.rounds as usize)?;
        if let Some(output) = benchmark.replay_mismatch() {
            bail!("output `{output}` after {} replays differs from the first run's", arguments.repeat);
        }
        let per_round: Vec<String> =
            benchmark.round_times.iter().map(|t| format!("{:.4}", t.as_secs_f64() * 1e3)).collect();
        // One line a script can parse.
        println!(
            "median_ms {:.4} rounds {} calls {} replays_match_first_run true round_ms {}",
            benchmark.median().as_secs_f64() * 1e3,
            benchmark.round_times.len(),
            arguments.repeat,
            per_round.join(",")
        );
        benchmark.outputs
    };
    if arguments.profile > 0 {
        print_profile(&session.profile(&inputs, arguments.profile)?);
    }
    std::fs::create_dir_all(&arguments.io.output_dir)
        .with_context(|| format!("creating {}", arguments.io.output_dir.display()))?;
    for ((name, tensor), path) in outputs.iter().zip(&output_paths) {
        write_npy(path, tensor)?;
        println!("{name}: {:?} {} -> {}", tensor.shape, tensor.dtype, path.display());
    }
    Ok(())
}

/// One line per launch (`launch INDEX GROUP KERNEL median_us=… flops=… bytes=…`,
/// for scripts) and the achieved rates; on the simulator, a second line of
/// the launch's memory counters (`counters INDEX global_read=… sectors_read=…
/// coalesced=… shared_requests=… conflict_replays=…`): `coalesced` is the
/// share of the bytes in the 32-byte sectors touched that were asked for
/// (above 1 when lanes share bytes); and a line per weight the launch reads
/// (`weight INDEX NAME bytes=… read=… passes=… sector_efficiency=…`).
fn print_profile(launches: &[kiln_runtime::session::LaunchProfile]) {
    let mut total = std::time::Duration::ZERO;
    for (index, launch) in launches.iter().enumerate() {
        let median = launch.median();
        total += median;
        let seconds = median.as_secs_f64().max(1e-12);
        println!(
            "launch {index} {} {} median_us={:.2} flops={} bytes={} tflops={:.3} gbps={:.1}",
            launch.group,
            launch.kernel,
            seconds * 1e6,
            launch.flops,
            launch.bytes,
            launch.flops as f64 / seconds / 1e12,
            launch.bytes as f64 / seconds / 1e9
        );
        if let Some(c) = &launch.counters {
            let sectors = c.global_sectors_read + c.global_sectors_written;
            let asked = c.global_bytes_read + c.global_bytes_written;
            println!(
                "counters {index} global_read={} global_written={} sectors_read={} sectors_written={} coalesced={:.2} shared_requests={} shared_wavefronts={} conflict_replays={}",
                c.global_bytes_read,
                c.global_bytes_written,
                c.global_sectors_read,
                c.global_sectors_written,
                asked as f64 / (sectors.max(1) * 32) as f64,
                c.shared_requests,
                c.shared_wavefronts,
                c.shared_conflict_wavefronts
            );
        }
        for weight in &launch.weights {
            println!(
                "weight {index} {} bytes={} read={} passes={:.2} sector_efficiency={:.2}",
                weight.name,
                weight.bytes,
                weight.traffic.bytes_read,
                weight.passes(),
                weight.sector_efficiency()
            );
        }
    }
    println!("launches {} total_us={:.2}", launches.len(), total.as_secs_f64() * 1e6);
}

/// A human-readable description of an artifact.
pub fn describe_artifact(path: &Path, artifact: &Artifact) -> String {
    let manifest = &artifact.manifest;
    let mut text = String::new();
    let signature = |slot: usize| {
        let tensor = &artifact.slots[slot].tensor;
        let shape = tensor.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
        format!("{}: {}[{shape}]", tensor.name, tensor.dtype)
    };
    let _ = writeln!(
        text,
        "artifact {} ({} bytes, format version {})",
        path.display(),
        artifact.file_bytes(),
        kiln_runtime::artifact::FORMAT_VERSION
    );
    let _ = writeln!(
        text,
        "model: {} (compiled by {}, precision {})",
        manifest.model_name, manifest.producer, manifest.precision
    );
    let bounds: Vec<String> = artifact.bounds.iter().map(|(s, (min, max))| format!("{s}={min}..{max}")).collect();
    let _ =
        writeln!(text, "bounds: {}", if bounds.is_empty() { "none (static shapes)".into() } else { bounds.join(", ") });
    for entry in &artifact.entry_points {
        let _ = writeln!(text, "entry point `{}`: {} launches", entry.name, entry.launches.len());
        for &slot in &entry.inputs {
            let _ = writeln!(text, "  input  {}", signature(slot));
        }
        for &slot in &entry.outputs {
            let _ = writeln!(text, "  output {}", signature(slot));
        }
    }
    let _ = writeln!(text, "kernels: {}", artifact.kernels.len());
    let _ = writeln!(text, "weights: {} tensors, {} bytes", artifact.weights.len(), artifact.weight_total_bytes());
    let scratch = artifact.slots.iter().filter(|s| s.role == BufferRole::Scratch).count();
    let _ =
        writeln!(text, "arena: {} bytes ({} buffers, {scratch} scratch)", artifact.arena_bytes, artifact.slots.len());
    let bounds_max = artifact.bounds.iter().map(|(s, &(_, max))| (s.clone(), max)).collect();
    if let Ok(bytes) = artifact.arena_bytes.evaluate(&bounds_max) {
        let _ = writeln!(text, "peak arena at the bounds: {bytes} bytes");
    }
    let code: Vec<String> = artifact
        .targets()
        .into_iter()
        .map(|target| {
            let formats: Vec<&str> =
                artifact.code_objects().filter(|o| o.target == target).map(|o| o.format.name()).collect();
            format!("{target} ({})", formats.join(", "))
        })
        .collect();
    let _ = writeln!(text, "code: {}", if code.is_empty() { "none (simulator only)".into() } else { code.join(", ") });
    text
}
