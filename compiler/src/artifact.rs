//! Packs a [`CompiledModel`] into the bytes of a `.kiln` artifact (the
//! format is `kiln_runtime::artifact`; `docs/artifact.md` describes it).
//!
//! Every order here is deterministic — kernels in fusion-group order,
//! launches in the plan's order, weights in first-use order — so compiling
//! the same model twice gives the same bytes.

use std::collections::{BTreeMap, HashMap};

use kiln_ir::graph::ValueRef;
use kiln_ir::{Dim, Graph, Op, TensorType};
use kiln_passes::fuse::contract::GroupContract;
use kiln_passes::fuse::cost::LaunchCost;
use kiln_passes::plan::BufferKind;
use kiln_runtime::artifact::manifest::{
    self, ArenaBuffer, Argument, ArgumentSource, DimRange, EntryPoint, KernelInfo, Launch, Manifest, SymbolBound,
    TensorSignature, Variant, WeightInfo,
};
use kiln_runtime::artifact::{write_artifact, ArtifactParts, WeightsBlob};
use kiln_targets::generate::ParamBinding;

use crate::compile::{CompileError, CompiledModel};

/// What the artifact says about where it came from and what it accepts.
pub struct ArtifactOptions<'a> {
    pub model_name: &'a str,
    pub precision: &'a str,
    /// `symbol → (min, max)` for every symbol of the model's inputs.
    pub bounds: &'a BTreeMap<String, (i64, i64)>,
}

fn signature(name: &str, ty: &TensorType) -> TensorSignature {
    TensorSignature {
        name: name.to_string(),
        dtype: ty.dtype.name().to_string(),
        shape: ty.shape.iter().map(Dim::to_string).collect(),
    }
}

fn packing_error(message: String) -> CompileError {
    CompileError::Lower { target: "artifact".into(), message }
}

/// The symbols of the model's inputs with their bounds (`min` defaults to 1).
pub fn input_symbol_bounds(
    graph: &Graph,
    maxima: &kiln_ir::SymbolBindings,
    minima: &BTreeMap<String, i64>,
) -> BTreeMap<String, (i64, i64)> {
    let mut bounds = BTreeMap::new();
    for input in graph.input_values() {
        for symbol in graph.value_type(input).shape.iter().flat_map(Dim::symbols) {
            let max = maxima.get(&symbol).copied().unwrap_or(kiln_passes::pipeline::DEFAULT_BOUND);
            let min = minima.get(&symbol).copied().unwrap_or(1);
            bounds.insert(symbol, (min, max));
        }
    }
    bounds
}

/// A packed artifact and what it holds.
pub struct PackedArtifact {
    pub bytes: Vec<u8>,
    pub weight_bytes: usize,
    pub launches: usize,
}

