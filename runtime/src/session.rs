//! Running an artifact: [`Model`] (shared, immutable) and [`Session`] (one
//! caller's stream, arena and caches).
//!
//! ```no_run
//! use std::sync::Arc;
//! use kiln_runtime::{Device, HostTensor, Model, Session};
//! let model = Arc::new(Model::open("minilm.kiln".as_ref())?);
//! let mut session = Session::new(model, Device::auto())?;
//! let ids = HostTensor::from_i64(vec![1, 4], &[101, 7592, 2088, 102]);
//! let outputs = session.run(&[("input_ids".into(), ids)])?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::Path;
use std::sync::{Arc, OnceLock};

use crate::artifact::{ArgumentSpec, Artifact, ArtifactError, EntrySpec};
use crate::device::cuda::{CudaError, CudaWeights, DeviceTensor};
use crate::device::{executor_kind, Executor, EXECUTORS};
use crate::machine::{AlignedBytes, Program};
use crate::sim::{SimBuffer, SimError};
use crate::tensor::decode_elements;
use crate::{HostTensor, SymbolBindings};

/// Where a session runs: an executor kind by name ([`crate::device::EXECUTORS`];
/// none: `auto`, the first kind present), which of its devices, and whether
/// the simulator's sanitizer checks (other executors ignore `check`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub executor: Option<String>,
    pub ordinal: usize,
    pub check: bool,
}

impl Device {
    /// CUDA device 0 when a driver and a GPU are present, else the simulator.
    pub fn auto() -> Device {
        Device { executor: None, ordinal: 0, check: false }
    }

    /// CUDA device `ordinal`.
    pub fn cuda(ordinal: usize) -> Device {
        Device { executor: Some("cuda".into()), ordinal, check: false }
    }

    /// The kernel simulator; `check` turns the sanitizer on.
    pub fn sim(check: bool) -> Device {
        Device { executor: Some("sim".into()), ordinal: 0, check }
    }

    /// The same device with the sanitizer on or off.
    pub fn with_check(self, check: bool) -> Device {
        Device { check, ..self }
    }
}

impl std::str::FromStr for Device {
    type Err = String;
    /// `auto`, `NAME` or `NAME:N` for an executor kind `NAME` (`cuda`, `sim`).
    fn from_str(text: &str) -> Result<Device, String> {
        if text == "auto" {
            return Ok(Device::auto());
        }
        let (name, ordinal) = match text.split_once(':') {
            Some((name, ordinal)) => (name, ordinal.parse::<usize>().ok()),
            None => (text, Some(0)),
        };
        match (executor_kind(name), ordinal) {
            (Some(kind), Some(ordinal)) => Ok(Device { executor: Some(kind.name.into()), ordinal, check: false }),
            _ => {
                let names: Vec<String> = EXECUTORS.iter().map(|k| format!("{0}, {0}:N", k.name)).collect();
                Err(format!("unknown device `{text}` (auto, {})", names.join(", ")))
            }
        }
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("missing input `{0}`")]
    MissingInput(String),
    #[error("unknown input `{name}` (the model's inputs: {expected})")]
    UnknownInput { name: String, expected: String },
    #[error("input `{name}`: dtype {found}, the model expects {expected}")]
    InputDType { name: String, expected: String, found: String },
    #[error("input `{name}`: shape {found:?} does not match the model's [{expected}]")]
    InputShape { name: String, expected: String, found: Vec<usize> },
    #[error("{symbol} = {value} is outside the bounds {min}..={max} this artifact was compiled for")]
    OutOfBounds { symbol: String, value: i64, min: i64, max: i64 },
    #[error("symbol `{0}` is not fixed by any input's shape")]
    UnboundSymbol(String),
    #[error("launch {group}: no kernel variant covers these dims")]
    NoVariant { group: String },
    #[error("the artifact has no entry point `{0}`")]
    NoEntryPoint(String),
    #[error("{0}")]
    Dim(#[from] crate::DimError),
    #[error("memory plan: {0}")]
    Plan(String),
    #[error("simulator: {0}")]
    Sim(#[from] SimError),
    #[error("cuda: {0}")]
    Cuda(#[from] CudaError),
    #[error("device-resident tensors need a CUDA session")]
    NotOnDevice,
    #[error("{0}")]
    Device(String),
}

/// What the machine needs of a model: its weights 16-byte aligned, and its
/// kernels compiled (indexed as the artifact's kernel IR) per warp size.
pub(crate) struct MachineModel {
    pub(crate) weights: Vec<AlignedBytes>,
    programs: std::sync::Mutex<Vec<(usize, Arc<Vec<Program>>)>>,
}

impl MachineModel {
    /// `kernels` compiled for warps of `warp_size` lanes, compiled on first use.
    pub(crate) fn programs(
        &self,
        kernels: &[crate::kernel::Kernel],
        warp_size: usize,
    ) -> Result<Arc<Vec<Program>>, SimError> {
        let mut compiled = self.programs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, programs)) = compiled.iter().find(|(size, _)| *size == warp_size) {
            return Ok(programs.clone());
        }
        let programs: Vec<Program> =
            kernels.iter().map(|kernel| Program::compile(kernel, warp_size)).collect::<Result<_, _>>()?;
        let programs = Arc::new(programs);
        compiled.push((warp_size, programs.clone()));
        Ok(programs)
    }
}

/// A compiled model, opened and validated; share it between threads with `Arc`.
pub struct Model {
    pub artifact: Artifact,
    /// Weights decoded for the interpreter (the simulator's oracle), made on first use.
    sim_weights: OnceLock<Vec<SimBuffer>>,
    /// Weights as aligned bytes and kernels compiled for the machine (the
    /// fast simulator), made on first use.
    machine: OnceLock<Result<MachineModel, SimError>>,
    /// Weights uploaded per CUDA device, made on first use.
    cuda_weights: std::sync::Mutex<Vec<(usize, Arc<CudaWeights>)>>,
}

impl Model {
    /// Opens and validates an artifact (nothing runs before it is fully checked).
    pub fn open(path: &Path) -> Result<Model, ArtifactError> {
        Ok(Model::from_artifact(Artifact::open(path)?))
    }

