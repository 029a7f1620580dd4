//! The plan phase: where every tensor that crosses a kernel boundary lives.
//!
//! Kernels run in a topological order of the fusion groups. Every stored
//! tensor — graph inputs, group outputs, kernel scratch — gets a byte range
//! in one arena, as expressions of the symbolic dims (`offset`, `bytes`), so
//! one plan serves every binding. Placement reuses memory: a tensor takes a
//! *slot* whose previous tenant is dead; a slot's size is the maximum of its
//! tenants' sizes (symbolic `max`), and slots lie back to back, so no two
//! tensors that are live at the same time overlap, for any binding. Slot
//! choices are made at the compile-time bounds of the symbols.

use std::collections::{BTreeMap, HashMap};

use kiln_ir::graph::ValueRef;
use kiln_ir::{Dim, Graph, GroupId, SymbolBindings};

use crate::fuse::contract::GroupContract;

/// Every arena offset and size is a multiple of this.
pub const ALIGNMENT: i64 = 256;

/// What a planned buffer holds.
#[derive(Clone, Debug, PartialEq)]
pub enum BufferKind {
    /// A graph input, copied in before the first kernel and live to the
    /// end: a replay of the launches (a CUDA graph, a benchmark) reads the
    /// inputs again without copying them in.
    Input,
    /// A value one kernel writes and later kernels read.
    Activation,
    /// A graph output (live until the end).
    Output,
    /// Workspace of one kernel.
    Scratch(GroupId),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    pub name: String,
    pub value: Option<ValueRef>,
    pub kind: BufferKind,
    pub bytes: Dim,
    pub offset: Dim,
    /// Live from kernel step `first` to `last` inclusive (inputs start at 0;
    /// inputs and outputs last to the end).
    pub first: usize,
    pub last: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPlan {
    /// Kernels in execution order.
    pub order: Vec<GroupId>,
    pub buffers: Vec<Buffer>,
    pub arena_bytes: Dim,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("memory plan: {0}")]
pub struct PlanError(pub String);

/// `bytes` rounded up to [`ALIGNMENT`].
pub fn aligned(bytes: &Dim) -> Dim {
    let rounded = (bytes + &Dim::constant(ALIGNMENT - 1)).floor_div(ALIGNMENT).expect("positive alignment");
    &rounded * &Dim::constant(ALIGNMENT)
}

/// A topological order of the fusion groups.
pub fn group_order(graph: &Graph) -> Vec<GroupId> {
    let mut order: Vec<GroupId> = Vec::new();
    for node in graph.topological_order() {
        if let Some(group) = graph.node(node).group {
            if !order.contains(&group) {
                order.push(group);
            }
        }
    }
    // A group appears when its first node is reached; a later node of an
    // earlier group can depend on a group listed after it, so settle by
    // moving each group after every group it reads.
    let contracts: HashMap<GroupId, GroupContract> =
        order.iter().filter_map(|&g| GroupContract::of(graph, g).map(|c| (g, c))).collect();
    let mut settled: Vec<GroupId> = Vec::new();
    let mut pending = order.clone();
    while !pending.is_empty() {
        let ready = pending
            .iter()
            .position(|g| {
                contracts[g].inputs.iter().all(|input| match graph.node(input.source.node).group {
                    Some(producer) if producer != *g => settled.contains(&producer),
                    _ => true,
                })
            })
            .unwrap_or(0);
        settled.push(pending.remove(ready));
    }
    settled
}

/// Plans the arena of a fused graph. `bounds` are the largest values of the
/// symbols, for choosing slots.
pub fn plan_memory(graph: &Graph, bounds: &SymbolBindings) -> Result<MemoryPlan, PlanError> {
    let order = group_order(graph);
    let end = order.len();
    let mut buffers: BTreeMap<ValueRef, Buffer> = BTreeMap::new();
    // Exact sizes here; `place` rounds them up to the alignment.
    let bytes_of = |value: ValueRef| {
        let ty = graph.value_type(value);
        &ty.element_count() * &Dim::constant(ty.dtype.size_in_bytes() as i64)
    };
    for input in graph.input_values() {
        buffers.insert(
            input,
            Buffer {
                name: graph.value_name(input).into(),
                value: Some(input),
                kind: BufferKind::Input,
                bytes: bytes_of(input),
                offset: Dim::constant(0),
                first: 0,
                last: end,
            },
        );
    }
    let contracts: Vec<(usize, GroupContract)> = order
        .iter()
        .enumerate()
        .map(|(step, &group)| {
            GroupContract::of(graph, group)
                .map(|c| (step, c))
                .ok_or_else(|| PlanError(format!("group g{group} has no contract")))
        })
        .collect::<Result<_, _>>()?;
    let mut scratch = Vec::new();
    for (step, contract) in &contracts {
        for output in &contract.outputs {
            buffers.insert(
                *output,
                Buffer {
                    name: graph.value_name(*output).into(),
                    value: Some(*output),
                    kind: BufferKind::Activation,
                    bytes: bytes_of(*output),
                    offset: Dim::constant(0),
                    first: *step,
                    last: *step,
                },
            );
        }
        if contract.scratch_bytes != Dim::constant(0) {
            scratch.push(Buffer {
                name: format!("g{}.scratch", contract.id),
                value: None,
                kind: BufferKind::Scratch(contract.id),
                bytes: contract.scratch_bytes.clone(),
                offset: Dim::constant(0),
                first: *step,
                last: *step,
            });
        }
    }
    for (step, contract) in &contracts {
        for input in &contract.inputs {
            if let Some(buffer) = buffers.get_mut(&input.source) {
                buffer.last = buffer.last.max(*step);
            }
        }
    }
    for output in graph.outputs() {
        let buffer = buffers.get_mut(&output.value).ok_or_else(|| {
            PlanError(match graph.node(output.value.node).op {
                kiln_ir::Op::Constant(_) | kiln_ir::Op::Dims { .. } => format!(
                    "output `{}` is a constant, known at compile time: not supported (an artifact's outputs are \
                     what its kernels compute)",
                    output.name
                ),
                _ => format!("output `{}` is not stored by any kernel", output.name),
            })
        })?;
        buffer.kind = BufferKind::Output;
        buffer.last = end;
    }
    let mut all: Vec<Buffer> = buffers.into_values().chain(scratch).collect();
    let arena_bytes = place(&mut all, bounds)?;
    Ok(MemoryPlan { order, buffers: all, arena_bytes })
}

/// Buffers whose sizes are multiples of one monomial (`batch·seq`, `seq`, 1, …).
struct SizeClass {
    /// Bytes of one unit: `aligned(g · monomial)` for the gcd `g` of the members' byte coefficients.
    unit: Dim,
    /// Members and their sizes in units.
    members: Vec<(usize, i64)>,
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a.abs()
    } else {
        gcd(b, a % b)
    }
}

