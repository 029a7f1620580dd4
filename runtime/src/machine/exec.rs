//! Running a [`Program`]: blocks spread over cores, warps that run until
//! they wait and resume when what they wait for has happened.
//!
//! Each warp is a program counter, a lane mask, a stack of saved masks (one
//! per divergent `if` or loop it is inside) and its registers. A block's
//! scheduler runs its ready warps in a seeded random order, each until it
//! reaches a barrier (it then waits) or the end of the program. When every
//! unfinished warp waits at the same barrier, they are released together; a
//! barrier some warps wait at while others have finished, or warps waiting
//! at different barriers, is reported — the wait can never be satisfied.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::kernel::{Memory, Param, Special};
use crate::sim::SimError;
use crate::{DType, SymbolBindings};

use super::check::{GlobalWriters, SharedChecker, Violation};
use super::memory::{SharedMemory, Window};
use super::program::{AffineAccess, Dst, Inst, Program, Src};
use super::tensor_core;
use super::values::{self, Class};

/// How to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MachineOptions {
    /// 32 (NVIDIA) or 64 (AMD wave64).
    pub warp_size: usize,
    /// Seeds the block and warp orders.
    pub seed: u64,
    /// Worker threads for the blocks of one launch; 0: one per core
    /// (capped by `KILN_SIM_THREADS`).
    pub threads: usize,
    /// Count memory traffic and shared-memory bank conflicts ([`Counters`]).
    pub counters: bool,
    /// The checked mode ([`super::check`]): shared-memory races by
    /// happens-before, uninitialized shared reads, global writes of one
    /// byte by two blocks. Blocks then run on one thread.
    pub check: bool,
}

/// What a launch asked of memory, counted the way the hardware serves it:
/// one request per warp-wide access (a vector access is one request of its
/// whole width); global requests touch 32-byte sectors; shared requests are
/// split into phases — the whole warp for accesses of up to 4 bytes per
/// lane, half-warps for 8, quarter-warps for 16 — and a phase takes as many
/// wavefronts as the most distinct 4-byte words any one of the 32 banks
/// holds among its lanes (lanes reading the same word share it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub global_requests: u64,
    pub global_bytes_read: u64,
    pub global_bytes_written: u64,
    pub global_sectors_read: u64,
    pub global_sectors_written: u64,
    pub shared_requests: u64,
    pub shared_wavefronts: u64,
    /// Wavefronts beyond one per phase: the replays bank conflicts cost.
    pub shared_conflict_wavefronts: u64,
    /// Global traffic per kernel parameter (empty entries for scalars), so
    /// a test can say "streams the weight once, coalesced".
    pub buffers: Vec<Traffic>,
}

/// Global-memory traffic of one buffer parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub sectors_read: u64,
    pub sectors_written: u64,
}

impl Traffic {
    fn add(&mut self, other: &Traffic) {
        self.bytes_read += other.bytes_read;
        self.bytes_written += other.bytes_written;
        self.sectors_read += other.sectors_read;
        self.sectors_written += other.sectors_written;
    }
}

impl Counters {
    /// The traffic of buffer parameter `param` (zero when it has none).
    pub fn buffer(&self, param: usize) -> Traffic {
        self.buffers.get(param).copied().unwrap_or_default()
    }

    fn add(&mut self, other: &Counters) {
        if self.buffers.len() < other.buffers.len() {
            self.buffers.resize(other.buffers.len(), Traffic::default());
        }
        for (mine, theirs) in self.buffers.iter_mut().zip(&other.buffers) {
            mine.add(theirs);
        }
        self.global_requests += other.global_requests;
        self.global_bytes_read += other.global_bytes_read;
        self.global_bytes_written += other.global_bytes_written;
        self.global_sectors_read += other.global_sectors_read;
        self.global_sectors_written += other.global_sectors_written;
        self.shared_requests += other.shared_requests;
        self.shared_wavefronts += other.shared_wavefronts;
        self.shared_conflict_wavefronts += other.shared_conflict_wavefronts;
    }

    /// One request: each active lane of `mask` accesses `bytes` bytes at
    /// element `indices[lane] + offset` of `access`.
    fn request(&mut self, access: &Access<'_>, indices: &[u64], offset: i64, mask: u64, bytes: usize, write: bool) {
        let lanes: Vec<(u32, usize)> = active(mask)
            .map(|lane| {
                (lane, ((indices[lane as usize] as i64).wrapping_add(offset) as usize).wrapping_mul(access.size))
            })
            .collect();
        match &access.target {
            Target::Global(window) => {
                let mut sectors: Vec<usize> = Vec::new();
                for &(_, at) in &lanes {
                    let address = window.address().wrapping_add(at);
                    sectors.extend(address / 32..=(address + bytes - 1) / 32);
                }
                sectors.sort_unstable();
                sectors.dedup();
                self.global_requests += 1;
                let moved = (lanes.len() * bytes) as u64;
                let touched = sectors.len() as u64;
                let traffic = if write {
                    self.global_bytes_written += moved;
                    self.global_sectors_written += touched;
                    Traffic { bytes_written: moved, sectors_written: touched, ..Traffic::default() }
                } else {
                    self.global_bytes_read += moved;
                    self.global_sectors_read += touched;
                    Traffic { bytes_read: moved, sectors_read: touched, ..Traffic::default() }
                };
                if let Some(param) = access.buffer {
                    if self.buffers.len() <= param {
                        self.buffers.resize(param + 1, Traffic::default());
                    }
                    self.buffers[param].add(&traffic);
                }
            }
            Target::Shared { offset: base, .. } => {
                let phase_lanes = match bytes {
                    0..=4 => 32,
                    5..=8 => 16,
                    _ => 8,
                };
                self.shared_requests += 1;
                let mut phases: Vec<Vec<usize>> = Vec::new();
                for &(lane, at) in &lanes {
                    let phase = lane as usize / phase_lanes;
                    if phases.len() <= phase {
                        phases.resize(phase + 1, Vec::new());
                    }
                    let address = base + at;
                    phases[phase].extend(address / 4..(address + bytes).div_ceil(4));
                }
                for mut words in phases.into_iter().filter(|words| !words.is_empty()) {
                    words.sort_unstable();
                    words.dedup();
                    let mut per_bank = [0u64; 32];
                    for word in words {
                        per_bank[word % 32] += 1;
                    }
                    let degree = per_bank.iter().copied().max().unwrap_or(1).max(1);
                    self.shared_wavefronts += degree;
                    self.shared_conflict_wavefronts += degree - 1;
                }
            }
        }
    }
}

impl Default for MachineOptions {
    fn default() -> MachineOptions {
        MachineOptions { warp_size: 32, seed: 0x5eed, threads: 0, counters: false, check: false }
    }
}

