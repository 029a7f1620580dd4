//! `kiln kernel`: one kernel-IR file (`.kir`, as `kiln compile --emit-dir`
//! writes them and `testdata/kernels/` holds them) verified, lowered to PTX
//! and run on the simulator with the buffers its `// buffer` lines give —
//! the bits a GPU must reproduce (scripts/gpu/run.py's probes).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use kiln_runtime::kernel::filetest::directives;
use kiln_runtime::kernel::{parse_kernel, verify_kernel, Param};
use kiln_runtime::machine::{run_on_arguments, MachineOptions};
use kiln_runtime::sim::{SimArgument, SimBuffer};

/// Lower one kernel-IR file to PTX and run it on the simulator, writing
/// `NAME.ptx` and `NAME.json` (launch size, each buffer's dtype, its input
/// elements and the simulator's output elements) into --out.
#[derive(clap::Args)]
pub struct Arguments {
    /// A `.kir` file with `// buffer NAME: …` lines for every buffer parameter
    /// (and `// bind: SYMBOL=N` for its symbols; testdata/kernels/README.md).
    pub file: PathBuf,
    /// The NVIDIA chip to lower for.
    #[arg(long, default_value = "sm_90")]
    pub target: String,
    /// Directory for NAME.ptx and NAME.json (created; existing files are kept unless --force).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: PathBuf,
    /// Overwrite NAME.ptx and NAME.json if they exist.
    #[arg(long)]
    pub force: bool,
}

pub fn run(arguments: &Arguments) -> Result<()> {
    let file = &arguments.file;
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let kernel = parse_kernel(&text).with_context(|| format!("{} is not kernel IR", file.display()))?;
    verify_kernel(&kernel)?;
    let found = directives(&text).map_err(anyhow::Error::msg).with_context(|| file.display().to_string())?;
    let mut arguments_ = Vec::new();
    for param in &kernel.params {
        arguments_.push(match param {
            Param::Buffer { name, dtype, .. } => {
                let data = found.buffers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
                let data = data.with_context(|| format!("{}: no `// buffer {name}:` line", file.display()))?;
                SimArgument::Buffer(SimBuffer { dtype: *dtype, data })
            }
            Param::Scalar { name, .. } => {
                let value =
                    found.bindings.get(name).with_context(|| format!("{}: no binding for `{name}`", file.display()))?;
                SimArgument::Scalar(*value as f64)
            }
        });
    }
    let inputs = arguments_.clone();
    run_on_arguments(
        &kernel,
        &mut arguments_,
        &found.bindings,
        MachineOptions { check: true, ..MachineOptions::default() },
    )
    .with_context(|| format!("simulating {}", kernel.name))?;
    let chip = &arguments.target;
    if kiln_targets::lower::nvptx::sm_version(chip).is_none() {
        bail!("--target {chip}: kiln kernel lowers for NVIDIA chips (sm_80, sm_90, …)");
    }
    let ptx = kiln_targets::lower::nvptx::lower_to_ptx(
        &[&kernel],
        chip,
        kiln_targets::lower::nvptx::find_libdevice().as_deref(),
    )?;
    let blocks = kernel.grid_blocks.evaluate(&found.bindings)?;
    let buffers: Vec<serde_json::Value> = kernel
        .params
        .iter()
        .zip(inputs.iter().zip(&arguments_))
        .map(|(param, (input, output))| match (param, input, output) {
            (Param::Buffer { name, dtype, writable }, SimArgument::Buffer(input), SimArgument::Buffer(output)) => {
                serde_json::json!({"name": name, "dtype": dtype.name(), "writable": writable,
                                   "input": input.data, "simulated": output.data})
            }
            (Param::Scalar { name, dtype }, SimArgument::Scalar(value), _) => {
                serde_json::json!({"name": name, "dtype": dtype.name(), "scalar": value})
            }
            _ => serde_json::Value::Null,
        })
        .collect();
    let description = serde_json::json!({
        "kernel": kernel.name, "target": chip, "threads": kernel.block_threads, "blocks": blocks,
        "dynamic_shared_bytes": kernel.dynamic_shared_bytes(), "params": buffers,
    });
    std::fs::create_dir_all(&arguments.out).with_context(|| format!("creating {}", arguments.out.display()))?;
    for (extension, bytes) in [("ptx", ptx.into_bytes()), ("json", serde_json::to_vec_pretty(&description)?)] {
        let path = arguments.out.join(format!("{}.{extension}", kernel.name));
        if path.exists() && !arguments.force {
            bail!("{} exists (--force overwrites it)", path.display());
        }
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
