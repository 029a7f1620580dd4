//! The manifest: everything an executor needs to know about an artifact
//! besides the bytes of its weights and code, as protobuf messages (prost).
//! `docs/artifact.md` gives the equivalent `.proto` text.
//!
//! Dims (shapes, offsets, grid sizes) are stored in their text form
//! (`batch*seq*1536`), parsed with [`crate::Dim::parse`].

/// The root message (section 0 of every artifact).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Manifest {
    /// The model's file or directory name at compile time.
    #[prost(string, tag = "1")]
    pub model_name: String,
    /// `kiln <version>`.
    #[prost(string, tag = "2")]
    pub producer: String,
    /// f32, tf32, f16 or bf16.
    #[prost(string, tag = "3")]
    pub precision: String,
    /// The range each symbol may take at run time.
    #[prost(message, repeated, tag = "4")]
    pub bounds: Vec<SymbolBound>,
    #[prost(message, repeated, tag = "5")]
    pub weights: Vec<WeightInfo>,
    /// Kernel variants; launches refer to them by index.
    #[prost(message, repeated, tag = "6")]
    pub kernels: Vec<KernelInfo>,
    /// Machine code per target.
    #[prost(message, repeated, tag = "7")]
    pub code: Vec<CodeObject>,
    /// Section index of the weights blob.
    #[prost(uint32, tag = "8")]
    pub weights_section: u32,
    /// Section index of the encoded kernel IR (every kernel, in `kernels` order).
    #[prost(uint32, tag = "9")]
    pub kernel_ir_section: u32,
    #[prost(message, optional, tag = "10")]
    pub memory: Option<MemoryPlan>,
    /// Tensors that persist between calls (the KV cache later; none yet).
    #[prost(message, repeated, tag = "11")]
    pub states: Vec<StateTensor>,
    /// Named entry points (`forward`; `prefill`/`decode` later).
    #[prost(message, repeated, tag = "12")]
    pub entry_points: Vec<EntryPoint>,
}

/// `min ≤ symbol ≤ max`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SymbolBound {
    #[prost(string, tag = "1")]
    pub symbol: String,
    #[prost(int64, tag = "2")]
    pub min: i64,
    #[prost(int64, tag = "3")]
    pub max: i64,
}

/// A tensor's name, element type and (symbolic) shape.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorSignature {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub dtype: String,
    /// One dim expression per axis.
    #[prost(string, repeated, tag = "3")]
    pub shape: Vec<String>,
}

/// One weight, stored at `offset` (a multiple of 256) in the weights section.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WeightInfo {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub dtype: String,
    #[prost(uint64, repeated, tag = "3")]
    pub shape: Vec<u64>,
    #[prost(uint64, tag = "4")]
    pub offset: u64,
    #[prost(uint64, tag = "5")]
    pub bytes: u64,
}

/// A kernel variant's launch contract.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KernelInfo {
    /// The entry symbol in every code object (`g12_matmul`).
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint32, tag = "2")]
    pub block_threads: u32,
    /// Blocks in the grid, a dim expression.
    #[prost(string, tag = "3")]
    pub grid_blocks: String,
    #[prost(uint64, tag = "4")]
    pub static_shared_bytes: u64,
    /// Dynamic shared memory requested at launch (above 48 KiB needs an opt-in attribute).
    #[prost(uint64, tag = "5")]
    pub dynamic_shared_bytes: u64,
    /// Scratch bytes in the arena, a dim expression (`0` when none).
    #[prost(string, tag = "6")]
    pub scratch_bytes: String,
    /// The calling convention, in order.
    #[prost(message, repeated, tag = "7")]
    pub params: Vec<KernelParam>,
    /// Registers per thread, the most ptxas reported for any target (0:
    /// not assembled); `kiln inspect --roofline`'s occupancy uses it.
    #[prost(uint32, tag = "8")]
    pub registers: u32,
}

impl KernelInfo {
    /// The launch contract of `kernel` (no scratch; dynamic shared memory as
    /// the kernel needs it).
    pub fn describe(kernel: &crate::kernel::Kernel) -> KernelInfo {
        use crate::kernel::Param;
        KernelInfo {
            name: kernel.name.clone(),
            block_threads: kernel.block_threads,
            grid_blocks: kernel.grid_blocks.to_string(),
            static_shared_bytes: (kernel.shared_bytes() - kernel.dynamic_shared_bytes()) as u64,
            dynamic_shared_bytes: kernel.dynamic_shared_bytes() as u64,
            scratch_bytes: "0".into(),
            registers: 0,
            params: kernel
                .params
                .iter()
                .map(|param| match param {
                    Param::Buffer { name, dtype, writable } => KernelParam {
                        name: name.clone(),
                        pointer: true,
                        dtype: dtype.name().into(),
                        writable: *writable,
                    },
                    Param::Scalar { name, dtype } => {
                        KernelParam { name: name.clone(), pointer: false, dtype: dtype.name().into(), writable: false }
                    }
                })
                .collect(),
        }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KernelParam {
    #[prost(string, tag = "1")]
    pub name: String,
    /// A device pointer (`true`) or an i64 scalar.
    #[prost(bool, tag = "2")]
    pub pointer: bool,
    #[prost(string, tag = "3")]
    pub dtype: String,
    #[prost(bool, tag = "4")]
    pub writable: bool,
}

/// Machine code for one target.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CodeObject {
    /// `sm_80`, `sm_90`, `gfx942`, …
    #[prost(string, tag = "1")]
    pub target: String,
    /// What the section holds ([`CodeFormat`]).
    #[prost(enumeration = "CodeFormat", tag = "2")]
    pub format: i32,
    #[prost(uint32, tag = "3")]
    pub section: u32,
}

/// The kinds of machine code an artifact carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum CodeFormat {
    /// Never written: a manifest without a format is corrupt.
    Unspecified = 0,
    /// PTX text for an `sm_*` target, JIT-compiled by the driver on any newer GPU.
    Ptx = 1,
    /// A cubin (SASS) assembled by ptxas for exactly one `sm_*` architecture.
    Cubin = 2,
    /// AMDGPU assembly text for a `gfx*` target.
    AmdgpuAssembly = 3,
    /// An AMDGPU code object (ELF) for a `gfx*` target (for the AMD executor to come).
    AmdgpuCodeObject = 4,
    /// Kernel IR in its text form (a target that emits it, for inspection).
    KernelIrText = 5,
}