/// Memory a launch may address: borrowed byte regions, each 16-byte aligned.
pub enum Region<'a> {
    ReadOnly(&'a [u8]),
    ReadWrite(&'a mut [u8]),
}

/// What one kernel parameter is bound to.
#[derive(Clone, Debug, PartialEq)]
pub enum Binding {
    /// Bytes `range` of region `region` (the start 16-byte aligned).
    Buffer {
        region: usize,
        range: std::ops::Range<usize>,
    },
    Scalar(f64),
}

/// Runs `program` once over `regions` in place; the grid size is evaluated
/// under `symbols`. Blocks may run on several threads: a kernel must not
/// depend on another block's writes, as on a GPU. Returns the launch's
/// memory counters (all zero unless [`MachineOptions::counters`]).
pub fn launch(
    program: &Program,
    regions: &mut [Region<'_>],
    bindings: &[Binding],
    symbols: &SymbolBindings,
    options: MachineOptions,
) -> Result<Counters, SimError> {
    let invalid = |message: String| SimError::Invalid { kernel: program.name.clone(), message };
    if let Some(fallback) = &program.fallback {
        let negative = program.params.iter().zip(bindings).any(|(param, binding)| {
            matches!((param, binding), (Param::Scalar { dtype, .. }, Binding::Scalar(value))
                if !Class::declared(*dtype).is_float() && *value < 0.0)
        });
        if negative {
            return launch(fallback, regions, bindings, symbols, options);
        }
    }
    if options.warp_size != program.warp_size {
        let (asked, compiled) = (options.warp_size, program.warp_size);
        return Err(invalid(format!("a launch with warps of {asked} lanes of a program compiled for {compiled}")));
    }
    if bindings.len() != program.params.len() {
        return Err(invalid(format!("{} arguments for {} parameters", bindings.len(), program.params.len())));
    }
    let bases: Vec<Window> = regions
        .iter_mut()
        .map(|region| match region {
            Region::ReadOnly(bytes) => Window::read_only(bytes),
            Region::ReadWrite(bytes) => Window::read_write(bytes),
        })
        .collect();
    let mut windows = Vec::with_capacity(bindings.len());
    let mut scalars = Vec::with_capacity(bindings.len());
    for (param, binding) in program.params.iter().zip(bindings) {
        match (param, binding) {
            (Param::Buffer { name, writable, .. }, Binding::Buffer { region, range }) => {
                let base = bases.get(*region).ok_or_else(|| invalid(format!("`{name}`: no region {region}")))?;
                let window = base.sub(range.clone()).ok_or_else(|| {
                    invalid(format!("`{name}`: bytes {range:?} are not a 16-byte-aligned range of region {region}"))
                })?;
                if *writable && !window.writable() {
                    return Err(invalid(format!("`{name}` is written but bound to read-only memory")));
                }
                windows.push(Some(window));
                scalars.push(0);
            }
            (Param::Scalar { dtype, .. }, Binding::Scalar(value)) => {
                windows.push(None);
                scalars.push(values::from_f64(Class::declared(*dtype), *value));
            }
            _ => return Err(invalid(format!("argument for `{}` has the wrong kind", param.name()))),
        }
    }
    let blocks = program.grid_blocks.evaluate(symbols).map_err(|e| invalid(e.to_string()))?;
    if blocks < 0 {
        return Err(invalid(format!("{blocks} blocks")));
    }
    let mut random = Random(options.seed);
    let mut order: Vec<u64> = (0..blocks as u64).collect();
    for i in (1..order.len()).rev() {
        let j = (random.next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let work: Vec<(u64, u64)> = order.into_iter().map(|block| (block, random.next())).collect();
    let buffers = windows
        .iter()
        .enumerate()
        .map(|(buffer, window)| window.map(|window| Access::global(program, buffer, window)))
        .collect();
    let launch = Launch {
        program,
        buffers,
        shared: (0..program.shared.len()).map(|array| Access::shared(program, array)).collect(),
        scalars,
        blocks: blocks as u64,
        warp_size: options.warp_size,
        counting: options.counters,
        checking: options.check,
    };
    let workers = worker_count(program, options, work.len());
    if workers <= 1 {
        let mut runner = BlockRunner::new(&launch);
        for &(block, seed) in &work {
            runner.run(block, seed)?;
        }
        return Ok(runner.counters);
    }
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<(usize, SimError)>> = Mutex::new(None);
    let total = Mutex::new(Counters::default());
    let work_on_blocks = || {
        let mut runner = BlockRunner::new(&launch);
        loop {
            let position = next.fetch_add(1, Ordering::Relaxed);
            if position >= work.len() || stop.load(Ordering::Relaxed) {
                break;
            }
            let (block, seed) = work[position];
            if let Err(error) = runner.run(block, seed) {
                let mut first = failure.lock().unwrap_or_else(|p| p.into_inner());
                if first.as_ref().is_none_or(|(at, _)| position < *at) {
                    *first = Some((position, error));
                }
                stop.store(true, Ordering::Relaxed);
                break;
            }
        }
        total.lock().unwrap_or_else(|p| p.into_inner()).add(&runner.counters);
    };
    // The calling thread is one of the workers.
    std::thread::scope(|scope| {
        for _ in 1..workers {
            scope.spawn(work_on_blocks);
        }
        work_on_blocks();
    });
    match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some((_, error)) => Err(error),
        None => Ok(total.into_inner().unwrap_or_else(|p| p.into_inner())),
    }
}

/// Threads for one launch: blocks are independent, so they spread over the
/// cores; kernels with atomics and small grids stay on one thread.
fn worker_count(program: &Program, options: MachineOptions, blocks: usize) -> usize {
    if program.has_atomics || options.check {
        return 1;
    }
    let available = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let cap = std::env::var("KILN_SIM_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(available);
    let wanted = if options.threads == 0 { available.min(cap) } else { options.threads };
    wanted.min(blocks / 2).max(1)
}

struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 11
    }
}

impl<'p> Launch<'p> {
    /// How `memory` is accessed in this launch.
    #[inline]
    fn access(&self, memory: Memory) -> &Access<'p> {
        match memory {
            Memory::Buffer(buffer) => self.buffers[buffer].as_ref().expect("the compiler checked buffer parameters"),
            Memory::Shared(array) => &self.shared[array],
        }
    }
}

/// What every block of one launch shares.
struct Launch<'p> {
    program: &'p Program,
    /// Per parameter: how its memory is accessed (buffers) or nothing (scalars).
    buffers: Vec<Option<Access<'p>>>,
    /// Per shared array: how it is accessed.
    shared: Vec<Access<'p>>,
    /// Per parameter: its register bits (scalars) or 0.
    scalars: Vec<u64>,
    blocks: u64,
    warp_size: usize,
    counting: bool,
    checking: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Ready,
    /// Waiting at the barrier at this pc.
    AtBarrier(usize),
    Done,
}

struct Warp {
    pc: usize,
    mask: u64,
    /// The lanes that exist (the block's last warp may be partial).
    full: u64,
    /// Per divergent construct: the mask before it and, for an `if`, the
    /// lanes of its `else`.
    stack: Vec<(u64, u64)>,
    vector: Vec<u64>,
    uniform: Vec<u64>,
    state: State,
    /// Per lane: its cp.async copies not yet completed.
    copies: Vec<AsyncQueue>,
}

/// One element a cp.async writes when it completes: `size` bytes `raw` at
/// byte `byte` of shared memory.
#[derive(Clone, Copy, Debug)]
struct PendingCopy {
    byte: usize,
    size: usize,
    raw: u64,
}

/// One thread's cp.async groups: the open one and the committed ones, oldest first.
#[derive(Clone, Debug, Default)]
struct AsyncQueue {
    open: Vec<PendingCopy>,
    committed: std::collections::VecDeque<Vec<PendingCopy>>,
}

/// Runs blocks one after another, reusing its warps and shared memory.
struct BlockRunner<'l, 'p> {
    launch: &'l Launch<'p>,
    warps: Vec<Warp>,
    shared: SharedMemory,
    scratch: [Vec<u64>; 3],
    order: Vec<usize>,
    counters: Counters,
    /// The checked mode's state: this block's clocks and shadow, and every
    /// block's global writes.
    checker: Option<(SharedChecker, GlobalWriters)>,
}

impl<'l, 'p> BlockRunner<'l, 'p> {
    fn new(launch: &'l Launch<'p>) -> BlockRunner<'l, 'p> {
        let program = launch.program;
        let w = launch.warp_size;
        let threads = program.block_threads as usize;
        let warps = threads.div_ceil(w);
        let warps = (0..warps)
            .map(|index| {
                let lanes = (threads - index * w).min(w);
                let full = if lanes == 64 { u64::MAX } else { (1u64 << lanes) - 1 };
                Warp {
                    pc: 0,
                    mask: full,
                    full,
                    stack: Vec::new(),
                    vector: vec![0; program.vector_registers as usize * w],
                    uniform: vec![0; program.uniform_registers as usize],
                    state: State::Ready,
                    copies: vec![AsyncQueue::default(); w],
                }
            })
            .collect();
        BlockRunner {
            launch,
            warps,
            shared: SharedMemory::new(program.shared_bytes),
            scratch: [vec![0; w], vec![0; w], vec![0; w]],
            order: Vec::new(),
            counters: Counters::default(),
            checker: launch
                .checking
                .then(|| (SharedChecker::new(threads.div_ceil(w), program.shared_bytes), GlobalWriters::default())),
        }
    }

