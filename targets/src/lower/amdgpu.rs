//! Kernel IR → MLIR → AMDGPU assembly for a `gfx*` chip (wave64), through
//! melior. Math functions are expanded to native instructions and
//! polynomials (no ROCm device libraries are needed); the assembly is checked
//! with LLVM's `llvm-mc`.

use std::path::Path;

use kiln_runtime::kernel::Kernel;
use melior::ir::Module;
use melior::pass::PassManager;

use std::sync::Arc;
use std::time::Instant;

use kiln_runtime::artifact::CodeFormat;

use super::mlir::{kernel_module, Vendor};
use crate::target::{CodeObject, Lowered, Target, TargetKind};
use crate::toolchain::{extract_assembly, mlir_context, parse_pass_pipeline};

/// `gfx*` targets.
pub const KIND: TargetKind = TargetKind {
    prefix: "gfx",
    examples: "AMD: gfx90a, gfx942, …",
    make: |chip| Arc::new(AmdgpuTarget { chip: chip.to_string() }),
};

/// An AMD architecture (wave64): AMDGPU assembly through MLIR. No executor
/// loads it yet; `llvm-mc` checks it in tests.
#[derive(Debug)]
pub struct AmdgpuTarget {
    chip: String,
}

impl Target for AmdgpuTarget {
    fn name(&self) -> &str {
        &self.chip
    }

    fn lower(&self, kernels: &[&Kernel]) -> Result<Lowered, String> {
        let started = Instant::now();
        let assembly = lower_to_amdgpu(kernels, &self.chip)?;
        Ok(Lowered {
            code: vec![CodeObject {
                target: self.chip.clone(),
                format: CodeFormat::AmdgpuAssembly,
                bytes: assembly.into_bytes(),
            }],
            steps: vec![(format!("lower {}", self.chip), started.elapsed())],
            ..Lowered::default()
        })
    }

    fn mlir(&self, kernels: &[&Kernel]) -> Result<String, String> {
        amdgpu_module(kernels, &self.chip)
    }

    fn emit(&self, kernel: &Kernel) -> Result<Vec<(String, Vec<u8>)>, String> {
        Ok(vec![(format!(".{}.s", self.chip), lower_to_amdgpu(&[kernel], &self.chip)?.into_bytes())])
    }
}

/// The MLIR module of `kernels` for `chip` (e.g. `gfx942`).
pub fn amdgpu_module(kernels: &[&Kernel], chip: &str) -> Result<String, String> {
    kernel_module(kernels, &format!("#rocdl.target<chip = \"{chip}\">"), Vendor::Amd)
}

/// AMDGPU assembly of `kernels` for `chip`.
pub fn lower_to_amdgpu(kernels: &[&Kernel], chip: &str) -> Result<String, String> {
    let text = amdgpu_module(kernels, chip)?;
    let pipeline = format!(
        "builtin.module(convert-scf-to-cf, gpu.module(convert-gpu-to-rocdl{{chipset={chip}}}, convert-arith-to-llvm, \
         convert-index-to-llvm, reconcile-unrealized-casts), gpu-module-to-binary{{format=isa}})"
    );
    let context = mlir_context();
    let mut module =
        Module::parse(&context, &text).ok_or_else(|| format!("MLIR does not parse the AMD module:\n{text}"))?;
    let manager = PassManager::new(&context);
    parse_pass_pipeline(manager.as_operation_pass_manager(), &pipeline)?;
    manager.run(&mut module).map_err(|e| {
        // Keep the module for `mlir-opt`, which prints MLIR's diagnostics.
        let path = std::env::temp_dir().join(format!("kiln-amdgpu-{chip}-{}.mlir", std::process::id()));
        let _ = std::fs::write(&path, &text);
        format!("AMDGPU pipeline: {e} (module kept at {})", path.display())
    })?;
    let assembly =
        extract_assembly(&module.as_operation().to_string()).ok_or("the lowered module holds no assembly")?;
    if let Some(call) = assembly.lines().find(|l| l.contains("__ocml") || l.contains("__ockl")) {
        return Err(format!("unresolved device-library call: {}", call.trim()));
    }
    Ok(assembly)
}

/// Assembles AMDGPU assembly with `llvm-mc`; returns its complaint on failure.
pub fn assemble_amdgpu(llvm_mc: &Path, assembly: &str, chip: &str) -> Result<(), String> {
    let directory = std::env::temp_dir().join(format!("kiln-llvm-mc-{}-{chip}", std::process::id()));
    std::fs::create_dir_all(&directory).map_err(|e| e.to_string())?;
    let input = directory.join(format!("kernels-{}.s", assembly.len()));
    std::fs::write(&input, assembly).map_err(|e| e.to_string())?;
    let output = std::process::Command::new(llvm_mc)
        .args(["-triple=amdgcn-amd-amdhsa", &format!("-mcpu={chip}"), "-filetype=obj", "-o"])
        .arg(directory.join("kernels.o"))
        .arg(&input)
        .output()
        .map_err(|e| format!("{}: {e}", llvm_mc.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// LLVM 22's `llvm-mc` (installed with the Debian packages scripts/setup.sh installs).
pub fn find_llvm_mc() -> Option<std::path::PathBuf> {
    let path = Path::new("/usr/lib/llvm-22/bin/llvm-mc");
    path.is_file().then(|| path.to_path_buf())
}
