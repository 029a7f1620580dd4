//! The CUDA executor: runs an artifact's PTX through the CUDA driver.
//!
//! The driver library is loaded dynamically (cudarc's `dynamic-loading`), so
//! kiln builds and runs without CUDA installed; [`device_count`] checks that
//! the library is present before any driver call (cudarc panics otherwise).
//!
//! Per session: one stream, one arena allocated at the compile-time bounds,
//! pinned host staging for inputs and outputs, and a bounded cache of CUDA
//! graphs keyed by the symbol values. A run for dims not in the cache
//! captures the launches into a graph; when the cache is full, the least
//! recently used executable graph is updated in place with
//! `cuGraphExecUpdate` (same launches, other dims) rather than instantiated
//! anew. Weights are uploaded once per device and model and shared by its
//! sessions. Launches use the driver API directly, so cudarc's event
//! tracking is off for the context.

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::driver::{result, sys, CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr};

use crate::artifact::{ArgumentSpec, Artifact, EntrySpec};
use crate::kernel::Param;
use crate::session::{choose_variant, concrete_shape, Model, RunError};
use crate::{HostTensor, SymbolBindings};

/// Executable graphs kept per session.
const GRAPH_CACHE_CAPACITY: usize = 8;

/// Why CUDA could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CudaError {
    #[error("no CUDA driver library (libcuda.so) was found on this machine; use --device sim to run in the simulator")]
    NoDriver,
    #[error("CUDA device {ordinal} does not exist ({count} found)")]
    NoDevice { ordinal: usize, count: usize },
    #[error("the artifact has no kernels for {device} (compiled for: {available}); recompile with --target {device}")]
    NoKernels { device: String, available: String },
    #[error("state tensors are not supported by this runtime yet")]
    StateUnsupported,
    #[error("{context}: {message}")]
    Driver { context: String, message: String },
}

fn driver(context: &str) -> impl Fn(cudarc::driver::DriverError) -> CudaError + '_ {
    move |error| CudaError::Driver { context: context.to_string(), message: format!("{error:?}") }
}

/// How many CUDA devices this machine has (0 without a driver library).
pub fn device_count() -> usize {
    // SAFETY: only probes for the library with dlopen.
    if !unsafe { sys::is_culib_present() } {
        return 0;
    }
    CudaContext::device_count().map(|n| n.max(0) as usize).unwrap_or(0)
}

/// The `sm_*` code object to load on a device of compute capability
/// `major.minor`: an arch-specific build (`sm_90a`) only on exactly that
/// chip, otherwise the newest generic build not newer than the device.
pub fn choose_target<'a>(targets: &[&'a str], major: i32, minor: i32) -> Option<&'a str> {
    let device = (major * 10 + minor) as u32;
    targets
        .iter()
        .filter_map(|&target| {
            let rest = target.strip_prefix("sm_")?;
            let (digits, specific) = match rest.strip_suffix('a') {
                Some(digits) => (digits, true),
                None => (rest, false),
            };
            let version: u32 = digits.parse().ok()?;
            let usable = if specific { version == device } else { version <= device };
            usable.then_some((version, specific, target))
        })
        .max()
        .map(|(_, _, target)| target)
}

/// A model's weights on one device: the weights section in one allocation.
pub struct CudaWeights {
    buffer: CudaSlice<u8>,
    base: u64,
    /// Device address of each weight.
    addresses: Vec<u64>,
}

// SAFETY: the allocation is only read by kernels after the upload finished;
// device pointers are plain addresses valid in every thread of the process.
unsafe impl Send for CudaWeights {}
unsafe impl Sync for CudaWeights {}

impl CudaWeights {
    fn upload(artifact: &Artifact, stream: &Arc<CudaStream>) -> Result<CudaWeights, CudaError> {
        let blob = artifact.weights_blob();
        let mut buffer = stream.alloc_zeros::<u8>(blob.len().max(1)).map_err(driver("allocating the weights"))?;
        if !blob.is_empty() {
            stream.memcpy_htod(blob, &mut buffer).map_err(driver("uploading the weights"))?;
        }
        stream.synchronize().map_err(driver("uploading the weights"))?;
        let (base, _sync) = buffer.device_ptr(stream);
        let addresses = (0..artifact.weights.len()).map(|i| base + artifact.weight_offset_in_blob(i) as u64).collect();
        drop(_sync);
        Ok(CudaWeights { buffer, base, addresses })
    }