    fn run(&mut self, block: u64, seed: u64) -> Result<(), SimError> {
        let program = self.launch.program;
        self.shared.clear();
        if let Some((checker, _)) = &mut self.checker {
            checker.reset(self.warps.len(), program.shared_bytes);
        }
        for warp in &mut self.warps {
            warp.pc = 0;
            warp.mask = warp.full;
            warp.stack.clear();
            warp.state = State::Ready;
            warp.copies.iter_mut().for_each(|queue| *queue = AsyncQueue::default());
        }
        let mut random = Random(seed);
        loop {
            self.order.clear();
            self.order.extend((0..self.warps.len()).filter(|&w| self.warps[w].state == State::Ready));
            for i in (1..self.order.len()).rev() {
                let j = (random.next() % (i as u64 + 1)) as usize;
                self.order.swap(i, j);
            }
            for i in 0..self.order.len() {
                let warp = self.order[i];
                self.run_warp(warp, block)?;
            }
            let mut waiting = self.warps.iter().filter_map(|w| match w.state {
                State::AtBarrier(pc) => Some(pc),
                _ => None,
            });
            let Some(first) = waiting.next() else { return Ok(()) };
            let same = waiting.all(|pc| pc == first);
            let finished: Vec<usize> = (0..self.warps.len()).filter(|&w| self.warps[w].state == State::Done).collect();
            if !finished.is_empty() {
                let waiters: Vec<usize> =
                    (0..self.warps.len()).filter(|&w| self.warps[w].state == State::AtBarrier(first)).collect();
                // Barriers are numbered in the kernel's text order, from 1.
                let ordinal = program.code[..first].iter().filter(|inst| matches!(inst, Inst::Barrier)).count() + 1;
                return Err(SimError::Deadlock {
                    kernel: program.name.clone(),
                    block,
                    detail: format!(
                        "warps {waiters:?} wait at barrier {ordinal} (in text order), which warps {finished:?} \
                         finished without reaching"
                    ),
                });
            }
            if !same {
                return Err(SimError::DivergentBarrier { kernel: program.name.clone(), block });
            }
            if let Some((checker, _)) = &mut self.checker {
                let all: Vec<usize> = (0..self.warps.len()).collect();
                checker.release(&all);
            }
            for warp in &mut self.warps {
                warp.state = State::Ready;
            }
        }
    }

