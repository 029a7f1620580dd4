//! Turns the bytes of an artifact into a checked [`Artifact`], or says
//! exactly what is wrong with them.

use std::collections::BTreeMap;

use prost::Message;

use super::container::{read_container, table_end, Section, SectionKind, SECTION_ALIGNMENT};
use super::manifest::{self, ArgumentSource, CodeFormat, Manifest};
use super::{
    ArenaSlot, ArgumentSpec, Artifact, ArtifactError, BufferRole, CodeSection, EntrySpec, KernelSpec, LaunchSpec,
    Storage, TensorSpec, VariantSpec, WeightSpec,
};
use crate::kernel::codec::decode_kernels;
use crate::kernel::{Kernel, Param};
use crate::{DType, Dim};

fn corrupt(message: String) -> ArtifactError {
    ArtifactError::Corrupt(message)
}

fn dtype(text: &str, what: &str) -> Result<DType, ArtifactError> {
    text.parse().map_err(|e| corrupt(format!("{what}: {e}")))
}

fn dim(text: &str, what: &str) -> Result<Dim, ArtifactError> {
    Dim::parse(text).map_err(|e| corrupt(format!("{what}: dim `{text}`: {e}")))
}

fn tensor(signature: Option<&manifest::TensorSignature>, what: &str) -> Result<TensorSpec, ArtifactError> {
    let signature = signature.ok_or_else(|| corrupt(format!("{what} has no tensor signature")))?;
    let what = format!("{what} `{}`", signature.name);
    Ok(TensorSpec {
        name: signature.name.clone(),
        dtype: dtype(&signature.dtype, &what)?,
        shape: signature.shape.iter().map(|d| dim(d, &what)).collect::<Result<_, _>>()?,
    })
}

fn section(sections: &[Section], index: u32, kind: SectionKind, what: &str) -> Result<Section, ArtifactError> {
    let found = sections.get(index as usize).filter(|s| s.kind == kind);
    found.cloned().ok_or_else(|| corrupt(format!("{what} names section {index}, which is not a {kind:?} section")))
}