    /// Bytes on the device.
    pub fn bytes(&self) -> usize {
        self.buffer.len()
    }

    /// The allocation's device address.
    pub fn base(&self) -> u64 {
        self.base
    }
}

/// A tensor in device memory, for runs without a host round trip
/// ([`crate::Session::run_device`]).
pub struct DeviceTensor {
    pub dtype: crate::DType,
    pub shape: Vec<usize>,
    buffer: CudaSlice<u8>,
    stream: Arc<CudaStream>,
}

// SAFETY: the buffer is a device allocation; every use goes through its own stream.
unsafe impl Send for DeviceTensor {}

impl DeviceTensor {
    /// The device address of the first element.
    pub fn device_address(&self) -> u64 {
        let (address, _sync) = self.buffer.device_ptr(&self.stream);
        address
    }

    /// Bytes of the tensor.
    pub fn bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size_in_bytes()
    }

    /// Copies the tensor to the host.
    pub fn to_host(&self) -> Result<HostTensor, CudaError> {
        let mut bytes = vec![0u8; self.bytes()];
        if !bytes.is_empty() {
            self.stream
                .memcpy_dtoh(&self.buffer.slice(..bytes.len()), &mut bytes)
                .map_err(driver("downloading a tensor"))?;
        }
        self.stream.synchronize().map_err(driver("downloading a tensor"))?;
        Ok(HostTensor { dtype: self.dtype, shape: self.shape.clone(), bytes })
    }
}

/// The device address of arena buffer `slot` under `bindings`.
fn slot_address(arena_base: u64, artifact: &Artifact, slot: usize, bindings: &SymbolBindings) -> Result<u64, RunError> {
    Ok(arena_base + artifact.slots[slot].offset.evaluate(bindings)?.max(0) as u64)
}

/// An instantiated CUDA graph.
struct GraphExec(sys::CUgraphExec);

impl Drop for GraphExec {
    fn drop(&mut self) {
        // SAFETY: the handle came from cuGraphInstantiate and is destroyed once.
        let _ = unsafe { result::graph::exec_destroy(self.0) };
    }
}

/// Runs artifacts on one CUDA device.
pub struct CudaExecutor {
    /// First, so executable graphs are destroyed before the module and arena they use.
    graphs: Vec<(SymbolBindings, GraphExec)>,
    model: Arc<Model>,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    _module: Arc<CudaModule>,
    functions: Vec<CudaFunction>,
    weights: Arc<CudaWeights>,
    /// Owns the arena allocation that `arena_base` points into.
    _arena: CudaSlice<u8>,
    arena_base: u64,
    staging: cudarc::driver::PinnedHostSlice<u8>,
    use_graphs: bool,
    description: String,
}

// SAFETY: a session is used through `&mut self` from one thread at a time;
// the raw graph handles it owns are never shared.
unsafe impl Send for CudaExecutor {}