    /// Runs warp `index` until it waits at a barrier or finishes.
    fn run_warp(&mut self, index: usize, block: u64) -> Result<(), SimError> {
        let launch = self.launch;
        let program = launch.program;
        let code = &program.code;
        let w = launch.warp_size;
        let BlockRunner { warps, shared, scratch, counters, checker, .. } = self;
        let counting = launch.counting;
        let warp = &mut warps[index];
        let [s0, s1, s2] = scratch;
        let warp_index = index;
        let thread_of = |lane: u32| (index * w) as u64 + lane as u64;
        let error_at = |kind: ErrorAt, lane: u32| kind.error(program, block, thread_of(lane));
        loop {
            let Some(inst) = code.get(warp.pc) else {
                warp.state = State::Done;
                return Ok(());
            };
            warp.pc += 1;
            let v = warp.vector.as_mut_ptr();
            let u = &mut warp.uniform;
            match *inst {
                Inst::Special { dst, which } => {
                    let warp_base = (index * w) as u64;
                    match dst {
                        Dst::U(d) => {
                            u[d as usize] = match which {
                                Special::BlockIndex => block,
                                Special::BlockThreads => program.block_threads as u64,
                                Special::GridBlocks => launch.blocks,
                                Special::ThreadIndex | Special::Lane => {
                                    return Err(internal(program, "lane-varying special"))
                                }
                            }
                        }
                        Dst::V(d) => {
                            let out = vector_mut(v, d, w);
                            for (lane, slot) in out.iter_mut().enumerate() {
                                *slot = match which {
                                    Special::ThreadIndex => warp_base + lane as u64,
                                    Special::Lane => lane as u64,
                                    Special::BlockIndex => block,
                                    Special::BlockThreads => program.block_threads as u64,
                                    Special::GridBlocks => launch.blocks,
                                };
                            }
                        }
                    }
                }
                Inst::Param { dst, param } => u[dst as usize] = launch.scalars[param],
                Inst::WarpBase { dst } => u[dst as usize] = (index * w) as u64,
                Inst::Unary { op, class, dst, a } => match dst {
                    Dst::U(d) => {
                        let mut out = [0];
                        values::unary_lanes(op, class, &mut out, &[scalar(u, a)]);
                        u[d as usize] = out[0];
                    }
                    Dst::V(d) => {
                        let a = lanes(v, u, w, a, d, s0);
                        values::unary_lanes(op, class, vector_mut(v, d, w), a);
                    }
                },
                Inst::Binary { op, class, dst, a, b } => match dst {
                    Dst::U(d) => u[d as usize] = values::binary_scalar(op, class, scalar(u, a), scalar(u, b)),
                    Dst::V(d) => {
                        let a = lanes(v, u, w, a, d, s0);
                        let b = lanes(v, u, w, b, d, s1);
                        values::binary_lanes(op, class, vector_mut(v, d, w), a, b);
                    }
                },
                Inst::Select { dst, c, a, b } => {
                    each_lane3(v, u, w, dst, (c, a, b), [s0, s1, s2], |c, a, b| if c != 0 { a } else { b })
                }
                Inst::MulAdd { dst, acc, a, b } => match dst {
                    // An accumulation in place (`v = v + a × b`): no copy of the
                    // accumulator; a uniform factor is read once.
                    Dst::V(d) if acc == Src::V(d) && a != acc && b != acc => {
                        let (a, b) = (factor(v, u, w, a), factor(v, u, w, b));
                        accumulate(vector_mut(v, d, w), a, b);
                    }
                    dst => each_lane3(v, u, w, dst, (acc, a, b), [s0, s1, s2], values::mul_add),
                },
                Inst::Convert { from, to, dst, a } => each_lane(v, u, w, dst, a, s0, |x| values::convert(from, to, x)),
                Inst::RoundConvert { from, to, rounding, dst, a } => {
                    each_lane(v, u, w, dst, a, s0, |x| values::convert_rounded(from, to, rounding, x))
                }
                Inst::Bitcast { to, dst, a } => each_lane(v, u, w, dst, a, s0, |x| values::bitcast(to, x)),
                Inst::Fma { dst, a, b, c } => each_lane3(v, u, w, dst, (a, b, c), [s0, s1, s2], values::fma),
                Inst::Copy { dst, a, masked } => match dst {
                    Dst::U(d) => u[d as usize] = scalar(u, a),
                    Dst::V(d) => {
                        let a = lanes(v, u, w, a, d, s0);
                        let out = vector_mut(v, d, w);
                        if masked && warp.mask != warp.full {
                            for lane in active(warp.mask) {
                                out[lane as usize] = a[lane as usize];
                            }
                        } else {
                            out.copy_from_slice(a);
                        }
                    }
                },
                Inst::Load { dst, memory, index, base, offset, piece } => {
                    let access = launch.access(memory);
                    let offset = (scalar(u, base) as i64).wrapping_add(offset as i64);
                    if let (Some((checker, _)), Memory::Shared(array)) = (checker.as_mut(), memory) {
                        let indices = lanes(v, u, w, index, u32::MAX, s0);
                        check_shared(
                            checker,
                            program,
                            array,
                            (warp_index, block, (warp_index * w) as u64),
                            indices,
                            offset,
                            warp.mask,
                            false,
                        )?;
                    }
                    if counting && !piece {
                        let indices = lanes(v, u, w, index, u32::MAX, s0);
                        counters.request(access, indices, offset, warp.mask, access.size, false);
                    }
                    match (dst, index) {
                        (_, Src::U(_) | Src::K(_)) => {
                            let lane = warp.mask.trailing_zeros();
                            let element = (scalar(u, index) as i64).wrapping_add(offset);
                            let bits = access.load(shared, element).map_err(|kind| error_at(kind, lane))?;
                            match dst {
                                Dst::U(d) => u[d as usize] = bits,
                                Dst::V(d) => vector_mut(v, d, w).fill(bits),
                            }
                        }
                        (Dst::V(d), Src::V(r)) => {
                            let indices = lanes(v, u, w, Src::V(r), d, s0);
                            let out = vector_mut(v, d, w);
                            access
                                .gather(shared, indices, offset, warp.mask, out)
                                .map_err(|(kind, lane)| error_at(kind, lane))?;
                        }
                        (Dst::U(_), Src::V(_)) => return Err(internal(program, "a uniform load at a divergent index")),
                    }
                }
                Inst::LoadAffine { dst, at: AffineAccess { memory, start, base, stride, offset, piece } }
                | Inst::MulAddAffine { dst, at: AffineAccess { memory, start, base, stride, offset, piece }, .. } => {
                    let access = launch.access(memory);
                    let first =
                        (scalar(u, start) as i64).wrapping_add(scalar(u, base) as i64).wrapping_add(offset as i64);
                    if checker.is_some() || (counting && !piece) {
                        let indices = affine_indices(s0, first, stride);
                        if let (Some((checker, _)), Memory::Shared(array)) = (checker.as_mut(), memory) {
                            let warp_of = (warp_index, block, (warp_index * w) as u64);
                            check_shared(checker, program, array, warp_of, indices, 0, warp.mask, false)?;
                        }
                        if counting && !piece {
                            counters.request(access, indices, 0, warp.mask, access.size, false);
                        }
                    }
                    let in_place = match (inst, &access.target) {
                        (&Inst::MulAddAffine { a: Src::V(r), .. }, Target::Global(window))
                            if stride == 1 && access.dtype == DType::F32 && warp.mask == warp.full =>
                        {
                            let start = usize::try_from(first).ok().map(|first| first * 4);
                            start.and_then(|start| Some((r, window, start, window.frozen_words(start, w)?)))
                        }
                        _ => None,
                    };
                    if let Some((r, window, start, words)) = in_place {
                        // A full warp's run of a read-only f32 buffer, accumulated straight from memory.
                        window.prefetch(start + w * 4, w * 4);
                        let a = vector(v, r, w);
                        let out = vector_mut(v, dst, w);
                        for lane in 0..w {
                            out[lane] = values::mul_add(out[lane], a[lane], words[lane] as u64);
                        }
                    } else if let Inst::MulAddAffine { a, .. } = *inst {
                        // The element into scratch, then accumulated in place.
                        let loaded = &mut s2[..];
                        access
                            .strided(shared, first, stride, warp.mask, loaded)
                            .map_err(|(kind, lane)| error_at(kind, lane))?;
                        let a = factor(v, u, w, a);
                        accumulate(vector_mut(v, dst, w), a, Factor::Lanes(loaded));
                    } else {
                        let out = vector_mut(v, dst, w);
                        access
                            .strided(shared, first, stride, warp.mask, out)
                            .map_err(|(kind, lane)| error_at(kind, lane))?;
                    }
                }
                Inst::StoreAffine { at: AffineAccess { memory, start, base, stride, offset, piece }, value, class } => {
                    let access = launch.access(memory);
                    let first =
                        (scalar(u, start) as i64).wrapping_add(scalar(u, base) as i64).wrapping_add(offset as i64);
                    let values_ = lanes(v, u, w, value, u32::MAX, s1);
                    if checker.is_some() || (counting && !piece) {
                        let indices = affine_indices(s0, first, stride);
                        if counting && !piece {
                            counters.request(access, indices, 0, warp.mask, access.size, true);
                        }
                        match (checker.as_mut(), memory) {
                            (Some((checker, _)), Memory::Shared(array)) => {
                                let warp_of = (warp_index, block, (warp_index * w) as u64);
                                check_shared(checker, program, array, warp_of, indices, 0, warp.mask, true)?
                            }
                            (Some((_, writers)), Memory::Buffer(_)) => {
                                check_global_write(writers, access, block, indices, 0, warp.mask, program)?
                            }
                            (None, _) => {}
                        }
                    }
                    for lane in active(warp.mask) {
                        let element = first.wrapping_add(stride.wrapping_mul(lane as i64));
                        let raw = values::encode(access.dtype, class, values_[lane as usize]);
                        access.store(shared, element, raw).map_err(|kind| error_at(kind, lane))?;
                    }
                }
                Inst::Store { memory, index, offset, value, class, piece } => {
                    let access = launch.access(memory);
                    let indices = lanes(v, u, w, index, u32::MAX, s0);
                    let values_ = lanes(v, u, w, value, u32::MAX, s1);
                    if counting && !piece {
                        counters.request(access, indices, offset as i64, warp.mask, access.size, true);
                    }
                    match (checker.as_mut(), memory) {
                        (Some((checker, _)), Memory::Shared(array)) => check_shared(
                            checker,
                            program,
                            array,
                            (warp_index, block, (warp_index * w) as u64),
                            indices,
                            offset as i64,
                            warp.mask,
                            true,
                        )?,
                        (Some((_, writers)), Memory::Buffer(_)) => {
                            check_global_write(writers, access, block, indices, offset as i64, warp.mask, program)?
                        }
                        (None, _) => {}
                    }
                    access
                        .scatter(shared, indices, offset as i64, warp.mask, values_, class)
                        .map_err(|(kind, lane)| error_at(kind, lane))?;
                }
                Inst::AtomicAdd { buffer, index, value, class } => {
                    let access = launch.access(Memory::Buffer(buffer));
                    let indices = lanes(v, u, w, index, u32::MAX, s0);
                    let values_ = lanes(v, u, w, value, u32::MAX, s1);
                    let loaded = Class::loaded(access.dtype);
                    if counting {
                        counters.request(access, indices, 0, warp.mask, access.size, true);
                    }
                    for lane in active(warp.mask) {
                        let element = indices[lane as usize] as i64;
                        let current = access.load(shared, element).map_err(|kind| error_at(kind, lane))?;
                        let sum = values::to_f64(loaded, current) + values::to_f64(class, values_[lane as usize]);
                        let raw = values::encode_f64(access.dtype, sum);
                        access.store(shared, element, raw).map_err(|kind| error_at(kind, lane))?;
                    }
                }
                Inst::VectorAccess { memory, index, width, write } => {
                    let indices = lanes(v, u, w, index, u32::MAX, s0);
                    if counting {
                        let access = launch.access(memory);
                        counters.request(access, indices, 0, warp.mask, access.size * width as usize, write);
                    }
                    for lane in active(warp.mask) {
                        let element = indices[lane as usize] as i64;
                        if element.rem_euclid(width as i64) != 0 {
                            return Err(SimError::Misaligned {
                                kernel: program.name.clone(),
                                block,
                                thread: thread_of(lane),
                                buffer: launch.access(memory).name.to_string(),
                                index: element,
                                width: width as usize,
                            });
                        }
                    }
                }
                Inst::Shuffle { dst, a, xor } => {
                    let a = lanes(v, u, w, a, dst, s0);
                    let out = vector_mut(v, dst, w);
                    for lane in active(warp.mask) {
                        let source = (lane ^ xor) as usize;
                        if source >= w {
                            return Err(SimError::InactiveShuffleSource {
                                kernel: program.name.clone(),
                                block,
                                thread: thread_of(lane),
                                source_lane: source,
                            });
                        }
                        out[lane as usize] = a[source];
                    }
                }
                Inst::LoadMatrix { dsts, count, array, index, transpose } => {
                    whole_warp(program, block, warp_index, warp.mask, w, "ldmatrix")?;
                    let access = launch.access(Memory::Shared(array));
                    let indices = lanes(v, u, w, index, u32::MAX, s0);
                    let row_lanes = 8 * count as usize;
                    let row_mask = (1u64 << row_lanes) - 1;
                    for lane in 0..row_lanes as u32 {
                        aligned(program, block, thread_of(lane), access, indices[lane as usize] as i64, 8)?;
                    }
                    if let Some((checker, _)) = checker.as_mut() {
                        let warp_of = (warp_index, block, (warp_index * w) as u64);
                        for column in 0..8 {
                            check_shared(checker, program, array, warp_of, indices, column, row_mask, false)?;
                        }
                    }
                    if counting {
                        counters.request(access, indices, 0, row_mask, 16, false);
                    }
                    let mut rows = vec![[0u16; 8]; row_lanes];
                    for (lane, row) in rows.iter_mut().enumerate() {
                        for (column, slot) in row.iter_mut().enumerate() {
                            let element = (indices[lane] as i64).wrapping_add(column as i64);
                            *slot =
                                access.load_raw(shared, element).map_err(|kind| error_at(kind, lane as u32))? as u16;
                        }
                    }
                    let registers = tensor_core::load_matrix(&rows, transpose);
                    for (matrix, &dst) in dsts[..count as usize].iter().enumerate() {
                        let out = vector_mut(v, dst, w);
                        for (lane, slot) in out.iter_mut().enumerate() {
                            *slot = registers[lane][matrix] as u64;
                        }
                    }
                }
                Inst::Mma { kind, acc, a, b } => {
                    whole_warp(program, block, warp_index, warp.mask, w, "mma")?;
                    let mut a_lanes = [[0u32; 4]; tensor_core::WARP];
                    for (register, &operand) in a.iter().enumerate() {
                        for (lane, &bits) in lanes(v, u, w, operand, u32::MAX, s0).iter().enumerate() {
                            a_lanes[lane][register] = bits as u32;
                        }
                    }
                    let mut b_lanes = [[0u32; 2]; tensor_core::WARP];
                    for (register, &operand) in b.iter().enumerate() {
                        for (lane, &bits) in lanes(v, u, w, operand, u32::MAX, s0).iter().enumerate() {
                            b_lanes[lane][register] = bits as u32;
                        }
                    }
                    let mut c_lanes = [[0f32; 4]; tensor_core::WARP];
                    for (register, &r) in acc.iter().enumerate() {
                        for (lane, &bits) in vector(v, r, w).iter().enumerate() {
                            c_lanes[lane][register] = f32::from_bits(bits as u32);
                        }
                    }
                    let d = tensor_core::mma(kind, &a_lanes, &b_lanes, &c_lanes);
                    for (register, &r) in acc.iter().enumerate() {
                        for (lane, slot) in vector_mut(v, r, w).iter_mut().enumerate() {
                            *slot = d[lane][register].to_bits() as u64;
                        }
                    }
                }
                Inst::AsyncCopy { array, shared_index, buffer, index, elements, valid } => {
                    let target = launch.access(Memory::Shared(array));
                    let source = launch.access(Memory::Buffer(buffer));
                    let destinations = lanes(v, u, w, shared_index, u32::MAX, s0);
                    let sources = lanes(v, u, w, index, u32::MAX, s1);
                    let valid = lanes(v, u, w, valid, u32::MAX, s2);
                    let width = elements as usize;
                    let bytes = width * target.size;
                    if counting {
                        counters.request(target, destinations, 0, warp.mask, bytes, true);
                        let reading =
                            active(warp.mask).filter(|&l| valid[l as usize] as i64 > 0).fold(0, |m, l| m | 1 << l);
                        counters.request(source, sources, 0, reading, bytes, false);
                    }
                    let Target::Shared { offset: base } = target.target else {
                        return Err(internal(program, "a cp.async to global memory"));
                    };
                    for lane in active(warp.mask) {
                        let (to, from) = (destinations[lane as usize] as i64, sources[lane as usize] as i64);
                        for (element, access) in [(to, target), (from, source)] {
                            aligned(program, block, thread_of(lane), access, element, width)?;
                        }
                        let read = (valid[lane as usize] as i64).clamp(0, width as i64);
                        for offset in 0..width as i64 {
                            let element =
                                target.check(to.wrapping_add(offset), "write").map_err(|kind| error_at(kind, lane))?;
                            let raw = if offset < read {
                                source
                                    .load_raw(shared, from.wrapping_add(offset))
                                    .map_err(|kind| error_at(kind, lane))?
                            } else {
                                0
                            };
                            let byte = base + element * target.size;
                            if let Some((checker, _)) = checker.as_mut() {
                                checker.issue_copy(warp_index, byte..byte + target.size).map_err(|violation| {
                                    shared_violation(
                                        program,
                                        block,
                                        thread_of(lane),
                                        byte,
                                        violation,
                                        warp_index,
                                        "writes",
                                    )
                                })?;
                            }
                            warp.copies[lane as usize].open.push(PendingCopy { byte, size: target.size, raw });
                        }
                    }
                }
                Inst::AsyncCommit => {
                    for lane in active(warp.mask) {
                        let queue = &mut warp.copies[lane as usize];
                        let group = std::mem::take(&mut queue.open);
                        queue.committed.push_back(group);
                    }
                }
                Inst::AsyncWait { pending } => {
                    for lane in active(warp.mask) {
                        while warp.copies[lane as usize].committed.len() > pending as usize {
                            let group = warp.copies[lane as usize].committed.pop_front().expect("non-empty");
                            for copy in group {
                                if let Some((checker, _)) = checker.as_mut() {
                                    checker.land(warp_index, copy.byte..copy.byte + copy.size).map_err(
                                        |violation| {
                                            shared_violation(
                                                program,
                                                block,
                                                thread_of(lane),
                                                copy.byte,
                                                violation,
                                                warp_index,
                                                "writes",
                                            )
                                        },
                                    )?;
                                }
                                shared.store(copy.byte, copy.size, copy.raw);
                            }
                        }
                    }
                }
                Inst::BranchUnless { cond, target } => {
                    if scalar(u, cond) == 0 {
                        warp.pc = target;
                    }
                }
                Inst::Jump { target } => warp.pc = target,
                Inst::IfBegin { cond, otherwise } => {
                    let taken = lane_bits(lanes(v, u, w, cond, u32::MAX, s0)) & warp.mask;
                    warp.stack.push((warp.mask, warp.mask & !taken));
                    warp.mask = taken;
                    if taken == 0 {
                        warp.pc = otherwise;
                    }
                }
                Inst::Else { end } => {
                    let (_, otherwise) = *warp.stack.last().ok_or_else(|| internal(program, "else outside an if"))?;
                    warp.mask = otherwise;
                    if otherwise == 0 {
                        warp.pc = end;
                    }
                }
                Inst::EndIf => {
                    let (saved, _) = warp.stack.pop().ok_or_else(|| internal(program, "end of an if outside one"))?;
                    warp.mask = saved;
                }
                Inst::UniformLoopTest { var, end, exit } => {
                    if u[var as usize] as i64 >= scalar(u, end) as i64 {
                        warp.pc = exit;
                    }
                }
                Inst::UniformLoopNext { var, step, test } => {
                    u[var as usize] = (u[var as usize] as i64).wrapping_add(step) as u64;
                    warp.pc = test;
                }
                Inst::LoopBegin => warp.stack.push((warp.mask, 0)),
                Inst::LoopTest { var, end, exit } => {
                    let ends = lanes(v, u, w, end, var, s0);
                    let current = vector(v, var, w);
                    let mut staying = 0u64;
                    for lane in active(warp.mask) {
                        if (current[lane as usize] as i64) < ends[lane as usize] as i64 {
                            staying |= 1 << lane;
                        }
                    }
                    warp.mask = staying;
                    if staying == 0 {
                        let (saved, _) =
                            warp.stack.pop().ok_or_else(|| internal(program, "loop test outside a loop"))?;
                        warp.mask = saved;
                        warp.pc = exit;
                    }
                }
                Inst::LoopNext { var, step, test } => {
                    let current = vector_mut(v, var, w);
                    for lane in active(warp.mask) {
                        let slot = &mut current[lane as usize];
                        *slot = (*slot as i64).wrapping_add(step) as u64;
                    }
                    warp.pc = test;
                }
                Inst::Preheader(_) => return Err(internal(program, "an unexpanded preheader")),
                Inst::Barrier => {
                    if warp.mask != warp.full {
                        return Err(SimError::DivergentBarrier { kernel: program.name.clone(), block });
                    }
                    warp.state = State::AtBarrier(warp.pc - 1);
                    return Ok(());
                }
            }
        }
    }
}

