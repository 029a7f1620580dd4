//! What an artifact launches for given dims — the variant of each launch a
//! device picks — and the performance model of each launch on a GPU: its
//! least FLOPs and bytes, the roofline floor and the cost model's estimate
//! (`kiln inspect ARTIFACT --bind … [--roofline --gpu h100]`). A model, never
//! a measurement.

use std::fmt::Write;

use kiln_runtime::artifact::ArgumentSpec;
use kiln_runtime::session::choose_variant;
use kiln_runtime::{Artifact, SymbolBindings};
use kiln_targets::cost_model::{estimate, GpuSpec, MatmulProblem};
use kiln_targets::generate::tensor_core_matmul::TileConfig;

/// One launch at the bound dims.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchRow {
    pub group: String,
    /// The kernel the variant runs (`g3_matmul_tc128x128`).
    pub kernel: String,
    pub flops: f64,
    pub bytes: f64,
    /// The roofline floor on the GPU and the cost model's estimate, seconds.
    pub model: Option<(f64, f64)>,
}

/// The launches of `artifact`'s forward pass at `bindings` on a device that
/// runs tensor-core kernels or not, modelled on `gpu` when given.
pub fn launch_rows(
    artifact: &Artifact,
    bindings: &SymbolBindings,
    tensor_cores: bool,
    gpu: Option<&GpuSpec>,
) -> Result<Vec<LaunchRow>, String> {
    let entry = artifact.entry_point("forward").ok_or("the artifact has no `forward` entry point")?;
    let mut rows = Vec::new();
    for launch in &entry.launches {
        let variant = choose_variant(launch, bindings, &artifact.kernels, tensor_cores).map_err(|e| e.to_string())?;
        let kernel = &artifact.kernels[variant.kernel];
        let evaluate = |dim: &kiln_runtime::Dim| dim.evaluate(bindings).map(|v| v as f64).map_err(|e| e.to_string());
        let (flops, bytes) = (evaluate(&launch.flops)?, evaluate(&launch.bytes)?);
        let model = gpu.map(|gpu| {
            let floor = gpu.floor_seconds(flops, bytes);
            let tile = TileConfig::ALL.into_iter().find(|t| kernel.name.ends_with(&format!("_{}", t.name())));
            // A weight matmul's n and k are its [n, k] weight's; its rows follow from the FLOPs.
            let weight = variant.arguments.iter().find_map(|argument| match argument {
                ArgumentSpec::Weight(index) => Some(&artifact.weights[*index]).filter(|w| w.shape.len() == 2),
                _ => None,
            });
            let modelled = match (kernel.uses_tensor_cores, tile, weight) {
                (true, Some(tile), Some(weight)) => {
                    let (n, k) = (weight.shape[0] as i64, weight.shape[1] as i64);
                    let rows = (flops / (2.0 * (n * k) as f64)).round() as i64;
                    let element_bytes = weight.dtype.size_in_bytes() as i64;
                    let output_bytes = element_bytes;
                    let problem = MatmulProblem { rows, n, k, batches: 1, element_bytes, output_bytes };
                    // Occupancy from ptxas's register count where the artifact records it.
                    let mut modelled_tile = tile.model(element_bytes);
                    if kernel.registers > 0 {
                        modelled_tile.registers = kernel.registers as i64;
                    }
                    estimate(gpu, &modelled_tile, &problem).seconds
                }
                (true, _, _) => (flops / (gpu.tensor_flops * gpu.mma_sync_efficiency)).max(bytes / gpu.dram_bandwidth),
                (false, _, _) => (flops / gpu.simt_flops).max(bytes / gpu.dram_bandwidth),
            };
            (floor, modelled.max(floor))
        });
        rows.push(LaunchRow { group: launch.group.clone(), kernel: kernel.name.clone(), flops, bytes, model });
    }
    Ok(rows)
}

fn engineering(value: f64, unit: &str) -> String {
    let (scaled, prefix) = match value.abs() {
        v if v >= 1e12 => (value / 1e12, "T"),
        v if v >= 1e9 => (value / 1e9, "G"),
        v if v >= 1e6 => (value / 1e6, "M"),
        v if v >= 1e3 => (value / 1e3, "k"),
        _ => (value, ""),
    };
    format!("{scaled:.2} {prefix}{unit}")
}

fn microseconds(seconds: f64) -> String {
    format!("{:.2} µs", seconds * 1e6)
}

/// The table `kiln inspect ARTIFACT --bind …` prints.
pub fn describe(rows: &[LaunchRow], bindings: &SymbolBindings, tensor_cores: bool, gpu: Option<&GpuSpec>) -> String {
    let mut text = String::new();
    let bound: Vec<String> = bindings.iter().map(|(s, v)| format!("{s}={v}")).collect();
    let device = if tensor_cores {
        "a device with tensor cores (sm_80+, or the simulator)"
    } else {
        "a device without tensor cores"
    };
    let _ = writeln!(text, "launches at {} on {device}:", bound.join(", "));
    if let Some(gpu) = gpu {
        let _ = writeln!(
            text,
            "performance MODEL on {} ({} SMs, {:.0} TFLOP/s bf16 tensor, {:.2} TB/s): estimates, not measurements",
            gpu.name,
            gpu.sms,
            gpu.tensor_flops / 1e12,
            gpu.dram_bandwidth / 1e12
        );
    }
    for (index, row) in rows.iter().enumerate() {
        let mut line = format!(
            "  {index:>3}  {:<6} {:<26} {:>12}  {:>12}",
            row.group,
            row.kernel,
            engineering(row.flops, "FLOP"),
            engineering(row.bytes, "B")
        );
        if let Some((floor, estimate)) = row.model {
            let _ = write!(line, "  floor {:>12}  model {:>12}", microseconds(floor), microseconds(estimate));
        }
        let _ = writeln!(text, "{}", line.trim_end());
    }
    if gpu.is_some() {
        let floor: f64 = rows.iter().filter_map(|r| r.model.map(|m| m.0)).sum();
        let modelled: f64 = rows.iter().filter_map(|r| r.model.map(|m| m.1)).sum();
        let flops: f64 = rows.iter().map(|r| r.flops).sum();
        let bytes: f64 = rows.iter().map(|r| r.bytes).sum();
        let _ = writeln!(
            text,
            "  total: {}, {}; floor {}, model {} ({:.0}% of the floor's speed)",
            engineering(flops, "FLOP"),
            engineering(bytes, "B"),
            microseconds(floor),
            microseconds(modelled),
            100.0 * floor / modelled.max(f64::MIN_POSITIVE)
        );
    }
    text
}
