//! The machine: kiln's fast kernel simulator.
//!
//! Where [`crate::sim`] interprets a kernel's statement tree with f64 lanes
//! (and is kept as the checked mode and the test oracle), the machine
//! compiles each kernel once into a flat register program
//! ([`Program::compile`]) and runs it on memory in place:
//!
//! - **values** are the native register types — f32 (and f16/bf16 rounded
//!   to their type), i64, i32, bool — 64 bits per lane, in lane vectors;
//!   warp-uniform values are scalar registers computed once per warp;
//! - **memory** is bytes: global buffers are windows into borrowed regions
//!   (the arena and the weights, never copied per launch), shared memory is
//!   a block's byte array at the kernel's offsets; every access is bounds-
//!   and alignment-checked and converted by its element type;
//! - **warps are resumable**: a warp runs until it waits at a barrier and
//!   resumes when every warp of its block has arrived; waits that can never
//!   complete are reported as deadlocks, barriers under divergent control
//!   flow as divergent barriers;
//! - **blocks spread over cores**, in a seeded random order.
//!
//! For every kernel kiln generates the machine's outputs are bit-identical
//! to the interpreter's (`compiler/tests/compiler/machine.rs` checks every
//! testdata model). The interpreter's race, initialization and
//! overlapping-write detectors are not here: the checked mode runs the
//! interpreter.

mod affine;
mod check;
mod exec;
pub mod memory;
mod program;
mod registers;
pub(crate) mod tensor_core;
pub(crate) mod values;

pub use exec::{launch, Binding, Counters, MachineOptions, Region, Traffic};
pub use memory::AlignedBytes;
pub use program::Program;

use crate::kernel::{Kernel, Param};
use crate::sim::{SimArgument, SimError};
use crate::tensor::{decode_elements, encode_elements};
use crate::SymbolBindings;

/// Runs `kernel` on interpreter-style arguments (buffers of f64 elements,
/// updated in place): each buffer is encoded to bytes, the program runs,
/// the writable buffers are decoded back; returns the launch's counters. For
/// tests that compare the machine with the interpreter on the same inputs.
pub fn run_on_arguments(
    kernel: &Kernel,
    arguments: &mut [SimArgument],
    symbols: &SymbolBindings,
    options: MachineOptions,
) -> Result<Counters, SimError> {
    let program = Program::compile(kernel, options.warp_size)?;
    let mut memories: Vec<AlignedBytes> = Vec::new();
    let mut bindings = Vec::with_capacity(arguments.len());
    for argument in arguments.iter() {
        match argument {
            SimArgument::Buffer(buffer) => {
                let mut bytes = AlignedBytes::filled(buffer.data.len() * buffer.dtype.size_in_bytes(), 0);
                encode_elements(buffer.dtype, &buffer.data, bytes.as_bytes_mut());
                bindings.push(Binding::Buffer { region: memories.len(), range: 0..bytes.len() });
                memories.push(bytes);
            }
            SimArgument::Scalar(value) => bindings.push(Binding::Scalar(*value)),
        }
    }
    let counters;
    {
        let mut regions: Vec<Region> = memories.iter_mut().map(|m| Region::ReadWrite(m.as_bytes_mut())).collect();
        counters = launch(&program, &mut regions, &bindings, symbols, options)?;
    }
    for ((argument, binding), param) in arguments.iter_mut().zip(&bindings).zip(&kernel.params) {
        if let (SimArgument::Buffer(buffer), Binding::Buffer { region, .. }, Param::Buffer { writable: true, .. }) =
            (argument, binding, param)
        {
            buffer.data = decode_elements(buffer.dtype, memories[*region].as_bytes());
        }
    }
    Ok(counters)
}
