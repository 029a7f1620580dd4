//! `kiln compile`: the pipeline, then one kernel per fusion group, lowered to
//! every requested target.
//!
//! Kernels identical up to their names (a model's layers produce the same
//! few kernels over and over) are lowered and shipped once: every group that
//! generated one launches the first of them, under that first one's name.
//! Targets lower in parallel, one thread each.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use kiln_ir::Graph;
use kiln_passes::{MemoryPlan, Pipeline, PipelineOptions};
use kiln_targets::generate::{generate_variants, GeneratedKernel};
use kiln_targets::lower::mlir::{kernel_module, Vendor};
use kiln_targets::target::{CodeObject, KernelResources, Target};

/// Why compilation failed.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Pass(#[from] kiln_passes::PassError),
    #[error(transparent)]
    Generate(#[from] kiln_targets::generate::GenerateError),
    #[error("{target}: {message}")]
    Lower { target: String, message: String },
    #[error(
        "node `{node}`: {dtype} values are not supported by kiln's kernels, which compute with f32, f16, bf16, \
         f8e4m3, bool, i8, u8, i32, u32, i64 and u64 (`kiln eval` evaluates the model)"
    )]
    ElementType { node: String, dtype: kiln_ir::DType },
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
    /// One kernel per fusion group, in group order.
    pub kernels: Vec<GeneratedKernel>,
    /// Per kernel: the index of the first kernel identical to it up to names
    /// (itself if none before it is); only those firsts are lowered and shipped.
    pub same_as: Vec<usize>,
    /// Machine code per target, one module with every kernel each: PTX and
    /// (where ptxas is installed) a cubin per NVIDIA chip, assembly per AMD chip.
    pub code: Vec<CodeObject>,
    /// `(assembler, target, per-kernel report)` for each target an assembler checked.
    pub resource_reports: Vec<(&'static str, String, Vec<KernelResources>)>,
    /// Each phase and how long it took (`optimize`, `generate`, `lower sm_80`, …).
    pub phase_times: Vec<(String, std::time::Duration)>,
}

/// Compiles `graph`; `progress` hears of each step and its time. Every PTX
/// module is also assembled to a cubin when ptxas is installed (so a GPU of
/// exactly that architecture loads SASS without JIT); without ptxas the
/// artifact carries PTX alone and `progress` says so.
pub fn compile(
    mut graph: Graph,
    options: &PipelineOptions,
    targets: &[Arc<dyn Target>],
    progress: &mut dyn FnMut(&str),
) -> Result<CompiledModel, CompileError> {
    let started = Instant::now();
    let plan = Pipeline::new(options.clone()).run(&mut graph, &mut |_, _, _| {})?;
    let plan = plan.ok_or_else(|| kiln_passes::PassError::new("compile", "the pipeline stopped before the plan"))?;
    refuse_element_types_without_kernels(&graph)?;
    let mut phase_times = vec![("optimize".to_string(), started.elapsed())];
    progress(&format!("optimized: {} fusion groups in {:.2?}", graph.groups().len(), started.elapsed()));
    let started = Instant::now();
    let mut kernels: Vec<GeneratedKernel> = Vec::new();
    for &group in graph.groups().keys() {
        kernels.extend(generate_variants(&graph, group)?);
    }
    phase_times.push(("generate".to_string(), started.elapsed()));
    progress(&format!("generated {} kernels in {:.2?}", kernels.len(), started.elapsed()));
    let same_as = first_identical(&kernels);
    let distinct: Vec<_> = (0..kernels.len()).filter(|&i| same_as[i] == i).map(|i| &kernels[i].kernel).collect();
    if distinct.len() < kernels.len() {
        progress(&format!("{} distinct kernels of {}", distinct.len(), kernels.len()));
    }
    let mut code = Vec::new();
    let mut resource_reports = Vec::new();
    let lowered_per_target: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = targets
            .iter()
            .map(|target| {
                // A target lowers the kernels it runs (tensor-core variants need sm_80+).
                let runs: Vec<_> = distinct.iter().copied().filter(|kernel| target.runs(kernel)).collect();
                scope.spawn(move || target.lower(&runs).map_err(|message| lowering(target.as_ref(), message)))
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().expect("a lowering thread panicked")).collect()
    });
    for (target, lowered) in targets.iter().zip(lowered_per_target) {
        let lowered = lowered?;
        for (step, time) in lowered.steps {
            progress(&format!("{step} in {time:.2?}"));
            phase_times.push((step, time));
        }
        lowered.notes.iter().for_each(|note| progress(note));
        if let Some(assembler) = lowered.assembler {
            resource_reports.push((assembler, target.name().to_string(), lowered.resources));
        }
        code.extend(lowered.code);
    }
    Ok(CompiledModel { graph, plan, kernels, same_as, code, resource_reports, phase_times })
}

