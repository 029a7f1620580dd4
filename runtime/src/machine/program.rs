//! Kernel IR compiled once into a flat register program.
//!
//! Every expression node becomes one instruction over lane vectors; the
//! structured control flow becomes branches and mask operations a resumable
//! warp can stop between. While compiling:
//!
//! - **Warp-uniform values** (from literals, scalar parameters, the block
//!   index, and variables only ever assigned such values under uniform
//!   control flow) live in scalar registers and are computed once per warp;
//!   uniform `if`s and `for`s branch without touching the lane mask.
//! - **Value numbering**: an expression already computed in the same region,
//!   with no assignment to its variables or store to its memory since, is
//!   reused rather than recomputed.
//! - **Constant folding** of literal operands, and of the integer identities
//!   `x + 0`, `x * 1`.

use std::collections::{HashMap, HashSet};

use crate::kernel::{BinaryOp, Expr, Kernel, Literal, Memory, MmaKind, Param, Rounding, Special, Stmt, UnaryOp, Var};
use crate::sim::SimError;
use crate::{DType, Dim};

use super::affine::{self, Affine, Facts};
use super::values::{self, Class};

/// Where an operand comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Src {
    /// A lane-vector register.
    V(u32),
    /// A warp-uniform (scalar) register.
    U(u32),
    /// A constant (its register bits).
    K(u64),
}

/// Where a result goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Dst {
    V(u32),
    U(u32),
}

impl Dst {
    pub(crate) fn src(self) -> Src {
        match self {
            Dst::V(r) => Src::V(r),
            Dst::U(r) => Src::U(r),
        }
    }
}

/// One instruction. `pc` targets index [`Program::code`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Inst {
    Special {
        dst: Dst,
        which: Special,
    },
    Param {
        dst: u32,
        param: usize,
    },
    /// The thread index of the warp's first lane (uniform, class i32).
    WarpBase {
        dst: u32,
    },
    Unary {
        op: UnaryOp,
        class: Class,
        dst: Dst,
        a: Src,
    },
    Binary {
        op: BinaryOp,
        class: Class,
        dst: Dst,
        a: Src,
        b: Src,
    },
    Select {
        dst: Dst,
        c: Src,
        a: Src,
        b: Src,
    },
    Convert {
        from: Class,
        to: Class,
        dst: Dst,
        a: Src,
    },
    /// A conversion with a rounding mode ([`Expr::Convert`]).
    RoundConvert {
        from: Class,
        to: Class,
        rounding: Rounding,
        dst: Dst,
        a: Src,
    },
    /// The bits of `a` as class `to` ([`Expr::Bitcast`]).
    Bitcast {
        to: Class,
        dst: Dst,
        a: Src,
    },
    /// `a × b + c` in f32 with one rounding ([`Expr::Fma`]).
    Fma {
        dst: Dst,
        a: Src,
        b: Src,
        c: Src,
    },
    /// `dst = a` in the active lanes (`masked`) or in every lane.
    Copy {
        dst: Dst,
        a: Src,
        masked: bool,
    },
    /// Element `index + base + offset` of `memory` (`base` uniform), decoded
    /// to its register class.
    Load {
        dst: Dst,
        memory: Memory,
        index: Src,
        base: Src,
        offset: u32,
        /// One element of a vector access (its [`Inst::VectorAccess`] counts the traffic).
        piece: bool,
    },
    /// Element `start + base + stride × lane + offset` of `memory` in each
    /// lane (`start` and `base` uniform), decoded to its register class: a
    /// load whose index the compiler proved affine in the lane
    /// ([`super::affine`]), so no lane's index is computed or inspected and
    /// a warp in bounds at its first and last lane is in bounds throughout.
    LoadAffine {
        dst: u32,
        at: AffineAccess,
    },
    /// `dst = dst + a × element` (f32, rounded after the product and after
    /// the sum) with `element` loaded as [`Inst::LoadAffine`] loads it: a
    /// load whose only use is the accumulation right after it, fused.
    MulAddAffine {
        dst: u32,
        a: Src,
        at: AffineAccess,
    },
    /// `acc + a × b` in f32, rounded after the product and after the sum
    /// (two kernel IR operations, one dispatch).
    MulAdd {
        dst: Dst,
        acc: Src,
        a: Src,
        b: Src,
    },
    /// Writes `value` (of `class`) to element `index + offset` of `memory`.
    Store {
        memory: Memory,
        index: Src,
        offset: u32,
        value: Src,
        class: Class,
        /// One element of a vector access (its [`Inst::VectorAccess`] counts the traffic).
        piece: bool,
    },
    /// Writes `value` (of `class`) to element `start + base + stride ×
    /// lane + offset` of `memory` in each active lane (`start` and `base` uniform).
    StoreAffine {
        at: AffineAccess,
        value: Src,
        class: Class,
    },
    AtomicAdd {
        buffer: usize,
        index: Src,
        value: Src,
        class: Class,
    },
    /// A vector access of `width` elements at each active lane's `index`:
    /// the index must be a multiple of `width` (the access aligned to its
    /// size); with counters on, its traffic is counted here as one request.
    VectorAccess {
        memory: Memory,
        index: Src,
        width: u32,
        write: bool,
    },
    Shuffle {
        dst: u32,
        a: Src,
        xor: u32,
    },
    /// Uniform branch: continue when `cond` holds, else go to `target`.
    BranchUnless {
        cond: Src,
        target: usize,
    },
    Jump {
        target: usize,
    },
    /// Divergent `if`: saves the mask, keeps the lanes where `cond` holds;
    /// with none, goes to `otherwise` (its [`Inst::Else`]).
    IfBegin {
        cond: Src,
        otherwise: usize,
    },
    /// The lanes where the condition failed; with none, goes to `end` (its [`Inst::EndIf`]).
    Else {
        end: usize,
    },
    EndIf,
    /// Uniform loop test: leaves to `exit` when `var >= end`.
    UniformLoopTest {
        var: u32,
        end: Src,
        exit: usize,
    },
    UniformLoopNext {
        var: u32,
        step: i64,
        test: usize,
    },
    /// Divergent loop: saves the mask.
    LoopBegin,
    /// Keeps the lanes where `var < end`; with none, restores the mask and goes to `exit`.
    LoopTest {
        var: u32,
        end: Src,
        exit: usize,
    },
    LoopNext {
        var: u32,
        step: i64,
        test: usize,
    },
    Barrier,
    /// `ldmatrix` ([`Stmt::LoadMatrix`]): `dsts[..count]` from shared
    /// `array`, rows addressed by lanes' `index`.
    LoadMatrix {
        dsts: [u32; 4],
        count: u8,
        array: usize,
        index: Src,
        transpose: bool,
    },
    /// `mma.sync` ([`Stmt::MatrixMultiplyAccumulate`]): the vector
    /// registers `acc` are read and written in place.
    Mma {
        kind: MmaKind,
        acc: [u32; 4],
        a: [Src; 4],
        b: [Src; 2],
    },
    /// `cp.async` ([`Stmt::AsyncCopy`]) in each active lane.
    AsyncCopy {
        array: usize,
        shared_index: Src,
        buffer: usize,
        index: Src,
        elements: u32,
        valid: Src,
    },
    AsyncCommit,
    AsyncWait {
        pending: u32,
    },
    /// Where loop `n`'s hoisted instructions go; expanded when compiling ends.
    Preheader(usize),
}

