//! The kernel simulator: runs kernel IR on the CPU the way a GPU may.
//!
//! Within a warp, lanes run in lockstep with masks for divergence. Between
//! barriers, warps of a block run in a seeded random order, statement by
//! statement; statements that contain barriers run block-wide and must be
//! uniform across the block. Blocks run in a seeded random order.
//!
//! With checks on ([`SimOptions::check`]), it reports — by happens-before
//! epochs, not by comparing values — out-of-bounds accesses per buffer,
//! shared-memory races between barriers, reads of uninitialized shared
//! memory, barriers under divergent control flow, inactive shuffle sources,
//! and non-atomic global writes to one element from different blocks.
//! Without checks it is the `sim` device's fast mode.
//!
//! Values are held as f64 per lane: floats are rounded to f32 after every
//! operation (and to a buffer's dtype on store), integers are exact below
//! 2^53 (index arithmetic). Kernels with u64 values, whose bit patterns need
//! all 64 bits, are refused: they run on the machine ([`crate::machine`]).

use std::collections::HashMap;

use crate::kernel::{register_type, BinaryOp, Expr, Kernel, Literal, Memory, Param, Special, Stmt, UnaryOp, Var};
use crate::machine::tensor_core;
use crate::machine::values::{self, Class};
use crate::{DType, SymbolBindings};

/// How to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimOptions {
    /// 32 (NVIDIA) or 64 (AMD wave64).
    pub warp_size: usize,
    /// Seeds the block and warp orders.
    pub seed: u64,
    /// Run the sanitizer checks.
    pub check: bool,
}

impl Default for SimOptions {
    fn default() -> SimOptions {
        SimOptions { warp_size: 32, seed: 0x5eed, check: true }
    }
}

/// What the sanitizer found, or why the kernel could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    #[error("{kernel}: block {block}, thread {thread}: {access} of `{buffer}` at element {index} is out of bounds (length {length})")]
    OutOfBounds {
        kernel: String,
        block: u64,
        thread: u64,
        access: &'static str,
        buffer: String,
        index: i64,
        length: usize,
    },
    #[error("{kernel}: block {block}: shared `{array}`[{index}] is accessed by warps {first} and {second} between the same barriers, one of them writing")]
    SharedRace { kernel: String, block: u64, array: String, index: usize, first: usize, second: usize },
    #[error("{kernel}: block {block}, thread {thread}: reads uninitialized shared `{array}`[{index}]")]
    UninitializedShared { kernel: String, block: u64, thread: u64, array: String, index: usize },
    #[error("{kernel}: block {block}: a barrier is reached under divergent control flow")]
    DivergentBarrier { kernel: String, block: u64 },
    #[error("{kernel}: `{buffer}`[{index}] is written by blocks {first} and {second} without atomics")]
    OverlappingWrites { kernel: String, buffer: String, index: usize, first: u64, second: u64 },
    #[error("{kernel}: block {block}, thread {thread}: shuffles from inactive lane {source_lane}")]
    InactiveShuffleSource { kernel: String, block: u64, thread: u64, source_lane: usize },
    #[error("{kernel}: block {block}, thread {thread}: a vector access of {width} elements of `{buffer}` at element {index} is not aligned to its size")]
    Misaligned { kernel: String, block: u64, thread: u64, buffer: String, index: i64, width: usize },
    #[error("{kernel}: block {block}, thread {thread}: {access} shared `{array}`[{index}] while a cp.async to it is in flight (no cp.async.wait_group has completed it)")]
    AsyncCopyInFlight { kernel: String, block: u64, thread: u64, access: &'static str, array: String, index: usize },
    #[error(
        "{kernel}: block {block}, warp {warp}: {instruction} with inactive lanes (a warp collective needs all 32)"
    )]
    PartialWarpCollective { kernel: String, block: u64, warp: usize, instruction: &'static str },
    #[error("{kernel}: block {block}: deadlock: {detail}")]
    Deadlock { kernel: String, block: u64, detail: String },
    #[error("{kernel}: {message}")]
    Invalid { kernel: String, message: String },
}

/// A buffer argument: its dtype and elements (as f64; see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct SimBuffer {
    pub dtype: DType,
    pub data: Vec<f64>,
}

/// Arguments of one launch, in parameter order.
#[derive(Clone, Debug, PartialEq)]
pub enum SimArgument {
    Buffer(SimBuffer),
    Scalar(f64),
}

/// Runs `kernel` on `arguments` (buffers are updated in place); the grid size
/// is evaluated under `bindings`.
pub fn run_kernel(
    kernel: &Kernel,
    arguments: &mut [SimArgument],
    bindings: &SymbolBindings,
    options: SimOptions,
) -> Result<(), SimError> {
    let invalid = |message: String| SimError::Invalid { kernel: kernel.name.clone(), message };
    if arguments.len() != kernel.params.len() {
        return Err(invalid(format!("{} arguments for {} parameters", arguments.len(), kernel.params.len())));
    }
    for (param, argument) in kernel.params.iter().zip(arguments.iter()) {
        let fits = matches!(
            (param, argument),
            (Param::Buffer { .. }, SimArgument::Buffer(_)) | (Param::Scalar { .. }, SimArgument::Scalar(_))
        );
        if !fits {
            return Err(invalid(format!("argument for `{}` has the wrong kind", param.name())));
        }
    }
    if uses_u64(kernel) {
        return Err(invalid(
            "u64 values need all 64 bits, which the interpreter's f64 lanes lack; the machine runs them".into(),
        ));
    }
    let blocks = kernel.grid_blocks.evaluate(bindings).map_err(|e| invalid(e.to_string()))?;
    if blocks < 0 {
        return Err(invalid(format!("{blocks} blocks")));
    }
    let mut order: Vec<u64> = (0..blocks as u64).collect();
    let mut random = Random(options.seed);
    shuffle(&mut order, &mut random);
    let work: Vec<(u64, u64)> = order.into_iter().map(|block| (block, random.next())).collect();
    let workers = worker_count(kernel, &options, work.len());
    if workers > 1 {
        return run_blocks_in_parallel(kernel, arguments, &work, blocks as u64, options, workers);
    }
    let mut writers: HashMap<(usize, usize), u64> = HashMap::new();
    for &(block, seed) in &work {
        let mut state = BlockState::new(kernel, block, blocks as u64, options, seed, false);
        state.run_block(&kernel.body, arguments, &mut writers)?;
    }
    Ok(())
}

