//! The CUDA executor: runs an artifact's PTX through the CUDA driver.
//!
//! The driver library is loaded dynamically (cudarc's `dynamic-loading`), so
//! kiln builds and runs without CUDA installed; [`device_count`] checks that
//! the library is present before any driver call (cudarc panics otherwise).
//!
//! Code: a cubin when the artifact has one the device can run as it is (same
//! major architecture, not newer), else the newest PTX not newer than the
//! device, JIT-compiled by the driver; a JIT failure carries the driver's
//! error log.
//!
//! Per session: one stream, one arena allocated at the compile-time bounds,
//! pinned host staging for inputs and outputs, and a bounded cache of CUDA
//! graphs keyed by the symbol values. The first run of a binding launches
//! directly (so a faulting kernel is reported as itself, not as a broken
//! capture); the next one captures the launches into a graph, and later ones
//! replay it. When the cache is full, the least recently used executable
//! graph is updated in place with `cuGraphExecUpdate` (same launches, other
//! dims) rather than instantiated anew. Weights are uploaded once per device
//! and model and shared by its sessions. Launches use the driver API
//! directly, so cudarc's event tracking is off for the context.
//!
//! `KILN_CUDA_SYNC=1` turns graphs off and synchronizes after every launch,
//! so an error names the kernel that caused it. `KILN_CUDA_GRAPHS=0` turns
//! graphs off alone.

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::driver::{result, sys, CudaContext, CudaSlice, CudaStream, DevicePtr};

use crate::artifact::{ArgumentSpec, Artifact, CodeFormat, EntrySpec};
use crate::device::{Executor, ExecutorKind};
use crate::kernel::Param;
use crate::session::{choose_variant, concrete_shape, Model, RunError};
use crate::DType;
use crate::{HostTensor, SymbolBindings};

/// Executable graphs kept per session.
const GRAPH_CACHE_CAPACITY: usize = 8;
/// Bindings remembered as already run once (uncaptured) per session.
const SEEN_BINDINGS_CAPACITY: usize = 64;
/// Bytes of the driver's JIT error and info logs kept.
const JIT_LOG_BYTES: usize = 16 * 1024;

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
    #[error("loading the {code}: {message}{}", if log.is_empty() { String::new() } else { format!("\n{log}") })]
    ModuleLoad { code: String, message: String, log: String },
    #[error("kernel {kernel} (launch {launch} of `{entry}`) failed: {message}")]
    Kernel { kernel: String, launch: usize, entry: String, message: String },
    #[error("kernel {kernel}: scalar parameter `{param}` is {dtype}, which cannot hold {value}")]
    Scalar { kernel: String, param: String, dtype: String, value: i64 },
}

fn driver(context: &str) -> impl Fn(cudarc::driver::DriverError) -> CudaError + '_ {
    move |error| CudaError::Driver { context: context.to_string(), message: format!("{error:?}") }
}

/// `--device cuda` / `cuda:N`: present when a driver and a GPU are.
pub const KIND: ExecutorKind = ExecutorKind {
    name: "cuda",
    present: || device_count() > 0,
    open: |model, device| Ok(Box::new(CudaExecutor::new(model, device.ordinal)?)),
};

/// How many CUDA devices this machine has (0 without a driver library).
pub fn device_count() -> usize {
    // SAFETY: only probes for the library with dlopen.
    if !unsafe { sys::is_culib_present() } {
        return 0;
    }
    CudaContext::device_count().map(|n| n.max(0) as usize).unwrap_or(0)
}

/// A `sm_XY` or `sm_XYa` target: `(XY, arch-specific)`.
fn sm_version(target: &str) -> Option<(u32, bool)> {
    let rest = target.strip_prefix("sm_")?;
    let (digits, specific) = match rest.strip_suffix('a') {
        Some(digits) => (digits, true),
        None => (rest, false),
    };
    Some((digits.parse().ok()?, specific))
}