/// Where an affine access ([`Inst::LoadAffine`], [`Inst::MulAddAffine`],
/// [`Inst::StoreAffine`]) reaches: element `start + base + stride × lane +
/// offset` of `memory` (`start` and `base` uniform).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct AffineAccess {
    pub(crate) memory: Memory,
    pub(crate) start: Src,
    pub(crate) base: Src,
    pub(crate) stride: i64,
    pub(crate) offset: u32,
    /// One element of a vector access (its [`Inst::VectorAccess`] counts the traffic).
    pub(crate) piece: bool,
}

/// The instructions whose result is a [`Dst`] register, binding it to `$dst`:
/// the one list [`Inst::dst`] and [`set_dst`] share.
macro_rules! writes_register {
    ($dst:ident) => {
        Inst::Special { dst: $dst, .. }
            | Inst::Unary { dst: $dst, .. }
            | Inst::Binary { dst: $dst, .. }
            | Inst::Select { dst: $dst, .. }
            | Inst::Convert { dst: $dst, .. }
            | Inst::RoundConvert { dst: $dst, .. }
            | Inst::Bitcast { dst: $dst, .. }
            | Inst::Fma { dst: $dst, .. }
            | Inst::Copy { dst: $dst, .. }
            | Inst::MulAdd { dst: $dst, .. }
            | Inst::Load { dst: $dst, .. }
    };
}

impl Inst {
    /// The register the instruction writes, if it writes one.
    fn dst(&self) -> Option<Dst> {
        match *self {
            writes_register!(dst) => Some(dst),
            Inst::Param { dst, .. } | Inst::WarpBase { dst } => Some(Dst::U(dst)),
            Inst::Shuffle { dst, .. } | Inst::LoadAffine { dst, .. } | Inst::MulAddAffine { dst, .. } => {
                Some(Dst::V(dst))
            }
            _ => None,
        }
    }

    /// The branch target, if it has one.
    pub(crate) fn target_mut(&mut self) -> Option<&mut usize> {
        match self {
            Inst::BranchUnless { target, .. } | Inst::Jump { target } => Some(target),
            Inst::IfBegin { otherwise, .. } => Some(otherwise),
            Inst::Else { end } => Some(end),
            Inst::UniformLoopTest { exit, .. } | Inst::LoopTest { exit, .. } => Some(exit),
            Inst::UniformLoopNext { test, .. } | Inst::LoopNext { test, .. } => Some(test),
            _ => None,
        }
    }
}

/// `code` with each [`Inst::Preheader`] replaced by its loop's hoisted
/// instructions, and every branch target moved with what it pointed at.
fn expand_preheaders(code: Vec<Inst>, preheaders: Vec<Vec<Inst>>) -> Vec<Inst> {
    let mut moved = Vec::with_capacity(code.len() + 1);
    let mut at = 0;
    for inst in &code {
        moved.push(at);
        at += match inst {
            Inst::Preheader(n) => preheaders[*n].len(),
            _ => 1,
        };
    }
    moved.push(at);
    let mut expanded = Vec::with_capacity(at);
    for mut inst in code {
        match inst {
            Inst::Preheader(n) => expanded.extend(preheaders[n].iter().cloned()),
            _ => {
                if let Some(target) = inst.target_mut() {
                    *target = moved[*target];
                }
                expanded.push(inst);
            }
        }
    }
    expanded
}

/// A shared array as the machine lays it out.
#[derive(Clone, Debug)]
pub(crate) struct SharedLayout {
    pub(crate) name: String,
    pub(crate) dtype: DType,
    pub(crate) elements: usize,
    pub(crate) offset: usize,
}

/// A kernel compiled for the machine; compile once, run many times.
#[derive(Clone, Debug)]
pub struct Program {
    pub(crate) name: String,
    pub(crate) params: Vec<Param>,
    pub(crate) block_threads: u32,
    pub(crate) grid_blocks: Dim,
    pub(crate) shared: Vec<SharedLayout>,
    pub(crate) shared_bytes: usize,
    pub(crate) code: Vec<Inst>,
    pub(crate) vector_registers: u32,
    pub(crate) uniform_registers: u32,
    pub(crate) has_atomics: bool,
    /// The warp size the program is compiled for (its uniform and affine
    /// values are per warp of this many lanes).
    pub(crate) warp_size: usize,
    /// The kernel compiled without assuming its integer scalar parameters
    /// non-negative, for a launch that binds one negative.
    pub(crate) fallback: Option<Box<Program>>,
}

impl Program {
    /// Compiles `kernel` for warps of `warp_size` lanes (32 on NVIDIA, 64
    /// for AMD's wave64); errors name what in the kernel is malformed.
    ///
    /// Integer scalar parameters are the dims kiln binds (never negative),
    /// and the lane patterns may rely on that; a kernel that has them is
    /// also compiled without the assumption, and a launch binding a
    /// negative value runs that program instead.
    pub fn compile(kernel: &Kernel, warp_size: usize) -> Result<Program, SimError> {
        let mut program = Program::compile_assuming(kernel, warp_size, true)?;
        let integer_scalars = kernel.params.iter().any(|param| match param {
            Param::Scalar { dtype, .. } => !Class::declared(*dtype).is_float(),
            Param::Buffer { .. } => false,
        });
        if integer_scalars {
            program.fallback = Some(Box::new(Program::compile_assuming(kernel, warp_size, false)?));
        }
        Ok(program)
    }

    fn compile_assuming(kernel: &Kernel, warp_size: usize, nonneg_params: bool) -> Result<Program, SimError> {
        if !(1..=64).contains(&warp_size) {
            let message = format!("warps of {warp_size} lanes");
            return Err(SimError::Invalid { kernel: kernel.name.clone(), message });
        }
        let offsets = kernel.shared_offsets();
        let shared = kernel
            .shared
            .iter()
            .zip(&offsets)
            .map(|(a, &offset)| SharedLayout { name: a.name.clone(), dtype: a.dtype, elements: a.elements, offset })
            .collect();
        let mut compiler = Compiler {
            kernel,
            divergent: crate::kernel::divergent_vars(&kernel.body),
            assigned: assigned_vars(&kernel.body, true),
            reassigned: assigned_vars(&kernel.body, false),
            warp_size,
            nonneg_params,
            patterns: HashMap::new(),
            facts: HashMap::new(),
            sums: HashMap::new(),
            code: Vec::new(),
            vector_registers: 0,
            uniform_registers: 0,
            vars: HashMap::new(),
            numbered: HashMap::new(),
            fresh: None,
            has_atomics: false,
            levels: HashMap::new(),
            loops: Vec::new(),
            preheaders: Vec::new(),
        };
        compiler.block(&kernel.body, true)?;
        let code = expand_preheaders(std::mem::take(&mut compiler.code), std::mem::take(&mut compiler.preheaders));
        let code = super::registers::remove_dead(code);
        let mut code = super::registers::fuse_accumulated_loads(code);
        let (vector_registers, uniform_registers) = super::registers::reuse_registers(&mut code);
        Ok(Program {
            name: kernel.name.clone(),
            params: kernel.params.clone(),
            block_threads: kernel.block_threads,
            grid_blocks: kernel.grid_blocks.clone(),
            shared,
            shared_bytes: kernel.shared_bytes(),
            code,
            vector_registers,
            uniform_registers,
            has_atomics: compiler.has_atomics,
            warp_size,
            fallback: None,
        })
    }