/// Threads for the fast mode: blocks are independent (a kernel may not
/// depend on another block's writes), so they can run on several cores.
/// Checked runs, kernels with atomics and small grids stay on one thread.
/// `KILN_SIM_THREADS` caps the count.
fn worker_count(kernel: &Kernel, options: &SimOptions, blocks: usize) -> usize {
    if options.check || kernel.body.iter().any(contains_atomic) {
        return 1;
    }
    let available = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let cap = std::env::var("KILN_SIM_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(available);
    available.min(cap).min(blocks / 4).max(1)
}

fn contains_atomic(stmt: &Stmt) -> bool {
    match stmt {
        Stmt::AtomicAdd { .. } => true,
        Stmt::If { then, otherwise, .. } => then.iter().chain(otherwise).any(contains_atomic),
        Stmt::For { body, .. } => body.iter().any(contains_atomic),
        _ => false,
    }
}

/// A worker's copy of the arguments and the elements its blocks wrote.
type WorkerResult = (Vec<SimArgument>, HashMap<(usize, usize), u64>);

/// Runs `work` (block, seed) split over `workers` threads, each on its own
/// copy of the arguments and logging the elements its blocks write; the
/// logged elements are then copied back. Blocks write disjoint elements (the
/// checked mode enforces it), so the result equals a sequential run.
fn run_blocks_in_parallel(
    kernel: &Kernel,
    arguments: &mut [SimArgument],
    work: &[(u64, u64)],
    blocks: u64,
    options: SimOptions,
    workers: usize,
) -> Result<(), SimError> {
    let shared: &[SimArgument] = arguments;
    let chunk = work.len().div_ceil(workers);
    let results: Vec<Result<WorkerResult, SimError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = work
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    let mut local = shared.to_vec();
                    let mut written = HashMap::new();
                    for &(block, seed) in part {
                        let mut state = BlockState::new(kernel, block, blocks, options, seed, true);
                        state.run_block(&kernel.body, &mut local, &mut written)?;
                    }
                    Ok((local, written))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a simulator thread panicked")).collect()
    });
    for result in results {
        let (local, written) = result?;
        for (buffer, element) in written.into_keys() {
            if let (SimArgument::Buffer(target), SimArgument::Buffer(source)) = (&mut arguments[buffer], &local[buffer])
            {
                target.data[element] = source.data[element];
            }
        }
    }
    Ok(())
}

struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 11
    }
}

