//! Targets: what kiln compiles kernels for. A target is a [`Target`] (its
//! name, how it lowers a module of kernels, what it writes per kernel for
//! `--emit-dir`) plus one entry in [`TARGETS`], which parses its names.

use std::sync::Arc;
use std::time::Duration;

use kiln_runtime::artifact::CodeFormat;
use kiln_runtime::kernel::Kernel;

/// One code object, as the artifact carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeObject {
    /// `sm_80`, `gfx942`, …
    pub target: String,
    pub format: CodeFormat,
    pub bytes: Vec<u8>,
}

/// What an assembler reports for one kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelResources {
    pub name: String,
    pub registers: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
    pub shared_bytes: u32,
}

/// What lowering a module for one target produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Lowered {
    /// The code objects (e.g. a cubin and its PTX), in artifact order.
    pub code: Vec<CodeObject>,
    /// The assembler that checked the code (`ptxas`), if one ran.
    pub assembler: Option<&'static str>,
    /// Per kernel, what the assembler reported; empty when nothing assembled it.
    pub resources: Vec<KernelResources>,
    /// Each step and its time (`lower sm_90`, `ptxas sm_90`).
    pub steps: Vec<(String, Duration)>,
    /// What the user should know (a missing assembler, say), one line each.
    pub notes: Vec<String>,
}

/// A GPU architecture kiln generates code for.
pub trait Target: Send + Sync + std::fmt::Debug {
    /// `sm_90`, `gfx942`: the name in `--target` and in the artifact.
    fn name(&self) -> &str;

    /// Lowers `kernels` into one module (and assembles it where the target
    /// has an assembler), every kernel under its own name.
    fn lower(&self, kernels: &[&Kernel]) -> Result<Lowered, String>;

    /// The MLIR module this target lowers for `kernels` (for `--emit-dir`).
    fn mlir(&self, kernels: &[&Kernel]) -> Result<String, String>;

    /// Whether the target runs `kernel`: every target runs portable kernels;
    /// tensor-core kernels ([`Kernel::uses_tensor_cores`]) need sm_80+. The
    /// kernels a target does not run are left out of its module and never
    /// launched on its devices (each has a portable variant after it).
    fn runs(&self, kernel: &Kernel) -> bool {
        !kernel.uses_tensor_cores()
    }

    /// The files `--emit-dir` writes for one kernel besides its `.kir` and
    /// `.mlir`: `(suffix, contents)`, e.g. `(".sm_90.ptx", …)`.
    fn emit(&self, kernel: &Kernel) -> Result<Vec<(String, Vec<u8>)>, String>;
}

/// One family of targets, recognized by its name's prefix.
pub struct TargetKind {
    /// `sm_`, `gfx`.
    pub prefix: &'static str,
    /// For `--help` and errors: `NVIDIA: sm_80, sm_90, … (PTX, and a cubin with ptxas)`.
    pub examples: &'static str,
    /// The target called `name` (which starts with `prefix`).
    pub make: fn(&str) -> Arc<dyn Target>,
}

/// Every family of targets.
pub const TARGETS: &[TargetKind] = &[crate::lower::nvptx::KIND, crate::lower::amdgpu::KIND];

/// The target called `name` (`sm_90`, `gfx942`, …).
pub fn target_named(name: &str) -> Result<Arc<dyn Target>, String> {
    let well_formed = |rest: &str| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric());
    TARGETS
        .iter()
        .find(|kind| name.strip_prefix(kind.prefix).is_some_and(well_formed))
        .map(|kind| (kind.make)(name))
        .ok_or_else(|| {
            let known: Vec<&str> = TARGETS.iter().map(|kind| kind.examples).collect();
            format!("unknown target `{name}` ({})", known.join("; "))
        })
}