pub(super) fn validate(storage: Storage) -> Result<Artifact, ArtifactError> {
    let file = storage.bytes();
    let sections = read_container(file)?;
    let manifest_bytes = &file[sections[0].offset..sections[0].offset + sections[0].length];
    let manifest = Manifest::decode(manifest_bytes).map_err(|e| corrupt(format!("manifest: {e}")))?;

    let mut bounds = BTreeMap::new();
    for bound in &manifest.bounds {
        if bound.min < 0 || bound.min > bound.max {
            return Err(corrupt(format!("bound {}={}..{}", bound.symbol, bound.min, bound.max)));
        }
        bounds.insert(bound.symbol.clone(), (bound.min, bound.max));
    }

    let weights_section = section(&sections, manifest.weights_section, SectionKind::Weights, "the manifest")?;
    let mut weights = Vec::with_capacity(manifest.weights.len());
    for weight in &manifest.weights {
        let what = format!("weight `{}`", weight.name);
        let dtype = dtype(&weight.dtype, &what)?;
        let shape: Vec<usize> = weight.shape.iter().map(|&d| d as usize).collect();
        let expected = shape.iter().try_fold(dtype.size_in_bytes() as u64, |p, &d| p.checked_mul(d as u64));
        if expected != Some(weight.bytes) {
            return Err(corrupt(format!("{what}: {} bytes for shape {shape:?} of {dtype}", weight.bytes)));
        }
        let end = weight.offset.checked_add(weight.bytes).filter(|&end| end <= weights_section.length as u64);
        if end.is_none() || weight.offset % SECTION_ALIGNMENT as u64 != 0 {
            return Err(corrupt(format!(
                "{what}: bytes {}+{} lie outside the weights section",
                weight.offset, weight.bytes
            )));
        }
        let start = weights_section.offset + weight.offset as usize;
        weights.push(WeightSpec {
            name: weight.name.clone(),
            dtype,
            shape,
            file_range: start..start + weight.bytes as usize,
        });
    }

    let ir_section = section(&sections, manifest.kernel_ir_section, SectionKind::KernelIr, "the manifest")?;
    let kernel_ir = decode_kernels(&file[ir_section.offset..ir_section.offset + ir_section.length])
        .map_err(|e| corrupt(e.to_string()))?;
    if kernel_ir.len() != manifest.kernels.len() {
        return Err(corrupt(format!(
            "{} kernels in the IR section, {} in the manifest",
            kernel_ir.len(),
            manifest.kernels.len()
        )));
    }
    let mut kernels = Vec::with_capacity(kernel_ir.len());
    for (info, kernel) in manifest.kernels.iter().zip(&kernel_ir) {
        check_kernel(info, kernel)?;
        kernels.push(KernelSpec {
            name: info.name.clone(),
            block_threads: info.block_threads,
            grid_blocks: kernel.grid_blocks.clone(),
            static_shared_bytes: info.static_shared_bytes as usize,
            dynamic_shared_bytes: info.dynamic_shared_bytes as usize,
            uses_tensor_cores: kernel.uses_tensor_cores(),
            registers: info.registers,
        });
    }

    let mut code = Vec::new();
    for object in &manifest.code {
        let format = CodeFormat::try_from(object.format)
            .ok()
            .filter(|f| *f != CodeFormat::Unspecified)
            .ok_or_else(|| corrupt(format!("code for {}: unknown format {}", object.target, object.format)))?;
        let kind = format.section_kind().expect("a specified format has a section kind");
        let found = section(&sections, object.section, kind, &format!("code for {}", object.target))?;
        if format.is_text() && std::str::from_utf8(&file[found.offset..found.offset + found.length]).is_err() {
            return Err(corrupt(format!("code for {} is not text", object.target)));
        }
        if code.iter().any(|c: &CodeSection| c.target == object.target && c.format == format) {
            return Err(corrupt(format!("two {} code objects for {}", format.name(), object.target)));
        }
        code.push(CodeSection {
            target: object.target.clone(),
            format,
            range: found.offset..found.offset + found.length,
        });
    }

    let plan = manifest.memory.as_ref().ok_or_else(|| corrupt("no memory plan".into()))?;
    let arena_bytes = dim(&plan.arena_bytes, "arena size")?;
    let mut slots = Vec::with_capacity(plan.buffers.len());
    for (index, buffer) in plan.buffers.iter().enumerate() {
        let what = format!("arena buffer {index}");
        let role = match buffer.kind.as_str() {
            "input" => BufferRole::Input,
            "activation" => BufferRole::Activation,
            "output" => BufferRole::Output,
            "scratch" => BufferRole::Scratch,
            other => return Err(corrupt(format!("{what}: unknown kind `{other}`"))),
        };
        slots.push(ArenaSlot {
            tensor: tensor(buffer.tensor.as_ref(), &what)?,
            role,
            offset: dim(&buffer.offset, &what)?,
            bytes: dim(&buffer.bytes, &what)?,
        });
    }

    let symbols: Vec<&String> = bounds.keys().collect();
    for dim in slots.iter().flat_map(|s| s.tensor.shape.iter().chain([&s.offset, &s.bytes])).chain([&arena_bytes]) {
        if let Some(symbol) = dim.symbols().into_iter().find(|s| !symbols.contains(&s)) {
            return Err(corrupt(format!("symbol `{symbol}` has no bound")));
        }
    }

    let mut entry_points = Vec::new();
    for entry in &manifest.entry_points {
        entry_points.push(check_entry(entry, &slots, &weights, &kernel_ir, &bounds, manifest.states.len())?);
    }
    if !entry_points.iter().any(|e| e.name == "forward") {
        return Err(corrupt("no `forward` entry point".into()));
    }
    let weights_section = weights_section.offset..weights_section.offset + weights_section.length;
    let covered = std::iter::once(0..table_end(sections.len()))
        .chain(sections.iter().map(|s| s.offset..s.offset + s.length))
        .collect();
    Ok(Artifact {
        storage,
        manifest,
        bounds,
        weights,
        kernels,
        kernel_ir,
        arena_bytes,
        slots,
        entry_points,
        weights_section,
        covered,
        code,
    })
}

