//! Kernel IR → MLIR → PTX for an `sm_*` chip, through melior.

use std::path::{Path, PathBuf};

use kiln_runtime::kernel::Kernel;
use melior::ir::Module;
use melior::pass::PassManager;

use std::sync::Arc;
use std::time::Instant;

use kiln_runtime::artifact::CodeFormat;

use super::mlir::{kernel_module, Vendor};
pub use crate::target::KernelResources;
use crate::target::{CodeObject, Lowered, Target, TargetKind};
use crate::toolchain::{extract_ptx, mlir_context, parse_pass_pipeline};

/// `sm_*` targets.
pub const KIND: TargetKind = TargetKind {
    prefix: "sm_",
    examples: "NVIDIA: sm_80, sm_90, …",
    make: |chip| Arc::new(NvptxTarget { chip: chip.to_string() }),
};

/// An NVIDIA architecture: PTX through MLIR, and a cubin from it when ptxas
/// is installed (`KILN_PTXAS`, or the one in `.venv`).
#[derive(Debug)]
pub struct NvptxTarget {
    chip: String,
}

impl Target for NvptxTarget {
    fn name(&self) -> &str {
        &self.chip
    }

    /// Tensor-core kernels (`ldmatrix`, bf16 `mma.sync`, `cp.async`) need sm_80 or later.
    fn runs(&self, kernel: &Kernel) -> bool {
        !kernel.uses_tensor_cores() || sm_version(&self.chip).is_some_and(|version| version >= 80)
    }

    fn lower(&self, kernels: &[&Kernel]) -> Result<Lowered, String> {
        let chip = &self.chip;
        let mut lowered = Lowered::default();
        let started = Instant::now();
        let ptx = lower_to_ptx(kernels, chip, find_libdevice().as_deref()).map_err(|e| e.to_string())?;
        lowered.steps.push((format!("lower {chip}"), started.elapsed()));
        match find_ptxas() {
            Some(ptxas) => {
                let started = Instant::now();
                let assembly = assemble(&ptxas, &ptx, chip).map_err(|log| format!("ptxas rejects the PTX:\n{log}"))?;
                lowered.steps.push((format!("ptxas {chip}"), started.elapsed()));
                lowered.code.push(CodeObject {
                    target: chip.clone(),
                    format: CodeFormat::Cubin,
                    bytes: assembly.cubin,
                });
                lowered.resources = assembly.kernels;
                lowered.assembler = Some("ptxas");
            }
            None => lowered.notes.push(format!(
                "ptxas not found (scripts/setup.sh installs it): {chip} carries PTX only, which the driver will JIT"
            )),
        }
        lowered.code.push(CodeObject { target: chip.clone(), format: CodeFormat::Ptx, bytes: ptx.into_bytes() });
        Ok(lowered)
    }

    fn mlir(&self, kernels: &[&Kernel]) -> Result<String, String> {
        nvptx_module(kernels, &self.chip, find_libdevice().as_deref()).map_err(|e| e.to_string())
    }

    fn emit(&self, kernel: &Kernel) -> Result<Vec<(String, Vec<u8>)>, String> {
        let ptx = lower_to_ptx(&[kernel], &self.chip, find_libdevice().as_deref()).map_err(|e| e.to_string())?;
        Ok(vec![(format!(".{}.ptx", self.chip), ptx.into_bytes())])
    }
}