    /// The kernel's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Instructions in the compiled program.
    pub fn instructions(&self) -> usize {
        self.code.len()
    }

    /// The program, one numbered instruction per line (`v` registers are
    /// lane vectors, `u` warp-uniform, `#` constants as register bits).
    pub fn listing(&self) -> String {
        self.code.iter().enumerate().map(|(pc, inst)| format!("{pc:4}  {inst:?}\n")).collect()
    }
}

/// What a value-numbered expression computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Special(Special),
    WarpBase,
    Param(usize),
    Unary(UnaryOp, Class, Src),
    Binary(BinaryOp, Class, Src, Src),
    Select(Src, Src, Src),
    Convert(Class, Class, Src),
    RoundConvert(Class, Class, Rounding, Src),
    Bitcast(Class, Src),
    Fma(Src, Src, Src),
    Load(Memory, Src, Src, u32),
    LoadAffine(Memory, Src, Src, i64, u32),
}

impl Key {
    fn operands(&self) -> Vec<Src> {
        match *self {
            Key::Special(_) | Key::WarpBase | Key::Param(_) => vec![],
            Key::LoadAffine(_, start, base, _, _) => vec![start, base],
            Key::Unary(_, _, a) | Key::Convert(_, _, a) | Key::RoundConvert(_, _, _, a) | Key::Bitcast(_, a) => vec![a],
            Key::Load(_, index, base, _) => vec![index, base],
            Key::Binary(_, _, a, b) => vec![a, b],
            Key::Select(c, a, b) | Key::Fma(c, a, b) => vec![c, a, b],
        }
    }

    fn is_load(&self) -> bool {
        matches!(self, Key::Load(..) | Key::LoadAffine(..))
    }

    fn loads(&self, memory: Memory) -> bool {
        matches!(*self, Key::Load(m, ..) | Key::LoadAffine(m, ..) if m == memory)
    }
}

/// A register of a declared variable.
#[derive(Clone, Copy, Debug)]
struct VarRegister {
    dst: Dst,
    class: Class,
}

struct Compiler<'k> {
    kernel: &'k Kernel,
    divergent: HashSet<Var>,
    /// Variables some statement assigns after their `let` (or a loop or
    /// vector load defines); the others hold one value per `let`.
    assigned: HashSet<Var>,
    /// Variables some statement assigns (loops' own increments aside).
    reassigned: HashSet<Var>,
    warp_size: usize,
    /// Integer scalar parameters may be taken as non-negative.
    nonneg_params: bool,
    /// Vector registers known affine in the lane (written once per value).
    patterns: HashMap<u32, Affine>,
    /// What is known of uniform registers' integers (written once per value).
    facts: HashMap<u32, Facts>,
    /// Uniform registers made by an i64 addition: the addition.
    sums: HashMap<u32, Key>,
    code: Vec<Inst>,
    vector_registers: u32,
    uniform_registers: u32,
    vars: HashMap<Var, VarRegister>,
    numbered: HashMap<Key, (Src, Class)>,
    /// The register the last emitted instruction created, while nothing else refers to it.
    fresh: Option<(Dst, Key)>,
    has_atomics: bool,
    /// Per register: the loop depth its value is fixed at (0: the whole
    /// kernel; d: one iteration of the enclosing loop at depth d).
    levels: HashMap<Dst, usize>,
    /// Per enclosing loop, outermost first: its index in `preheaders`.
    loops: Vec<usize>,
    /// Per loop: the pure instructions hoisted out of it, run before it starts.
    preheaders: Vec<Vec<Inst>>,
}

