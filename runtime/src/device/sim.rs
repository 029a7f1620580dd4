//! The simulator device: runs an artifact's kernel IR on the CPU.
//!
//! The arena is real bytes laid out exactly as the memory plan says, so a
//! plan that overlaps two live tensors corrupts results here as it would on
//! a GPU. The arena starts poisoned (every byte 0xFF: NaN for floats), so a
//! kernel that reads what nothing wrote shows up in the outputs.
//!
//! The fast mode runs the machine ([`crate::machine`]): kernels compiled
//! once per model, launched on the arena and the weights in place. The
//! checked mode runs the interpreter ([`crate::sim`]) with every detector:
//! before each launch the kernel's arena arguments are decoded from their
//! byte ranges, after it the buffers it may write are encoded back.

use std::time::{Duration, Instant};

use crate::artifact::{ArgumentSpec, EntrySpec};
use crate::device::{Executor, ExecutorKind};
use crate::kernel::Param;
use crate::machine::{self, AlignedBytes, Binding, Counters, MachineOptions, Region};
use crate::session::{choose_variant, concrete_shape, Model, RunError};
use crate::sim::{run_kernel, SimArgument, SimBuffer, SimOptions};
use crate::tensor::{decode_elements, encode_elements};
use crate::{HostTensor, SymbolBindings};

/// `--device sim`: always present.
pub const KIND: ExecutorKind =
    ExecutorKind { name: "sim", present: || true, open: |_, device| Ok(Box::new(SimExecutor::new(device.check))) };

/// `--device interpreter`: the tree-walking interpreter, with `--check` its
/// detectors (the independent oracle the machine is tested against; also
/// what the machine is measured against).
pub const INTERPRETER_KIND: ExecutorKind = ExecutorKind {
    name: "interpreter",
    present: || false,
    open: |_, device| Ok(Box::new(SimExecutor::interpreter(device.check))),
};

/// Runs kernels in the simulator: the machine (fast or checked), or on
/// request the interpreter (with or without its checks).
pub struct SimExecutor {
    options: SimOptions,
    /// Launch on the machine; else on the interpreter.
    machine: bool,
    arena: AlignedBytes,
}

impl SimExecutor {
    /// The machine: its fast mode, or with `check` its checked mode (every
    /// detector, by happens-before; [`crate::machine::MachineOptions::check`]).
    pub fn new(check: bool) -> SimExecutor {
        SimExecutor {
            options: SimOptions { check, ..SimOptions::default() },
            machine: true,
            arena: AlignedBytes::default(),
        }
    }

    /// The interpreter, with or without its checks.
    pub fn interpreter(check: bool) -> SimExecutor {
        SimExecutor { machine: false, ..SimExecutor::new(check) }
    }

    fn machine_options(&self) -> MachineOptions {
        MachineOptions {
            warp_size: self.options.warp_size,
            seed: self.options.seed,
            check: self.options.check,
            ..MachineOptions::default()
        }
    }
}

impl Executor for SimExecutor {
    /// Both simulators implement the tensor-core instructions (warps of 32).
    fn runs_tensor_cores(&self) -> bool {
        self.options.warp_size == 32
    }

    fn description(&self) -> String {
        let mode = match (self.machine, self.options.check) {
            (true, true) => "sanitizer on",
            (true, false) => "fast mode",
            (false, true) => "interpreter, sanitizer on",
            (false, false) => "interpreter, no checks",
        };
        format!("kernel simulator ({mode}, warps of {})", self.options.warp_size)
    }

    /// A fresh poisoned arena, the inputs copied in, every launch, the outputs read.
    fn run(
        &mut self,
        model: &Model,
        entry: &EntrySpec,
        bindings: &SymbolBindings,
        inputs: &[&HostTensor],
    ) -> Result<Vec<HostTensor>, RunError> {
        let artifact = &model.artifact;
        let arena_bytes = artifact.arena_bytes.evaluate(bindings)?.max(0) as usize;
        self.arena.refill(arena_bytes, 0xff);
        for (&slot, input) in entry.inputs.iter().zip(inputs) {
            let range = slot_range(model, slot, bindings, self.arena.len())?;
            self.arena.as_bytes_mut()[range].copy_from_slice(&input.bytes);
        }
        self.replay(model, entry, bindings, None)
    }

