//! The performance model: what a GPU can do at best (its roofline) and what
//! a tensor-core matmul variant is estimated to take on it. A model, never a
//! measurement: it chooses among variants at compile time and is printed
//! by `kiln inspect --roofline`, labelled as such.
//!
//! A variant's estimate is the larger of its compute and memory times:
//!
//! - **compute**: the tiles' padded FLOPs (a partial tile costs a whole one)
//!   at the mma.sync rate, quantized into waves: blocks run `per_sm` at a
//!   time on each SM (limited by shared memory, threads and an estimate of
//!   registers), and the last wave costs as much as a full one;
//! - **memory**: each operand tile is read once per block that needs it
//!   (from L2, at [`GpuSpec::l2_bandwidth`]), the operands and the output
//!   once from DRAM.

/// One GPU's limits (dense, without sparsity).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GpuSpec {
    pub name: &'static str,
    pub sms: u32,
    /// bf16/f16 tensor-core peak, FLOP/s (wgmma on Hopper).
    pub tensor_flops: f64,
    /// The share of that peak `mma.sync` reaches (Hopper's full rate needs wgmma).
    pub mma_sync_efficiency: f64,
    /// f32 FMA peak (SIMT), FLOP/s.
    pub simt_flops: f64,
    /// DRAM bandwidth, bytes/s.
    pub dram_bandwidth: f64,
    /// L2 bandwidth, bytes/s.
    pub l2_bandwidth: f64,
    /// Shared memory one SM can give its blocks, bytes.
    pub shared_per_sm: u32,
    pub threads_per_sm: u32,
    pub registers_per_sm: u32,
}

impl GpuSpec {
    /// Published figures (SXM parts; L4 PCIe).
    pub const ALL: [GpuSpec; 4] = [
        GpuSpec {
            name: "h100",
            sms: 132,
            tensor_flops: 989e12,
            mma_sync_efficiency: 0.65,
            simt_flops: 67e12,
            dram_bandwidth: 3.35e12,
            l2_bandwidth: 10e12,
            shared_per_sm: 228 * 1024,
            threads_per_sm: 2048,
            registers_per_sm: 65536,
        },
        GpuSpec {
            name: "h200",
            sms: 132,
            tensor_flops: 989e12,
            mma_sync_efficiency: 0.65,
            simt_flops: 67e12,
            dram_bandwidth: 4.8e12,
            l2_bandwidth: 10e12,
            shared_per_sm: 228 * 1024,
            threads_per_sm: 2048,
            registers_per_sm: 65536,
        },
        GpuSpec {
            name: "a100",
            sms: 108,
            tensor_flops: 312e12,
            mma_sync_efficiency: 0.9,
            simt_flops: 19.5e12,
            dram_bandwidth: 2.04e12,
            l2_bandwidth: 5e12,
            shared_per_sm: 164 * 1024,
            threads_per_sm: 2048,
            registers_per_sm: 65536,
        },
        GpuSpec {
            name: "l4",
            sms: 58,
            tensor_flops: 121e12,
            mma_sync_efficiency: 0.9,
            simt_flops: 30e12,
            dram_bandwidth: 0.3e12,
            l2_bandwidth: 1.5e12,
            shared_per_sm: 100 * 1024,
            threads_per_sm: 1536,
            registers_per_sm: 65536,
        },
    ];

    /// The GPU called `name` (`h100`, `h200`, `a100`, `l4`).
    pub fn named(name: &str) -> Result<GpuSpec, String> {
        GpuSpec::ALL.into_iter().find(|gpu| gpu.name == name).ok_or_else(|| {
            let known: Vec<&str> = GpuSpec::ALL.iter().map(|gpu| gpu.name).collect();
            format!("unknown GPU `{name}` (kiln models {})", known.join(", "))
        })
    }

    /// The GPU variants are chosen for at compile time.
    pub fn for_choosing_variants() -> GpuSpec {
        GpuSpec::ALL[0]
    }

    /// The least time `flops` and `bytes` can take: the roofline's floor.
    pub fn floor_seconds(&self, flops: f64, bytes: f64) -> f64 {
        (flops / self.tensor_flops).max(bytes / self.dram_bandwidth)
    }
}

/// A tensor-core matmul variant as the model sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatmulTile {
    pub bm: i64,
    pub bn: i64,
    pub bk: i64,
    pub threads: i64,
    pub shared_bytes: i64,
    /// Registers per thread (ptxas's report where known, else an estimate).
    pub registers: i64,
}