impl CudaExecutor {
    /// Opens device `ordinal`, loads the best PTX for it, uploads the weights
    /// (once per model and device) and allocates the arena at the bounds.
    pub fn new(model: Arc<Model>, ordinal: usize) -> Result<CudaExecutor, CudaError> {
        // SAFETY: only probes for the library with dlopen.
        if !unsafe { sys::is_culib_present() } {
            return Err(CudaError::NoDriver);
        }
        let count = device_count();
        if ordinal >= count {
            return Err(CudaError::NoDevice { ordinal, count });
        }
        let ctx = CudaContext::new(ordinal).map_err(driver("creating a context"))?;
        // SAFETY: this executor synchronizes its one stream itself and launches
        // through the driver API, so cudarc's per-allocation events are not needed
        // (and must not be recorded while a graph is being captured).
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = ctx.compute_capability().map_err(driver("reading the compute capability"))?;
        let artifact = &model.artifact;
        let device = format!("sm_{major}{minor}");
        let target = choose_target(&artifact.targets(), major, minor)
            .ok_or_else(|| CudaError::NoKernels { device: device.clone(), available: artifact.targets().join(", ") })?;
        let ptx = artifact.code(target).expect("validated code object");
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
            .map_err(driver(&format!("loading the {target} PTX (JIT for {device})")))?;
        let mut functions = Vec::new();
        for kernel in &artifact.kernels {
            let function = module.load_function(&kernel.name).map_err(driver(&kernel.name))?;
            if kernel.dynamic_shared_bytes > 48 * 1024 {
                function
                    .set_attribute(
                        sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        kernel.dynamic_shared_bytes as i32,
                    )
                    .map_err(driver(&kernel.name))?;
            }
            functions.push(function);
        }
        let stream = ctx.new_stream().map_err(driver("creating a stream"))?;
        let weights = model.cuda_weights(ordinal, |artifact| CudaWeights::upload(artifact, &stream))?;
        let bounds: SymbolBindings = artifact.bounds.iter().map(|(s, &(_, max))| (s.clone(), max)).collect();
        let arena_bytes = artifact
            .arena_bytes
            .evaluate(&bounds)
            .map_err(|e| CudaError::Driver { context: "sizing the arena".into(), message: e.to_string() })?;
        let arena = stream.alloc_zeros::<u8>(arena_bytes.max(1) as usize).map_err(driver("allocating the arena"))?;
        let (arena_base, sync) = arena.device_ptr(&stream);
        drop(sync);
        let staging_bytes: usize = artifact
            .slots
            .iter()
            .filter(|s| matches!(s.role, crate::artifact::BufferRole::Input | crate::artifact::BufferRole::Output))
            .map(|s| s.bytes.evaluate(&bounds).unwrap_or(0).max(0) as usize)
            .sum();
        // SAFETY: the staging memory is written before it is read.
        let staging = unsafe { ctx.alloc_pinned_with_flags::<u8>(staging_bytes.max(1), 0) }
            .map_err(driver("allocating pinned staging memory"))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let description = format!("CUDA device {ordinal}: {name} ({device}, running {target} PTX)");
        let use_graphs = std::env::var_os("KILN_CUDA_GRAPHS").is_none_or(|v| v != "0");
        Ok(CudaExecutor {
            model,
            ctx,
            stream,
            _module: module,
            functions,
            weights,
            _arena: arena,
            arena_base,
            staging,
            graphs: Vec::new(),
            use_graphs,
            description,
        })
    }

    pub fn description(&self) -> String {
        self.description.clone()
    }

    /// Runs `entry` on inputs already checked against its signature.
    pub fn run(
        &mut self,
        entry: &EntrySpec,
        bindings: &SymbolBindings,
        inputs: &[&HostTensor],
    ) -> Result<Vec<HostTensor>, RunError> {
        let model = self.model.clone();
        let artifact = &model.artifact;
        self.ctx.bind_to_thread().map_err(driver("binding the context"))?;
        let stream = self.stream.cu_stream();
        // Inputs: host → pinned staging → the inputs' arena slots.
        let mut at = 0;
        {
            let staging = self.staging.as_mut_slice().map_err(driver("staging inputs"))?;
            for (&slot, input) in entry.inputs.iter().zip(inputs) {
                let length = input.bytes.len();
                staging[at..at + length].copy_from_slice(&input.bytes);
                let destination = slot_address(self.arena_base, artifact, slot, bindings)?;
                // SAFETY: the slot lies inside the arena (planned at the bounds the
                // inputs were checked against); pinned memory outlives the copy.
                unsafe { result::memcpy_htod_async(destination, &staging[at..at + length], stream) }
                    .map_err(driver("copying inputs to the device"))?;
                at += length;
            }
        }
        self.launch_all(entry, bindings)?;
        // Outputs: arena → pinned staging → host.
        let staging = self.staging.as_mut_slice().map_err(driver("staging outputs"))?;
        let mut placed = Vec::new();
        for &slot in &entry.outputs {
            let spec = &artifact.slots[slot].tensor;
            let shape = concrete_shape(&spec.shape, bindings)?;
            let length = shape.iter().product::<usize>() * spec.dtype.size_in_bytes();
            let source = slot_address(self.arena_base, artifact, slot, bindings)?;
            // SAFETY: as above; the staging range is disjoint from the inputs'.
            unsafe { result::memcpy_dtoh_async(&mut staging[at..at + length], source, stream) }
                .map_err(driver("copying outputs to the host"))?;
            placed.push((spec.dtype, shape, at..at + length));
            at += length;
        }
        self.stream.synchronize().map_err(driver("running the model"))?;
        Ok(placed
            .into_iter()
            .map(|(dtype, shape, range)| HostTensor { dtype, shape, bytes: staging[range].to_vec() })
            .collect())
    }