impl CodeFormat {
    /// The section kind that holds code of this format.
    pub fn section_kind(self) -> Option<super::SectionKind> {
        match self {
            CodeFormat::Unspecified => None,
            CodeFormat::Ptx => Some(super::SectionKind::Ptx),
            CodeFormat::Cubin => Some(super::SectionKind::Cubin),
            CodeFormat::AmdgpuAssembly => Some(super::SectionKind::AmdgpuAssembly),
            CodeFormat::AmdgpuCodeObject => Some(super::SectionKind::AmdgpuCodeObject),
            CodeFormat::KernelIrText => Some(super::SectionKind::KernelIrText),
        }
    }

    /// Whether the code is text (PTX, assembly) rather than a binary.
    pub fn is_text(self) -> bool {
        matches!(self, CodeFormat::Ptx | CodeFormat::AmdgpuAssembly | CodeFormat::KernelIrText)
    }

    /// How `kiln inspect` names it.
    pub fn name(self) -> &'static str {
        match self {
            CodeFormat::Unspecified => "unspecified",
            CodeFormat::Ptx => "ptx",
            CodeFormat::Cubin => "cubin",
            CodeFormat::AmdgpuAssembly => "amdgcn-asm",
            CodeFormat::AmdgpuCodeObject => "amdgcn-elf",
            CodeFormat::KernelIrText => "kir",
        }
    }
}

/// Where every stored tensor lives in the arena.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemoryPlan {
    /// The arena's size, a dim expression.
    #[prost(string, tag = "1")]
    pub arena_bytes: String,
    #[prost(message, repeated, tag = "2")]
    pub buffers: Vec<ArenaBuffer>,
}

/// One tensor in the arena.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ArenaBuffer {
    #[prost(message, optional, tag = "1")]
    pub tensor: Option<TensorSignature>,
    /// `input`, `activation`, `output` or `scratch`.
    #[prost(string, tag = "2")]
    pub kind: String,
    /// Byte offset in the arena (a multiple of 256), a dim expression.
    #[prost(string, tag = "3")]
    pub offset: String,
    #[prost(string, tag = "4")]
    pub bytes: String,
}

/// A tensor that lives across calls.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StateTensor {
    #[prost(message, optional, tag = "1")]
    pub tensor: Option<TensorSignature>,
}

/// A callable program over the arena.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryPoint {
    #[prost(string, tag = "1")]
    pub name: String,
    /// Inputs: arena buffer indices, in the order of the model's inputs.
    #[prost(uint32, repeated, tag = "2")]
    pub inputs: Vec<u32>,
    /// Outputs: arena buffer indices, in the order of the model's outputs.
    #[prost(uint32, repeated, tag = "3")]
    pub outputs: Vec<u32>,
    /// Kernel launches in execution order.
    #[prost(message, repeated, tag = "4")]
    pub launches: Vec<Launch>,
}

/// One step of an entry point: the fusion group and its kernel variants.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Launch {
    /// The fusion group (`g12`).
    #[prost(string, tag = "1")]
    pub group: String,
    /// The first variant whose ranges hold the bound dims is launched.
    #[prost(message, repeated, tag = "2")]
    pub variants: Vec<Variant>,
    /// The least floating-point operations of the launch, a dim expression
    /// (the compiler's cost model: 2·M·N·K per matmul, …).
    #[prost(string, tag = "3")]
    pub flops: String,
    /// The least bytes it moves through device memory (each tensor read or
    /// written once), a dim expression.
    #[prost(string, tag = "4")]
    pub bytes: String,
}

/// A kernel chosen for some range of dims.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Variant {
    /// Empty: every binding within the bounds.
    #[prost(message, repeated, tag = "1")]
    pub ranges: Vec<SymbolBound>,
    /// Index into `Manifest::kernels`.
    #[prost(uint32, tag = "2")]
    pub kernel: u32,
    /// One per kernel parameter, in order.
    #[prost(message, repeated, tag = "3")]
    pub arguments: Vec<Argument>,
    /// Ranges of dim expressions (`batch*seq` in `1..=1`): a shape bucket.
    /// Empty: every binding.
    #[prost(message, repeated, tag = "4")]
    pub dims: Vec<DimRange>,
}

/// A dim expression of the model's symbols and the range it must fall in.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DimRange {
    #[prost(string, tag = "1")]
    pub dim: String,
    #[prost(int64, tag = "2")]
    pub min: i64,
    #[prost(int64, tag = "3")]
    pub max: i64,
}

/// What a kernel parameter is bound to.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Argument {
    #[prost(oneof = "ArgumentSource", tags = "1, 2, 3, 4")]
    pub source: Option<ArgumentSource>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ArgumentSource {
    /// Index into `Manifest::weights`.
    #[prost(uint32, tag = "1")]
    Weight(u32),
    /// Index into `MemoryPlan::buffers`.
    #[prost(uint32, tag = "2")]
    Arena(u32),
    /// The value of a symbol.
    #[prost(string, tag = "3")]
    Symbol(String),
    /// Index into `Manifest::states`.
    #[prost(uint32, tag = "4")]
    State(u32),
}
