//! The `.kiln` artifact: one file holding a compiled model — manifest,
//! weights, portable kernel IR and machine code per target (see
//! `docs/artifact.md`).
//!
//! [`Artifact::open`] memory-maps a file and validates all of it — magic,
//! version, checksums, manifest structure, every index and dim expression,
//! and the kernel IR against the recorded calling conventions — before
//! anything can run; the parsed, checked form is what executors use.
//! [`write_artifact`] is the writer the compiler uses.

mod container;
pub mod example;
pub mod manifest;
mod validate;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use prost::Message;

use crate::kernel::codec::encode_kernels;
use crate::kernel::Kernel;
use crate::{DType, Dim};

pub use container::{write_container, SectionKind, FORMAT_VERSION, MAGIC, SECTION_ALIGNMENT};
pub use manifest::{CodeFormat, Manifest};

/// Why an artifact could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("cannot read {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a kiln artifact (it does not start with the kiln magic; `kiln compile MODEL -o OUT.kiln` makes one)")]
    NotAnArtifact,
    #[error("artifact format version {found}; this runtime reads version {supported} (recompile the model with a matching kiln)")]
    Version { found: u32, supported: u32 },
    #[error("the artifact is truncated: {0}")]
    Truncated(String),
    #[error("the artifact is corrupt: {0}")]
    Corrupt(String),
}

/// A tensor's name, dtype and symbolic shape.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

/// What an arena buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferRole {
    Input,
    Activation,
    Output,
    Scratch,
}

/// A tensor's place in the arena.
#[derive(Clone, Debug, PartialEq)]
pub struct ArenaSlot {
    pub tensor: TensorSpec,
    pub role: BufferRole,
    pub offset: Dim,
    pub bytes: Dim,
}

/// A weight: its tensor and its bytes' range in the file.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub file_range: Range<usize>,
}

/// What a kernel parameter is bound to.
#[derive(Clone, Debug, PartialEq)]
pub enum ArgumentSpec {
    Weight(usize),
    Arena(usize),
    Symbol(String),
    State(usize),
}

/// A kernel chosen for a range of dims.
#[derive(Clone, Debug, PartialEq)]
pub struct VariantSpec {
    /// `(symbol, min, max)`; empty means every binding.
    pub ranges: Vec<(String, i64, i64)>,
    /// `(dim expression, min, max)`: a shape bucket such as `batch*seq` in
    /// `1..=1`; empty means every binding.
    pub dims: Vec<(Dim, i64, i64)>,
    pub kernel: usize,
    pub arguments: Vec<ArgumentSpec>,
}

impl VariantSpec {
    /// Whether `bindings` fall in this variant's ranges.
    pub fn accepts(&self, bindings: &crate::SymbolBindings) -> bool {
        self.ranges.iter().all(|(symbol, min, max)| bindings.get(symbol).is_some_and(|v| (min..=max).contains(&v)))
            && self.dims.iter().all(|(dim, min, max)| dim.evaluate(bindings).is_ok_and(|v| (*min..=*max).contains(&v)))
    }
}

/// One launch step.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchSpec {
    pub group: String,
    pub variants: Vec<VariantSpec>,
    /// The least floating-point operations and bytes of the launch (a model
    /// of the work, for rooflines; never a measurement).
    pub flops: Dim,
    pub bytes: Dim,
}

/// A callable program.
#[derive(Clone, Debug, PartialEq)]
pub struct EntrySpec {
    pub name: String,
    /// Arena slot per model input, in order.
    pub inputs: Vec<usize>,
    /// Arena slot per model output, in order.
    pub outputs: Vec<usize>,
    pub launches: Vec<LaunchSpec>,
}

/// A kernel's launch contract beyond its IR.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelSpec {
    pub name: String,
    pub block_threads: u32,
    pub grid_blocks: Dim,
    pub static_shared_bytes: usize,
    pub dynamic_shared_bytes: usize,
    /// It uses sm_80 instructions ([`crate::kernel::Kernel::uses_tensor_cores`]):
    /// devices without them skip its variants.
    pub uses_tensor_cores: bool,
    /// Registers per thread from ptxas's report (0: unknown).
    pub registers: u32,
}

enum Storage {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(map) => map,
            Storage::Owned(bytes) => bytes,
        }
    }
}

/// A validated artifact.
pub struct Artifact {
    storage: Storage,
    pub manifest: Manifest,
    /// `symbol → (min, max)`.
    pub bounds: BTreeMap<String, (i64, i64)>,
    pub weights: Vec<WeightSpec>,
    pub kernels: Vec<KernelSpec>,
    /// The portable kernel IR, in `kernels` order.
    pub kernel_ir: Vec<Kernel>,
    pub arena_bytes: Dim,
    pub slots: Vec<ArenaSlot>,
    pub entry_points: Vec<EntrySpec>,
    /// The weights section's byte range in the file.
    weights_section: Range<usize>,
    /// Byte ranges the header, the section table and each section cover.
    covered: Vec<Range<usize>>,
    /// Every code object's target, format and bytes.
    code: Vec<CodeSection>,
}

/// Where one code object lies in the file.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CodeSection {
    pub target: String,
    pub format: CodeFormat,
    pub range: Range<usize>,
}

/// One code object of an artifact.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CodeObject<'a> {
    /// `sm_80`, `sm_90`, `gfx942`, …
    pub target: &'a str,
    pub format: CodeFormat,
    pub bytes: &'a [u8],
}