impl Compiler<'_> {
    fn invalid(&self, message: String) -> SimError {
        SimError::Invalid { kernel: self.kernel.name.clone(), message }
    }

    fn register(&mut self, uniform: bool) -> Dst {
        if uniform {
            self.uniform_registers += 1;
            Dst::U(self.uniform_registers - 1)
        } else {
            self.vector_registers += 1;
            Dst::V(self.vector_registers - 1)
        }
    }

    fn emit(&mut self, inst: Inst) {
        self.fresh = None;
        if let Some(dst) = inst.dst() {
            self.levels.insert(dst, self.loops.len());
            self.forget_pattern(dst);
        }
        self.code.push(inst);
    }

    /// The loop depth at which `src`'s value is fixed.
    fn level(&self, src: Src) -> usize {
        match src {
            Src::K(_) => 0,
            Src::V(r) => self.levels.get(&Dst::V(r)).copied().unwrap_or(self.loops.len()),
            Src::U(r) => self.levels.get(&Dst::U(r)).copied().unwrap_or(self.loops.len()),
        }
    }

    /// The value of `key`, reusing an earlier computation or emitting
    /// `make(dst)`. A pure computation whose operands do not change in the
    /// enclosing loops is hoisted in front of the outermost such loop.
    fn numbered(&mut self, key: Key, class: Class, uniform: bool, make: impl FnOnce(Dst) -> Inst) -> (Src, Class) {
        if let Some(&found) = self.numbered.get(&key) {
            return found;
        }
        let dst = self.register(uniform);
        let level = key.operands().into_iter().map(|src| self.level(src)).max().unwrap_or(0);
        let pure = !key.is_load();
        if pure && level < self.loops.len() {
            self.preheaders[self.loops[level]].push(make(dst));
            self.levels.insert(dst, level);
            self.fresh = None;
        } else {
            self.emit(make(dst));
            self.fresh = Some((dst, key));
        }
        self.numbered.insert(key, (dst.src(), class));
        (dst.src(), class)
    }

    /// Marks the registers of `vars` as changing at loop depth `level`.
    fn set_levels(&mut self, vars: &HashSet<Var>, level: usize) {
        for var in vars {
            if let Some(register) = self.vars.get(var) {
                self.levels.insert(register.dst, level);
            }
        }
    }

    fn block(&mut self, body: &[Stmt], uniform_control: bool) -> Result<(), SimError> {
        for stmt in body {
            self.statement(stmt, uniform_control)?;
        }
        Ok(())
    }

    fn statement(&mut self, stmt: &Stmt, uniform_control: bool) -> Result<(), SimError> {
        match stmt {
            Stmt::Let { var, dtype, value } => {
                let (src, class) = self.expr(value)?;
                // A variable never assigned holds its value: uniform when
                // the value is, though the kernel-wide analysis (which does
                // not know the warp size) may call it divergent.
                let single = !self.assigned.contains(var);
                let dst = self.register(!self.divergent.contains(var) || (single && is_uniform(src)));
                let class_to = Class::declared(*dtype);
                self.vars.insert(*var, VarRegister { dst, class: class_to });
                self.define(dst, src, class, class_to, false)?;
                if single && class == class_to {
                    self.inherit_pattern(dst, src);
                }
            }
            Stmt::Assign { var, value } => {
                let (src, class) = self.expr(value)?;
                let target = *self
                    .vars
                    .get(var)
                    .ok_or_else(|| self.invalid(format!("v{} is assigned before its let", var.0)))?;
                self.define(target.dst, src, class, target.class, !uniform_control)?;
                self.forget_register(target.dst);
            }
            Stmt::Store { buffer, index, value } => {
                self.buffer_param(*buffer)?;
                let index = self.index(index)?;
                let (value, class) = self.expr(value)?;
                self.store(Memory::Buffer(*buffer), index, 0, value, class, false);
                self.forget_memory(Memory::Buffer(*buffer));
            }
            Stmt::SharedStore { array, index, value } => {
                self.shared_array(*array)?;
                let index = self.index(index)?;
                let (value, class) = self.expr(value)?;
                self.store(Memory::Shared(*array), index, 0, value, class, false);
                self.forget_memory(Memory::Shared(*array));
            }
            Stmt::AtomicAdd { buffer, index, value } => {
                self.buffer_param(*buffer)?;
                let index = self.index(index)?;
                let (value, class) = self.expr(value)?;
                self.has_atomics = true;
                self.emit(Inst::AtomicAdd { buffer: *buffer, index, value, class });
                self.forget_memory(Memory::Buffer(*buffer));
            }
            Stmt::VectorLoad { vars, dtype, memory, index } => {
                self.memory(*memory)?;
                let index = self.index(index)?;
                self.emit(Inst::VectorAccess { memory: *memory, index, width: vars.len() as u32, write: false });
                let loaded = Class::loaded(self.memory_dtype(*memory));
                let class_to = Class::declared(*dtype);
                let uniform_index = !matches!(index, Src::V(_));
                for (offset, var) in vars.iter().enumerate() {
                    let dst = self.register(!self.divergent.contains(var));
                    if matches!(dst, Dst::U(_)) && !uniform_index {
                        return Err(self.invalid(format!("v{} is uniform but loaded at a divergent index", var.0)));
                    }
                    let offset = offset as u32;
                    if loaded == class_to {
                        self.emit_piece_load(dst, *memory, index, offset);
                    } else {
                        let temp = self.register(matches!(dst, Dst::U(_)));
                        self.emit_piece_load(temp, *memory, index, offset);
                        self.emit(Inst::Convert { from: loaded, to: class_to, dst, a: temp.src() });
                    }
                    self.vars.insert(*var, VarRegister { dst, class: class_to });
                }
            }
            Stmt::VectorStore { memory, index, values } => {
                self.memory(*memory)?;
                let index = self.index(index)?;
                let mut sources = Vec::with_capacity(values.len());
                for value in values {
                    sources.push(self.expr(value)?);
                }
                self.emit(Inst::VectorAccess { memory: *memory, index, width: values.len() as u32, write: true });
                for (offset, (value, class)) in sources.into_iter().enumerate() {
                    self.store(*memory, index, offset as u32, value, class, true);
                }
                self.forget_memory(*memory);
            }
            Stmt::If { condition, then, otherwise } => {
                let (cond, _) = self.expr(condition)?;
                if let Src::K(bits) = cond {
                    let taken = if bits != 0 { then } else { otherwise };
                    self.nested(taken, uniform_control)?;
                    self.forget_effects_of(taken);
                    return Ok(());
                }
                if matches!(cond, Src::U(_)) {
                    let branch = self.code.len();
                    self.emit(Inst::BranchUnless { cond, target: usize::MAX });
                    self.nested(then, uniform_control)?;
                    if otherwise.is_empty() {
                        let end = self.code.len();
                        self.code[branch] = Inst::BranchUnless { cond, target: end };
                    } else {
                        let jump = self.code.len();
                        self.emit(Inst::Jump { target: usize::MAX });
                        let start = self.code.len();
                        self.code[branch] = Inst::BranchUnless { cond, target: start };
                        self.nested(otherwise, uniform_control)?;
                        let end = self.code.len();
                        self.code[jump] = Inst::Jump { target: end };
                    }
                } else {
                    let begin = self.code.len();
                    self.emit(Inst::IfBegin { cond, otherwise: usize::MAX });
                    self.nested(then, false)?;
                    let otherwise_at = self.code.len();
                    self.emit(Inst::Else { end: usize::MAX });
                    self.nested(otherwise, false)?;
                    let end = self.code.len();
                    self.emit(Inst::EndIf);
                    self.code[begin] = Inst::IfBegin { cond, otherwise: otherwise_at };
                    self.code[otherwise_at] = Inst::Else { end };
                }
                self.forget_effects_of(then);
                self.forget_effects_of(otherwise);
            }
            Stmt::For { var, start, end, step, body } => {
                if *step <= 0 {
                    return Err(self.invalid("a loop step must be positive".into()));
                }
                let (start, start_class) = self.expr(start)?;
                let (end, end_class) = self.expr(end)?;
                let end = self.stable(end, end_class, Class::I64)?;
                // A loop the warp runs as one (uniform bounds, under uniform
                // control, its variable written by the loop alone) counts
                // uniformly, though the kernel-wide analysis may call it divergent.
                let warp_wide =
                    uniform_control && is_uniform(start) && is_uniform(end) && !self.reassigned.contains(var);
                let uniform = !self.divergent.contains(var) || warp_wide;
                let dst = self.register(uniform);
                self.vars.insert(*var, VarRegister { dst, class: Class::I64 });
                self.define(dst, start, start_class, Class::I64, false)?;
                if uniform && matches!(end, Src::V(_)) {
                    return Err(self.invalid(format!("loop v{} is uniform but its end is not", var.0)));
                }
                self.forget_effects_of(body);
                self.forget_register(dst);
                if uniform && !self.reassigned.contains(var) && start_class == Class::I64 {
                    // start, start + step, …: non-negative from a non-negative
                    // start (steps are positive), multiples of gcd(start, step).
                    let from = self.facts_of(start);
                    let step_facts = Facts::of_constant(*step);
                    let facts = affine::uniform_facts(BinaryOp::Add, from, step_facts, Some(*step));
                    self.note_facts(dst.src(), facts);
                }
                let saved = self.numbered.clone();
                let mut effects = Effects::default();
                effects.collect(body);
                self.preheaders.push(Vec::new());
                self.emit(Inst::Preheader(self.preheaders.len() - 1));
                self.loops.push(self.preheaders.len() - 1);
                self.set_levels(&effects.vars, self.loops.len());
                self.levels.insert(dst, self.loops.len());
                match dst {
                    Dst::U(var) => {
                        let test = self.code.len();
                        self.emit(Inst::UniformLoopTest { var, end, exit: usize::MAX });
                        self.block(body, uniform_control)?;
                        self.emit(Inst::UniformLoopNext { var, step: *step, test });
                        let exit = self.code.len();
                        self.code[test] = Inst::UniformLoopTest { var, end, exit };
                    }
                    Dst::V(var) => {
                        self.emit(Inst::LoopBegin);
                        let test = self.code.len();
                        self.emit(Inst::LoopTest { var, end, exit: usize::MAX });
                        self.block(body, false)?;
                        self.emit(Inst::LoopNext { var, step: *step, test });
                        let exit = self.code.len();
                        self.code[test] = Inst::LoopTest { var, end, exit };
                    }
                }
                self.loops.pop();
                self.set_levels(&effects.vars, self.loops.len());
                self.numbered = saved;
                self.fresh = None;
            }
            Stmt::Barrier => {
                self.emit(Inst::Barrier);
                self.numbered.retain(|key, _| !key.is_load());
            }
            Stmt::LoadMatrix { .. } | Stmt::MatrixMultiplyAccumulate { .. } | Stmt::AsyncCopy { .. }
                if crate::kernel::collective_shape_error(self.kernel, stmt).is_some() =>
            {
                let problem = crate::kernel::collective_shape_error(self.kernel, stmt).expect("checked");
                return Err(self.invalid(problem));
            }
            Stmt::LoadMatrix { vars, array, index, transpose } => {
                self.shared_array(*array)?;
                let index = self.index(index)?;
                let mut dsts = [0u32; 4];
                for (slot, var) in dsts.iter_mut().zip(vars) {
                    let dst = self.register(false);
                    *slot = vector_number(dst);
                    self.vars.insert(*var, VarRegister { dst, class: Class::U32 });
                }
                let count = vars.len() as u8;
                self.emit(Inst::LoadMatrix { dsts, count, array: *array, index, transpose: *transpose });
            }
            Stmt::MatrixMultiplyAccumulate { kind, acc, a, b } => {
                let mut sources = Vec::with_capacity(6);
                for operand in a.iter().chain(b) {
                    let (src, class) = self.expr(operand)?;
                    sources.push(self.stable(src, class, Class::U32)?);
                }
                let mut registers = [0u32; 4];
                for (slot, var) in registers.iter_mut().zip(acc) {
                    let target = *self
                        .vars
                        .get(var)
                        .ok_or_else(|| self.invalid(format!("mma accumulator v{} has no let", var.0)))?;
                    let Dst::V(register) = target.dst else {
                        return Err(self.invalid(format!("mma accumulator v{} is uniform", var.0)));
                    };
                    *slot = register;
                }
                self.emit(Inst::Mma {
                    kind: *kind,
                    acc: registers,
                    a: [sources[0], sources[1], sources[2], sources[3]],
                    b: [sources[4], sources[5]],
                });
                for var in acc {
                    let dst = self.vars[var].dst;
                    self.forget_register(dst);
                }
            }
            Stmt::AsyncCopy { array, shared_index, buffer, index, elements, source_elements } => {
                self.shared_array(*array)?;
                self.buffer_param(*buffer)?;
                let shared_index = self.index(shared_index)?;
                let index = self.index(index)?;
                let (valid, class) = self.expr(source_elements)?;
                let valid = self.stable(valid, class, Class::I64)?;
                let (array, buffer, elements) = (*array, *buffer, *elements);
                self.emit(Inst::AsyncCopy { array, shared_index, buffer, index, elements, valid });
            }
            Stmt::AsyncCommit => self.emit(Inst::AsyncCommit),
            Stmt::AsyncWait { pending } => {
                self.emit(Inst::AsyncWait { pending: *pending });
                self.numbered.retain(|key, _| !key.is_load());
            }
        }
        Ok(())
    }

    /// Compiles a nested block whose values are not visible after it.
    fn nested(&mut self, body: &[Stmt], uniform_control: bool) -> Result<(), SimError> {
        let saved = self.numbered.clone();
        self.block(body, uniform_control)?;
        self.numbered = saved;
        self.fresh = None;
        Ok(())
    }

    /// Writes `src` (of `class`) to `dst` as `class_to`; the producing
    /// instruction is retargeted to `dst` when it just made `src` fresh.
    fn define(&mut self, dst: Dst, src: Src, class: Class, class_to: Class, masked: bool) -> Result<(), SimError> {
        if matches!(dst, Dst::U(_)) && matches!(src, Src::V(_)) {
            return Err(self.invalid("a uniform variable is given a divergent value".into()));
        }
        if class != class_to {
            let converted = self.scratch_or(dst, masked);
            self.emit(Inst::Convert { from: class, to: class_to, dst: converted, a: src });
            if masked {
                self.emit(Inst::Copy { dst, a: converted.src(), masked: true });
            }
            return Ok(());
        }
        if src == dst.src() {
            return Ok(());
        }
        if let Some((fresh, key)) = self.fresh {
            let same_kind = matches!((fresh, dst), (Dst::V(_), Dst::V(_)) | (Dst::U(_), Dst::U(_)));
            if fresh.src() == src && same_kind && !masked {
                self.numbered.remove(&key);
                set_dst(self.code.last_mut().expect("fresh value's instruction"), dst);
                self.levels.insert(dst, self.loops.len());
                self.fresh = None;
                return Ok(());
            }
        }
        self.emit(Inst::Copy { dst, a: src, masked });
        Ok(())
    }

    /// `dst` itself for an unmasked write, else a new register of its kind.
    fn scratch_or(&mut self, dst: Dst, masked: bool) -> Dst {
        if masked {
            self.register(matches!(dst, Dst::U(_)))
        } else {
            dst
        }
    }

    /// `src` as `class_to` in a register no later assignment changes.
    fn stable(&mut self, src: Src, class: Class, class_to: Class) -> Result<Src, SimError> {
        let is_var = self.vars.values().any(|v| v.dst.src() == src);
        if class == class_to && !is_var {
            return Ok(src);
        }
        let dst = self.register(!matches!(src, Src::V(_)));
        if class == class_to {
            self.emit(Inst::Copy { dst, a: src, masked: false });
        } else {
            self.emit(Inst::Convert { from: class, to: class_to, dst, a: src });
        }
        Ok(dst.src())
    }

    /// Drops numbered values that read `dst` (it is about to change).
    fn forget_register(&mut self, dst: Dst) {
        let src = dst.src();
        self.numbered.retain(|key, _| !key.operands().contains(&src));
        self.fresh = None;
    }

    fn forget_memory(&mut self, memory: Memory) {
        self.numbered.retain(|key, _| !key.loads(memory));
        self.fresh = None;
    }

    /// Drops numbered values a block may invalidate: those reading variables it
    /// assigns and memory it stores to (every load when it has a barrier).
    fn forget_effects_of(&mut self, body: &[Stmt]) {
        let mut effects = Effects::default();
        effects.collect(body);
        for var in &effects.vars {
            if let Some(register) = self.vars.get(var).copied() {
                self.forget_register(register.dst);
            }
        }
        if effects.barrier {
            self.numbered.retain(|key, _| !key.is_load());
        }
        for memory in effects.memories {
            self.forget_memory(memory);
        }
        self.fresh = None;
    }

    fn buffer_param(&self, buffer: usize) -> Result<DType, SimError> {
        match self.kernel.params.get(buffer) {
            Some(Param::Buffer { dtype, .. }) => Ok(*dtype),
            _ => Err(self.invalid(format!("parameter {buffer} is not a buffer"))),
        }
    }

    fn shared_array(&self, array: usize) -> Result<DType, SimError> {
        self.kernel.shared.get(array).map(|a| a.dtype).ok_or_else(|| self.invalid(format!("no shared array {array}")))
    }

    fn memory(&self, memory: Memory) -> Result<DType, SimError> {
        match memory {
            Memory::Buffer(buffer) => self.buffer_param(buffer),
            Memory::Shared(array) => self.shared_array(array),
        }
    }

    fn memory_dtype(&self, memory: Memory) -> DType {
        self.kernel.memory_dtype(memory).expect("checked by `memory`")
    }

    /// An element index: any integer expression, as i64.
    fn index(&mut self, index: &Expr) -> Result<Src, SimError> {
        let (src, class) = self.expr(index)?;
        match class {
            Class::I64 | Class::I32 | Class::Bool => Ok(src),
            // Unsigned indices are below 2^63 in any memory, so their bits are the i64 index.
            Class::U32 | Class::U64 => Ok(src),
            _ => Err(self.invalid(format!("an index of class {class:?}"))),
        }
    }

    /// A load of element `index` of `memory`. An index `vector + uniform`
    /// just computed becomes the load's own `index + base`.
    fn load(&mut self, memory: Memory, dtype: DType, index: Src) -> (Src, Class) {
        if let Some(pattern) = self.affine(index) {
            let ((start, base), stride) = (self.split_sum(pattern.base), pattern.stride);
            let key = Key::LoadAffine(memory, start, base, stride, 0);
            let at = AffineAccess { memory, start, base, stride, offset: 0, piece: false };
            return self
                .numbered(key, Class::loaded(dtype), false, |dst| Inst::LoadAffine { dst: vector_number(dst), at });
        }
        // A uniform index: the addition that made it, if still valid, folds in.
        let mut split = if is_uniform(index) { self.split_sum(index) } else { (index, Src::K(0)) };
        if let Some((dst, Key::Binary(BinaryOp::Add, Class::I64 | Class::I32, a, b))) = self.fresh {
            if dst.src() == index {
                match (a, b) {
                    (Src::V(_), Src::U(_) | Src::K(_)) => split = (a, b),
                    (Src::U(_) | Src::K(_), Src::V(_)) => split = (b, a),
                    _ => {}
                }
                if split.0 != index {
                    self.take_fresh();
                }
            }
        }
        let (index, base) = split;
        let uniform = is_uniform(index) && is_uniform(base);
        let key = Key::Load(memory, index, base, 0);
        self.numbered(key, Class::loaded(dtype), uniform, |dst| Inst::Load {
            dst,
            memory,
            index,
            base,
            offset: 0,
            piece: false,
        })
    }

    /// Removes the fresh value's instruction (the caller folds it into the
    /// instruction that consumes it).
    fn take_fresh(&mut self) {
        if let Some((_, key)) = self.fresh.take() {
            self.code.pop();
            self.numbered.remove(&key);
        }
    }

    fn expr(&mut self, expr: &Expr) -> Result<(Src, Class), SimError> {
        Ok(match expr {
            Expr::Literal(literal) => {
                let bits = match *literal {
                    Literal::F32(v) => v.to_bits() as u64,
                    Literal::I64(v) => v as u64,
                    Literal::I32(v) => v as i64 as u64,
                    Literal::Bool(v) => v as u64,
                };
                (Src::K(bits), Class::declared(literal.dtype()))
            }
            Expr::Var(var) => {
                let register =
                    self.vars.get(var).ok_or_else(|| self.invalid(format!("v{} is read before its let", var.0)))?;
                (register.dst.src(), register.class)
            }
            Expr::Param(index) => match self.kernel.params.get(*index) {
                Some(Param::Scalar { dtype, .. }) => {
                    let class = Class::declared(*dtype);
                    let param = *index;
                    let found = self.numbered(Key::Param(param), class, true, |dst| Inst::Param {
                        dst: match dst {
                            Dst::U(r) => r,
                            Dst::V(_) => unreachable!("parameters are uniform"),
                        },
                        param,
                    });
                    if self.nonneg_params && !class.is_float() {
                        self.note_facts(found.0, Facts { align: 1, nonneg: true });
                    }
                    found
                }
                _ => return Err(self.invalid(format!("parameter {index} is not a scalar"))),
            },
            Expr::Special(which) => {
                let uniform = !matches!(which, Special::ThreadIndex | Special::Lane);
                let which = *which;
                let (src, class) =
                    self.numbered(Key::Special(which), Class::I32, uniform, |dst| Inst::Special { dst, which });
                match (which, src) {
                    (Special::ThreadIndex, Src::V(r)) => {
                        let (base, _) = self.numbered(Key::WarpBase, Class::I32, true, |dst| Inst::WarpBase {
                            dst: uniform_number(dst),
                        });
                        let base_facts = Facts { align: self.warp_size as i64, nonneg: true };
                        self.note_facts(base, base_facts);
                        self.patterns.insert(r, Affine { base, stride: 1, base_facts });
                    }
                    (Special::Lane, Src::V(r)) => {
                        let zero = Src::K(0);
                        self.patterns.insert(r, Affine { base: zero, stride: 1, base_facts: Facts::of_constant(0) });
                    }
                    _ => self.note_facts(src, Facts { align: 1, nonneg: true }),
                }
                (src, class)
            }
            Expr::Unary(op, a) => {
                let (a, class) = self.expr(a)?;
                if let Src::K(bits) = a {
                    let mut out = [0];
                    values::unary_lanes(*op, class, &mut out, &[bits]);
                    return Ok((Src::K(out[0]), class));
                }
                let op = *op;
                self.numbered(Key::Unary(op, class, a), class, is_uniform(a), |dst| Inst::Unary { op, class, dst, a })
            }
            Expr::Binary(op, a, b) => {
                let (a, class_a) = self.expr(a)?;
                let (b, class_b) = self.expr(b)?;
                if class_a != class_b {
                    return Err(self.invalid(format!("{op:?} of {class_a:?} and {class_b:?}")));
                }
                let class = class_a;
                let result = values::binary_class(*op, class);
                if let (Src::K(x), Src::K(y)) = (a, b) {
                    let mut out = [0];
                    values::binary_lanes(*op, class, &mut out, &[x], &[y]);
                    return Ok((Src::K(out[0]), result));
                }
                if matches!(class, Class::I64 | Class::I32) {
                    match (op, a, b) {
                        (BinaryOp::Add, x, Src::K(0)) | (BinaryOp::Add, Src::K(0), x) => return Ok((x, class)),
                        (BinaryOp::Sub, x, Src::K(0)) => return Ok((x, class)),
                        (BinaryOp::Mul, x, Src::K(1)) | (BinaryOp::Mul, Src::K(1), x) => return Ok((x, class)),
                        _ => {}
                    }
                }
                let op = *op;
                let uniform = is_uniform(a) && is_uniform(b);
                if class == Class::I64 {
                    if uniform {
                        return Ok((self.uniform_i64(op, a, b), result));
                    }
                    if let Some(found) = self.affine_binary(op, a, b) {
                        return Ok(found);
                    }
                }
                if let (BinaryOp::Add, Class::F32, Some((product, Key::Binary(BinaryOp::Mul, Class::F32, p, q)))) =
                    (op, class, self.fresh)
                {
                    let product = product.src();
                    let acc = match (a == product, b == product) {
                        (false, true) => Some(a),
                        (true, false) => Some(b),
                        _ => None,
                    };
                    if let Some(acc) = acc {
                        self.take_fresh();
                        let key = Key::Binary(op, class, a, b);
                        return Ok(self.numbered(key, result, uniform, |dst| Inst::MulAdd { dst, acc, a: p, b: q }));
                    }
                }
                self.numbered(Key::Binary(op, class, a, b), result, uniform, |dst| Inst::Binary {
                    op,
                    class,
                    dst,
                    a,
                    b,
                })
            }
            Expr::Select(c, a, b) => {
                let (c, _) = self.expr(c)?;
                let (a, class) = self.expr(a)?;
                let (b, _) = self.expr(b)?;
                if let Src::K(bits) = c {
                    return Ok((if bits != 0 { a } else { b }, class));
                }
                let uniform = is_uniform(c) && is_uniform(a) && is_uniform(b);
                self.numbered(Key::Select(c, a, b), class, uniform, |dst| Inst::Select { dst, c, a, b })
            }
            Expr::Cast(dtype, a) => {
                let (a, from) = self.expr(a)?;
                let to = Class::declared(*dtype);
                if from == to {
                    return Ok((a, from));
                }
                if let Src::K(bits) = a {
                    return Ok((Src::K(values::convert(from, to, bits)), to));
                }
                let converted = self.numbered(Key::Convert(from, to, a), to, is_uniform(a), |dst| Inst::Convert {
                    from,
                    to,
                    dst,
                    a,
                });
                if (from, to) == (Class::I32, Class::I64) {
                    self.widen_pattern(a, converted.0);
                }
                converted
            }
            Expr::Convert { dtype, rounding, value } => {
                let (a, from) = self.expr(value)?;
                let (to, rounding) = (Class::declared(*dtype), *rounding);
                if let Src::K(bits) = a {
                    return Ok((Src::K(values::convert_rounded(from, to, rounding, bits)), to));
                }
                self.numbered(Key::RoundConvert(from, to, rounding, a), to, is_uniform(a), |dst| Inst::RoundConvert {
                    from,
                    to,
                    rounding,
                    dst,
                    a,
                })
            }
            Expr::Bitcast(dtype, value) => {
                let (a, _) = self.expr(value)?;
                let to = Class::declared(*dtype);
                if let Src::K(bits) = a {
                    return Ok((Src::K(values::bitcast(to, bits)), to));
                }
                self.numbered(Key::Bitcast(to, a), to, is_uniform(a), |dst| Inst::Bitcast { to, dst, a })
            }
            Expr::Fma(a, b, c) => {
                let (a, _) = self.expr(a)?;
                let (b, _) = self.expr(b)?;
                let (c, _) = self.expr(c)?;
                if let (Src::K(x), Src::K(y), Src::K(z)) = (a, b, c) {
                    return Ok((Src::K(values::fma(x, y, z)), Class::F32));
                }
                let uniform = is_uniform(a) && is_uniform(b) && is_uniform(c);
                self.numbered(Key::Fma(a, b, c), Class::F32, uniform, |dst| Inst::Fma { dst, a, b, c })
            }
            Expr::Load { buffer, index } => {
                let dtype = self.buffer_param(*buffer)?;
                let index = self.index(index)?;
                self.load(Memory::Buffer(*buffer), dtype, index)
            }
            Expr::SharedLoad { array, index } => {
                let dtype = self.shared_array(*array)?;
                let index = self.index(index)?;
                self.load(Memory::Shared(*array), dtype, index)
            }
            Expr::ShuffleXor { value, mask } => {
                let (a, class) = self.expr(value)?;
                if is_uniform(a) {
                    return Ok((a, class));
                }
                let dst = self.register(false);
                let Dst::V(dst) = dst else { unreachable!("a vector register") };
                self.emit(Inst::Shuffle { dst, a, xor: *mask });
                (Src::V(dst), class)
            }
        })
    }
}

