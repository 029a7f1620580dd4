//! Register reuse: the compiler gives every value its own register; this
//! pass gives registers whose lives do not overlap the same one, so a warp's
//! register file stays small enough to live in the host's caches (a 4×4
//! matmul block otherwise needs ~180 lane vectors, 45 KB per warp).
//!
//! A register lives from its first mention to its last in program order,
//! widened over each loop it is live around: a register mentioned before a
//! loop and inside or after it, or read inside a loop before that loop
//! writes it (a value carried from the previous iteration), lives across the
//! whole loop. Two registers share a slot only when one's life ends strictly
//! before the other's begins, so an instruction never writes a register one
//! of its operands also occupies unless it did before (in-place updates
//! stay in place). Vector and uniform registers are allocated separately.
//!
//! Two passes over the finished code run before it, on the same register
//! view: `remove_dead` drops pure instructions whose result nothing reads,
//! and `fuse_accumulated_loads` fuses an affine load into the accumulation
//! that is its only reader.

use super::program::{Dst, Inst, Src};

/// A register as the allocator sees it: vector or uniform, and its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Register {
    Vector(u32),
    Uniform(u32),
}

/// Whether an instruction reads or writes a register operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Read,
    Write,
}

/// Calls `visit` with every register operand of `inst`, reads before the
/// write, letting it renumber the operand. `visit` gets the operand's
/// register as it was before any renumbering.
fn each_register(inst: &mut Inst, visit: &mut dyn FnMut(&mut u32, Register, Role)) {
    fn src(src: &mut Src, visit: &mut dyn FnMut(&mut u32, Register, Role)) {
        match src {
            Src::V(r) => visit_as(r, Register::Vector, &[Role::Read], visit),
            Src::U(r) => visit_as(r, Register::Uniform, &[Role::Read], visit),
            Src::K(_) => {}
        }
    }
    fn dst(dst: &mut Dst, roles: &[Role], visit: &mut dyn FnMut(&mut u32, Register, Role)) {
        match dst {
            Dst::V(r) => visit_as(r, Register::Vector, roles, visit),
            Dst::U(r) => visit_as(r, Register::Uniform, roles, visit),
        }
    }
    /// One operand in each of `roles`, named by its number before the first visit.
    fn visit_as(
        number: &mut u32,
        kind: fn(u32) -> Register,
        roles: &[Role],
        visit: &mut dyn FnMut(&mut u32, Register, Role),
    ) {
        let register = kind(*number);
        for &role in roles {
            visit(number, register, role);
        }
    }
    const WRITE: &[Role] = &[Role::Write];
    const UPDATE: &[Role] = &[Role::Read, Role::Write];
    match inst {
        Inst::Special { dst: d, .. } => dst(d, WRITE, visit),
        Inst::Param { dst: d, .. } | Inst::WarpBase { dst: d } => visit_as(d, Register::Uniform, WRITE, visit),
        Inst::Unary { dst: d, a, .. }
        | Inst::Convert { dst: d, a, .. }
        | Inst::RoundConvert { dst: d, a, .. }
        | Inst::Bitcast { dst: d, a, .. } => {
            src(a, visit);
            dst(d, WRITE, visit);
        }
        Inst::Copy { dst: d, a, masked } => {
            src(a, visit);
            // A masked copy (an assignment under divergent control) keeps
            // the inactive lanes' old value: it reads its destination too.
            dst(d, if *masked { UPDATE } else { WRITE }, visit);
        }
        Inst::Binary { dst: d, a, b, .. } => {
            src(a, visit);
            src(b, visit);
            dst(d, WRITE, visit);
        }
        Inst::Select { dst: d, c: x, a: y, b: z }
        | Inst::Fma { dst: d, a: x, b: y, c: z }
        | Inst::MulAdd { dst: d, acc: x, a: y, b: z } => {
            src(x, visit);
            src(y, visit);
            src(z, visit);
            dst(d, WRITE, visit);
        }
        // Loads and shuffles under a partial mask write only the active
        // lanes; what they write is a temporary read under the same mask.
        Inst::Load { dst: d, index, base, .. } => {
            src(index, visit);
            src(base, visit);
            dst(d, WRITE, visit);
        }
        Inst::LoadAffine { dst: d, at } => {
            src(&mut at.start, visit);
            src(&mut at.base, visit);
            visit_as(d, Register::Vector, WRITE, visit);
        }
        Inst::MulAddAffine { dst: d, a, at } => {
            src(a, visit);
            src(&mut at.start, visit);
            src(&mut at.base, visit);
            visit_as(d, Register::Vector, UPDATE, visit);
        }
        Inst::StoreAffine { at, value, .. } => {
            src(&mut at.start, visit);
            src(&mut at.base, visit);
            src(value, visit);
        }
        Inst::Shuffle { dst: d, a, .. } => {
            src(a, visit);
            visit_as(d, Register::Vector, WRITE, visit);
        }
        Inst::Store { index, value, .. } | Inst::AtomicAdd { index, value, .. } => {
            src(index, visit);
            src(value, visit);
        }
        Inst::VectorAccess { index, .. } => src(index, visit),
        Inst::BranchUnless { cond, .. } | Inst::IfBegin { cond, .. } => src(cond, visit),
        Inst::UniformLoopTest { var, end, .. } => {
            src(end, visit);
            visit_as(var, Register::Uniform, &[Role::Read], visit);
        }
        Inst::UniformLoopNext { var, .. } => visit_as(var, Register::Uniform, UPDATE, visit),
        Inst::LoopTest { var, end, .. } => {
            src(end, visit);
            visit_as(var, Register::Vector, &[Role::Read], visit);
        }
        Inst::LoopNext { var, .. } => visit_as(var, Register::Vector, UPDATE, visit),
        Inst::LoadMatrix { dsts, count, index, .. } => {
            src(index, visit);
            for d in &mut dsts[..*count as usize] {
                visit_as(d, Register::Vector, WRITE, visit);
            }
        }
        Inst::Mma { acc, a, b, .. } => {
            for operand in a.iter_mut().chain(b.iter_mut()) {
                src(operand, visit);
            }
            for d in acc {
                visit_as(d, Register::Vector, UPDATE, visit);
            }
        }
        Inst::AsyncCopy { shared_index, index, valid, .. } => {
            src(shared_index, visit);
            src(index, visit);
            src(valid, visit);
        }
        Inst::Jump { .. }
        | Inst::Else { .. }
        | Inst::EndIf
        | Inst::LoopBegin
        | Inst::Barrier
        | Inst::AsyncCommit
        | Inst::AsyncWait { .. }
        | Inst::Preheader(_) => {}
    }
}