/// The checked mode's verdict on the active lanes of `mask` accessing shared
/// `array` at `indices + offset` (the warp, the block, the warp's first
/// thread). Lanes out
/// of bounds are left to the access, which reports them.
#[allow(clippy::too_many_arguments)]
fn check_shared(
    checker: &mut SharedChecker,
    program: &Program,
    array: usize,
    (warp, block, first_thread): (usize, u64, u64),
    indices: &[u64],
    offset: i64,
    mask: u64,
    write: bool,
) -> Result<(), SimError> {
    let layout = &program.shared[array];
    let size = layout.dtype.size_in_bytes();
    for lane in active(mask) {
        let element = (indices[lane as usize] as i64).wrapping_add(offset);
        if element < 0 || element as usize >= layout.elements {
            continue;
        }
        let byte = layout.offset + element as usize * size;
        let verdict =
            if write { checker.write(warp, byte..byte + size) } else { checker.read(warp, byte..byte + size) };
        match verdict {
            Ok(()) => {}
            Err(Violation::Race { other }) => {
                return Err(SimError::SharedRace {
                    kernel: program.name.clone(),
                    block,
                    array: layout.name.clone(),
                    index: element as usize,
                    first: other,
                    second: warp,
                })
            }
            Err(Violation::Uninitialized) => {
                return Err(SimError::UninitializedShared {
                    kernel: program.name.clone(),
                    block,
                    thread: first_thread + lane as u64,
                    array: layout.name.clone(),
                    index: element as usize,
                })
            }
            Err(Violation::InFlight) => {
                return Err(SimError::AsyncCopyInFlight {
                    kernel: program.name.clone(),
                    block,
                    thread: first_thread + lane as u64,
                    access: if write { "writes" } else { "reads" },
                    array: layout.name.clone(),
                    index: element as usize,
                })
            }
        }
    }
    Ok(())
}