/// Sets every buffer's `bytes` and `offset` and returns the arena size.
///
/// Buffers are grouped into size classes; within a class every size is an
/// integer number of the class's unit, so packing in units (greedy by size,
/// lowest gap that fits, among buffers live at the same time) is valid for
/// every binding of the symbols. Sizes that are not one term get a class of
/// their own. Classes lie back to back.
fn place(buffers: &mut [Buffer], bounds: &SymbolBindings) -> Result<Dim, PlanError> {
    let mut classes: Vec<(Option<Dim>, SizeClass)> = Vec::new();
    for (index, buffer) in buffers.iter().enumerate() {
        match buffer.bytes.as_scaled_monomial() {
            Some((coefficient, monomial)) if coefficient > 0 => {
                match classes.iter_mut().find(|(key, _)| key.as_ref() == Some(&monomial)) {
                    Some((_, class)) => class.members.push((index, coefficient)),
                    None => classes.push((
                        Some(monomial),
                        SizeClass { unit: Dim::constant(0), members: vec![(index, coefficient)] },
                    )),
                }
            }
            _ => classes.push((None, SizeClass { unit: aligned(&buffer.bytes), members: vec![(index, 1)] })),
        }
    }
    let mut base = Dim::constant(0);
    for (monomial, class) in &mut classes {
        if let Some(monomial) = monomial {
            let common = class.members.iter().fold(0, |g, &(_, c)| gcd(g, c));
            class.unit = aligned(&(&Dim::constant(common) * monomial));
            for member in &mut class.members {
                member.1 /= common;
            }
        }
        let units = pack(buffers, &class.members)?;
        for &(index, size) in &class.members {
            buffers[index].bytes = &Dim::constant(size) * &class.unit;
        }
        for (&(index, _), offset) in class.members.iter().zip(&units.offsets) {
            buffers[index].offset = &base + &(&Dim::constant(*offset) * &class.unit);
        }
        base = &base + &(&Dim::constant(units.total) * &class.unit);
    }
    base.evaluate(bounds).map_err(|e| PlanError(format!("the arena at the bounds: {e}")))?;
    Ok(base)
}

struct Packing {
    offsets: Vec<i64>,
    total: i64,
}

/// Greedy by size: the largest first, each at the lowest offset where it
/// overlaps no placed buffer that is live at the same time.
fn pack(buffers: &[Buffer], members: &[(usize, i64)]) -> Result<Packing, PlanError> {
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(members[i].1), buffers[members[i].0].first, i));
    let mut offsets = vec![0i64; members.len()];
    let mut placed: Vec<usize> = Vec::new();
    let mut total = 0;
    for i in order {
        let (index, size) = members[i];
        let (first, last) = (buffers[index].first, buffers[index].last);
        let mut busy: Vec<(i64, i64)> = placed
            .iter()
            .filter(|&&j| {
                let other = &buffers[members[j].0];
                other.first <= last && first <= other.last
            })
            .map(|&j| (offsets[j], offsets[j] + members[j].1))
            .collect();
        busy.sort_unstable();
        let mut offset = 0;
        for (start, end) in busy {
            if offset + size <= start {
                break;
            }
            offset = offset.max(end);
        }
        offsets[i] = offset;
        total = total.max(offset + size);
        placed.push(i);
    }
    Ok(Packing { offsets, total })
}

impl MemoryPlan {
    /// The arena size under `bindings`.
    pub fn arena_bytes_at(&self, bindings: &SymbolBindings) -> Result<i64, kiln_ir::DimError> {
        self.arena_bytes.evaluate(bindings)
    }
}