    /// Timed by the host clock.
    fn time_replays(
        &mut self,
        model: &Model,
        entry: &EntrySpec,
        bindings: &SymbolBindings,
        calls: usize,
        rounds: usize,
    ) -> Result<(Vec<Duration>, Vec<HostTensor>), RunError> {
        let calls = calls.max(1);
        let mut times = Vec::with_capacity(rounds);
        let mut replayed = Vec::new();
        for _ in 0..rounds.max(1) {
            let started = Instant::now();
            for _ in 0..calls {
                replayed = self.replay(model, entry, bindings, None)?;
            }
            times.push(started.elapsed() / calls as u32);
        }
        Ok((times, replayed))
    }

    /// Timed by the host clock.
    fn profile_launches(
        &mut self,
        model: &Model,
        entry: &EntrySpec,
        bindings: &SymbolBindings,
        repeats: usize,
    ) -> Result<Vec<Vec<Duration>>, RunError> {
        let mut times = vec![Vec::new(); entry.launches.len()];
        for _ in 0..repeats.max(1) {
            let mut each = Vec::new();
            self.replay(model, entry, bindings, Some(&mut each))?;
            times.iter_mut().zip(each).for_each(|(all, time)| all.push(time));
        }
        Ok(times)
    }

    /// One more replay on the machine with its counters on (the interpreter
    /// modes count nothing).
    fn launch_counters(
        &mut self,
        model: &Model,
        entry: &EntrySpec,
        bindings: &SymbolBindings,
    ) -> Result<Option<Vec<Counters>>, RunError> {
        if !self.machine {
            return Ok(None);
        }
        let mut counters = Vec::with_capacity(entry.launches.len());
        self.replay_on_machine(model, entry, bindings, None, Some(&mut counters))?;
        Ok(Some(counters))
    }
}

impl SimExecutor {
    /// Runs `entry`'s launches again over the arena as the last [`run`] with
    /// the same bindings left it — inputs are not copied in again, as in a
    /// replayed CUDA graph — and reads the outputs. With `launch_times`, the
    /// host time of each launch is pushed onto it.
    ///
    /// [`run`]: SimExecutor::run
    pub fn replay(
        &mut self,
        model: &Model,
        entry: &EntrySpec,
        bindings: &SymbolBindings,
        mut launch_times: Option<&mut Vec<Duration>>,
    ) -> Result<Vec<HostTensor>, RunError> {
        let artifact = &model.artifact;
        let arena_bytes = artifact.arena_bytes.evaluate(bindings)?.max(0) as usize;
        if self.arena.len() != arena_bytes {
            return Err(RunError::Plan("a replay needs a run with the same dims first".into()));
        }
        let range = |slot: usize| slot_range(model, slot, bindings, arena_bytes);
        if self.machine {
            self.replay_on_machine(model, entry, bindings, launch_times, None)?;
            return read_outputs(model, entry, bindings, self.arena.as_bytes());
        }
        let weights = model.sim_weights();
        for launch in &entry.launches {
            let started = Instant::now();
            let variant = choose_variant(launch, bindings, &artifact.kernels, self.runs_tensor_cores())?;
            let kernel = &artifact.kernel_ir[variant.kernel];
            let mut arguments = Vec::with_capacity(variant.arguments.len());
            for argument in &variant.arguments {
                arguments.push(match argument {
                    ArgumentSpec::Weight(index) => SimArgument::Buffer(weights[*index].clone()),
                    ArgumentSpec::Arena(slot) => {
                        let dtype = artifact.slots[*slot].tensor.dtype;
                        SimArgument::Buffer(SimBuffer {
                            dtype,
                            data: decode_elements(dtype, &self.arena.as_bytes()[range(*slot)?]),
                        })
                    }
                    ArgumentSpec::Symbol(symbol) => SimArgument::Scalar(bindings[symbol] as f64),
                    ArgumentSpec::State(_) => return Err(no_state_tensors(&kernel.name)),
                });
            }
            run_kernel(kernel, &mut arguments, bindings, self.options)?;
            for ((argument, param), value) in variant.arguments.iter().zip(&kernel.params).zip(&arguments) {
                if let (
                    ArgumentSpec::Arena(slot),
                    Param::Buffer { writable: true, dtype, .. },
                    SimArgument::Buffer(buffer),
                ) = (argument, param, value)
                {
                    let bytes = range(*slot)?;
                    encode_elements(*dtype, &buffer.data, &mut self.arena.as_bytes_mut()[bytes]);
                }
            }
            if let Some(times) = launch_times.as_deref_mut() {
                times.push(started.elapsed());
            }
        }
        read_outputs(model, entry, bindings, self.arena.as_bytes())
    }