/// The artifact bytes of `compiled`.
pub fn pack_artifact(compiled: &CompiledModel, options: &ArtifactOptions<'_>) -> Result<PackedArtifact, CompileError> {
    let graph = &compiled.graph;
    let plan = &compiled.plan;

    let mut slot_of: HashMap<ValueRef, u32> = HashMap::new();
    let mut buffers = Vec::with_capacity(plan.buffers.len());
    for (index, buffer) in plan.buffers.iter().enumerate() {
        let (kind, tensor) = match (&buffer.kind, buffer.value) {
            (BufferKind::Scratch(_), _) | (_, None) => (
                "scratch",
                TensorSignature {
                    name: buffer.name.clone(),
                    dtype: "u8".into(),
                    shape: vec![buffer.bytes.to_string()],
                },
            ),
            (kind, Some(value)) => {
                slot_of.insert(value, index as u32);
                let kind = match kind {
                    BufferKind::Input => "input",
                    BufferKind::Output => "output",
                    _ => "activation",
                };
                // An output slot is named by the model's output, as its callers know it.
                let output_name = graph.outputs().iter().find(|o| o.value == value).map(|o| o.name.as_str());
                (kind, signature(output_name.unwrap_or(graph.value_name(value)), graph.value_type(value)))
            }
        };
        buffers.push(ArenaBuffer {
            tensor: Some(tensor),
            kind: kind.into(),
            offset: buffer.offset.to_string(),
            bytes: buffer.bytes.to_string(),
        });
    }

    let mut blob = WeightsBlob::default();
    let mut weights: Vec<WeightInfo> = Vec::new();
    let mut weight_of: HashMap<ValueRef, u32> = HashMap::new();
    // Group → its generated variants (in order), and each → the shipped kernel it launches.
    let mut variants_of: HashMap<_, Vec<usize>> = HashMap::new();
    let mut shipped_index = vec![0; compiled.kernels.len()];
    let mut kernels = Vec::new();
    for (index, generated) in compiled.kernels.iter().enumerate() {
        let first = compiled.same_as[index];
        if first == index {
            shipped_index[index] = kernels.len();
            let mut info = KernelInfo::describe(&generated.kernel);
            info.registers = compiled
                .resource_reports
                .iter()
                .flat_map(|(_, _, kernels)| kernels.iter().filter(|k| k.name == info.name).map(|k| k.registers))
                .max()
                .unwrap_or(0);
            kernels.push(info);
        }
        shipped_index[index] = shipped_index[first];
        variants_of.entry(generated.group).or_default().push(index);
    }

    let mut launches = Vec::with_capacity(plan.order.len());
    for group in &plan.order {
        let indices =
            variants_of.get(group).ok_or_else(|| packing_error(format!("fusion group g{group} has no kernel")))?;
        let mut variants = Vec::with_capacity(indices.len());
        for &kernel_index in indices {
            let generated = &compiled.kernels[kernel_index];
            let mut arguments = Vec::with_capacity(generated.bindings.len());
            for binding in &generated.bindings {
                let source = match binding {
                    ParamBinding::Symbol(symbol) => ArgumentSource::Symbol(symbol.clone()),
                    ParamBinding::Input(value) | ParamBinding::Output(value) => {
                        if let Some(&slot) = slot_of.get(value) {
                            ArgumentSource::Arena(slot)
                        } else if let Op::Constant(constant) = &graph.node(value.node).op {
                            let next = weights.len() as u32;
                            let index = *weight_of.entry(*value).or_insert_with(|| {
                                let offset = blob.push(constant.bytes());
                                weights.push(WeightInfo {
                                    name: graph.value_name(*value).to_string(),
                                    dtype: constant.dtype().name().into(),
                                    shape: constant.shape().iter().map(|&d| d as u64).collect(),
                                    offset,
                                    bytes: constant.bytes().len() as u64,
                                });
                                next
                            });
                            ArgumentSource::Weight(index)
                        } else {
                            return Err(packing_error(format!(
                                "g{group} reads `{}`, which is neither planned nor a constant",
                                graph.value_name(*value)
                            )));
                        }
                    }
                };
                arguments.push(Argument { source: Some(source) });
            }
            let dims = generated
                .when
                .iter()
                .map(|(dim, min, max)| DimRange { dim: dim.to_string(), min: *min, max: *max })
                .collect();
            variants.push(Variant { ranges: Vec::new(), kernel: shipped_index[kernel_index] as u32, arguments, dims });
        }
        let contract = GroupContract::of(graph, *group)
            .ok_or_else(|| packing_error(format!("fusion group g{group} has no contract")))?;
        let cost = LaunchCost::of(graph, &contract);
        launches.push(Launch {
            group: format!("g{group}"),
            variants,
            flops: cost.flops.to_string(),
            bytes: cost.bytes.to_string(),
        });
    }

    let slot = |value: ValueRef| {
        slot_of
            .get(&value)
            .copied()
            .ok_or_else(|| packing_error(format!("`{}` has no arena slot", graph.value_name(value))))
    };
    let inputs = graph.input_values().into_iter().map(slot).collect::<Result<_, _>>()?;
    let outputs = graph.outputs().iter().map(|o| slot(o.value)).collect::<Result<_, _>>()?;

    let manifest = Manifest {
        model_name: options.model_name.to_string(),
        producer: format!("kiln {}", env!("CARGO_PKG_VERSION")),
        precision: options.precision.to_string(),
        bounds: options
            .bounds
            .iter()
            .map(|(symbol, &(min, max))| SymbolBound { symbol: symbol.clone(), min, max })
            .collect(),
        weights,
        kernels,
        code: Vec::new(),
        weights_section: 0,
        kernel_ir_section: 0,
        memory: Some(manifest::MemoryPlan { arena_bytes: plan.arena_bytes.to_string(), buffers }),
        states: Vec::new(),
        entry_points: vec![EntryPoint { name: "forward".into(), inputs, outputs, launches }],
    };
    let code = compiled.code.iter().map(|o| (o.target.clone(), o.format, o.bytes.clone())).collect();
    let parts = ArtifactParts {
        manifest,
        weights: &blob.bytes,
        kernels: compiled.distinct_kernels().map(|k| &k.kernel).collect(),
        code,
    };
    let weight_bytes = parts.manifest.weights.iter().map(|w| w.bytes as usize).sum();
    let launches = plan.order.len();
    let mut bytes = Vec::new();
    write_artifact(parts, &mut bytes).map_err(|e| packing_error(e.to_string()))?;
    Ok(PackedArtifact { bytes, weight_bytes, launches })
}

/// Writes `bytes` to `path` through a temporary file beside it, so a reader
/// never sees a half-written artifact. An existing file is replaced only
/// when `replace` is set.
pub fn write_file_atomically(path: &std::path::Path, bytes: &[u8], replace: bool) -> Result<(), CompileError> {
    let failed = |source| CompileError::Write { path: path.display().to_string(), source };
    if path.exists() && !replace {
        return Err(failed(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "exists; pass --force to replace it",
        )));
    }
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".tmp{}", std::process::id()));
    let temporary = std::path::PathBuf::from(temporary);
    std::fs::write(&temporary, bytes).map_err(failed)?;
    std::fs::rename(&temporary, path).map_err(|source| {
        let _ = std::fs::remove_file(&temporary);
        failed(source)
    })
}