/// The code object to load on a device of compute capability `major.minor`,
/// from `(target, format)` pairs: a cubin that runs on it as it is (an
/// arch-specific `sm_90a` only on exactly that chip; a generic `sm_XY` on the
/// same major architecture, minor not newer), the newest such; else the
/// newest PTX not newer than the device (`sm_90a` PTX only on that chip),
/// which the driver JIT-compiles.
pub fn choose_code<'a>(objects: &[(&'a str, CodeFormat)], major: i32, minor: i32) -> Option<(&'a str, CodeFormat)> {
    let device = (major * 10 + minor) as u32;
    let best = |format: CodeFormat, usable: &dyn Fn(u32, bool) -> bool| {
        objects
            .iter()
            .filter(|(_, f)| *f == format)
            .filter_map(|&(target, _)| {
                let (version, specific) = sm_version(target)?;
                usable(version, specific).then_some((version, specific, target))
            })
            .max()
            .map(|(_, _, target)| (target, format))
    };
    let same_major = |version: u32| version / 10 == device / 10 && version <= device;
    best(CodeFormat::Cubin, &|version, specific| if specific { version == device } else { same_major(version) })
        .or_else(|| {
            best(CodeFormat::Ptx, &|version, specific| if specific { version == device } else { version <= device })
        })
}

/// The bits of scalar argument `value` for a parameter of `dtype`, in the
/// low bytes of a u64 (the driver copies as many bytes as the parameter has).
fn scalar_bits(dtype: DType, value: i64) -> Option<u64> {
    Some(match dtype {
        DType::I64 => value as u64,
        DType::I32 => i32::try_from(value).ok()? as u32 as u64,
        DType::F32 => (value as f32).to_bits() as u64,
        _ => return None,
    })
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

/// CUDA events, destroyed when dropped.
struct Events(Vec<sys::CUevent>);

impl Events {
    fn new(count: usize) -> Result<Events, CudaError> {
        let mut events = Events(Vec::with_capacity(count));
        for _ in 0..count {
            events.0.push(
                result::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT).map_err(driver("creating an event"))?,
            );
        }
        Ok(events)
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        for &event in &self.0 {
            // SAFETY: each event came from cuEventCreate and is destroyed once.
            let _ = unsafe { result::event::destroy(event) };
        }
    }
}

/// An instantiated CUDA graph.
struct GraphExec(sys::CUgraphExec);

impl Drop for GraphExec {
    fn drop(&mut self) {
        // SAFETY: the handle came from cuGraphInstantiate and is destroyed once.
        let _ = unsafe { result::graph::exec_destroy(self.0) };
    }
}

/// A loaded module and its kernels, in the artifact's kernel order.
struct LoadedCode {
    module: sys::CUmodule,
    functions: Vec<sys::CUfunction>,
}

/// Loads `image` (a cubin, or PTX text) as a module, with the driver's JIT
/// logs captured; `what` names the code in errors ("sm_90 cubin").
fn load_module(image: &[u8], format: CodeFormat, what: &str) -> Result<sys::CUmodule, CudaError> {
    let mut bytes = image.to_vec();
    if format == CodeFormat::Ptx {
        bytes.push(0); // PTX is passed as a C string
    }
    let mut error_log = vec![0u8; JIT_LOG_BYTES];
    let mut info_log = vec![0u8; JIT_LOG_BYTES];
    let mut options = [
        sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER,
        sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
        sys::CUjit_option::CU_JIT_INFO_LOG_BUFFER,
        sys::CUjit_option::CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
    ];
    // Option values are pointers, or sizes passed in a pointer's bits.
    let mut values: [*mut c_void; 4] = [
        error_log.as_mut_ptr().cast(),
        JIT_LOG_BYTES as *mut c_void,
        info_log.as_mut_ptr().cast(),
        JIT_LOG_BYTES as *mut c_void,
    ];
    let mut module: sys::CUmodule = std::ptr::null_mut();
    // SAFETY: the image and both log buffers outlive the call; the sizes
    // given are the buffers' lengths.
    let status = unsafe {
        sys::cuModuleLoadDataEx(
            &mut module,
            bytes.as_ptr().cast(),
            options.len() as u32,
            options.as_mut_ptr(),
            values.as_mut_ptr(),
        )
    };
    if status == sys::CUresult::CUDA_SUCCESS {
        return Ok(module);
    }
    let text = |log: &[u8]| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        String::from_utf8_lossy(&log[..end]).trim().to_string()
    };
    let log = [text(&error_log), text(&info_log)].into_iter().filter(|l| !l.is_empty()).collect::<Vec<_>>();
    Err(CudaError::ModuleLoad {
        code: what.to_string(),
        message: format!("{:?}", result::DriverError(status)),
        log: log.join("\n"),
    })
}