    /// Copies a host tensor to this session's device.
    pub fn upload(&self, tensor: &HostTensor) -> Result<DeviceTensor, CudaError> {
        let mut buffer =
            self.stream.alloc_zeros::<u8>(tensor.bytes.len().max(1)).map_err(driver("allocating a tensor"))?;
        if !tensor.bytes.is_empty() {
            self.stream.memcpy_htod(&tensor.bytes, &mut buffer).map_err(driver("uploading a tensor"))?;
        }
        self.stream.synchronize().map_err(driver("uploading a tensor"))?;
        Ok(DeviceTensor { dtype: tensor.dtype, shape: tensor.shape.clone(), buffer, stream: self.stream.clone() })
    }

    /// Runs `entry` on device-resident inputs (already checked against the
    /// signature); outputs are new device tensors. Nothing crosses to the host.
    pub fn run_device(
        &mut self,
        entry: &EntrySpec,
        bindings: &SymbolBindings,
        inputs: &[&DeviceTensor],
    ) -> Result<Vec<DeviceTensor>, RunError> {
        let model = self.model.clone();
        let artifact = &model.artifact;
        self.ctx.bind_to_thread().map_err(driver("binding the context"))?;
        let stream = self.stream.cu_stream();
        for (&slot, input) in entry.inputs.iter().zip(inputs) {
            let destination = slot_address(self.arena_base, artifact, slot, bindings)?;
            // SAFETY: both ranges are device allocations of at least `bytes()` bytes.
            unsafe { result::memcpy_dtod_async(destination, input.device_address(), input.bytes(), stream) }
                .map_err(driver("copying inputs into the arena"))?;
        }
        self.launch_all(entry, bindings)?;
        let mut outputs = Vec::new();
        for &slot in &entry.outputs {
            let spec = &artifact.slots[slot].tensor;
            let shape = concrete_shape(&spec.shape, bindings)?;
            let bytes = shape.iter().product::<usize>() * spec.dtype.size_in_bytes();
            let buffer = self.stream.alloc_zeros::<u8>(bytes.max(1)).map_err(driver("allocating an output"))?;
            let output = DeviceTensor { dtype: spec.dtype, shape, buffer, stream: self.stream.clone() };
            let source = slot_address(self.arena_base, artifact, slot, bindings)?;
            // SAFETY: as above.
            unsafe { result::memcpy_dtod_async(output.device_address(), source, bytes, stream) }
                .map_err(driver("copying outputs out of the arena"))?;
            outputs.push(output);
        }
        self.stream.synchronize().map_err(driver("running the model"))?;
        Ok(outputs)
    }

