//! `kiln compile`: the pipeline, then one kernel per fusion group, lowered to
//! every requested target.

use std::path::Path;
use std::time::Instant;

use kiln_ir::Graph;
use kiln_passes::{MemoryPlan, Pipeline, PipelineOptions};
use kiln_runtime::artifact::CodeFormat;
use kiln_targets::generate::{generate_kernel, GeneratedKernel};
use kiln_targets::lower::amdgpu::lower_to_amdgpu;
use kiln_targets::lower::mlir::{kernel_module, Vendor};
use kiln_targets::lower::nvptx::{assemble, find_libdevice, find_ptxas, lower_to_ptx, nvptx_module, KernelResources};

/// A GPU to compile for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An NVIDIA chip, `sm_80`, `sm_90`, …
    Nvidia(String),
    /// An AMD chip, `gfx90a`, `gfx942`, …
    Amd(String),
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(text: &str) -> Result<Target, String> {
        let digits = |rest: &str| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric());
        match text {
            t if t.starts_with("sm_") && digits(&t[3..]) => Ok(Target::Nvidia(t.to_string())),
            t if t.starts_with("gfx") && digits(&t[3..]) => Ok(Target::Amd(t.to_string())),
            other => Err(format!("unknown target `{other}` (NVIDIA: sm_80, sm_90, …; AMD: gfx90a, gfx942, …)")),
        }
    }
}