/// Fails on the first node a kernel would compute whose inputs or outputs
/// have an element type kiln's kernels lack (f64, the 16-bit and sub-byte
/// integers, the 8-bit floats but E4M3FN, FP4).
fn refuse_element_types_without_kernels(graph: &Graph) -> Result<(), CompileError> {
    for node in graph.topological_order() {
        if graph.node(node).group.is_none() {
            continue;
        }
        let outputs = (0..graph.node(node).outputs.len()).map(|index| kiln_ir::ValueRef::new(node, index));
        for value in graph.inputs_of(node).into_iter().chain(outputs) {
            let dtype = graph.value_type(value).dtype;
            if !dtype.has_kernels() {
                return Err(CompileError::ElementType { node: graph.node(node).name.clone(), dtype });
            }
        }
    }
    Ok(())
}

/// For each kernel, the index of the first kernel equal to it once kernel
/// and parameter names are ignored (names do not change what a kernel does).
fn first_identical(kernels: &[GeneratedKernel]) -> Vec<usize> {
    let anonymous = |kernel: &kiln_runtime::kernel::Kernel| {
        let mut copy = kernel.clone();
        copy.name.clear();
        for param in &mut copy.params {
            match param {
                kiln_runtime::kernel::Param::Buffer { name, .. } | kiln_runtime::kernel::Param::Scalar { name, .. } => {
                    name.clear()
                }
            }
        }
        copy
    };
    let forms: Vec<_> = kernels.iter().map(|k| anonymous(&k.kernel)).collect();
    // Candidates by printed form; equality decides (the text may round literals).
    let mut by_text: std::collections::HashMap<String, Vec<usize>> = std::collections::HashMap::new();
    (0..kernels.len())
        .map(|i| {
            let candidates = by_text.entry(kiln_runtime::kernel::print_kernel(&forms[i])).or_default();
            match candidates.iter().find(|&&j| forms[j] == forms[i]) {
                Some(&j) => j,
                None => {
                    candidates.push(i);
                    i
                }
            }
        })
        .collect()
}

impl CompiledModel {
    /// The kernels lowered and shipped: the first of each identical set, in group order.
    pub fn distinct_kernels(&self) -> impl Iterator<Item = &GeneratedKernel> {
        self.kernels.iter().enumerate().filter(|(i, _)| self.same_as[*i] == *i).map(|(_, k)| k)
    }
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

fn lowering(target: &dyn Target, message: String) -> CompileError {
    CompileError::Lower { target: target.name().to_string(), message }
}

/// Writes, per kernel, its kernel IR (`.kir`), its MLIR (`.mlir`, the first
/// target's module) and what each target emits for it (`.<chip>.ptx`,
/// `.<chip>.s`), named by fusion group.
pub fn emit(compiled: &CompiledModel, targets: &[Arc<dyn Target>], directory: &Path) -> Result<usize, CompileError> {
    let write = |name: String, bytes: &[u8]| -> Result<(), CompileError> {
        let path = directory.join(name);
        std::fs::write(&path, bytes).map_err(|source| CompileError::Write { path: path.display().to_string(), source })
    };
    std::fs::create_dir_all(directory)
        .map_err(|source| CompileError::Write { path: directory.display().to_string(), source })?;
    let mut files = 0;
    for generated in &compiled.kernels {
        let kernel = &generated.kernel;
        write(format!("{}.kir", kernel.name), kiln_runtime::kernel::print_kernel(kernel).as_bytes())?;
        let mlir = match targets.iter().find(|target| target.runs(kernel)) {
            Some(target) => target.mlir(&[kernel]).map_err(|message| lowering(target.as_ref(), message))?,
            None => kernel_module(&[kernel], "", Vendor::Nvidia)
                .map_err(|message| CompileError::Lower { target: "mlir".into(), message })?,
        };
        write(format!("{}.mlir", kernel.name), mlir.as_bytes())?;
        files += 2;
        for target in targets.iter().filter(|target| target.runs(kernel)) {
            for (suffix, bytes) in target.emit(kernel).map_err(|message| lowering(target.as_ref(), message))? {
                write(format!("{}{suffix}", kernel.name), &bytes)?;
                files += 1;
            }
        }
    }
    Ok(files)
}