/// The error for `violation` at shared byte `byte` (by warp `warp`, thread `thread`).
fn shared_violation(
    program: &Program,
    block: u64,
    thread: u64,
    byte: usize,
    violation: Violation,
    warp: usize,
    access: &'static str,
) -> SimError {
    let layout =
        program.shared.iter().rev().find(|layout| layout.offset <= byte).expect("a shared byte lies in an array");
    let (array, index) = (layout.name.clone(), (byte - layout.offset) / layout.dtype.size_in_bytes());
    let kernel = program.name.clone();
    match violation {
        Violation::Race { other } => SimError::SharedRace { kernel, block, array, index, first: other, second: warp },
        Violation::Uninitialized => SimError::UninitializedShared { kernel, block, thread, array, index },
        Violation::InFlight => SimError::AsyncCopyInFlight { kernel, block, thread, access, array, index },
    }
}

/// A `width`-element access at element `element` of `access` must be aligned to its size.
fn aligned(
    program: &Program,
    block: u64,
    thread: u64,
    access: &Access<'_>,
    element: i64,
    width: usize,
) -> Result<(), SimError> {
    if element.rem_euclid(width as i64) == 0 {
        return Ok(());
    }
    let (kernel, buffer) = (program.name.clone(), access.name.to_string());
    Err(SimError::Misaligned { kernel, block, thread, buffer, index: element, width })
}

/// A warp collective needs every lane of a 32-lane warp active.
fn whole_warp(
    program: &Program,
    block: u64,
    warp: usize,
    mask: u64,
    w: usize,
    instruction: &'static str,
) -> Result<(), SimError> {
    if w != tensor_core::WARP || mask != u32::MAX as u64 {
        return Err(SimError::PartialWarpCollective { kernel: program.name.clone(), block, warp, instruction });
    }
    Ok(())
}

/// The checked mode's verdict on block `block` storing to global memory.
fn check_global_write(
    writers: &mut GlobalWriters,
    access: &Access<'_>,
    block: u64,
    indices: &[u64],
    offset: i64,
    mask: u64,
    program: &Program,
) -> Result<(), SimError> {
    let Target::Global(window) = &access.target else { return Ok(()) };
    for lane in active(mask) {
        let element = (indices[lane as usize] as i64).wrapping_add(offset);
        if element < 0 || element as usize >= access.elements() {
            continue;
        }
        let address = window.address() + element as usize * access.size;
        if let Some(first) = writers.write(address, access.size, block) {
            return Err(SimError::OverlappingWrites {
                kernel: program.name.clone(),
                buffer: access.name.to_string(),
                index: element as usize,
                first,
                second: block,
            });
        }
    }
    Ok(())
}

fn internal(program: &Program, what: &str) -> SimError {
    SimError::Invalid { kernel: program.name.clone(), message: format!("malformed machine program: {what}") }
}

/// The lanes set in `mask`, lowest first.
#[inline]
fn active(mut mask: u64) -> impl Iterator<Item = u32> {
    std::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let lane = mask.trailing_zeros();
        mask &= mask - 1;
        Some(lane)
    })
}

/// One factor of a multiply-add: a lane vector, or one value for every lane.
#[derive(Clone, Copy)]
enum Factor<'a> {
    Lanes(&'a [u64]),
    Uniform(u64),
}

/// The factor `src` is, read in place (vectors) or once (uniform values).
#[inline(always)]
fn factor<'a>(registers: *mut u64, uniform: &[u64], w: usize, src: Src) -> Factor<'a> {
    match src {
        Src::V(r) => Factor::Lanes(vector(registers, r, w)),
        other => Factor::Uniform(scalar(uniform, other)),
    }
}

/// `out[l] = out[l] + a[l] × b[l]` in f32, rounded after the product and
/// after the sum; the factors' order is kept (NaN payloads and all). `out`
/// must not be either factor's register.
#[inline(always)]
fn accumulate(out: &mut [u64], a: Factor<'_>, b: Factor<'_>) {
    match (a, b) {
        (Factor::Lanes(a), Factor::Lanes(b)) => {
            for ((slot, &x), &y) in out.iter_mut().zip(a).zip(b) {
                *slot = values::mul_add(*slot, x, y);
            }
        }
        (Factor::Uniform(x), Factor::Lanes(b)) => {
            for (slot, &y) in out.iter_mut().zip(b) {
                *slot = values::mul_add(*slot, x, y);
            }
        }
        (Factor::Lanes(a), Factor::Uniform(y)) => {
            for (slot, &x) in out.iter_mut().zip(a) {
                *slot = values::mul_add(*slot, x, y);
            }
        }
        (Factor::Uniform(x), Factor::Uniform(y)) => {
            for slot in out.iter_mut() {
                *slot = values::mul_add(*slot, x, y);
            }
        }
    }
}

/// `scratch[lane] = first + stride × lane`: an affine access's element indices.
fn affine_indices(scratch: &mut [u64], first: i64, stride: i64) -> &[u64] {
    for (lane, slot) in scratch.iter_mut().enumerate() {
        *slot = first.wrapping_add(stride.wrapping_mul(lane as i64)) as u64;
    }
    scratch
}