fn check_kernel(info: &manifest::KernelInfo, kernel: &Kernel) -> Result<(), ArtifactError> {
    let what = format!("kernel `{}`", info.name);
    if info.name != kernel.name || info.block_threads != kernel.block_threads {
        return Err(corrupt(format!("{what}: the manifest and the kernel IR (`{}`) disagree", kernel.name)));
    }
    if info.dynamic_shared_bytes != kernel.dynamic_shared_bytes() as u64 {
        return Err(corrupt(format!(
            "{what}: {} bytes of dynamic shared memory recorded, the IR needs {}",
            info.dynamic_shared_bytes,
            kernel.dynamic_shared_bytes()
        )));
    }
    if info.params.len() != kernel.params.len() {
        return Err(corrupt(format!(
            "{what}: {} parameters in the manifest, {} in the IR",
            info.params.len(),
            kernel.params.len()
        )));
    }
    for (recorded, param) in info.params.iter().zip(&kernel.params) {
        let matches = match param {
            Param::Buffer { name, dtype, writable } => {
                recorded.pointer
                    && &recorded.name == name
                    && recorded.dtype == dtype.name()
                    && recorded.writable == *writable
            }
            Param::Scalar { name, dtype } => {
                !recorded.pointer && &recorded.name == name && recorded.dtype == dtype.name()
            }
        };
        if !matches {
            return Err(corrupt(format!(
                "{what}: parameter `{}` differs between the manifest and the IR",
                recorded.name
            )));
        }
    }
    Ok(())
}

fn check_entry(
    entry: &manifest::EntryPoint,
    slots: &[ArenaSlot],
    weights: &[WeightSpec],
    kernels: &[Kernel],
    bounds: &BTreeMap<String, (i64, i64)>,
    states: usize,
) -> Result<EntrySpec, ArtifactError> {
    let what = format!("entry point `{}`", entry.name);
    let slot_index = |index: u32, role: BufferRole| -> Result<usize, ArtifactError> {
        match slots.get(index as usize) {
            Some(slot) if slot.role == role => Ok(index as usize),
            _ => Err(corrupt(format!("{what}: arena buffer {index} is not an {role:?} buffer"))),
        }
    };
    let inputs = entry.inputs.iter().map(|&i| slot_index(i, BufferRole::Input)).collect::<Result<_, _>>()?;
    let outputs = entry.outputs.iter().map(|&i| slot_index(i, BufferRole::Output)).collect::<Result<_, _>>()?;
    let mut launches = Vec::with_capacity(entry.launches.len());
    for launch in &entry.launches {
        let what = format!("{what}: launch {}", launch.group);
        if launch.variants.is_empty() {
            return Err(corrupt(format!("{what} has no variants")));
        }
        let mut variants = Vec::new();
        for variant in &launch.variants {
            let kernel = kernels
                .get(variant.kernel as usize)
                .ok_or_else(|| corrupt(format!("{what}: kernel {} does not exist", variant.kernel)))?;
            if variant.arguments.len() != kernel.params.len() {
                return Err(corrupt(format!(
                    "{what}: {} arguments for {} parameters",
                    variant.arguments.len(),
                    kernel.params.len()
                )));
            }
            let mut arguments = Vec::new();
            for (argument, param) in variant.arguments.iter().zip(&kernel.params) {
                arguments.push(
                    check_argument(argument, param, slots, weights, bounds, states)
                        .map_err(|message| corrupt(format!("{what}: parameter `{}`: {message}", param.name())))?,
                );
            }
            let ranges = variant.ranges.iter().map(|r| (r.symbol.clone(), r.min, r.max)).collect();
            let mut dims = Vec::new();
            for range in &variant.dims {
                let parsed = dim(&range.dim, &format!("{what}: variant range"))?;
                if let Some(symbol) = parsed.symbols().into_iter().find(|s| !bounds.contains_key(s)) {
                    return Err(corrupt(format!("{what}: a variant range uses `{symbol}`, which has no bound")));
                }
                dims.push((parsed, range.min, range.max));
            }
            variants.push(VariantSpec { ranges, dims, kernel: variant.kernel as usize, arguments });
        }
        let cost = |text: &str, what_cost: &str| -> Result<Dim, ArtifactError> {
            let parsed = dim(text, &format!("{what}: {what_cost}"))?;
            match parsed.symbols().into_iter().find(|s| !bounds.contains_key(s)) {
                Some(symbol) => Err(corrupt(format!("{what}: {what_cost} uses `{symbol}`, which has no bound"))),
                None => Ok(parsed),
            }
        };
        let (flops, bytes) = (cost(&launch.flops, "flops")?, cost(&launch.bytes, "bytes")?);
        launches.push(LaunchSpec { group: launch.group.clone(), variants, flops, bytes });
    }
    Ok(EntrySpec { name: entry.name.clone(), inputs, outputs, launches })
}

