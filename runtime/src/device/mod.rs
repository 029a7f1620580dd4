//! Executors: where a [`crate::Session`] runs its artifact.
//!
//! - [`cuda`]: NVIDIA GPUs through the CUDA driver (a cubin, or PTX JIT-compiled by the driver).
//! - [`sim`]: the kernel simulator, on any machine.
//!
//! An executor is an [`Executor`] plus one entry in [`EXECUTORS`], the table
//! that names it for `--device`, says whether one is present (for `auto`) and
//! opens it. There is no AMD executor yet: artifacts carry AMDGPU assembly
//! for `gfx*` targets, but nothing in this runtime loads it.

pub mod cuda;
pub mod sim;

use std::sync::Arc;
use std::time::Duration;

use crate::artifact::EntrySpec;
use crate::session::{Device, Model, RunError};
use crate::{DeviceTensor, HostTensor, SymbolBindings};

/// What a session runs on: one device's memory, code and launches. Every
/// entry point's inputs arrive checked against its signature and bounds.
pub trait Executor: Send {
    /// The device, in words (`CUDA device 0: NVIDIA H200 (sm_90, …)`).
    fn description(&self) -> String;

    /// Whether it runs kernels with sm_80 tensor-core instructions (the
    /// launch then takes such variants; see [`crate::session::choose_variant`]).
    fn runs_tensor_cores(&self) -> bool;

    /// Copies `inputs` into the arena, runs every launch of `entry` and reads its outputs.
    fn run(
        &mut self,
        model: &Model,
        entry: &EntrySpec,
        bindings: &SymbolBindings,
        inputs: &[&HostTensor],
    ) -> Result<Vec<HostTensor>, RunError>;

    /// Times `rounds` rounds of `calls` back-to-back replays of `entry`'s
    /// launches over the arena as the last [`Executor::run`] with the same
    /// bindings left it (inputs not copied in again); returns the time per
    /// call of each round and the outputs as the last replay left them.
    fn time_replays(
        &mut self,
        model: &Model,
        entry: &EntrySpec,
        bindings: &SymbolBindings,
        calls: usize,
        rounds: usize,
    ) -> Result<(Vec<Duration>, Vec<HostTensor>), RunError>;

    /// Times each launch of `entry` alone, `repeats` times, after a run with
    /// the same bindings; returns each launch's times.
    fn profile_launches(
        &mut self,
        model: &Model,
        entry: &EntrySpec,
        bindings: &SymbolBindings,
        repeats: usize,
    ) -> Result<Vec<Vec<Duration>>, RunError>;

    /// Each launch's memory counters from one more run of `entry` after a
    /// run with the same bindings, where the executor counts them (the
    /// simulator's machine); `None` elsewhere.
    fn launch_counters(
        &mut self,
        _model: &Model,
        _entry: &EntrySpec,
        _bindings: &SymbolBindings,
    ) -> Result<Option<Vec<crate::machine::Counters>>, RunError> {
        Ok(None)
    }

    /// Copies a host tensor to the device, for [`Executor::run_device`].
    fn upload(&self, _tensor: &HostTensor) -> Result<DeviceTensor, RunError> {
        Err(RunError::NotOnDevice)
    }

    /// Runs `entry` on device-resident inputs, leaving its outputs on the device.
    fn run_device(
        &mut self,
        _entry: &EntrySpec,
        _bindings: &SymbolBindings,
        _inputs: &[&DeviceTensor],
    ) -> Result<Vec<DeviceTensor>, RunError> {
        Err(RunError::NotOnDevice)
    }
}

/// Opens one device of a kind for a model.
pub type OpenExecutor = fn(Arc<Model>, &Device) -> Result<Box<dyn Executor>, RunError>;

/// One kind of executor, as `--device` names it.
pub struct ExecutorKind {
    /// `cuda`, `sim`: `--device NAME` or `NAME:N`.
    pub name: &'static str,
    /// Whether one is present on this machine (`auto` takes the first present kind).
    pub present: fn() -> bool,
    /// Opens device `device.ordinal` of this kind for `model`.
    pub open: OpenExecutor,
}

/// Every executor, in the order `auto` tries them.
pub const EXECUTORS: &[ExecutorKind] = &[cuda::KIND, sim::KIND, sim::INTERPRETER_KIND];

/// The executor kind called `name`.
pub fn executor_kind(name: &str) -> Option<&'static ExecutorKind> {
    EXECUTORS.iter().find(|kind| kind.name == name)
}