fn shuffle<T>(items: &mut [T], random: &mut Random) {
    for i in (1..items.len()).rev() {
        let j = (random.next() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// Per-lane values of one expression in one warp.
type Lanes = Vec<f64>;

/// Shared-memory access history of one element within the current epoch.
#[derive(Clone, Default)]
struct SharedCell {
    initialized: bool,
    epoch: u64,
    writer: Option<usize>,
    readers: Vec<usize>,
}

struct BlockState<'k> {
    kernel: &'k Kernel,
    block: u64,
    blocks: u64,
    options: SimOptions,
    warps: usize,
    random: Random,
    /// Registers per warp: variable → (dtype, lanes).
    registers: Vec<HashMap<Var, (DType, Lanes)>>,
    shared: Vec<Vec<f64>>,
    cells: Vec<Vec<SharedCell>>,
    epoch: u64,
    log_writes: bool,
    /// Per warp and lane: its cp.async copies not yet completed.
    copies: Vec<Vec<AsyncQueue>>,
    /// Per shared array and element: cp.async copies in flight to it.
    in_flight: Vec<Vec<u32>>,
    /// Elements with a copy in flight (so the common case, none, is one test).
    in_flight_elements: usize,
}

/// One element a cp.async writes when it completes.
#[derive(Clone, Copy, Debug)]
struct PendingCopy {
    array: usize,
    element: usize,
    value: f64,
}

/// One thread's cp.async groups: the open one and the committed ones, oldest first.
#[derive(Clone, Debug, Default)]
struct AsyncQueue {
    open: Vec<PendingCopy>,
    committed: std::collections::VecDeque<Vec<PendingCopy>>,
}

impl<'k> BlockState<'k> {
    /// `log_writes`: record every written element in the writers map (for
    /// merging a parallel run), without the checks.
    fn new(
        kernel: &'k Kernel,
        block: u64,
        blocks: u64,
        options: SimOptions,
        seed: u64,
        log_writes: bool,
    ) -> BlockState<'k> {
        let warps = (kernel.block_threads as usize).div_ceil(options.warp_size);
        BlockState {
            kernel,
            block,
            blocks,
            options,
            warps,
            random: Random(seed),
            registers: vec![HashMap::new(); warps],
            shared: kernel.shared.iter().map(|a| vec![0.0; a.elements]).collect(),
            cells: kernel.shared.iter().map(|a| vec![SharedCell::default(); a.elements]).collect(),
            epoch: 0,
            log_writes,
            copies: vec![vec![AsyncQueue::default(); options.warp_size]; warps],
            in_flight: kernel.shared.iter().map(|a| vec![0; a.elements]).collect(),
            in_flight_elements: 0,
        }
    }

    fn error(&self, message: String) -> SimError {
        SimError::Invalid { kernel: self.kernel.name.clone(), message }
    }

    fn thread_of(&self, warp: usize, lane: usize) -> u64 {
        (warp * self.options.warp_size + lane) as u64
    }

    /// The lanes of `warp` that exist (the last warp may be partial).
    fn full_mask(&self, warp: usize) -> Vec<bool> {
        (0..self.options.warp_size)
            .map(|lane| warp * self.options.warp_size + lane < self.kernel.block_threads as usize)
            .collect()
    }

    fn run_block(
        &mut self,
        body: &[Stmt],
        arguments: &mut [SimArgument],
        writers: &mut HashMap<(usize, usize), u64>,
    ) -> Result<(), SimError> {
        for stmt in body {
            if contains_barrier(stmt) {
                self.run_block_wide(stmt, arguments, writers)?;
            } else {
                let mut order: Vec<usize> = (0..self.warps).collect();
                shuffle(&mut order, &mut self.random);
                for warp in order {
                    let mask = self.full_mask(warp);
                    self.run_statement(stmt, warp, &mask, arguments, writers)?;
                }
            }
        }
        Ok(())
    }

    /// A statement containing a barrier: its control flow must be the same in
    /// every thread of the block.
    fn run_block_wide(
        &mut self,
        stmt: &Stmt,
        arguments: &mut [SimArgument],
        writers: &mut HashMap<(usize, usize), u64>,
    ) -> Result<(), SimError> {
        let (kernel, block) = (self.kernel.name.clone(), self.block);
        let divergent = || SimError::DivergentBarrier { kernel: kernel.clone(), block };
        match stmt {
            Stmt::Barrier => {
                self.epoch += 1;
                Ok(())
            }
            Stmt::If { condition, then, otherwise } => {
                let value = self.uniform(condition, arguments).ok_or_else(divergent)?;
                self.run_block(if value != 0.0 { then } else { otherwise }, arguments, writers)
            }
            Stmt::For { var, start, end, step, body } => {
                let start = self.uniform(start, arguments).ok_or_else(divergent)? as i64;
                let end = self.uniform(end, arguments).ok_or_else(divergent)? as i64;
                if *step <= 0 {
                    return Err(self.error("a loop step must be positive".into()));
                }
                let mut i = start;
                while i < end {
                    for warp in 0..self.warps {
                        let lanes = vec![i as f64; self.options.warp_size];
                        self.registers[warp].insert(*var, (DType::I64, lanes));
                    }
                    self.run_block(body, arguments, writers)?;
                    i += step;
                }
                Ok(())
            }
            _ => Err(self.error("only if, for and barrier statements can contain barriers".into())),
        }
    }

    /// The value of `expr` when every thread of the block agrees on it.
    fn uniform(&mut self, expr: &Expr, arguments: &[SimArgument]) -> Option<f64> {
        let mut value = None;
        for warp in 0..self.warps {
            let mask = self.full_mask(warp);
            let (_, lanes) = self.evaluate(expr, warp, &mask, arguments).ok()?;
            for (lane, &v) in lanes.iter().enumerate() {
                if !mask[lane] {
                    continue;
                }
                match value {
                    None => value = Some(v),
                    Some(seen) if seen == v => {}
                    Some(_) => return None,
                }
            }
        }
        value
    }

    fn run_statements(
        &mut self,
        body: &[Stmt],
        warp: usize,
        mask: &[bool],
        arguments: &mut [SimArgument],
        writers: &mut HashMap<(usize, usize), u64>,
    ) -> Result<(), SimError> {
        for stmt in body {
            self.run_statement(stmt, warp, mask, arguments, writers)?;
        }
        Ok(())
    }

    fn run_statement(
        &mut self,
        stmt: &Stmt,
        warp: usize,
        mask: &[bool],
        arguments: &mut [SimArgument],
        writers: &mut HashMap<(usize, usize), u64>,
    ) -> Result<(), SimError> {
        if !mask.iter().any(|&m| m) {
            return Ok(());
        }
        if let Some(problem) = crate::kernel::collective_shape_error(self.kernel, stmt) {
            return Err(self.error(problem));
        }
        match stmt {
            Stmt::Let { var, dtype, value } => {
                let (_, lanes) = self.evaluate(value, warp, mask, arguments)?;
                let lanes = lanes.into_iter().map(|v| round_to(*dtype, v)).collect();
                self.registers[warp].insert(*var, (*dtype, lanes));
            }
            Stmt::Assign { var, value } => {
                let (_, lanes) = self.evaluate(value, warp, mask, arguments)?;
                let (dtype, current) = self.registers[warp].get_mut(var).ok_or_else(|| SimError::Invalid {
                    kernel: self.kernel.name.clone(),
                    message: format!("v{} is assigned before its let", var.0),
                })?;
                let dtype = *dtype;
                for lane in 0..mask.len() {
                    if mask[lane] {
                        current[lane] = round_to(dtype, lanes[lane]);
                    }
                }
            }
            Stmt::Store { buffer, index, value } | Stmt::AtomicAdd { buffer, index, value } => {
                let atomic = matches!(stmt, Stmt::AtomicAdd { .. });
                let (_, indices) = self.evaluate(index, warp, mask, arguments)?;
                let (value_dtype, values) = self.evaluate(value, warp, mask, arguments)?;
                let values = (value_dtype, values.as_slice());
                self.store_lanes(*buffer, &indices, values, warp, mask, arguments, writers, atomic)?;
            }
            Stmt::VectorStore { memory, index, values } => {
                let (_, indices) = self.evaluate(index, warp, mask, arguments)?;
                self.check_vector_alignment(*memory, &indices, values.len(), warp, mask)?;
                let mut lanes = Vec::with_capacity(values.len());
                for value in values {
                    lanes.push(self.evaluate(value, warp, mask, arguments)?);
                }
                for (offset, (value_dtype, values)) in lanes.iter().enumerate() {
                    let shifted: Vec<f64> = indices.iter().map(|i| i + offset as f64).collect();
                    let values = (*value_dtype, values.as_slice());
                    match *memory {
                        Memory::Buffer(buffer) => {
                            self.store_lanes(buffer, &shifted, values, warp, mask, arguments, writers, false)?
                        }
                        Memory::Shared(array) => self.shared_write_lanes(array, &shifted, values, warp, mask)?,
                    }
                }
            }
            Stmt::VectorLoad { vars, dtype, memory, index } => {
                let (_, indices) = self.evaluate(index, warp, mask, arguments)?;
                self.check_vector_alignment(*memory, &indices, vars.len(), warp, mask)?;
                for (offset, var) in vars.iter().enumerate() {
                    let shifted: Vec<f64> = indices.iter().map(|i| i + offset as f64).collect();
                    let (_, lanes) = match *memory {
                        Memory::Buffer(buffer) => self.load_lanes(buffer, &shifted, warp, mask, arguments)?,
                        Memory::Shared(array) => self.shared_read_lanes(array, &shifted, warp, mask)?,
                    };
                    let lanes = lanes.into_iter().map(|v| round_to(*dtype, v)).collect();
                    self.registers[warp].insert(*var, (*dtype, lanes));
                }
            }
            Stmt::SharedStore { array, index, value } => {
                let (_, indices) = self.evaluate(index, warp, mask, arguments)?;
                let (value_dtype, values) = self.evaluate(value, warp, mask, arguments)?;
                self.shared_write_lanes(*array, &indices, (value_dtype, &values), warp, mask)?;
            }
            Stmt::If { condition, then, otherwise } => {
                let (_, conditions) = self.evaluate(condition, warp, mask, arguments)?;
                let then_mask: Vec<bool> = mask.iter().zip(&conditions).map(|(&m, &c)| m && c != 0.0).collect();
                let else_mask: Vec<bool> = mask.iter().zip(&conditions).map(|(&m, &c)| m && c == 0.0).collect();
                self.run_statements(then, warp, &then_mask, arguments, writers)?;
                self.run_statements(otherwise, warp, &else_mask, arguments, writers)?;
            }
            Stmt::For { var, start, end, step, body } => {
                if *step <= 0 {
                    return Err(self.error("a loop step must be positive".into()));
                }
                let (_, starts) = self.evaluate(start, warp, mask, arguments)?;
                let (_, ends) = self.evaluate(end, warp, mask, arguments)?;
                self.registers[warp].insert(*var, (DType::I64, starts.clone()));
                loop {
                    let current = self.registers[warp][var].1.clone();
                    let active: Vec<bool> =
                        (0..mask.len()).map(|lane| mask[lane] && current[lane] < ends[lane]).collect();
                    if !active.iter().any(|&a| a) {
                        break;
                    }
                    self.run_statements(body, warp, &active, arguments, writers)?;
                    let lanes = &mut self.registers[warp].get_mut(var).expect("inserted").1;
                    for lane in 0..lanes.len() {
                        if active[lane] {
                            lanes[lane] += *step as f64;
                        }
                    }
                }
            }
            Stmt::Barrier => {
                return Err(SimError::DivergentBarrier { kernel: self.kernel.name.clone(), block: self.block });
            }
            Stmt::LoadMatrix { vars, array, index, transpose } => {
                self.whole_warp("ldmatrix", warp, mask)?;
                let (_, indices) = self.evaluate(index, warp, mask, arguments)?;
                let dtype = self.kernel.shared[*array].dtype;
                let mut rows = vec![[0u16; 8]; 8 * vars.len()];
                for (lane, row) in rows.iter_mut().enumerate() {
                    let start = indices[lane] as i64;
                    if start.rem_euclid(8) != 0 {
                        return Err(SimError::Misaligned {
                            kernel: self.kernel.name.clone(),
                            block: self.block,
                            thread: self.thread_of(warp, lane),
                            buffer: self.kernel.shared[*array].name.clone(),
                            index: start,
                            width: 8,
                        });
                    }
                    for (column, slot) in row.iter_mut().enumerate() {
                        let value = self.shared_read_one(*array, (start + column as i64) as f64, warp, lane)?;
                        *slot = values::encode_f64(dtype, value) as u16;
                    }
                }
                let registers = tensor_core::load_matrix(&rows, *transpose);
                for (matrix, var) in vars.iter().enumerate() {
                    let lanes = registers.iter().map(|lane| lane[matrix] as f64).collect();
                    self.registers[warp].insert(*var, (DType::U32, lanes));
                }
            }
            Stmt::MatrixMultiplyAccumulate { kind, acc, a, b } => {
                self.whole_warp("mma", warp, mask)?;
                let mut a_lanes = vec![[0u32; 4]; tensor_core::WARP];
                for (register, operand) in a.iter().enumerate() {
                    let (_, lanes) = self.evaluate(operand, warp, mask, arguments)?;
                    for lane in 0..tensor_core::WARP {
                        a_lanes[lane][register] = lanes[lane] as u32;
                    }
                }
                let mut b_lanes = vec![[0u32; 2]; tensor_core::WARP];
                for (register, operand) in b.iter().enumerate() {
                    let (_, lanes) = self.evaluate(operand, warp, mask, arguments)?;
                    for lane in 0..tensor_core::WARP {
                        b_lanes[lane][register] = lanes[lane] as u32;
                    }
                }
                let mut c_lanes = vec![[0f32; 4]; tensor_core::WARP];
                for (register, var) in acc.iter().enumerate() {
                    let (_, lanes) = self.evaluate(&Expr::Var(*var), warp, mask, arguments)?;
                    for lane in 0..tensor_core::WARP {
                        c_lanes[lane][register] = lanes[lane] as f32;
                    }
                }
                let d = tensor_core::mma(*kind, &a_lanes, &b_lanes, &c_lanes);
                for (register, var) in acc.iter().enumerate() {
                    let lanes = d.iter().map(|lane| lane[register] as f64).collect();
                    self.registers[warp].insert(*var, (DType::F32, lanes));
                }
            }
            Stmt::AsyncCopy { array, shared_index, buffer, index, elements, source_elements } => {
                let (_, destinations) = self.evaluate(shared_index, warp, mask, arguments)?;
                let (_, sources) = self.evaluate(index, warp, mask, arguments)?;
                let (_, valid) = self.evaluate(source_elements, warp, mask, arguments)?;
                let width = *elements as usize;
                let memory = [Memory::Shared(*array), Memory::Buffer(*buffer)];
                for (memory, indices) in memory.into_iter().zip([&destinations, &sources]) {
                    self.check_vector_alignment(memory, indices, width, warp, mask)?;
                }
                let SimArgument::Buffer(source) = &arguments[*buffer] else {
                    return Err(self.error(format!("parameter {buffer} is not a buffer")));
                };
                for lane in (0..mask.len()).filter(|&lane| mask[lane]) {
                    let read = (valid[lane].max(0.0) as usize).min(width);
                    for offset in 0..width {
                        let element =
                            self.shared_index(*array, destinations[lane] + offset as f64, warp, lane, "write")?;
                        // Only the source elements read must be in bounds; the same dtype, so no conversion.
                        let value = if offset < read {
                            let at = sources[lane] as i64 + offset as i64;
                            if at < 0 || at as usize >= source.data.len() {
                                return Err(SimError::OutOfBounds {
                                    kernel: self.kernel.name.clone(),
                                    block: self.block,
                                    thread: self.thread_of(warp, lane),
                                    access: "read",
                                    buffer: self.kernel.params[*buffer].name().to_string(),
                                    index: at,
                                    length: source.data.len(),
                                });
                            }
                            source.data[at as usize]
                        } else {
                            0.0
                        };
                        // A write from its issue on: another warp's access before a barrier
                        // races with it, and so does a second copy in flight to the element.
                        self.check_not_in_flight(*array, element, warp, lane, "writes")?;
                        self.record_shared(*array, element, warp, true)?;
                        self.copies[warp][lane].open.push(PendingCopy { array: *array, element, value });
                        let count = &mut self.in_flight[*array][element];
                        self.in_flight_elements += (*count == 0) as usize;
                        *count += 1;
                    }
                }
            }
            Stmt::AsyncCommit => {
                for lane in (0..mask.len()).filter(|&lane| mask[lane]) {
                    let queue = &mut self.copies[warp][lane];
                    let group = std::mem::take(&mut queue.open);
                    queue.committed.push_back(group);
                }
            }
            Stmt::AsyncWait { pending } => {
                for lane in (0..mask.len()).filter(|&lane| mask[lane]) {
                    while self.copies[warp][lane].committed.len() > *pending as usize {
                        let group = self.copies[warp][lane].committed.pop_front().expect("non-empty");
                        self.complete(group, warp)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A warp collective: every lane of the warp is active.
    fn whole_warp(&self, instruction: &'static str, warp: usize, mask: &[bool]) -> Result<(), SimError> {
        if self.options.warp_size != tensor_core::WARP || mask.iter().any(|&active| !active) {
            return Err(SimError::PartialWarpCollective {
                kernel: self.kernel.name.clone(),
                block: self.block,
                warp,
                instruction,
            });
        }
        Ok(())
    }

    /// Writes a completed cp.async group to shared memory: the copies land
    /// now, as writes by their warp (so another warp reads them only after a barrier).
    fn complete(&mut self, group: Vec<PendingCopy>, warp: usize) -> Result<(), SimError> {
        for copy in group {
            let count = &mut self.in_flight[copy.array][copy.element];
            if *count > 0 {
                *count -= 1;
                self.in_flight_elements -= (*count == 0) as usize;
            }
            self.record_shared(copy.array, copy.element, warp, true)?;
            self.shared[copy.array][copy.element] = copy.value;
        }
        Ok(())
    }

    /// In the checked mode: an error when a cp.async to `array[element]` is in flight.
    fn check_not_in_flight(
        &self,
        array: usize,
        element: usize,
        warp: usize,
        lane: usize,
        access: &'static str,
    ) -> Result<(), SimError> {
        if self.options.check && self.in_flight_elements > 0 && self.in_flight[array][element] > 0 {
            return Err(SimError::AsyncCopyInFlight {
                kernel: self.kernel.name.clone(),
                block: self.block,
                thread: self.thread_of(warp, lane),
                access,
                array: self.kernel.shared[array].name.clone(),
                index: element,
            });
        }
        Ok(())
    }

    /// Elements `indices[lane]` of shared array `array` for the active lanes
    /// (checked: bounds, initialization, races).
    fn shared_read_lanes(
        &mut self,
        array: usize,
        indices: &[f64],
        warp: usize,
        mask: &[bool],
    ) -> Result<(DType, Lanes), SimError> {
        let mut lanes = vec![0.0; mask.len()];
        for lane in 0..mask.len() {
            if mask[lane] {
                lanes[lane] = self.shared_read_one(array, indices[lane], warp, lane)?;
            }
        }
        Ok((register_type(self.kernel.shared[array].dtype), lanes))
    }

    /// Element `index` of shared array `array` as lane `lane` of `warp` reads it (checked).
    fn shared_read_one(&mut self, array: usize, index: f64, warp: usize, lane: usize) -> Result<f64, SimError> {
        let element = self.shared_index(array, index, warp, lane, "read")?;
        self.check_not_in_flight(array, element, warp, lane, "reads")?;
        if self.options.check && !self.cells[array][element].initialized {
            return Err(SimError::UninitializedShared {
                kernel: self.kernel.name.clone(),
                block: self.block,
                thread: self.thread_of(warp, lane),
                array: self.kernel.shared[array].name.clone(),
                index: element,
            });
        }
        self.record_shared(array, element, warp, false)?;
        Ok(self.shared[array][element])
    }

    /// Writes `values[lane]` to shared `array[indices[lane]]` for the active lanes.
    fn shared_write_lanes(
        &mut self,
        array: usize,
        indices: &[f64],
        (value_dtype, values): (DType, &[f64]),
        warp: usize,
        mask: &[bool],
    ) -> Result<(), SimError> {
        for lane in 0..mask.len() {
            if mask[lane] {
                let element = self.shared_index(array, indices[lane], warp, lane, "write")?;
                self.check_not_in_flight(array, element, warp, lane, "writes")?;
                self.record_shared(array, element, warp, true)?;
                self.shared[array][element] = stored(self.kernel.shared[array].dtype, value_dtype, values[lane]);
            }
        }
        Ok(())
    }

    fn shared_index(
        &self,
        array: usize,
        index: f64,
        warp: usize,
        lane: usize,
        access: &'static str,
    ) -> Result<usize, SimError> {
        let length = self.shared[array].len();
        let element = index as i64;
        if element < 0 || element as usize >= length {
            return Err(SimError::OutOfBounds {
                kernel: self.kernel.name.clone(),
                block: self.block,
                thread: self.thread_of(warp, lane),
                access,
                buffer: self.kernel.shared[array].name.clone(),
                index: element,
                length,
            });
        }
        Ok(element as usize)
    }

    /// Records a shared access for race detection (different warps, same
    /// epoch, one write).
    fn record_shared(&mut self, array: usize, element: usize, warp: usize, write: bool) -> Result<(), SimError> {
        let check = self.options.check;
        if !check {
            return Ok(()); // Epochs only serve the checks.
        }
        let epoch = self.epoch;
        let cell = &mut self.cells[array][element];
        if cell.epoch != epoch {
            cell.epoch = epoch;
            cell.writer = None;
            cell.readers.clear();
        }
        let race = |other: usize| SimError::SharedRace {
            kernel: self.kernel.name.clone(),
            block: self.block,
            array: self.kernel.shared[array].name.clone(),
            index: element,
            first: other,
            second: warp,
        };
        if check {
            if let Some(writer) = cell.writer.filter(|&w| w != warp) {
                return Err(race(writer));
            }
            if write {
                if let Some(&reader) = cell.readers.iter().find(|&&r| r != warp) {
                    return Err(race(reader));
                }
            }
        }
        if write {
            cell.writer = Some(warp);
            cell.initialized = true;
        } else if !cell.readers.contains(&warp) {
            cell.readers.push(warp);
        }
        Ok(())
    }

    /// Elements `indices[lane]` of buffer parameter `buffer` for the active lanes.
    fn load_lanes(
        &self,
        buffer: usize,
        indices: &[f64],
        warp: usize,
        mask: &[bool],
        arguments: &[SimArgument],
    ) -> Result<(DType, Lanes), SimError> {
        let SimArgument::Buffer(source) = &arguments[buffer] else {
            return Err(self.error(format!("parameter {buffer} is not a buffer")));
        };
        let mut lanes = vec![0.0; mask.len()];
        for lane in 0..mask.len() {
            if !mask[lane] {
                continue;
            }
            let element = indices[lane] as i64;
            if element < 0 || element as usize >= source.data.len() {
                return Err(SimError::OutOfBounds {
                    kernel: self.kernel.name.clone(),
                    block: self.block,
                    thread: self.thread_of(warp, lane),
                    access: "read",
                    buffer: self.kernel.params[buffer].name().to_string(),
                    index: element,
                    length: source.data.len(),
                });
            }
            lanes[lane] = source.data[element as usize];
        }
        Ok((register_type(source.dtype), lanes))
    }

    /// Writes (or atomically adds) `values[lane]` to `buffer[indices[lane]]` for the active lanes.
    #[allow(clippy::too_many_arguments)]
    fn store_lanes(
        &mut self,
        buffer: usize,
        indices: &[f64],
        (value_dtype, values): (DType, &[f64]),
        warp: usize,
        mask: &[bool],
        arguments: &mut [SimArgument],
        writers: &mut HashMap<(usize, usize), u64>,
        atomic: bool,
    ) -> Result<(), SimError> {
        let name = self.kernel.params[buffer].name().to_string();
        for lane in 0..mask.len() {
            if !mask[lane] {
                continue;
            }
            let SimArgument::Buffer(target) = &mut arguments[buffer] else {
                return Err(self.error(format!("`{name}` is not a buffer")));
            };
            let element = indices[lane] as i64;
            if element < 0 || element as usize >= target.data.len() {
                return Err(SimError::OutOfBounds {
                    kernel: self.kernel.name.clone(),
                    block: self.block,
                    thread: self.thread_of(warp, lane),
                    access: "write",
                    buffer: name,
                    index: element,
                    length: target.data.len(),
                });
            }
            let element = element as usize;
            if self.options.check && !atomic {
                if let Some(&other) = writers.get(&(buffer, element)) {
                    if other != self.block {
                        return Err(SimError::OverlappingWrites {
                            kernel: self.kernel.name.clone(),
                            buffer: name,
                            index: element,
                            first: other,
                            second: self.block,
                        });
                    }
                }
                writers.insert((buffer, element), self.block);
            } else if self.log_writes {
                writers.insert((buffer, element), self.block);
            }
            target.data[element] = if atomic {
                round_to(target.dtype, target.data[element] + values[lane])
            } else {
                stored(target.dtype, value_dtype, values[lane])
            };
        }
        Ok(())
    }

    /// A vector access of `width` elements must start at a multiple of its width
    /// (buffers are 256-byte aligned, so the address is then aligned to the access size).
    fn check_vector_alignment(
        &self,
        memory: Memory,
        indices: &[f64],
        width: usize,
        warp: usize,
        mask: &[bool],
    ) -> Result<(), SimError> {
        for lane in (0..mask.len()).filter(|&lane| mask[lane]) {
            let element = indices[lane] as i64;
            if element.rem_euclid(width as i64) != 0 {
                return Err(SimError::Misaligned {
                    kernel: self.kernel.name.clone(),
                    block: self.block,
                    thread: self.thread_of(warp, lane),
                    buffer: match memory {
                        Memory::Buffer(buffer) => self.kernel.params[buffer].name().to_string(),
                        Memory::Shared(array) => self.kernel.shared[array].name.clone(),
                    },
                    index: element,
                    width,
                });
            }
        }
        Ok(())
    }

    fn evaluate(
        &mut self,
        expr: &Expr,
        warp: usize,
        mask: &[bool],
        arguments: &[SimArgument],
    ) -> Result<(DType, Lanes), SimError> {
        let width = mask.len();
        Ok(match expr {
            Expr::Literal(literal) => {
                let value = match literal {
                    Literal::F32(v) => *v as f64,
                    Literal::I64(v) => *v as f64,
                    Literal::I32(v) => *v as f64,
                    Literal::Bool(v) => *v as u8 as f64,
                };
                (literal.dtype(), vec![value; width])
            }
            Expr::Var(var) => {
                let (dtype, lanes) = self.registers[warp]
                    .get(var)
                    .ok_or_else(|| self.error(format!("v{} is read before its let", var.0)))?;
                (*dtype, lanes.clone())
            }
            Expr::Param(index) => match (&self.kernel.params.get(*index), arguments.get(*index)) {
                (Some(Param::Scalar { dtype, .. }), Some(SimArgument::Scalar(value))) => (*dtype, vec![*value; width]),
                _ => return Err(self.error(format!("parameter {index} is not a scalar"))),
            },
            Expr::Special(special) => {
                let lanes = (0..width)
                    .map(|lane| match special {
                        Special::ThreadIndex => (warp * self.options.warp_size + lane) as f64,
                        Special::BlockIndex => self.block as f64,
                        Special::BlockThreads => self.kernel.block_threads as f64,
                        Special::GridBlocks => self.blocks as f64,
                        Special::Lane => lane as f64,
                    })
                    .collect();
                (DType::I32, lanes)
            }
            Expr::Unary(op, a) => {
                let (dtype, values) = self.evaluate(a, warp, mask, arguments)?;
                let lanes = values.iter().map(|&v| unary(*op, dtype, v)).collect();
                (dtype, lanes)
            }
            Expr::Binary(op, a, b) => {
                let (dtype_a, x) = self.evaluate(a, warp, mask, arguments)?;
                let (dtype_b, y) = self.evaluate(b, warp, mask, arguments)?;
                if dtype_a != dtype_b {
                    return Err(self.error(format!("{op:?} of {dtype_a} and {dtype_b}")));
                }
                let mut lanes = x;
                binary_lanes(*op, dtype_a, &mut lanes, &y);
                (if op.is_comparison() { DType::Bool } else { dtype_a }, lanes)
            }
            Expr::Select(c, a, b) => {
                let (_, conditions) = self.evaluate(c, warp, mask, arguments)?;
                let (dtype, x) = self.evaluate(a, warp, mask, arguments)?;
                let (_, y) = self.evaluate(b, warp, mask, arguments)?;
                (dtype, (0..width).map(|l| if conditions[l] != 0.0 { x[l] } else { y[l] }).collect())
            }
            Expr::Cast(dtype, a) => {
                let (from, values) = self.evaluate(a, warp, mask, arguments)?;
                let (from, to) = (Class::declared(from), Class::declared(*dtype));
                (*dtype, values.into_iter().map(|v| on_bits(to, values::convert(from, to, on_f64(from, v)))).collect())
            }
            Expr::Convert { dtype, rounding, value } => {
                let (from, values) = self.evaluate(value, warp, mask, arguments)?;
                let (from, to) = (Class::declared(from), Class::declared(*dtype));
                let convert = |v| on_bits(to, values::convert_rounded(from, to, *rounding, on_f64(from, v)));
                (*dtype, values.into_iter().map(convert).collect())
            }
            Expr::Bitcast(dtype, a) => {
                let (from, values) = self.evaluate(a, warp, mask, arguments)?;
                let (from, to) = (Class::declared(from), Class::declared(*dtype));
                (*dtype, values.into_iter().map(|v| on_bits(to, values::bitcast(to, on_f64(from, v)))).collect())
            }
            Expr::Fma(a, b, c) => {
                let (_, x) = self.evaluate(a, warp, mask, arguments)?;
                let (_, y) = self.evaluate(b, warp, mask, arguments)?;
                let (_, z) = self.evaluate(c, warp, mask, arguments)?;
                let lanes = (0..width).map(|l| (x[l] as f32).mul_add(y[l] as f32, z[l] as f32) as f64).collect();
                (DType::F32, lanes)
            }
            Expr::Load { buffer, index } => {
                let (_, indices) = self.evaluate(index, warp, mask, arguments)?;
                self.load_lanes(*buffer, &indices, warp, mask, arguments)?
            }
            Expr::SharedLoad { array, index } => {
                let (_, indices) = self.evaluate(index, warp, mask, arguments)?;
                self.shared_read_lanes(*array, &indices, warp, mask)?
            }
            Expr::ShuffleXor { value, mask: xor } => {
                let (dtype, values) = self.evaluate(value, warp, mask, arguments)?;
                let mut lanes = vec![0.0; width];
                for lane in 0..width {
                    if !mask[lane] {
                        continue;
                    }
                    let source = lane ^ *xor as usize;
                    if source >= width || (self.options.check && !mask[source]) {
                        return Err(SimError::InactiveShuffleSource {
                            kernel: self.kernel.name.clone(),
                            block: self.block,
                            thread: self.thread_of(warp, lane),
                            source_lane: source,
                        });
                    }
                    lanes[lane] = values[source];
                }
                (dtype, lanes)
            }
        })
    }
}

/// Whether the kernel has a u64 parameter, shared array, variable or conversion.
fn uses_u64(kernel: &Kernel) -> bool {
    fn expr(e: &Expr) -> bool {
        match e {
            Expr::Cast(d, a) | Expr::Bitcast(d, a) => *d == DType::U64 || expr(a),
            Expr::Convert { dtype, value, .. } => *dtype == DType::U64 || expr(value),
            Expr::Unary(_, a) | Expr::ShuffleXor { value: a, .. } => expr(a),
            Expr::Load { index: a, .. } | Expr::SharedLoad { index: a, .. } => expr(a),
            Expr::Binary(_, a, b) => expr(a) || expr(b),
            Expr::Select(a, b, c) | Expr::Fma(a, b, c) => expr(a) || expr(b) || expr(c),
            Expr::Literal(_) | Expr::Var(_) | Expr::Param(_) | Expr::Special(_) => false,
        }
    }
    fn stmt(s: &Stmt) -> bool {
        match s {
            Stmt::Let { dtype, value, .. } => *dtype == DType::U64 || expr(value),
            Stmt::Assign { value, .. } => expr(value),
            Stmt::Store { index, value, .. }
            | Stmt::SharedStore { index, value, .. }
            | Stmt::AtomicAdd { index, value, .. } => expr(index) || expr(value),
            Stmt::If { condition, then, otherwise } => expr(condition) || then.iter().chain(otherwise).any(stmt),
            Stmt::For { start, end, body, .. } => expr(start) || expr(end) || body.iter().any(stmt),
            Stmt::VectorLoad { dtype, index, .. } => *dtype == DType::U64 || expr(index),
            Stmt::VectorStore { index, values, .. } => expr(index) || values.iter().any(expr),
            Stmt::LoadMatrix { index, .. } => expr(index),
            Stmt::MatrixMultiplyAccumulate { a, b, .. } => a.iter().chain(b).any(expr),
            Stmt::AsyncCopy { shared_index, index, source_elements, .. } => {
                expr(shared_index) || expr(index) || expr(source_elements)
            }
            Stmt::Barrier | Stmt::AsyncCommit | Stmt::AsyncWait { .. } => false,
        }
    }
    let param_u64 = kernel.params.iter().any(|p| match p {
        Param::Buffer { dtype, .. } | Param::Scalar { dtype, .. } => *dtype == DType::U64,
    });
    param_u64 || kernel.shared.iter().any(|a| a.dtype == DType::U64) || kernel.body.iter().any(stmt)
}

fn contains_barrier(stmt: &Stmt) -> bool {
    match stmt {
        Stmt::Barrier => true,
        Stmt::If { then, otherwise, .. } => then.iter().chain(otherwise).any(contains_barrier),
        Stmt::For { body, .. } => body.iter().any(contains_barrier),
        _ => false,
    }
}

/// The machine's register bits of a value of `class` the interpreter holds
/// as f64 (exact for floats and for integers below 2^53).
fn on_f64(class: Class, value: f64) -> u64 {
    values::from_f64(class, value)
}

/// The interpreter's f64 of machine register bits of `class`.
fn on_bits(class: Class, bits: u64) -> f64 {
    values::to_f64(class, bits)
}

/// What memory of `dtype` holds after a store of `value` (of register type
/// `value_dtype`): the machine's element encoding, read back as f64.
fn stored(dtype: DType, value_dtype: DType, value: f64) -> f64 {
    let class = Class::declared(value_dtype);
    let element = values::encode(dtype, class, on_f64(class, value));
    on_bits(Class::loaded(dtype), values::decode(dtype, element))
}

/// Rounds to the precision of `dtype` (memory dtypes round to themselves).
fn round_to(dtype: DType, value: f64) -> f64 {
    match dtype {
        DType::F32 => value as f32 as f64,
        DType::F16 => half::f16::from_f64(value).to_f64(),
        DType::BF16 => crate::dtype::bf16_from_f64(value).to_f64(),
        _ => value,
    }
}

fn unary(op: UnaryOp, dtype: DType, v: f64) -> f64 {
    if !dtype.is_float() {
        // Integer semantics (wrapping, bitwise) are the machine's.
        let class = Class::declared(dtype);
        let mut out = [0];
        values::unary_lanes(op, class, &mut out, &[on_f64(class, v)]);
        return on_bits(class, out[0]);
    }
    let result = values::unary_f64(op, v);
    round_to(dtype, result)
}

/// erf to about f64 accuracy: the Taylor series below 2.5, a continued
/// fraction for erfc beyond (ample for results rounded to f32).
pub(crate) fn erf_f64(x: f64) -> f64 {
    let a = x.abs();
    let result = if a < 2.5 {
        let mut term = a;
        let mut sum = a;
        let mut n = 0.0;
        loop {
            n += 1.0;
            term *= -a * a / n;
            let add = term / (2.0 * n + 1.0);
            sum += add;
            if add.abs() <= 1e-17 * sum.abs() || n > 200.0 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // Continued fraction for erfc.
        let mut fraction = 0.0;
        for k in (1..60).rev() {
            fraction = (k as f64 / 2.0) / (a + fraction);
        }
        1.0 - (-a * a).exp() / (std::f64::consts::PI.sqrt() * (a + fraction))
    };
    if x < 0.0 {
        -result
    } else {
        result
    }
}

/// [`binary`] over whole warps: `x[lane] = x[lane] op y[lane]`, with the op
/// chosen once per warp rather than per lane (the simulator's hottest loop).
fn binary_lanes(op: BinaryOp, dtype: DType, x: &mut [f64], y: &[f64]) {
    macro_rules! integers {
        ($f:expr) => {
            x.iter_mut().zip(y).for_each(|(p, &q)| *p = $f(*p as i64, q as i64) as f64)
        };
    }
    macro_rules! floats {
        ($f:expr) => {
            x.iter_mut().zip(y).for_each(|(p, &q)| *p = $f(*p, q))
        };
    }
    match (op, dtype) {
        (BinaryOp::Add, DType::I64) => integers!(|a: i64, b: i64| a.wrapping_add(b)),
        (BinaryOp::Sub, DType::I64) => integers!(|a: i64, b: i64| a.wrapping_sub(b)),
        (BinaryOp::Mul, DType::I64) => integers!(|a: i64, b: i64| a.wrapping_mul(b)),
        (BinaryOp::Lt, DType::I64) => integers!(|a: i64, b: i64| (a < b) as i64),
        (BinaryOp::Add, DType::F32) => floats!(|p: f64, q: f64| (p + q) as f32 as f64),
        (BinaryOp::Sub, DType::F32) => floats!(|p: f64, q: f64| (p - q) as f32 as f64),
        (BinaryOp::Mul, DType::F32) => floats!(|p: f64, q: f64| (p * q) as f32 as f64),
        (BinaryOp::Max, DType::F32) => floats!(|p: f64, q: f64| p.max(q)),
        _ => floats!(|p: f64, q: f64| binary(op, dtype, p, q)),
    }
}

fn binary(op: BinaryOp, dtype: DType, p: f64, q: f64) -> f64 {
    if !dtype.is_float() {
        // Integer semantics (widths, signedness, shifts) are the machine's.
        let class = Class::declared(dtype);
        let mut out = [0];
        values::binary_lanes(op, class, &mut out, &[on_f64(class, p)], &[on_f64(class, q)]);
        return on_bits(values::binary_class(op, class), out[0]);
    }
    let value = match op {
        BinaryOp::Add => p + q,
        BinaryOp::Sub => p - q,
        BinaryOp::Mul => p * q,
        BinaryOp::Div => p / q,
        BinaryOp::Rem => p % q,
        BinaryOp::Pow => {
            if q == 2.0 {
                p * p
            } else {
                p.powf(q)
            }
        }
        BinaryOp::Max => p.max(q),
        BinaryOp::Min => p.min(q),
        BinaryOp::Lt => return (p < q) as u8 as f64,
        BinaryOp::Le => return (p <= q) as u8 as f64,
        BinaryOp::Eq => return (p == q) as u8 as f64,
        BinaryOp::Ne => return (p != q) as u8 as f64,
        BinaryOp::And => return (p != 0.0 && q != 0.0) as u8 as f64,
        BinaryOp::Or => return (p != 0.0 || q != 0.0) as u8 as f64,
        _ => return f64::NAN, // bitwise operations on floats: refused by the verifier
    };
    round_to(dtype, value)
}

#[cfg(test)]
mod tests {
    use super::erf_f64;

    #[test]
    fn erf_matches_known_values_and_terminates_at_zero() {
        assert_eq!(erf_f64(0.0), 0.0);
        assert!((erf_f64(0.5) - 0.520_499_877_813_046_5).abs() < 1e-12);
        assert!((erf_f64(-1.0) + 0.842_700_792_949_714_9).abs() < 1e-12);
        assert!((erf_f64(3.0) - 0.999_977_909_503_001_4).abs() < 1e-12);
    }
}