#[inline]
fn lane_bits(values: &[u64]) -> u64 {
    values.iter().enumerate().fold(0, |bits, (lane, &value)| bits | (((value != 0) as u64) << lane))
}

#[inline]
fn scalar(uniform: &[u64], src: Src) -> u64 {
    match src {
        Src::U(r) => uniform[r as usize],
        Src::K(bits) => bits,
        // The compiler gives scalar instructions uniform operands only.
        Src::V(_) => 0,
    }
}

#[inline]
fn vector<'a>(registers: *mut u64, r: u32, w: usize) -> &'a [u64] {
    // SAFETY: `registers` is a warp's register file of `vector_registers × w`
    // lanes, and `r` one of its registers (the compiler allocates them). The
    // slice lives while the warp's instruction runs; no mutable slice of the
    // same register exists then (`vector_mut` is only taken of the destination,
    // and operands equal to the destination are copied by `lanes`).
    unsafe { std::slice::from_raw_parts(registers.add(r as usize * w), w) }
}

#[inline]
fn vector_mut<'a>(registers: *mut u64, r: u32, w: usize) -> &'a mut [u64] {
    // SAFETY: as in `vector`; this is the instruction's only view of register `r`.
    unsafe { std::slice::from_raw_parts_mut(registers.add(r as usize * w), w) }
}

/// `dst = f(a)` lane by lane (once, for a uniform destination).
#[inline(always)]
fn each_lane(
    registers: *mut u64,
    uniform: &mut [u64],
    w: usize,
    dst: Dst,
    a: Src,
    scratch: &mut [u64],
    f: impl Fn(u64) -> u64,
) {
    match dst {
        Dst::U(d) => uniform[d as usize] = f(scalar(uniform, a)),
        Dst::V(d) => {
            let a = lanes(registers, uniform, w, a, d, scratch);
            for (slot, &x) in vector_mut(registers, d, w).iter_mut().zip(a) {
                *slot = f(x);
            }
        }
    }
}

/// `dst = f(a, b, c)` lane by lane (once, for a uniform destination).
#[inline(always)]
fn each_lane3(
    registers: *mut u64,
    uniform: &mut [u64],
    w: usize,
    dst: Dst,
    (a, b, c): (Src, Src, Src),
    [s0, s1, s2]: [&mut [u64]; 3],
    f: impl Fn(u64, u64, u64) -> u64,
) {
    match dst {
        Dst::U(d) => uniform[d as usize] = f(scalar(uniform, a), scalar(uniform, b), scalar(uniform, c)),
        Dst::V(d) => {
            let a = lanes(registers, uniform, w, a, d, s0);
            let b = lanes(registers, uniform, w, b, d, s1);
            let c = lanes(registers, uniform, w, c, d, s2);
            let out = vector_mut(registers, d, w);
            for lane in 0..w {
                out[lane] = f(a[lane], b[lane], c[lane]);
            }
        }
    }
}

/// The lanes of `src`: a register read in place, or `scratch` holding a
/// broadcast uniform value, a constant, or a copy of the destination `dst`.
#[inline]
fn lanes<'a>(registers: *mut u64, uniform: &[u64], w: usize, src: Src, dst: u32, scratch: &'a mut [u64]) -> &'a [u64] {
    match src {
        Src::V(r) if r != dst => vector(registers, r, w),
        Src::V(r) => {
            scratch.copy_from_slice(vector(registers, r, w));
            scratch
        }
        Src::U(r) => {
            scratch.fill(uniform[r as usize]);
            scratch
        }
        Src::K(bits) => {
            scratch.fill(bits);
            scratch
        }
    }
}

/// Why an access failed, before the lane is known.
enum ErrorAt {
    OutOfBounds { access: &'static str, name: String, index: i64, length: usize },
    ReadOnly { name: String },
}

impl ErrorAt {
    fn error(self, program: &Program, block: u64, thread: u64) -> SimError {
        match self {
            ErrorAt::OutOfBounds { access, name, index, length } => SimError::OutOfBounds {
                kernel: program.name.clone(),
                block,
                thread,
                access,
                buffer: name,
                index,
                length,
            },
            ErrorAt::ReadOnly { name } => SimError::Invalid {
                kernel: program.name.clone(),
                message: format!("thread {thread} of block {block} writes `{name}`, which is not a writable parameter"),
            },
        }
    }
}

/// The memory one load or store addresses.
struct Access<'a> {
    /// The buffer parameter, for global memory.
    buffer: Option<usize>,
    dtype: DType,
    size: usize,
    /// Elements in the buffer or array.
    elements: usize,
    name: &'a str,
    target: Target,
}

enum Target {
    Global(Window),
    Shared { offset: usize },
}

