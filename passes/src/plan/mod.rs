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
    /// A graph input, copied in before the first kernel.
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
    /// Live from kernel step `first` to `last` inclusive (inputs start at 0).
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
    let step_of: HashMap<GroupId, usize> = order.iter().enumerate().map(|(i, g)| (*g, i)).collect();
    let end = order.len();
    let mut buffers: BTreeMap<ValueRef, Buffer> = BTreeMap::new();
    let bytes_of = |value: ValueRef| {
        aligned(
            &(&graph.value_type(value).element_count()
                * &Dim::constant(graph.value_type(value).dtype.size_in_bytes() as i64)),
        )
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
                last: 0,
            },
        );
    }
    let mut scratch = Vec::new();
    for (&group, &step) in &step_of {
        let contract =
            GroupContract::of(graph, group).ok_or_else(|| PlanError(format!("group g{group} has no contract")))?;
        for output in &contract.outputs {
            let buffer = buffers.entry(*output).or_insert_with(|| Buffer {
                name: graph.value_name(*output).into(),
                value: Some(*output),
                kind: BufferKind::Activation,
                bytes: bytes_of(*output),
                offset: Dim::constant(0),
                first: step,
                last: step,
            });
            buffer.first = step;
        }
        for input in &contract.inputs {
            if let Some(buffer) = buffers.get_mut(&input.source) {
                buffer.last = buffer.last.max(step);
            }
        }
        if contract.scratch_bytes != Dim::constant(0) {
            scratch.push(Buffer {
                name: format!("g{group}.scratch"),
                value: None,
                kind: BufferKind::Scratch(group),
                bytes: aligned(&contract.scratch_bytes),
                offset: Dim::constant(0),
                first: step,
                last: step,
            });
        }
    }
    for output in graph.outputs() {
        let buffer = buffers
            .get_mut(&output.value)
            .ok_or_else(|| PlanError(format!("output `{}` is not stored by any kernel", output.name)))?;
        buffer.kind = BufferKind::Output;
        buffer.last = end;
    }
    let mut all: Vec<Buffer> = buffers.into_values().chain(scratch).collect();
    let size_at_bounds = |d: &Dim| d.evaluate(bounds).map_err(|e| PlanError(format!("at the bounds: {e}")));
    let mut placement: Vec<(usize, i64)> = Vec::with_capacity(all.len());
    for (index, buffer) in all.iter().enumerate() {
        placement.push((index, size_at_bounds(&buffer.bytes)?));
    }
    placement.sort_by_key(|&(index, size)| (all[index].first, std::cmp::Reverse(size), index));
    struct Slot {
        size: Dim,
        size_at_bounds: i64,
        busy_until: Option<usize>,
    }
    let mut slots: Vec<Slot> = Vec::new();
    let mut slot_of = vec![0usize; all.len()];
    for (index, size) in placement {
        let buffer = &all[index];
        let free = |slot: &Slot| slot.busy_until.is_none_or(|until| until < buffer.first);
        let fitting = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| free(s) && s.size_at_bounds >= size)
            .min_by_key(|(_, s)| s.size_at_bounds);
        let chosen = match fitting {
            Some((i, _)) => i,
            None => match slots.iter().enumerate().filter(|(_, s)| free(s)).max_by_key(|(_, s)| s.size_at_bounds) {
                Some((i, _)) => {
                    slots[i].size = slots[i].size.maximum(&buffer.bytes);
                    slots[i].size_at_bounds = size;
                    i
                }
                None => {
                    slots.push(Slot { size: buffer.bytes.clone(), size_at_bounds: size, busy_until: None });
                    slots.len() - 1
                }
            },
        };
        slots[chosen].busy_until = Some(buffer.last);
        slot_of[index] = chosen;
    }
    let mut offsets = Vec::with_capacity(slots.len());
    let mut next = Dim::constant(0);
    for slot in &slots {
        offsets.push(next.clone());
        next = &next + &slot.size;
    }
    for (index, buffer) in all.iter_mut().enumerate() {
        buffer.offset = offsets[slot_of[index]].clone();
    }
    Ok(MemoryPlan { order, buffers: all, arena_bytes: next })
}

impl MemoryPlan {
    /// The arena size under `bindings`.
    pub fn arena_bytes_at(&self, bindings: &SymbolBindings) -> Result<i64, kiln_ir::DimError> {
        self.arena_bytes.evaluate(bindings)
    }
}