impl std::fmt::Debug for Artifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Artifact").field("model", &self.manifest.model_name).finish_non_exhaustive()
    }
}

impl Artifact {
    /// Maps and validates the artifact at `path`.
    pub fn open(path: &Path) -> Result<Artifact, ArtifactError> {
        let io = |source| ArtifactError::Io { path: path.display().to_string(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        if file.metadata().map_err(io)?.is_dir() {
            let message = "a directory, not an artifact file (a model directory is compiled with `kiln compile`)";
            return Err(io(std::io::Error::new(std::io::ErrorKind::InvalidInput, message)));
        }
        // SAFETY: the map is read-only; kiln never writes an artifact in place
        // (the compiler writes a temporary file and renames it).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        validate::validate(Storage::Mapped(map))
    }

    /// Validates an artifact held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Artifact, ArtifactError> {
        validate::validate(Storage::Owned(bytes))
    }

    /// The bytes of weight `index`.
    pub fn weight_bytes(&self, index: usize) -> &[u8] {
        &self.storage.bytes()[self.weights[index].file_range.clone()]
    }

    /// The whole weights section (each weight at its 256-byte aligned offset).
    pub fn weights_blob(&self) -> &[u8] {
        &self.storage.bytes()[self.weights_section.clone()]
    }

    /// Where weight `index` starts in [`Artifact::weights_blob`].
    pub fn weight_offset_in_blob(&self, index: usize) -> usize {
        self.weights[index].file_range.start - self.weights_section.start
    }

    /// Total bytes of all weights.
    pub fn weight_total_bytes(&self) -> usize {
        self.weights.iter().map(|w| w.file_range.len()).sum()
    }

    /// The size of the artifact file.
    pub fn file_bytes(&self) -> usize {
        self.storage.bytes().len()
    }

    /// The byte ranges that the magic, version, table checksum or a section
    /// checksum protect: the header with its table, then every section. The
    /// rest of the file is zero padding between sections.
    pub fn covered_ranges(&self) -> &[Range<usize>] {
        &self.covered
    }

    /// Targets with machine code, each once, e.g. `["sm_80", "sm_90", "gfx942"]`.
    pub fn targets(&self) -> Vec<&str> {
        let mut targets: Vec<&str> = Vec::new();
        for section in &self.code {
            if !targets.contains(&section.target.as_str()) {
                targets.push(&section.target);
            }
        }
        targets
    }

    /// Every code object, in file order.
    pub fn code_objects(&self) -> impl Iterator<Item = CodeObject<'_>> {
        self.code.iter().map(|section| CodeObject {
            target: &section.target,
            format: section.format,
            bytes: &self.storage.bytes()[section.range.clone()],
        })
    }

    /// The text code object for `target` (PTX or AMDGPU assembly).
    pub fn code(&self, target: &str) -> Option<&str> {
        let object = self.code_objects().find(|o| o.target == target && o.format.is_text())?;
        std::str::from_utf8(object.bytes).ok()
    }

    /// The entry point called `name`.
    pub fn entry_point(&self, name: &str) -> Option<&EntrySpec> {
        self.entry_points.iter().find(|e| e.name == name)
    }
}

/// The parts of an artifact, as the compiler produces them.
pub struct ArtifactParts<'a> {
    /// Section indices are filled in by [`write_artifact`].
    pub manifest: Manifest,
    /// The weights blob (each weight at its manifest offset).
    pub weights: &'a [u8],
    /// Every kernel, in manifest order.
    pub kernels: Vec<&'a Kernel>,
    /// `(target, format, bytes)`: PTX and cubins for `sm_*`, assembly for `gfx*`.
    pub code: Vec<(String, CodeFormat, Vec<u8>)>,
}

/// Writes an artifact to `out`.
pub fn write_artifact(mut parts: ArtifactParts<'_>, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    parts.manifest.weights_section = 1;
    parts.manifest.kernel_ir_section = 2;
    parts.manifest.code = parts
        .code
        .iter()
        .enumerate()
        .map(|(index, (target, format, _))| manifest::CodeObject {
            target: target.clone(),
            format: *format as i32,
            section: 3 + index as u32,
        })
        .collect();
    let manifest = parts.manifest.encode_to_vec();
    let kernel_ir = encode_kernels(&parts.kernels);
    let mut sections: Vec<(SectionKind, &[u8])> = vec![
        (SectionKind::Manifest, &manifest),
        (SectionKind::Weights, parts.weights),
        (SectionKind::KernelIr, &kernel_ir),
    ];
    for (target, format, bytes) in &parts.code {
        let kind = format.section_kind().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("code for {target} has no format"))
        })?;
        sections.push((kind, bytes));
    }
    container::write_container(&sections, out)
}

/// A weights blob under construction: each weight at a 256-byte aligned offset.
#[derive(Default)]
pub struct WeightsBlob {
    pub bytes: Vec<u8>,
}

impl WeightsBlob {
    /// Appends `data`; returns its offset.
    pub fn push(&mut self, data: &[u8]) -> u64 {
        let offset = self.bytes.len().div_ceil(SECTION_ALIGNMENT) * SECTION_ALIGNMENT;
        self.bytes.resize(offset, 0);
        self.bytes.extend_from_slice(data);
        offset as u64
    }
}