impl<'a> Access<'a> {
    /// Buffer parameter `buffer` of `program`, bound to `window`.
    fn global(program: &'a Program, buffer: usize, window: Window) -> Access<'a> {
        let (name, dtype) = match &program.params[buffer] {
            Param::Buffer { name, dtype, .. } => (name.as_str(), *dtype),
            Param::Scalar { name, dtype } => (name.as_str(), *dtype),
        };
        let size = dtype.size_in_bytes();
        Access {
            buffer: Some(buffer),
            dtype,
            size,
            elements: window.len() / size,
            name,
            target: Target::Global(window),
        }
    }

    /// Shared array `array` of `program`.
    fn shared(program: &'a Program, array: usize) -> Access<'a> {
        let layout = &program.shared[array];
        Access {
            buffer: None,
            dtype: layout.dtype,
            size: layout.dtype.size_in_bytes(),
            elements: layout.elements,
            name: &layout.name,
            target: Target::Shared { offset: layout.offset },
        }
    }

    #[inline]
    fn elements(&self) -> usize {
        self.elements
    }

    #[inline]
    fn check(&self, element: i64, access: &'static str) -> Result<usize, ErrorAt> {
        let length = self.elements();
        if element < 0 || element as u64 >= length as u64 {
            return Err(ErrorAt::OutOfBounds { access, name: self.name.to_string(), index: element, length });
        }
        Ok(element as usize)
    }

    /// `out[lane] = self[indices[lane] + offset]` (decoded) for the lanes of
    /// `mask`; the element width is chosen once, outside the lane loop.
    #[inline]
    fn gather(
        &self,
        shared: &SharedMemory,
        indices: &[u64],
        offset: i64,
        mask: u64,
        out: &mut [u64],
    ) -> Result<(), (ErrorAt, u32)> {
        let length = self.elements() as u64;
        let dtype = self.dtype;
        // Every lane active: one branch-free pass reads each element at its
        // index clamped into bounds and notes whether any index was outside;
        // only then does the lane-by-lane path run (to report the first).
        let full = mask == u64::MAX >> (64 - out.len()) && length > 0;
        macro_rules! each_lane {
            ($read:expr) => {
                each_lane!($read, $read)
            };
            ($read:expr, $unchecked:expr) => {{
                if full {
                    let mut outside = false;
                    for (slot, &index) in out.iter_mut().zip(indices) {
                        let element = (index as i64).wrapping_add(offset) as u64;
                        outside |= element >= length;
                        *slot = $unchecked(element.min(length - 1) as usize);
                    }
                    if !outside {
                        return Ok(());
                    }
                }
                for lane in active(mask) {
                    let element = (indices[lane as usize] as i64).wrapping_add(offset);
                    if element as u64 >= length {
                        let name = self.name.to_string();
                        let bounds =
                            ErrorAt::OutOfBounds { access: "read", name, index: element, length: length as usize };
                        return Err((bounds, lane));
                    }
                    out[lane as usize] = $read(element as usize);
                }
            }};
        }
        // f32 and i64 elements are their register bits: no decoding in the lane loop.
        let raw = matches!(dtype, DType::F32 | DType::I64);
        // Consecutive lanes at consecutive elements (a coalesced row): one
        // bounds check for the run, then a plain copy.
        if full && raw && self.size == 4 {
            let first = (indices[0] as i64).wrapping_add(offset);
            // Every lane at one element (a broadcast): one read.
            if indices.iter().all(|&index| index == indices[0]) && first >= 0 && (first as u64) < length {
                let bits = match &self.target {
                    Target::Global(window) => window.load(first as usize * 4, 4),
                    // SAFETY: the element lies inside its array (checked above).
                    Target::Shared { offset: base, .. } => unsafe {
                        shared.load_unchecked::<4>(base + first as usize * 4)
                    },
                };
                out.fill(bits);
                return Ok(());
            }
            let consecutive =
                indices.iter().enumerate().all(|(lane, &index)| index.wrapping_sub(lane as u64) == indices[0]);
            if consecutive && first >= 0 && (first as u64).saturating_add(out.len() as u64) <= length {
                let start = first as usize * 4;
                match &self.target {
                    Target::Global(window) => window.load_words(start, out),
                    // SAFETY: the run lies inside its array (checked above),
                    // and arrays lie inside the block's shared memory.
                    Target::Shared { offset: base, .. } => {
                        for (lane, slot) in out.iter_mut().enumerate() {
                            *slot = unsafe { shared.load_unchecked::<4>(base + start + lane * 4) };
                        }
                    }
                }
                return Ok(());
            }
        }
        match (&self.target, self.size, raw) {
            (Target::Global(window), 4, true) => each_lane!(|e: usize| window.load(e * 4, 4)),
            (Target::Global(window), 8, true) => each_lane!(|e: usize| window.load(e * 8, 8)),
            // SAFETY (unchecked reads): elements are clamped inside their
            // array, and arrays lie inside the block's shared memory.
            (Target::Shared { offset: base, .. }, 4, true) => {
                each_lane!(|e: usize| shared.load(base + e * 4, 4), |e: usize| unsafe {
                    shared.load_unchecked::<4>(base + e * 4)
                })
            }
            (Target::Shared { offset: base, .. }, 8, true) => {
                each_lane!(|e: usize| shared.load(base + e * 8, 8), |e: usize| unsafe {
                    shared.load_unchecked::<8>(base + e * 8)
                })
            }
            (Target::Global(window), size, false) => {
                each_lane!(|e: usize| values::decode(dtype, window.load(e * size, size)))
            }
            (Target::Shared { offset: base, .. }, size, _) => {
                each_lane!(|e: usize| values::decode(dtype, shared.load(base + e * size, size)))
            }
            (Target::Global(window), size, true) => {
                each_lane!(|e: usize| values::decode(dtype, window.load(e * size, size)))
            }
        }
        Ok(())
    }

    /// `out[lane] = self[first + stride × lane]` (decoded) for the lanes of
    /// `mask`. A full warp whose first and last elements are in bounds is
    /// in bounds throughout (the elements are monotone in the lane): it is
    /// read with no per-lane check.
    #[inline]
    fn strided(
        &self,
        shared: &SharedMemory,
        first: i64,
        stride: i64,
        mask: u64,
        out: &mut [u64],
    ) -> Result<(), (ErrorAt, u32)> {
        let length = self.elements() as i128;
        let last = first as i128 + stride as i128 * (out.len() as i128 - 1);
        let inside = |element: i128| (0..length).contains(&element);
        let full = mask == u64::MAX >> (64 - out.len());
        if full && inside(first as i128) && inside(last) {
            let (size, dtype) = (self.size, self.dtype);
            let raw = matches!(dtype, DType::F32 | DType::I64);
            let element = |lane: usize| (first + stride * lane as i64) as usize;
            match &self.target {
                Target::Global(window) if raw && size == 4 && stride == 1 => {
                    let (start, bytes) = (first as usize * 4, out.len() * 4);
                    window.prefetch(start + bytes, bytes);
                    window.load_words(start, out)
                }
                Target::Global(window) if raw => {
                    for (lane, slot) in out.iter_mut().enumerate() {
                        *slot = window.load(element(lane) * size, size);
                    }
                }
                Target::Global(window) => {
                    for (lane, slot) in out.iter_mut().enumerate() {
                        *slot = values::decode(dtype, window.load(element(lane) * size, size));
                    }
                }
                // SAFETY: every element lies inside its array (checked
                // above), and arrays lie inside the block's shared memory.
                Target::Shared { offset: base, .. } if raw && size == 4 => {
                    for (lane, slot) in out.iter_mut().enumerate() {
                        *slot = unsafe { shared.load_unchecked::<4>(base + element(lane) * 4) };
                    }
                }
                Target::Shared { offset: base, .. } => {
                    for (lane, slot) in out.iter_mut().enumerate() {
                        *slot = values::decode(dtype, shared.load(base + element(lane) * size, size));
                    }
                }
            }
            return Ok(());
        }
        for lane in active(mask) {
            let element = first.wrapping_add(stride.wrapping_mul(lane as i64));
            out[lane as usize] = self.load(shared, element).map_err(|kind| (kind, lane))?;
        }
        Ok(())
    }

    /// `self[indices[lane] + offset] = values[lane]` (encoded from `class`)
    /// for the lanes of `mask`, lowest first (a later lane's write to the
    /// same element wins). A full warp of f32 values to f32 shared memory,
    /// every index inside the array, stores with no per-lane check.
    #[inline]
    fn scatter(
        &self,
        shared: &mut SharedMemory,
        indices: &[u64],
        offset: i64,
        mask: u64,
        values_: &[u64],
        class: Class,
    ) -> Result<(), (ErrorAt, u32)> {
        let full = mask == u64::MAX >> (64 - values_.len());
        if let (true, Target::Shared { offset: base }, DType::F32, Class::F32) = (full, &self.target, self.dtype, class)
        {
            let length = self.elements as u64;
            let inside = indices.iter().all(|&index| ((index as i64).wrapping_add(offset) as u64) < length);
            if inside {
                for (&index, &bits) in indices.iter().zip(values_) {
                    let element = (index as i64).wrapping_add(offset) as usize;
                    // SAFETY: the element lies inside its array (checked
                    // above), and arrays lie inside the block's shared memory.
                    unsafe { shared.store_unchecked_4(base + element * 4, bits) };
                }
                return Ok(());
            }
        }
        for lane in active(mask) {
            let element = (indices[lane as usize] as i64).wrapping_add(offset);
            let raw = values::encode(self.dtype, class, values_[lane as usize]);
            self.store(shared, element, raw).map_err(|kind| (kind, lane))?;
        }
        Ok(())
    }

    /// Element `element`'s bytes (little-endian, zero-extended).
    #[inline]
    fn load_raw(&self, shared: &SharedMemory, element: i64) -> Result<u64, ErrorAt> {
        let element = self.check(element, "read")?;
        Ok(match &self.target {
            Target::Global(window) => window.load(element * self.size, self.size),
            Target::Shared { offset, .. } => shared.load(offset + element * self.size, self.size),
        })
    }

    /// Element `element`, decoded to its register class.
    #[inline]
    fn load(&self, shared: &SharedMemory, element: i64) -> Result<u64, ErrorAt> {
        let element = self.check(element, "read")?;
        let raw = match &self.target {
            Target::Global(window) => window.load(element * self.size, self.size),
            Target::Shared { offset, .. } => shared.load(offset + element * self.size, self.size),
        };
        Ok(values::decode(self.dtype, raw))
    }

    #[inline]
    fn store(&self, shared: &mut SharedMemory, element: i64, raw: u64) -> Result<(), ErrorAt> {
        let element = self.check(element, "write")?;
        match &self.target {
            Target::Global(window) if !window.writable() => {
                return Err(ErrorAt::ReadOnly { name: self.name.to_string() })
            }
            Target::Global(window) => window.store(element * self.size, self.size, raw),
            Target::Shared { offset, .. } => shared.store(offset + element * self.size, self.size, raw),
        }
        Ok(())
    }
}