fn check_argument(
    argument: &manifest::Argument,
    param: &Param,
    slots: &[ArenaSlot],
    weights: &[WeightSpec],
    bounds: &BTreeMap<String, (i64, i64)>,
    states: usize,
) -> Result<ArgumentSpec, String> {
    let buffer_dtype = match param {
        Param::Buffer { dtype, .. } => Some(*dtype),
        Param::Scalar { .. } => None,
    };
    let same_dtype = |found: DType| match buffer_dtype {
        Some(expected) if expected == found => Ok(()),
        Some(expected) => Err(format!("bound to a {found} tensor, expects {expected}")),
        None => Err("a scalar parameter bound to a tensor".to_string()),
    };
    match &argument.source {
        Some(ArgumentSource::Weight(index)) => {
            let weight = weights.get(*index as usize).ok_or(format!("weight {index} does not exist"))?;
            same_dtype(weight.dtype)?;
            if matches!(param, Param::Buffer { writable: true, .. }) {
                return Err("a writable parameter bound to a weight".into());
            }
            Ok(ArgumentSpec::Weight(*index as usize))
        }
        Some(ArgumentSource::Arena(index)) => {
            let slot = slots.get(*index as usize).ok_or(format!("arena buffer {index} does not exist"))?;
            same_dtype(slot.tensor.dtype)?;
            Ok(ArgumentSpec::Arena(*index as usize))
        }
        Some(ArgumentSource::Symbol(symbol)) if buffer_dtype.is_none() && bounds.contains_key(symbol) => {
            // A symbol's value is an integer: it reaches an i64 parameter, or an
            // i32 one when its bound fits.
            match param {
                Param::Scalar { dtype: DType::I64, .. } => {}
                Param::Scalar { dtype: DType::I32, .. } if bounds[symbol].1 <= i32::MAX as i64 => {}
                Param::Scalar { dtype, .. } => {
                    return Err(format!("symbol `{symbol}` bound to a {dtype} scalar (i64, or i32 within its bounds)"))
                }
                Param::Buffer { .. } => unreachable!("buffer_dtype is none"),
            }
            Ok(ArgumentSpec::Symbol(symbol.clone()))
        }
        Some(ArgumentSource::Symbol(symbol)) => Err(format!("symbol `{symbol}` is unbounded or bound to a pointer")),
        Some(ArgumentSource::State(index)) if (*index as usize) < states => Ok(ArgumentSpec::State(*index as usize)),
        Some(ArgumentSource::State(index)) => Err(format!("state {index} does not exist")),
        None => Err("no argument".into()),
    }
}