impl LoadedCode {
    /// Loads `image` and finds every kernel of `artifact` in it.
    /// Kernels with tensor-core instructions are looked up only with `tensor_cores`
    /// (other code does not hold them; their variants are never chosen).
    fn load(
        artifact: &Artifact,
        image: &[u8],
        format: CodeFormat,
        what: &str,
        tensor_cores: bool,
    ) -> Result<LoadedCode, CudaError> {
        let module = load_module(image, format, what)?;
        let mut loaded = LoadedCode { module, functions: Vec::new() };
        for kernel in &artifact.kernels {
            if kernel.uses_tensor_cores && !tensor_cores {
                loaded.functions.push(std::ptr::null_mut());
                continue;
            }
            let name = std::ffi::CString::new(kernel.name.as_str()).map_err(|_| CudaError::Driver {
                context: kernel.name.clone(),
                message: "a kernel name with a NUL byte".into(),
            })?;
            let mut function: sys::CUfunction = std::ptr::null_mut();
            // SAFETY: the module is loaded; the name is a C string.
            unsafe { sys::cuModuleGetFunction(&mut function, module, name.as_ptr()) }
                .result()
                .map_err(driver(&format!("finding kernel {} in the {what}", kernel.name)))?;
            if kernel.dynamic_shared_bytes > 48 * 1024 {
                // SAFETY: the function handle is valid.
                unsafe {
                    sys::cuFuncSetAttribute(
                        function,
                        sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        kernel.dynamic_shared_bytes as i32,
                    )
                }
                .result()
                .map_err(driver(&kernel.name))?;
            }
            loaded.functions.push(function);
        }
        Ok(loaded)
    }
}

impl Drop for LoadedCode {
    fn drop(&mut self) {
        // SAFETY: the module came from cuModuleLoadDataEx and is unloaded once;
        // its owner binds the context first.
        let _ = unsafe { sys::cuModuleUnload(self.module) };
    }
}

/// Runs artifacts on one CUDA device.
pub struct CudaExecutor {
    /// First, so executable graphs are destroyed before the module and arena they use.
    graphs: Vec<(SymbolBindings, GraphExec)>,
    code: LoadedCode,
    /// Bindings already run once without capture, most recent last.
    seen: Vec<SymbolBindings>,
    model: Arc<Model>,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    weights: Arc<CudaWeights>,
    /// Owns the arena allocation that `arena_base` points into.
    _arena: CudaSlice<u8>,
    arena_base: u64,
    staging: cudarc::driver::PinnedHostSlice<u8>,
    use_graphs: bool,
    /// `KILN_CUDA_SYNC=1`: synchronize after every launch.
    synchronize_each_launch: bool,
    description: String,
    /// The device and the loaded code run tensor-core kernels (sm_80+).
    tensor_cores: bool,
}

impl Drop for CudaExecutor {
    fn drop(&mut self) {
        // Graphs and the module are released with the context current.
        let _ = self.ctx.bind_to_thread();
        self.graphs.clear();
    }
}

// SAFETY: a session is used through `&mut self` from one thread at a time;
// the raw graph, module and function handles it owns are never shared.
unsafe impl Send for CudaExecutor {}