/// Lane patterns and integer facts ([`super::affine`]) as the compiler
/// tracks them: recorded for registers written once per value (numbered
/// temporaries and variables never assigned), dropped when one is written.
impl Compiler<'_> {
    fn forget_pattern(&mut self, dst: Dst) {
        match dst {
            Dst::V(r) => {
                self.patterns.remove(&r);
            }
            Dst::U(r) => {
                self.facts.remove(&r);
            }
        }
    }

    fn note_facts(&mut self, src: Src, facts: Facts) {
        if let Src::U(r) = src {
            self.facts.insert(r, facts);
        }
    }

    fn facts_of(&self, src: Src) -> Facts {
        match src {
            Src::K(bits) => Facts::of_constant(bits as i64),
            Src::U(r) => self.facts.get(&r).copied().unwrap_or(Facts::NONE),
            Src::V(_) => Facts::NONE,
        }
    }

    /// The pattern of a lane vector known affine in the lane.
    fn affine(&self, src: Src) -> Option<Affine> {
        match src {
            Src::V(r) => self.patterns.get(&r).copied(),
            _ => None,
        }
    }

    /// `src` as a pattern (a uniform value has stride 0), if it is one.
    fn as_pattern(&self, src: Src) -> Option<Affine> {
        match src {
            Src::V(_) => self.affine(src),
            _ => Some(Affine::uniform(src, self.facts_of(src))),
        }
    }

    /// `dst`, just defined as `src` and never written again, is known as `src` is.
    fn inherit_pattern(&mut self, dst: Dst, src: Src) {
        match dst {
            Dst::V(r) => {
                if let Some(pattern) = self.affine(src) {
                    self.patterns.insert(r, pattern);
                }
            }
            Dst::U(_) => {
                let facts = self.facts_of(src);
                self.note_facts(dst.src(), facts);
            }
        }
    }

    /// What is known of `to`, the i64 widening of the i32 `from`. Only thread
    /// coordinates are i32 patterns, far below 2^31, so the lanes widen exactly.
    fn widen_pattern(&mut self, from: Src, to: Src) {
        match (self.affine(from), to) {
            (Some(pattern), Src::V(r)) => {
                let base = match pattern.base {
                    Src::K(bits) => Src::K(values::convert(Class::I32, Class::I64, bits)),
                    a => {
                        let (from, to) = (Class::I32, Class::I64);
                        self.numbered(Key::Convert(from, to, a), to, true, |dst| Inst::Convert { from, to, dst, a }).0
                    }
                };
                self.note_facts(base, pattern.base_facts);
                self.patterns.insert(r, Affine { base, ..pattern });
            }
            _ if is_uniform(from) => {
                let facts = self.facts_of(from);
                self.note_facts(to, facts);
            }
            _ => {}
        }
    }

    /// The i64 `a op b` of operands at least one of which is a lane vector,
    /// when the result is affine in the lane: a uniform register when it is
    /// the same in every lane, else the lane vector with its pattern noted.
    fn affine_binary(&mut self, op: BinaryOp, a: Src, b: Src) -> Option<(Src, Class)> {
        let (pa, pb) = (self.as_pattern(a)?, self.as_pattern(b)?);
        let warp_size = self.warp_size;
        let pattern = affine::binary(op, pa, pb, warp_size, &mut |op, x, y| self.uniform_i64(op, x, y))?;
        if pattern.stride == 0 {
            self.note_facts(pattern.base, pattern.base_facts);
            return Some((pattern.base, values::binary_class(op, Class::I64)));
        }
        let class = Class::I64;
        let found =
            self.numbered(Key::Binary(op, class, a, b), class, false, |dst| Inst::Binary { op, class, dst, a, b });
        if let Src::V(r) = found.0 {
            self.patterns.insert(r, pattern);
        }
        Some(found)
    }

    /// The uniform i64 `a op b`: folded when constant, else computed once
    /// per warp, with what is known of the result noted.
    fn uniform_i64(&mut self, op: BinaryOp, a: Src, b: Src) -> Src {
        let class = Class::I64;
        let result = values::binary_class(op, class);
        if let (Src::K(x), Src::K(y)) = (a, b) {
            let mut out = [0];
            values::binary_lanes(op, class, &mut out, &[x], &[y]);
            return Src::K(out[0]);
        }
        match (op, a, b) {
            (BinaryOp::Add, x, Src::K(0)) | (BinaryOp::Add, Src::K(0), x) => return x,
            (BinaryOp::Sub, x, Src::K(0)) => return x,
            (BinaryOp::Mul, x, Src::K(1)) | (BinaryOp::Mul, Src::K(1), x) => return x,
            (BinaryOp::Div, x, Src::K(1)) => return x,
            _ => {}
        }
        let constant = match b {
            Src::K(bits) => Some(bits as i64),
            _ => None,
        };
        let facts = affine::uniform_facts(op, self.facts_of(a), self.facts_of(b), constant);
        let key = Key::Binary(op, class, a, b);
        let (src, _) = self.numbered(key, result, true, |dst| Inst::Binary { op, class, dst, a, b });
        if result == class {
            self.note_facts(src, facts);
        }
        if let (BinaryOp::Add, Src::U(r)) = (op, src) {
            self.sums.insert(r, key);
        }
        src
    }

    /// `sum` as two uniform addends: those of the i64 addition that made
    /// it, while that addition is still valid (its operands unassigned since,
    /// as value numbering keeps it), else `sum` and 0. An affine access adds
    /// them itself, and the addition, if nothing else reads it, is dead.
    fn split_sum(&self, sum: Src) -> (Src, Src) {
        if let Src::U(r) = sum {
            if let Some(&key @ Key::Binary(BinaryOp::Add, Class::I64, x, y)) = self.sums.get(&r) {
                if self.numbered.get(&key).is_some_and(|&(found, _)| found == sum) {
                    return (x, y);
                }
            }
        }
        (sum, Src::K(0))
    }

    /// One element of a vector load (its [`Inst::VectorAccess`] counts the traffic).
    fn emit_piece_load(&mut self, dst: Dst, memory: Memory, index: Src, offset: u32) {
        match (self.affine(index), dst) {
            (Some(pattern), Dst::V(r)) => {
                let (start, base) = self.split_sum(pattern.base);
                let stride = pattern.stride;
                let at = AffineAccess { memory, start, base, stride, offset, piece: true };
                self.emit(Inst::LoadAffine { dst: r, at })
            }
            _ => self.emit(Inst::Load { dst, memory, index, base: Src::K(0), offset, piece: true }),
        }
    }

    /// A store of `value` at element `index + offset` of `memory`.
    fn store(&mut self, memory: Memory, index: Src, offset: u32, value: Src, class: Class, piece: bool) {
        match self.affine(index) {
            Some(pattern) => {
                let (start, base) = self.split_sum(pattern.base);
                let stride = pattern.stride;
                let at = AffineAccess { memory, start, base, stride, offset, piece };
                self.emit(Inst::StoreAffine { at, value, class })
            }
            None => self.emit(Inst::Store { memory, index, offset, value, class, piece }),
        }
    }
}