/// Where a register lives: program positions `start..=end`, and whether its
/// first mention reads it.
#[derive(Clone, Copy, Debug)]
struct Life {
    start: usize,
    end: usize,
    read_first: bool,
}

/// Renumbers the registers of `code` so that registers with disjoint lives
/// share one; returns the vector and uniform register counts it needs.
pub(crate) fn reuse_registers(code: &mut [Inst]) -> (u32, u32) {
    use std::collections::HashMap;
    let mut lives: HashMap<Register, Life> = HashMap::new();
    for (pc, inst) in code.iter_mut().enumerate() {
        each_register(inst, &mut |_, register, role| {
            lives.entry(register).and_modify(|life| life.end = pc).or_insert(Life {
                start: pc,
                end: pc,
                read_first: role == Role::Read,
            });
        });
    }
    // Loops: each backward branch closes one, from its target to itself.
    let loops: Vec<(usize, usize)> = code
        .iter()
        .enumerate()
        .filter_map(|(pc, inst)| match *inst {
            Inst::UniformLoopNext { test, .. } | Inst::LoopNext { test, .. } if test <= pc => Some((test, pc)),
            Inst::Jump { target } if target <= pc => Some((target, pc)),
            _ => None,
        })
        .collect();
    let mut changed = true;
    while changed {
        changed = false;
        for life in lives.values_mut() {
            for &(top, bottom) in &loops {
                let around = life.start < top && life.end >= top;
                let carried = life.read_first && (top..=bottom).contains(&life.start);
                if (around || carried) && (life.end < bottom || (carried && life.start > top)) {
                    life.end = life.end.max(bottom);
                    if carried {
                        life.start = top;
                    }
                    changed = true;
                }
            }
        }
    }

    let mut order: Vec<(Register, Life)> = lives.into_iter().collect();
    order.sort_by_key(|(register, life)| (life.start, life.end, *register));
    let mut slot_of: HashMap<Register, u32> = HashMap::new();
    let mut counts = [0u32; 2];
    // Per kind: slots in use, with the end of the life holding each, and free slots.
    let mut busy: [Vec<(usize, u32)>; 2] = [Vec::new(), Vec::new()];
    let mut free: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
    for (register, life) in order {
        let kind = matches!(register, Register::Uniform(_)) as usize;
        busy[kind].retain(|&(end, slot)| {
            let ended = end < life.start;
            if ended {
                free[kind].push(slot);
            }
            !ended
        });
        let slot = free[kind].pop().unwrap_or_else(|| {
            counts[kind] += 1;
            counts[kind] - 1
        });
        busy[kind].push((life.end, slot));
        slot_of.insert(register, slot);
    }
    for inst in code.iter_mut() {
        each_register(inst, &mut |number, register, _| *number = slot_of[&register]);
    }
    (counts[0], counts[1])
}