/// The number of an `sm_NN` chip (`sm_90a` is 90).
pub fn sm_version(chip: &str) -> Option<u32> {
    let digits: String = chip.strip_prefix("sm_")?.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Why kernels could not become PTX.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PtxError {
    #[error("kernel IR does not lower: {0}")]
    Lowering(String),
    #[error("MLIR does not parse the generated module:\n{0}")]
    Parse(String),
    #[error("MLIR pipeline failed: {0}")]
    Pipeline(String),
    #[error("the lowered module holds no PTX")]
    NoPtx,
    #[error("the PTX calls functions nothing defines: {0:?} (is libdevice linked?)")]
    Unresolved(Vec<String>),
}

/// The pass pipeline from the GPU dialects to PTX.
pub const PIPELINE: &str =
    "builtin.module(convert-scf-to-cf, gpu.module(convert-nvgpu-to-nvvm, convert-gpu-to-nvvm, convert-arith-to-llvm, \
     convert-index-to-llvm, convert-nvvm-to-llvm, reconcile-unrealized-casts), gpu-module-to-binary{format=isa})";

/// The MLIR module of `kernels` for `chip` (e.g. `sm_80`), linking `libdevice`.
pub fn nvptx_module(kernels: &[&Kernel], chip: &str, libdevice: Option<&Path>) -> Result<String, PtxError> {
    let link = libdevice.map(|p| format!(", link = [\"{}\"]", p.display())).unwrap_or_default();
    let target = format!("#nvvm.target<chip = \"{chip}\", features = \"+ptx80\", O = 3{link}>");
    kernel_module(kernels, &target, Vendor::Nvidia).map_err(PtxError::Lowering)
}

/// PTX of `kernels` for `chip`.
pub fn lower_to_ptx(kernels: &[&Kernel], chip: &str, libdevice: Option<&Path>) -> Result<String, PtxError> {
    let text = nvptx_module(kernels, chip, libdevice)?;
    let context = mlir_context();
    let mut module = Module::parse(&context, &text).ok_or_else(|| PtxError::Parse(numbered(&text)))?;
    let manager = PassManager::new(&context);
    parse_pass_pipeline(manager.as_operation_pass_manager(), PIPELINE).map_err(PtxError::Pipeline)?;
    manager.run(&mut module).map_err(|e| PtxError::Pipeline(e.to_string()))?;
    let ptx = extract_ptx(&module.as_operation().to_string()).ok_or(PtxError::NoPtx)?;
    let unresolved: Vec<String> =
        ptx.lines().filter(|l| l.trim_start().starts_with(".extern .func")).map(|l| l.trim().to_string()).collect();
    if !unresolved.is_empty() {
        return Err(PtxError::Unresolved(unresolved));
    }
    Ok(ptx)
}

fn numbered(text: &str) -> String {
    text.lines().enumerate().map(|(i, l)| format!("{:4} {l}", i + 1)).collect::<Vec<_>>().join("\n")
}

/// libdevice: `$KILN_LIBDEVICE`, or the one scripts/setup.sh installs in `.venv`.
pub fn find_libdevice() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("KILN_LIBDEVICE") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    find_in_venv(&["nvvm", "libdevice", "libdevice.10.bc"])
}

/// ptxas: `$KILN_PTXAS`, or the one scripts/setup.sh installs in `.venv`.
pub fn find_ptxas() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("KILN_PTXAS") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    find_in_venv(&["bin", "ptxas"])
}

pub(crate) fn find_in_venv(tail: &[&str]) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/lib");
    for python in std::fs::read_dir(&root).ok()?.flatten() {
        let nvidia = python.path().join("site-packages/nvidia");
        for cuda in std::fs::read_dir(&nvidia).ok()?.flatten() {
            let candidate = tail.iter().fold(cuda.path(), |p, part| p.join(part));
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// What ptxas made of a PTX module: the cubin and each kernel's resources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assembly {
    /// The ELF cubin (SASS for exactly `chip`).
    pub cubin: Vec<u8>,
    pub kernels: Vec<KernelResources>,
}

/// Assembles `ptx` for `chip` with `ptxas`; returns the cubin and each
/// kernel's resources, or ptxas's complaint.
pub fn assemble(ptxas: &Path, ptx: &str, chip: &str) -> Result<Assembly, String> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let unique = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let directory = std::env::temp_dir().join(format!("kiln-ptxas-{}-{unique}-{chip}", std::process::id()));
    std::fs::create_dir_all(&directory).map_err(|e| format!("{}: {e}", directory.display()))?;
    let input = directory.join("kernels.ptx");
    let cubin = directory.join("kernels.cubin");
    let result = (|| {
        std::fs::write(&input, ptx).map_err(|e| format!("{}: {e}", input.display()))?;
        let output = std::process::Command::new(ptxas)
            .args(["-arch", chip, "-v", "-o"])
            .arg(&cubin)
            .arg(&input)
            .output()
            .map_err(|e| format!("{}: {e}", ptxas.display()))?;
        let log = String::from_utf8_lossy(&output.stderr).into_owned();
        if !output.status.success() {
            return Err(log);
        }
        let bytes = std::fs::read(&cubin).map_err(|e| format!("{}: {e}", cubin.display()))?;
        Ok(Assembly { cubin: bytes, kernels: parse_resources(&log) })
    })();
    let _ = std::fs::remove_dir_all(&directory);
    result
}

fn parse_resources(log: &str) -> Vec<KernelResources> {
    let mut kernels: Vec<KernelResources> = Vec::new();
    let number = |line: &str, before: &str| -> u32 {
        line.split(before).next().and_then(|p| p.split_whitespace().last()).and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default().to_string();
            kernels.push(KernelResources { name, registers: 0, spill_stores: 0, spill_loads: 0, shared_bytes: 0 });
        } else if let Some(kernel) = kernels.last_mut() {
            if line.contains("bytes spill stores") {
                kernel.spill_stores = number(line, "bytes spill stores");
                kernel.spill_loads = number(line, "bytes spill loads");
            }
            if line.contains("registers") {
                kernel.registers = number(line, "registers");
                kernel.shared_bytes = number(line, "bytes smem");
            }
        }
    }
    kernels
}