/// Variables written after their `let`: assigned, those a vector load
/// defines, and (with `loops`) loop variables.
fn assigned_vars(body: &[Stmt], loops: bool) -> HashSet<Var> {
    fn walk(body: &[Stmt], loops: bool, assigned: &mut HashSet<Var>) {
        for stmt in body {
            match stmt {
                Stmt::Assign { var, .. } => {
                    assigned.insert(*var);
                }
                Stmt::VectorLoad { vars, .. }
                | Stmt::LoadMatrix { vars, .. }
                | Stmt::MatrixMultiplyAccumulate { acc: vars, .. } => assigned.extend(vars.iter().copied()),
                Stmt::For { var, body, .. } => {
                    if loops {
                        assigned.insert(*var);
                    }
                    walk(body, loops, assigned);
                }
                Stmt::If { then, otherwise, .. } => {
                    walk(then, loops, assigned);
                    walk(otherwise, loops, assigned);
                }
                _ => {}
            }
        }
    }
    let mut assigned = HashSet::new();
    walk(body, loops, &mut assigned);
    assigned
}

fn vector_number(dst: Dst) -> u32 {
    match dst {
        Dst::V(r) => r,
        Dst::U(_) => unreachable!("asked for a vector register"),
    }
}

fn uniform_number(dst: Dst) -> u32 {
    match dst {
        Dst::U(r) => r,
        Dst::V(_) => unreachable!("asked for a uniform register"),
    }
}