/// The problem: `batches` matmuls of `rows × n × k`, 2-byte operands.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatmulProblem {
    pub rows: i64,
    pub n: i64,
    pub k: i64,
    pub batches: i64,
    pub element_bytes: i64,
    pub output_bytes: i64,
}

/// The model's estimate for one variant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    pub seconds: f64,
    pub blocks: i64,
    pub blocks_per_sm: i64,
    pub waves: i64,
    /// Useful FLOPs over the FLOPs the padded tiles compute.
    pub tile_efficiency: f64,
}

fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1) / b
}

/// The estimate of `tile` for `problem` on `gpu`.
pub fn estimate(gpu: &GpuSpec, tile: &MatmulTile, problem: &MatmulProblem) -> Estimate {
    let (tiles_m, tiles_n) = (ceil_div(problem.rows, tile.bm), ceil_div(problem.n, tile.bn));
    let blocks = (tiles_m * tiles_n * problem.batches).max(1);
    let by_shared = gpu.shared_per_sm as i64 / tile.shared_bytes.max(1);
    let by_threads = gpu.threads_per_sm as i64 / tile.threads;
    let by_registers = gpu.registers_per_sm as i64 / (tile.threads * tile.registers.max(1));
    let blocks_per_sm = by_shared.min(by_threads).min(by_registers).clamp(1, 32);
    let waves = ceil_div(blocks, gpu.sms as i64 * blocks_per_sm);
    // Blocks sharing an SM at once: all it holds, or fewer in a single partial wave.
    let concurrent = if waves > 1 { blocks_per_sm } else { ceil_div(blocks, gpu.sms as i64).min(blocks_per_sm) };
    let block_flops = 2.0 * (tile.bm * tile.bn * ceil_div(problem.k, tile.bk) * tile.bk) as f64;
    let sm_rate = gpu.tensor_flops * gpu.mma_sync_efficiency / gpu.sms as f64;
    let compute = (waves * concurrent) as f64 * block_flops / sm_rate;
    let e = problem.element_bytes as f64;
    let a_bytes = (problem.rows * problem.k * problem.batches) as f64 * e;
    let b_bytes = (problem.n * problem.k * if problem.batches > 1 { problem.batches } else { 1 }) as f64 * e;
    let c_bytes = (problem.rows * problem.n * problem.batches * problem.output_bytes) as f64;
    let l2 = (a_bytes * tiles_n as f64 + b_bytes * tiles_m as f64) / gpu.l2_bandwidth;
    let dram = (a_bytes + b_bytes + c_bytes) / gpu.dram_bandwidth;
    let useful = 2.0 * (problem.rows * problem.n * problem.k * problem.batches) as f64;
    Estimate {
        seconds: compute.max(l2).max(dram),
        blocks,
        blocks_per_sm,
        waves,
        tile_efficiency: useful / (block_flops * blocks as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile(bm: i64, bn: i64, threads: i64) -> MatmulTile {
        MatmulTile { bm, bn, bk: 32, threads, shared_bytes: 3 * (bm + bn) * 64, registers: 128 }
    }

    #[test]
    fn small_problems_prefer_small_tiles_and_large_ones_large_tiles() {
        let gpu = GpuSpec::named("h100").unwrap();
        let small = MatmulProblem { rows: 128, n: 384, k: 384, batches: 1, element_bytes: 2, output_bytes: 2 };
        let large = MatmulProblem { rows: 16384, n: 4096, k: 1024, ..small };
        let (big, little) = (tile(128, 128, 256), tile(64, 64, 128));
        assert!(estimate(&gpu, &little, &small).seconds < estimate(&gpu, &big, &small).seconds);
        assert!(estimate(&gpu, &big, &large).seconds < estimate(&gpu, &little, &large).seconds);
    }

    #[test]
    fn a_partial_tile_costs_a_whole_one() {
        let gpu = GpuSpec::named("a100").unwrap();
        let exact = MatmulProblem { rows: 128, n: 128, k: 64, batches: 1, element_bytes: 2, output_bytes: 4 };
        let ragged = MatmulProblem { rows: 65, ..exact };
        let t = tile(128, 128, 256);
        assert_eq!(estimate(&gpu, &t, &exact).seconds, estimate(&gpu, &t, &ragged).seconds);
        assert!(estimate(&gpu, &t, &ragged).tile_efficiency < 0.51);
    }
}