/// Why compilation failed.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Pass(#[from] kiln_passes::PassError),
    #[error(transparent)]
    Generate(#[from] kiln_targets::generate::GenerateError),
    #[error("{target}: {message}")]
    Lower { target: String, message: String },
    #[error("{path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A compiled model: the optimized graph, its kernels and their code per target.
pub struct CompiledModel {
    pub graph: Graph,
    pub plan: MemoryPlan,
    pub kernels: Vec<GeneratedKernel>,
    /// Machine code per target, one module with every kernel each: PTX and
    /// (where ptxas is installed) a cubin per NVIDIA chip, assembly per AMD chip.
    pub code: Vec<TargetCode>,
    /// What ptxas reported per kernel, per NVIDIA chip it assembled.
    pub ptxas_reports: Vec<(String, Vec<KernelResources>)>,
    /// Each phase and how long it took (`optimize`, `generate`, `lower sm_80`, …).
    pub phase_times: Vec<(String, std::time::Duration)>,
}

/// One code object of a compiled model.
pub struct TargetCode {
    /// `sm_80`, `gfx942`, …
    pub target: String,
    pub format: CodeFormat,
    pub bytes: Vec<u8>,
}

/// Compiles `graph`; `progress` hears of each step and its time. Every PTX
/// module is also assembled to a cubin when ptxas is installed (so a GPU of
/// exactly that architecture loads SASS without JIT); without ptxas the
/// artifact carries PTX alone and `progress` says so.
pub fn compile(
    mut graph: Graph,
    options: &PipelineOptions,
    targets: &[Target],
    progress: &mut dyn FnMut(&str),
) -> Result<CompiledModel, CompileError> {
    let started = Instant::now();
    let plan = Pipeline::new(options.clone()).run(&mut graph, &mut |_, _, _| {})?;
    let plan = plan.ok_or_else(|| kiln_passes::PassError::new("compile", "the pipeline stopped before the plan"))?;
    let mut phase_times = vec![("optimize".to_string(), started.elapsed())];
    progress(&format!("optimized: {} fusion groups in {:.2?}", graph.groups().len(), started.elapsed()));
    let started = Instant::now();
    let kernels: Vec<GeneratedKernel> =
        graph.groups().keys().map(|&g| generate_kernel(&graph, g)).collect::<Result<_, _>>()?;
    phase_times.push(("generate".to_string(), started.elapsed()));
    progress(&format!("generated {} kernels in {:.2?}", kernels.len(), started.elapsed()));
    let libdevice = find_libdevice();
    let ptxas = find_ptxas();
    if ptxas.is_none() && targets.iter().any(|t| matches!(t, Target::Nvidia(_))) {
        progress("ptxas not found (scripts/setup.sh installs it): PTX only, no cubins; the driver will JIT it");
    }
    let all: Vec<_> = kernels.iter().map(|k| &k.kernel).collect();
    let mut code = Vec::new();
    let mut ptxas_reports = Vec::new();
    for target in targets {
        let started = Instant::now();
        match target {
            Target::Nvidia(chip) => {
                let ptx = lower_to_ptx(&all, chip, libdevice.as_deref())
                    .map_err(|e| CompileError::Lower { target: chip.clone(), message: e.to_string() })?;
                phase_times.push((format!("lower {chip}"), started.elapsed()));
                progress(&format!("lowered to PTX for {chip} in {:.2?}", started.elapsed()));
                if let Some(ptxas) = &ptxas {
                    let started = Instant::now();
                    let assembly = assemble(ptxas, &ptx, chip).map_err(|log| CompileError::Lower {
                        target: chip.clone(),
                        message: format!("ptxas rejects the PTX:\n{log}"),
                    })?;
                    phase_times.push((format!("ptxas {chip}"), started.elapsed()));
                    progress(&format!("assembled the {chip} cubin with ptxas in {:.2?}", started.elapsed()));
                    code.push(TargetCode { target: chip.clone(), format: CodeFormat::Cubin, bytes: assembly.cubin });
                    ptxas_reports.push((chip.clone(), assembly.kernels));
                }
                code.push(TargetCode { target: chip.clone(), format: CodeFormat::Ptx, bytes: ptx.into_bytes() });
            }
            Target::Amd(chip) => {
                let assembly = lower_to_amdgpu(&all, chip)
                    .map_err(|message| CompileError::Lower { target: chip.clone(), message })?;
                phase_times.push((format!("lower {chip}"), started.elapsed()));
                progress(&format!("lowered to AMDGPU assembly for {chip} in {:.2?}", started.elapsed()));
                code.push(TargetCode {
                    target: chip.clone(),
                    format: CodeFormat::AmdgpuAssembly,
                    bytes: assembly.into_bytes(),
                });
            }
        }
    }
    Ok(CompiledModel { graph, plan, kernels, code, ptxas_reports, phase_times })
}

impl CompiledModel {
    /// The targets with code, each once, in the order they were asked for.
    pub fn targets(&self) -> Vec<&str> {
        let mut targets: Vec<&str> = Vec::new();
        for object in &self.code {
            if !targets.contains(&object.target.as_str()) {
                targets.push(&object.target);
            }
        }
        targets
    }
}

/// Writes, per kernel, its kernel IR (`.kir`), its MLIR (`.mlir`), its PTX
/// per NVIDIA chip (`.<chip>.ptx`) and its assembly per AMD chip
/// (`.<chip>.s`), named by fusion group.
pub fn emit(compiled: &CompiledModel, targets: &[Target], directory: &Path) -> Result<usize, CompileError> {
    let write = |name: String, text: &str| -> Result<(), CompileError> {
        let path = directory.join(name);
        std::fs::write(&path, text).map_err(|source| CompileError::Write { path: path.display().to_string(), source })
    };
    std::fs::create_dir_all(directory)
        .map_err(|source| CompileError::Write { path: directory.display().to_string(), source })?;
    let libdevice = find_libdevice();
    let mut files = 0;
    for generated in &compiled.kernels {
        let kernel = &generated.kernel;
        write(format!("{}.kir", kernel.name), &kiln_runtime::kernel::print_kernel(kernel))?;
        let first_chip = targets.iter().find_map(|t| match t {
            Target::Nvidia(chip) => Some(chip.as_str()),
            Target::Amd(_) => None,
        });
        let mlir = match first_chip {
            Some(chip) => nvptx_module(&[kernel], chip, libdevice.as_deref()).map_err(|e| e.to_string()),
            None => kernel_module(&[kernel], "", Vendor::Nvidia),
        }
        .map_err(|message| CompileError::Lower { target: "mlir".into(), message })?;
        write(format!("{}.mlir", kernel.name), &mlir)?;
        files += 2;
        for target in targets {
            match target {
                Target::Nvidia(chip) => {
                    let ptx = lower_to_ptx(&[kernel], chip, libdevice.as_deref())
                        .map_err(|e| CompileError::Lower { target: chip.clone(), message: e.to_string() })?;
                    write(format!("{}.{chip}.ptx", kernel.name), &ptx)?;
                }
                Target::Amd(chip) => {
                    let assembly = lower_to_amdgpu(&[kernel], chip)
                        .map_err(|message| CompileError::Lower { target: chip.clone(), message })?;
                    write(format!("{}.{chip}.s", kernel.name), &assembly)?;
                }
            }
            files += 1;
        }
    }
    Ok(files)
}