fn is_uniform(src: Src) -> bool {
    !matches!(src, Src::V(_))
}

fn set_dst(inst: &mut Inst, to: Dst) {
    match inst {
        writes_register!(dst) => *dst = to,
        Inst::Param { dst, .. } | Inst::WarpBase { dst } => match to {
            Dst::U(r) => *dst = r,
            Dst::V(_) => unreachable!("same kind checked"),
        },
        Inst::LoadAffine { dst, .. } | Inst::MulAddAffine { dst, .. } | Inst::Shuffle { dst, .. } => match to {
            Dst::V(r) => *dst = r,
            Dst::U(_) => unreachable!("same kind checked"),
        },
        other => unreachable!("{other:?} makes no fresh value"),
    }
}

/// The variables a block assigns and the memory it writes.
#[derive(Default)]
struct Effects {
    vars: HashSet<Var>,
    memories: HashSet<Memory>,
    barrier: bool,
}

impl Effects {
    fn collect(&mut self, body: &[Stmt]) {
        for stmt in body {
            match stmt {
                Stmt::Let { var, .. } | Stmt::Assign { var, .. } => {
                    self.vars.insert(*var);
                }
                Stmt::VectorLoad { vars, .. }
                | Stmt::LoadMatrix { vars, .. }
                | Stmt::MatrixMultiplyAccumulate { acc: vars, .. } => self.vars.extend(vars.iter().copied()),
                // A wait lands copies in shared memory: loads are forgotten, as at a barrier.
                Stmt::AsyncWait { .. } => self.barrier = true,
                Stmt::AsyncCopy { .. } | Stmt::AsyncCommit => {}
                Stmt::Store { buffer, .. } | Stmt::AtomicAdd { buffer, .. } => {
                    self.memories.insert(Memory::Buffer(*buffer));
                }
                Stmt::SharedStore { array, .. } => {
                    self.memories.insert(Memory::Shared(*array));
                }
                Stmt::VectorStore { memory, .. } => {
                    self.memories.insert(*memory);
                }
                Stmt::If { then, otherwise, .. } => {
                    self.collect(then);
                    self.collect(otherwise);
                }
                Stmt::For { var, body, .. } => {
                    self.vars.insert(*var);
                    self.collect(body);
                }
                Stmt::Barrier => self.barrier = true,
            }
        }
    }
}