    pub fn from_artifact(artifact: Artifact) -> Model {
        Model {
            artifact,
            sim_weights: OnceLock::new(),
            machine: OnceLock::new(),
            cuda_weights: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn sim_weights(&self) -> &[SimBuffer] {
        self.sim_weights.get_or_init(|| {
            (0..self.artifact.weights.len())
                .map(|index| {
                    let dtype = self.artifact.weights[index].dtype;
                    SimBuffer { dtype, data: decode_elements(dtype, self.artifact.weight_bytes(index)) }
                })
                .collect()
        })
    }

    /// The weights and compiled kernels the machine runs, made once.
    pub(crate) fn machine(&self) -> Result<&MachineModel, SimError> {
        self.machine
            .get_or_init(|| {
                let weights = (0..self.artifact.weights.len())
                    .map(|index| AlignedBytes::copy_of(self.artifact.weight_bytes(index)))
                    .collect();
                Ok(MachineModel { weights, programs: Default::default() })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The weights on CUDA device `ordinal`, uploaded once.
    pub(crate) fn cuda_weights(
        &self,
        ordinal: usize,
        upload: impl FnOnce(&Artifact) -> Result<CudaWeights, CudaError>,
    ) -> Result<Arc<CudaWeights>, CudaError> {
        let mut uploaded = self.cuda_weights.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, weights)) = uploaded.iter().find(|(o, _)| *o == ordinal) {
            return Ok(weights.clone());
        }
        let weights = Arc::new(upload(&self.artifact)?);
        uploaded.push((ordinal, weights.clone()));
        Ok(weights)
    }
}

/// One caller's execution context: its stream, arena and caches.
pub struct Session {
    model: Arc<Model>,
    executor: Box<dyn Executor>,
}

impl Session {
    /// A session on `device` (`auto` picks the first executor kind present:
    /// CUDA when a driver and a GPU are there, else the simulator).
    pub fn new(model: Arc<Model>, device: Device) -> Result<Session, RunError> {
        let kind = match &device.executor {
            Some(name) => executor_kind(name).ok_or_else(|| RunError::Device(format!("no executor `{name}`")))?,
            None => EXECUTORS
                .iter()
                .find(|kind| (kind.present)())
                .ok_or_else(|| RunError::Device("no executor is present".into()))?,
        };
        let executor = (kind.open)(model.clone(), &device)?;
        Ok(Session { model, executor })
    }

    /// The device this session runs on, in words.
    pub fn device_description(&self) -> String {
        self.executor.description()
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Runs the `forward` entry point on host inputs; returns the outputs in
    /// the model's order.
    pub fn run(&mut self, inputs: &[(String, HostTensor)]) -> Result<NamedTensors, RunError> {
        self.run_entry("forward", inputs)
    }

    /// Runs entry point `entry`.
    pub fn run_entry(&mut self, entry: &str, inputs: &[(String, HostTensor)]) -> Result<NamedTensors, RunError> {
        let model = self.model.clone();
        let spec = model.artifact.entry_point(entry).ok_or_else(|| RunError::NoEntryPoint(entry.into()))?;
        let (bindings, ordered) = bind_inputs(&model.artifact, spec, inputs)?;
        self.run_bound(spec, &bindings, &ordered)
    }

    /// Runs `spec` on inputs already bound and ordered by [`bind_inputs`].
    fn run_bound(
        &mut self,
        spec: &EntrySpec,
        bindings: &SymbolBindings,
        ordered: &[&HostTensor],
    ) -> Result<NamedTensors, RunError> {
        let outputs = self.executor.run(&self.model, spec, bindings, ordered)?;
        Ok(output_names(&self.model.artifact, spec).zip(outputs).collect())
    }
}

/// The names of `spec`'s outputs, in order.
fn output_names<'a>(artifact: &'a Artifact, spec: &'a EntrySpec) -> impl Iterator<Item = String> + 'a {
    spec.outputs.iter().map(|&slot| artifact.slots[slot].tensor.name.clone())
}

impl Session {
    /// Copies a host tensor to this session's GPU (CUDA sessions only).
    pub fn upload(&self, tensor: &HostTensor) -> Result<DeviceTensor, RunError> {
        self.executor.upload(tensor)
    }

    /// Runs `forward` on device-resident inputs and leaves the outputs on the
    /// device: no host round trip (CUDA sessions only). The inputs are checked
    /// against the signature and bounds exactly as in [`Session::run`].
    pub fn run_device(&mut self, inputs: &[(String, &DeviceTensor)]) -> Result<Vec<(String, DeviceTensor)>, RunError> {
        let artifact = &self.model.artifact;
        let spec = artifact.entry_point("forward").ok_or_else(|| RunError::NoEntryPoint("forward".into()))?;
        let described: Vec<(String, TensorShape)> = inputs
            .iter()
            .map(|(name, t)| (name.clone(), TensorShape { dtype: t.dtype, shape: t.shape.clone() }))
            .collect();
        let (bindings, order) = bind_signature(artifact, spec, &described)?;
        let ordered: Vec<&DeviceTensor> = order.iter().map(|&i| inputs[i].1).collect();
        let outputs = self.executor.run_device(spec, &bindings, &ordered)?;
        Ok(output_names(artifact, spec).zip(outputs).collect())
    }

    /// Runs `forward` once on `inputs`, then times `rounds` rounds of `calls`
    /// replays of its launches with the inputs left where the run put them
    /// (what a serving loop with device-resident inputs pays): on CUDA with
    /// events around each round (CUDA graphs unless turned off), on the
    /// simulator by the host clock. Returns the first run's outputs, the
    /// outputs as the last replay left them (equal to the first unless a
    /// replay reads something a run overwrote) and the time per call of each
    /// round.
    pub fn benchmark(
        &mut self,
        inputs: &[(String, HostTensor)],
        calls: usize,
        rounds: usize,
    ) -> Result<Benchmark, RunError> {
        let model = self.model.clone();
        let artifact = &model.artifact;
        let spec = artifact.entry_point("forward").ok_or_else(|| RunError::NoEntryPoint("forward".into()))?;
        let (bindings, ordered) = bind_inputs(artifact, spec, inputs)?;
        let outputs = self.run_bound(spec, &bindings, &ordered)?;
        let (times, replayed) = self.executor.time_replays(&model, spec, &bindings, calls, rounds)?;
        let replayed = output_names(artifact, spec).zip(replayed).collect();
        Ok(Benchmark { outputs, replayed, round_times: times })
    }
}

impl Session {
    /// Runs `forward` once on `inputs`, then times each launch alone,
    /// `repeats` times: on CUDA with events around each launch and no graph,
    /// on the simulator by the host clock. Returns per launch its group,
    /// kernel, times and the compiler's least FLOPs and bytes for it.
    pub fn profile(&mut self, inputs: &[(String, HostTensor)], repeats: usize) -> Result<Vec<LaunchProfile>, RunError> {
        let model = self.model.clone();
        let artifact = &model.artifact;
        let spec = artifact.entry_point("forward").ok_or_else(|| RunError::NoEntryPoint("forward".into()))?;
        let (bindings, ordered) = bind_inputs(artifact, spec, inputs)?;
        self.run_bound(spec, &bindings, &ordered)?;
        let times = self.executor.profile_launches(&model, spec, &bindings, repeats)?;
        let counters = self.executor.launch_counters(&model, spec, &bindings)?;
        spec.launches
            .iter()
            .zip(times)
            .enumerate()
            .map(|(index, (launch, times))| {
                let variant = choose_variant(launch, &bindings, &artifact.kernels, self.executor.runs_tensor_cores())?;
                let counted = counters.as_ref().map(|all| all[index].clone());
                let weights = match &counted {
                    Some(counted) => variant
                        .arguments
                        .iter()
                        .enumerate()
                        .filter_map(|(param, argument)| match argument {
                            ArgumentSpec::Weight(weight) => {
                                let spec = &artifact.weights[*weight];
                                Some(WeightTraffic {
                                    name: spec.name.clone(),
                                    bytes: spec.file_range.len() as u64,
                                    traffic: counted.buffer(param),
                                })
                            }
                            _ => None,
                        })
                        .collect(),
                    None => Vec::new(),
                };
                Ok(LaunchProfile {
                    group: launch.group.clone(),
                    kernel: artifact.kernels[variant.kernel].name.clone(),
                    times,
                    flops: launch.flops.evaluate(&bindings)?,
                    bytes: launch.bytes.evaluate(&bindings)?,
                    counters: counted,
                    weights,
                })
            })
            .collect()
    }
}

/// One launch as [`Session::profile`] measured it.
pub struct LaunchProfile {
    pub group: String,
    pub kernel: String,
    pub times: Vec<std::time::Duration>,
    /// The compiler's least floating-point operations for the launch.
    pub flops: i64,
    /// The compiler's least bytes moved for the launch.
    pub bytes: i64,
    /// What the launch asked of memory, where the executor counts it (the
    /// simulator's machine): global traffic and sectors, shared-memory
    /// wavefronts and bank-conflict replays.
    pub counters: Option<crate::machine::Counters>,
    /// With counters: what the launch read of each weight it is given.
    pub weights: Vec<WeightTraffic>,
}

/// One weight's global traffic in one launch.
pub struct WeightTraffic {
    pub name: String,
    /// The weight's size.
    pub bytes: u64,
    pub traffic: crate::machine::Traffic,
}

impl WeightTraffic {
    /// How many times the launch read the weight over (1.0: streamed once).
    pub fn passes(&self) -> f64 {
        self.traffic.bytes_read as f64 / self.bytes.max(1) as f64
    }

    /// The share of the bytes of the 32-byte sectors touched that were asked
    /// for (1.0: perfectly coalesced; above 1, lanes shared bytes).
    pub fn sector_efficiency(&self) -> f64 {
        self.traffic.bytes_read as f64 / (self.traffic.sectors_read.max(1) * 32) as f64
    }
}

impl LaunchProfile {
    /// The median of the launch's times.
    pub fn median(&self) -> std::time::Duration {
        let mut times = self.times.clone();
        times.sort();
        times.get(times.len() / 2).copied().unwrap_or_default()
    }
}

/// What [`Session::benchmark`] measured.
pub struct Benchmark {
    /// The outputs of the first, ordinary run.
    pub outputs: NamedTensors,
    /// The outputs as the arena held them after the last replay.
    pub replayed: NamedTensors,
    /// The time per call of each round.
    pub round_times: Vec<std::time::Duration>,
}

impl Benchmark {
    /// The median of the rounds' times per call.
    pub fn median(&self) -> std::time::Duration {
        let mut times = self.round_times.clone();
        times.sort();
        times.get(times.len() / 2).copied().unwrap_or_default()
    }

    /// The first output whose replayed bytes differ from the first run's, if any.
    pub fn replay_mismatch(&self) -> Option<&str> {
        self.outputs.iter().zip(&self.replayed).find(|(a, b)| a.1.bytes != b.1.bytes).map(|(a, _)| a.0.as_str())
    }
}

/// Tensors by name, in the model's order.
pub type NamedTensors = Vec<(String, HostTensor)>;

/// A tensor's dtype and shape, wherever its elements live.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorShape {
    pub dtype: crate::DType,
    pub shape: Vec<usize>,
}

/// Checks every input against the entry point's signature and the bounds;
/// returns the symbol values and the inputs in signature order.
pub fn bind_inputs<'a>(
    artifact: &Artifact,
    entry: &EntrySpec,
    inputs: &'a [(String, HostTensor)],
) -> Result<(SymbolBindings, Vec<&'a HostTensor>), RunError> {
    let described: Vec<(String, TensorShape)> =
        inputs.iter().map(|(name, t)| (name.clone(), TensorShape { dtype: t.dtype, shape: t.shape.clone() })).collect();
    let (bindings, order) = bind_signature(artifact, entry, &described)?;
    Ok((bindings, order.into_iter().map(|i| &inputs[i].1).collect()))
}

/// [`bind_inputs`] over dtypes and shapes: returns the symbol values and, per
/// signature input, the index of the given input that fills it.
pub fn bind_signature(
    artifact: &Artifact,
    entry: &EntrySpec,
    inputs: &[(String, TensorShape)],
) -> Result<(SymbolBindings, Vec<usize>), RunError> {
    let specs: Vec<_> = entry.inputs.iter().map(|&slot| &artifact.slots[slot].tensor).collect();
    for (name, _) in inputs {
        if !specs.iter().any(|s| &s.name == name) {
            let expected = specs.iter().map(|s| format!("`{}`", s.name)).collect::<Vec<_>>().join(", ");
            return Err(RunError::UnknownInput { name: name.clone(), expected });
        }
    }
    let mut order = Vec::new();
    let mut bindings = SymbolBindings::new();
    for spec in &specs {
        let index = inputs
            .iter()
            .position(|(name, _)| name == &spec.name)
            .ok_or_else(|| RunError::MissingInput(spec.name.clone()))?;
        let tensor = &inputs[index].1;
        if tensor.dtype != spec.dtype {
            return Err(RunError::InputDType {
                name: spec.name.clone(),
                expected: spec.dtype.to_string(),
                found: tensor.dtype.to_string(),
            });
        }
        if tensor.shape.len() != spec.shape.len() {
            return Err(shape_mismatch(spec, tensor));
        }
        for (dim, &size) in spec.shape.iter().zip(&tensor.shape) {
            if let Some(symbol) = dim.as_symbol() {
                match bindings.get(symbol) {
                    Some(&bound) if bound != size as i64 => return Err(shape_mismatch(spec, tensor)),
                    Some(_) => {}
                    None => {
                        bindings.insert(symbol.to_string(), size as i64);
                    }
                }
            }
        }
        order.push(index);
    }
    for (symbol, &(min, max)) in &artifact.bounds {
        let value = *bindings.get(symbol).ok_or_else(|| RunError::UnboundSymbol(symbol.clone()))?;
        if value < min || value > max {
            return Err(RunError::OutOfBounds { symbol: symbol.clone(), value, min, max });
        }
    }
    // Compound dims (`seq+1`, constants) are checked once every symbol is bound.
    for (spec, &index) in specs.iter().zip(&order) {
        let tensor = &inputs[index].1;
        for (dim, &size) in spec.shape.iter().zip(&tensor.shape) {
            if dim.evaluate(&bindings)? != size as i64 {
                return Err(shape_mismatch(spec, tensor));
            }
        }
    }
    Ok((bindings, order))
}

fn shape_mismatch(spec: &crate::artifact::TensorSpec, tensor: &TensorShape) -> RunError {
    RunError::InputShape {
        name: spec.name.clone(),
        expected: spec.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "),
        found: tensor.shape.clone(),
    }
}

/// The concrete shape of `dims` under `bindings`.
pub(crate) fn concrete_shape(dims: &[crate::Dim], bindings: &SymbolBindings) -> Result<Vec<usize>, RunError> {
    dims.iter().map(|d| Ok(d.evaluate(bindings)?.max(0) as usize)).collect()
}

/// The variant of `launch` for `bindings`: the first whose shape bucket
/// holds them and whose kernel the device runs (`tensor_cores`: it has
/// sm_80 instructions; see [`crate::artifact::KernelSpec::uses_tensor_cores`]).
pub fn choose_variant<'a>(
    launch: &'a crate::artifact::LaunchSpec,
    bindings: &SymbolBindings,
    kernels: &[crate::artifact::KernelSpec],
    tensor_cores: bool,
) -> Result<&'a crate::artifact::VariantSpec, RunError> {
    launch
        .variants
        .iter()
        .filter(|v| tensor_cores || !kernels.get(v.kernel).is_some_and(|k| k.uses_tensor_cores))
        .find(|v| v.accepts(bindings))
        .ok_or_else(|| RunError::NoVariant { group: launch.group.clone() })
}