    /// Times `repeats` executions of `entry`'s launches alone (inputs already
    /// in the arena from a run with the same bindings): enqueue, then wait.
    pub fn time_launches(
        &mut self,
        entry: &EntrySpec,
        bindings: &SymbolBindings,
        repeats: usize,
    ) -> Result<Vec<std::time::Duration>, RunError> {
        self.ctx.bind_to_thread().map_err(driver("binding the context"))?;
        let mut times = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            let started = std::time::Instant::now();
            self.launch_all(entry, bindings)?;
            self.stream.synchronize().map_err(driver("running the model"))?;
            times.push(started.elapsed());
        }
        Ok(times)
    }

    /// Enqueues every launch of `entry`, through a cached CUDA graph when enabled.
    fn launch_all(&mut self, entry: &EntrySpec, bindings: &SymbolBindings) -> Result<(), RunError> {
        if !self.use_graphs {
            return self.enqueue_launches(entry, bindings);
        }
        let stream = self.stream.cu_stream();
        if let Some(position) = self.graphs.iter().position(|(b, _)| b == bindings) {
            let entry_graph = self.graphs.remove(position);
            // SAFETY: the executable graph is valid until dropped.
            let launched = unsafe { result::graph::launch(entry_graph.1 .0, stream) };
            self.graphs.push(entry_graph);
            return launched.map_err(|e| driver("launching a CUDA graph")(e).into());
        }
        // SAFETY: capture on this session's own stream; every enqueued call is a kernel launch.
        unsafe { result::stream::begin_capture(stream, sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL) }
            .map_err(driver("starting graph capture"))?;
        let enqueued = self.enqueue_launches(entry, bindings);
        // SAFETY: ends the capture begun above, even when enqueueing failed.
        let graph = unsafe { result::stream::end_capture(stream) }.map_err(driver("ending graph capture"))?;
        enqueued?;
        let exec = self.instantiate_or_update(graph);
        // SAFETY: the captured graph is no longer needed once instantiated or applied.
        let _ = unsafe { result::graph::destroy(graph) };
        let exec = exec?;
        // SAFETY: as above.
        unsafe { result::graph::launch(exec.0, stream) }.map_err(driver("launching a CUDA graph"))?;
        self.graphs.push((bindings.clone(), exec));
        Ok(())
    }

    /// An executable for `graph`: the least recently used cached executable,
    /// updated in place, when the cache is full and the update succeeds;
    /// otherwise a new instantiation.
    fn instantiate_or_update(&mut self, graph: sys::CUgraph) -> Result<GraphExec, CudaError> {
        if self.graphs.len() >= GRAPH_CACHE_CAPACITY {
            let (_, oldest) = self.graphs.remove(0);
            let mut info = std::mem::MaybeUninit::<sys::CUgraphExecUpdateResultInfo>::zeroed();
            // SAFETY: both handles are valid; the update only succeeds when the topology matches.
            let status = unsafe { sys::cuGraphExecUpdate_v2(oldest.0, graph, info.as_mut_ptr()) };
            if status == sys::CUresult::CUDA_SUCCESS {
                return Ok(oldest);
            }
        }
        // SAFETY: the graph is valid.
        let exec = unsafe { result::graph::instantiate(graph, sys::CUgraphInstantiate_flags(0)) }
            .map_err(driver("instantiating a CUDA graph"))?;
        Ok(GraphExec(exec))
    }

    /// Enqueues every kernel of `entry` on the stream.
    fn enqueue_launches(&self, entry: &EntrySpec, bindings: &SymbolBindings) -> Result<(), RunError> {
        let artifact = &self.model.artifact;
        for launch in &entry.launches {
            let variant = choose_variant(launch, bindings)?;
            let kernel = &artifact.kernels[variant.kernel];
            let ir = &artifact.kernel_ir[variant.kernel];
            let blocks = kernel.grid_blocks.evaluate(bindings)?;
            if blocks == 0 {
                continue;
            }
            let blocks = u32::try_from(blocks).map_err(|_| CudaError::Driver {
                context: kernel.name.clone(),
                message: format!("a grid of {blocks} blocks"),
            })?;
            let mut values: Vec<u64> = Vec::with_capacity(variant.arguments.len());
            for (argument, param) in variant.arguments.iter().zip(&ir.params) {
                values.push(match (argument, param) {
                    (ArgumentSpec::Weight(index), _) => self.weights.addresses[*index],
                    (ArgumentSpec::Arena(slot), _) => slot_address(self.arena_base, artifact, *slot, bindings)?,
                    (ArgumentSpec::Symbol(symbol), Param::Scalar { .. }) => bindings[symbol] as u64,
                    (ArgumentSpec::Symbol(_), Param::Buffer { .. }) => unreachable!("validated at open"),
                    (ArgumentSpec::State(_), _) => return Err(CudaError::StateUnsupported.into()),
                });
            }
            // Each parameter is 8 bytes (pointers and i64 dims); the driver reads through these pointers.
            let mut parameters: Vec<*mut c_void> = values.iter_mut().map(|v| v as *mut u64 as *mut c_void).collect();
            // SAFETY: the function's parameter list is the recorded calling convention,
            // checked against the IR when the artifact was opened.
            unsafe {
                result::launch_kernel(
                    self.functions[variant.kernel].cu_function(),
                    (blocks, 1, 1),
                    (kernel.block_threads, 1, 1),
                    kernel.dynamic_shared_bytes as u32,
                    self.stream.cu_stream(),
                    &mut parameters,
                )
            }
            .map_err(driver(&kernel.name))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chooses_the_newest_generic_ptx_not_newer_than_the_device() {
        let targets = ["sm_80", "sm_90", "sm_90a"];
        assert_eq!(choose_target(&targets, 9, 0), Some("sm_90a"));
        assert_eq!(choose_target(&["sm_80", "sm_90"], 9, 0), Some("sm_90"));
        assert_eq!(choose_target(&targets, 8, 9), Some("sm_80"));
        assert_eq!(choose_target(&targets, 10, 0), Some("sm_90"));
        assert_eq!(choose_target(&["sm_90a"], 10, 0), None);
        assert_eq!(choose_target(&["sm_90", "gfx942"], 8, 0), None);
    }
}