/// Whether `inst` only computes its destination: no memory access (a load
/// may fault), no control flow, no lane exchange (a shuffle may fault).
fn is_pure(inst: &Inst) -> bool {
    matches!(
        inst,
        Inst::Special { .. }
            | Inst::WarpBase { .. }
            | Inst::Param { .. }
            | Inst::Unary { .. }
            | Inst::Binary { .. }
            | Inst::Select { .. }
            | Inst::Convert { .. }
            | Inst::RoundConvert { .. }
            | Inst::Bitcast { .. }
            | Inst::Fma { .. }
            | Inst::MulAdd { .. }
            | Inst::Copy { .. }
    )
}

/// `code` without the pure instructions whose result no other instruction
/// reads (repeated until none is left), branch targets moved with what they
/// pointed at. Values the compiler computes for lane patterns it then did
/// not need (a lane vector `thread % 32` whose every use became an affine
/// load) go this way.
pub(crate) fn remove_dead(mut code: Vec<Inst>) -> Vec<Inst> {
    use std::collections::HashMap;
    loop {
        // Reads of each register, and each instruction's reads of its own destination.
        let mut reads: HashMap<Register, usize> = HashMap::new();
        let mut own_reads = vec![0usize; code.len()];
        for (pc, inst) in code.iter_mut().enumerate() {
            let mut written = None;
            let mut mine = Vec::new();
            each_register(inst, &mut |_, register, role| match role {
                Role::Read => mine.push(register),
                Role::Write => written = Some(register),
            });
            for register in mine {
                *reads.entry(register).or_default() += 1;
                if Some(register) == written {
                    own_reads[pc] += 1;
                }
            }
        }
        let mut keep = Vec::with_capacity(code.len());
        for (pc, inst) in code.iter_mut().enumerate() {
            let mut written = None;
            each_register(inst, &mut |_, register, role| {
                if role == Role::Write {
                    written = Some(register);
                }
            });
            let dead = is_pure(inst)
                && written.is_some_and(|register| reads.get(&register).copied().unwrap_or(0) == own_reads[pc]);
            keep.push(!dead);
        }
        if keep.iter().all(|&k| k) {
            return code;
        }
        // moved[pc]: the new position of the first kept instruction at or after pc.
        let mut moved = Vec::with_capacity(code.len() + 1);
        let mut at = 0;
        for &kept in &keep {
            moved.push(at);
            at += kept as usize;
        }
        moved.push(at);
        code = code
            .into_iter()
            .zip(keep)
            .filter(|(_, kept)| *kept)
            .map(|(mut inst, _)| {
                if let Some(target) = inst.target_mut() {
                    *target = moved[*target];
                }
                inst
            })
            .collect();
    }
}

/// `code` with each affine load whose only reader is the in-place
/// accumulation right after it (`acc = acc + a × loaded`, the inner loop of
/// a dot product) fused into one [`Inst::MulAddAffine`].
pub(crate) fn fuse_accumulated_loads(code: Vec<Inst>) -> Vec<Inst> {
    use std::collections::HashMap;
    let mut mentions: HashMap<Register, usize> = HashMap::new();
    for inst in &mut code.clone() {
        each_register(inst, &mut |_, register, _| *mentions.entry(register).or_default() += 1);
    }
    // The loaded register is mentioned twice: written by the load, read by the accumulation.
    let only_here = |r: u32| mentions.get(&Register::Vector(r)).copied() == Some(2);
    let targets: std::collections::HashSet<usize> =
        code.clone().iter_mut().filter_map(|inst| inst.target_mut().map(|t| *t)).collect();
    let mut fused = Vec::with_capacity(code.len());
    let mut removed = vec![false; code.len()];
    let mut at = 0;
    while at < code.len() {
        if let (
            Inst::LoadAffine { dst: loaded, at: access },
            Some(&Inst::MulAdd { dst: Dst::V(acc), acc: Src::V(same), a, b }),
        ) = (&code[at], code.get(at + 1))
        {
            // Nothing may branch to the accumulation alone.
            let entered = targets.contains(&(at + 1));
            // The loaded value is the second factor (the product's operand
            // order is kept, NaN payloads and all).
            let other = match (a, b) {
                (x, Src::V(r)) if r == *loaded && x != Src::V(*loaded) => Some(x),
                _ => None,
            };
            if let Some(other) = other.filter(|&x| acc == same && x != Src::V(acc) && only_here(*loaded) && !entered) {
                fused.push(Inst::MulAddAffine { dst: acc, a: other, at: *access });
                removed[at + 1] = true;
                at += 2;
                continue;
            }
        }
        fused.push(code[at].clone());
        at += 1;
    }
    // Branch targets: a removed accumulation is never one (it follows its load).
    let mut moved = Vec::with_capacity(code.len() + 1);
    let mut position = 0;
    for &gone in &removed {
        moved.push(position);
        position += !gone as usize;
    }
    moved.push(position);
    for inst in &mut fused {
        if let Some(target) = inst.target_mut() {
            *target = moved[*target];
        }
    }
    fused
}