    /// Runs `entry`'s launches on the machine, over the arena and the
    /// model's weights in place.
    fn replay_on_machine(
        &mut self,
        model: &Model,
        entry: &EntrySpec,
        bindings: &SymbolBindings,
        mut launch_times: Option<&mut Vec<Duration>>,
        mut launch_counters: Option<&mut Vec<Counters>>,
    ) -> Result<(), RunError> {
        let machine = model.machine()?;
        let programs = machine.programs(&model.artifact.kernel_ir, self.options.warp_size)?;
        let options = MachineOptions { counters: launch_counters.is_some(), ..self.machine_options() };
        let arena_bytes = self.arena.len();
        for launch in &entry.launches {
            let started = Instant::now();
            let variant = choose_variant(launch, bindings, &model.artifact.kernels, self.runs_tensor_cores())?;
            let program = &programs[variant.kernel];
            // Region 0 is the arena; the weights this launch reads follow it.
            let mut weights = Vec::new();
            let mut arguments = Vec::with_capacity(variant.arguments.len());
            for argument in &variant.arguments {
                arguments.push(match argument {
                    ArgumentSpec::Weight(index) => {
                        let bytes = machine.weights[*index].as_bytes();
                        weights.push(bytes);
                        Binding::Buffer { region: weights.len(), range: 0..bytes.len() }
                    }
                    ArgumentSpec::Arena(slot) => {
                        Binding::Buffer { region: 0, range: slot_range(model, *slot, bindings, arena_bytes)? }
                    }
                    ArgumentSpec::Symbol(symbol) => Binding::Scalar(bindings[symbol] as f64),
                    ArgumentSpec::State(_) => return Err(no_state_tensors(program.name())),
                });
            }
            let mut regions = Vec::with_capacity(weights.len() + 1);
            regions.push(Region::ReadWrite(self.arena.as_bytes_mut()));
            regions.extend(weights.into_iter().map(Region::ReadOnly));
            let counted = machine::launch(program, &mut regions, &arguments, bindings, options)?;
            if let Some(counters) = launch_counters.as_deref_mut() {
                counters.push(counted);
            }
            if let Some(times) = launch_times.as_deref_mut() {
                times.push(started.elapsed());
            }
        }
        Ok(())
    }
}

fn no_state_tensors(kernel: &str) -> RunError {
    RunError::Sim(crate::sim::SimError::Invalid {
        kernel: kernel.to_string(),
        message: "state tensors are not supported by this runtime yet".into(),
    })
}

/// The entry's outputs, read from the arena.
fn read_outputs(
    model: &Model,
    entry: &EntrySpec,
    bindings: &SymbolBindings,
    arena: &[u8],
) -> Result<Vec<HostTensor>, RunError> {
    entry
        .outputs
        .iter()
        .map(|&slot| {
            let spec = &model.artifact.slots[slot].tensor;
            let shape = concrete_shape(&spec.shape, bindings)?;
            Ok(HostTensor {
                dtype: spec.dtype,
                shape,
                bytes: arena[slot_range(model, slot, bindings, arena.len())?].to_vec(),
            })
        })
        .collect()
}

/// The bytes of arena slot `slot` under `bindings`, checked against the arena's size.
fn slot_range(
    model: &Model,
    slot: usize,
    bindings: &SymbolBindings,
    arena_bytes: usize,
) -> Result<std::ops::Range<usize>, RunError> {
    let slot = &model.artifact.slots[slot];
    let offset = slot.offset.evaluate(bindings)? as usize;
    let elements: usize = concrete_shape(&slot.tensor.shape, bindings)?.iter().product();
    let end = offset + elements * slot.tensor.dtype.size_in_bytes();
    if end > arena_bytes {
        return Err(RunError::Plan(format!(
            "`{}` ends at byte {end}, past the arena's {arena_bytes}",
            slot.tensor.name
        )));
    }
    Ok(offset..end)
}