impl CudaExecutor {
    /// Opens device `ordinal`, loads the best code for it, uploads the weights
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
        ctx.bind_to_thread().map_err(driver("binding the context"))?;
        let (major, minor) = ctx.compute_capability().map_err(driver("reading the compute capability"))?;
        let artifact = &model.artifact;
        let device = format!("sm_{major}{minor}");
        let objects: Vec<_> = artifact.code_objects().collect();
        let available: Vec<_> = objects.iter().map(|o| (o.target, o.format)).collect();
        let (target, format) = choose_code(&available, major, minor).ok_or_else(|| CudaError::NoKernels {
            device: device.clone(),
            available: objects
                .iter()
                .map(|o| format!("{} {}", o.target, o.format.name()))
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        let object = objects.iter().find(|o| o.target == target && o.format == format).expect("chosen from these");
        let what = match format {
            CodeFormat::Cubin => format!("{target} cubin"),
            _ => format!("{target} PTX (JIT for {device})"),
        };
        // Tensor-core kernels are in code for sm_80 and later, and run on such devices.
        let code_version: Option<u32> = target
            .strip_prefix("sm_")
            .and_then(|rest| rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok());
        let tensor_cores = major >= 8 && code_version.is_some_and(|version| version >= 80);
        let code = LoadedCode::load(artifact, object.bytes, format, &what, tensor_cores)?;
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
        let synchronize_each_launch = std::env::var_os("KILN_CUDA_SYNC").is_some_and(|v| v == "1");
        let use_graphs = !synchronize_each_launch && std::env::var_os("KILN_CUDA_GRAPHS").is_none_or(|v| v != "0");
        let mode = match (use_graphs, synchronize_each_launch) {
            (true, _) => "CUDA graphs",
            (false, true) => "synchronized launches",
            (false, false) => "direct launches",
        };
        let description = format!("CUDA device {ordinal}: {name} ({device}, running the {what}, {mode})");
        Ok(CudaExecutor {
            graphs: Vec::new(),
            code,
            seen: Vec::new(),
            model,
            ctx,
            stream,
            weights,
            _arena: arena,
            arena_base,
            staging,
            use_graphs,
            synchronize_each_launch,
            description,
            tensor_cores,
        })
    }

    /// Runs `entry` on inputs already checked against its signature.
    fn run_host(
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
    fn upload_tensor(&self, tensor: &HostTensor) -> Result<DeviceTensor, CudaError> {
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
    fn run_on_device(
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

    /// Times `rounds` rounds of `calls` back-to-back executions of `entry`'s
    /// launches alone (inputs already in the arena from a run with the same
    /// bindings), with CUDA events around each round; returns the time per
    /// call of each round. One untimed execution first captures the graph.
    fn time_launches(
        &mut self,
        entry: &EntrySpec,
        bindings: &SymbolBindings,
        calls: usize,
        rounds: usize,
    ) -> Result<Vec<std::time::Duration>, RunError> {
        self.ctx.bind_to_thread().map_err(driver("binding the context"))?;
        self.launch_all(entry, bindings)?;
        self.stream.synchronize().map_err(driver("running the model"))?;
        let stream = self.stream.cu_stream();
        let events = Events::new(2)?;
        let mut times = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            // SAFETY: the events and the stream are valid.
            unsafe { result::event::record(events.0[0], stream) }.map_err(driver("recording an event"))?;
            for _ in 0..calls.max(1) {
                self.launch_all(entry, bindings)?;
            }
            // SAFETY: as above.
            unsafe { result::event::record(events.0[1], stream) }.map_err(driver("recording an event"))?;
            self.stream.synchronize().map_err(driver("running the model"))?;
            // SAFETY: both events have completed.
            let milliseconds = unsafe { result::event::elapsed(events.0[0], events.0[1]) }
                .map_err(driver("reading the event timer"))?;
            times.push(std::time::Duration::from_secs_f64(milliseconds as f64 / 1e3 / calls.max(1) as f64));
        }
        Ok(times)
    }

    /// Copies `entry`'s outputs, as the arena holds them now, to the host.
    fn read_outputs(&mut self, entry: &EntrySpec, bindings: &SymbolBindings) -> Result<Vec<HostTensor>, RunError> {
        let model = self.model.clone();
        let artifact = &model.artifact;
        self.ctx.bind_to_thread().map_err(driver("binding the context"))?;
        self.stream.synchronize().map_err(driver("running the model"))?;
        let mut outputs = Vec::new();
        for &slot in &entry.outputs {
            let spec = &artifact.slots[slot].tensor;
            let shape = concrete_shape(&spec.shape, bindings)?;
            let mut bytes = vec![0u8; shape.iter().product::<usize>() * spec.dtype.size_in_bytes()];
            let source = slot_address(self.arena_base, artifact, slot, bindings)?;
            // SAFETY: the slot lies inside the arena; the copy is synchronous.
            unsafe { result::memcpy_dtoh_sync(&mut bytes, source) }.map_err(driver("copying outputs to the host"))?;
            outputs.push(HostTensor { dtype: spec.dtype, shape, bytes });
        }
        Ok(outputs)
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
        // The first run of a binding launches directly: a fault then names its
        // kernel's launch instead of invalidating a capture.
        if !self.seen.contains(bindings) {
            if self.seen.len() >= SEEN_BINDINGS_CAPACITY {
                self.seen.remove(0);
            }
            self.seen.push(bindings.clone());
            return self.enqueue_launches(entry, bindings);
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
        for index in 0..entry.launches.len() {
            self.enqueue_launch(entry, index, bindings)?;
        }
        Ok(())
    }

    /// Times each launch of `entry` alone, `repeats` times, with CUDA events
    /// around it and no graph (inputs already in the arena from a run with
    /// the same bindings); returns each launch's times.
    fn time_each_launch(
        &mut self,
        entry: &EntrySpec,
        bindings: &SymbolBindings,
        repeats: usize,
    ) -> Result<Vec<Vec<std::time::Duration>>, RunError> {
        self.ctx.bind_to_thread().map_err(driver("binding the context"))?;
        let stream = self.stream.cu_stream();
        let count = entry.launches.len();
        let events = Events::new(2 * count)?;
        let mut times = vec![Vec::with_capacity(repeats); count];
        for _ in 0..repeats {
            for index in 0..count {
                // SAFETY: the events and the stream are valid.
                unsafe { result::event::record(events.0[2 * index], stream) }.map_err(driver("recording an event"))?;
                self.enqueue_launch(entry, index, bindings)?;
                // SAFETY: as above.
                unsafe { result::event::record(events.0[2 * index + 1], stream) }
                    .map_err(driver("recording an event"))?;
            }
            self.stream.synchronize().map_err(driver("running the model"))?;
            for (index, launch_times) in times.iter_mut().enumerate() {
                // SAFETY: both events have completed.
                let milliseconds = unsafe { result::event::elapsed(events.0[2 * index], events.0[2 * index + 1]) }
                    .map_err(driver("reading the event timer"))?;
                launch_times.push(std::time::Duration::from_secs_f64(milliseconds as f64 / 1e3));
            }
        }
        Ok(times)
    }

    /// Enqueues launch `index` of `entry` on the stream.
    fn enqueue_launch(&self, entry: &EntrySpec, index: usize, bindings: &SymbolBindings) -> Result<(), RunError> {
        let artifact = &self.model.artifact;
        {
            let launch = &entry.launches[index];
            let variant = choose_variant(launch, bindings, &artifact.kernels, self.runs_tensor_cores())?;
            let kernel = &artifact.kernels[variant.kernel];
            let ir = &artifact.kernel_ir[variant.kernel];
            let blocks = kernel.grid_blocks.evaluate(bindings)?;
            if blocks == 0 {
                return Ok(());
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
                    (ArgumentSpec::Symbol(symbol), Param::Scalar { dtype, name }) => {
                        let value = bindings[symbol];
                        scalar_bits(*dtype, value).ok_or_else(|| CudaError::Scalar {
                            kernel: kernel.name.clone(),
                            param: name.clone(),
                            dtype: dtype.to_string(),
                            value,
                        })?
                    }
                    (ArgumentSpec::Symbol(_), Param::Buffer { .. }) => unreachable!("validated at open"),
                    (ArgumentSpec::State(_), _) => return Err(CudaError::StateUnsupported.into()),
                });
            }
            // Pointers are 8 bytes; a scalar's value sits in the low bytes of its
            // u64 (little-endian), and the driver copies the parameter's own size.
            let mut parameters: Vec<*mut c_void> = values.iter_mut().map(|v| v as *mut u64 as *mut c_void).collect();
            let failed = |error: cudarc::driver::DriverError| CudaError::Kernel {
                kernel: kernel.name.clone(),
                launch: index,
                entry: entry.name.clone(),
                message: format!("{error:?}"),
            };
            // SAFETY: the function's parameter list is the recorded calling convention,
            // checked against the IR when the artifact was opened.
            unsafe {
                result::launch_kernel(
                    self.code.functions[variant.kernel],
                    (blocks, 1, 1),
                    (kernel.block_threads, 1, 1),
                    kernel.dynamic_shared_bytes as u32,
                    self.stream.cu_stream(),
                    &mut parameters,
                )
            }
            .map_err(failed)?;
            if self.synchronize_each_launch {
                self.stream.synchronize().map_err(failed)?;
            }
        }
        Ok(())
    }
}

impl Executor for CudaExecutor {
    fn description(&self) -> String {
        self.description.clone()
    }

    fn runs_tensor_cores(&self) -> bool {
        self.tensor_cores
    }

    fn run(
        &mut self,
        _model: &Model,
        entry: &EntrySpec,
        bindings: &SymbolBindings,
        inputs: &[&HostTensor],
    ) -> Result<Vec<HostTensor>, RunError> {
        self.run_host(entry, bindings, inputs)
    }

    /// CUDA events around each round of graph replays.
    fn time_replays(
        &mut self,
        _model: &Model,
        entry: &EntrySpec,
        bindings: &SymbolBindings,
        calls: usize,
        rounds: usize,
    ) -> Result<(Vec<std::time::Duration>, Vec<HostTensor>), RunError> {
        let times = self.time_launches(entry, bindings, calls, rounds)?;
        Ok((times, self.read_outputs(entry, bindings)?))
    }

    /// CUDA events around each launch, no graph.
    fn profile_launches(
        &mut self,
        _model: &Model,
        entry: &EntrySpec,
        bindings: &SymbolBindings,
        repeats: usize,
    ) -> Result<Vec<Vec<std::time::Duration>>, RunError> {
        self.time_each_launch(entry, bindings, repeats)
    }

    fn upload(&self, tensor: &HostTensor) -> Result<DeviceTensor, RunError> {
        Ok(self.upload_tensor(tensor)?)
    }

    fn run_device(
        &mut self,
        entry: &EntrySpec,
        bindings: &SymbolBindings,
        inputs: &[&DeviceTensor],
    ) -> Result<Vec<DeviceTensor>, RunError> {
        self.run_on_device(entry, bindings, inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_a_cubin_the_device_runs_then_the_newest_ptx_not_newer_than_it() {
        use CodeFormat::{Cubin, Ptx};
        let both = [
            ("sm_80", Cubin),
            ("sm_80", Ptx),
            ("sm_90", Cubin),
            ("sm_90", Ptx),
            ("gfx942", CodeFormat::AmdgpuAssembly),
        ];
        assert_eq!(choose_code(&both, 9, 0), Some(("sm_90", Cubin)), "H100/H200 run the sm_90 SASS");
        assert_eq!(choose_code(&both, 8, 0), Some(("sm_80", Cubin)), "A100");
        assert_eq!(choose_code(&both, 8, 9), Some(("sm_80", Cubin)), "an sm_80 cubin runs on every 8.x");
        assert_eq!(choose_code(&both, 10, 0), Some(("sm_90", Ptx)), "a newer major JITs the newest PTX");
        assert_eq!(choose_code(&both, 7, 5), None, "nothing older than the oldest target");
        let arch_specific = [("sm_90a", Cubin), ("sm_90a", Ptx), ("sm_80", Ptx)];
        assert_eq!(choose_code(&arch_specific, 9, 0), Some(("sm_90a", Cubin)));
        assert_eq!(choose_code(&arch_specific, 10, 0), Some(("sm_80", Ptx)), "sm_90a code runs on sm_90 alone");
        assert_eq!(choose_code(&[("sm_90", Ptx), ("gfx942", CodeFormat::AmdgpuAssembly)], 8, 0), None);
    }

    #[test]
    fn scalars_are_packed_by_their_dtype() {
        assert_eq!(scalar_bits(DType::I64, -2), Some(u64::MAX - 1));
        assert_eq!(scalar_bits(DType::I32, -2), Some(0xFFFF_FFFE), "4 bytes, not sign-extended to 8");
        assert_eq!(scalar_bits(DType::I32, 1 << 40), None, "does not fit");
        assert_eq!(scalar_bits(DType::F32, 3), Some(3.0f32.to_bits() as u64));
        assert_eq!(scalar_bits(DType::BF16, 3), None);
    }
}
