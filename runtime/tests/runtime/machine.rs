//! The machine (the fast simulator) computes what the interpreter computes,
//! on bytes in place, and its warps wait at barriers: waits that can never
//! complete are deadlocks, barriers under divergent control flow are caught.

use kiln_runtime::kernel::build::{f32, i64, lt, special, var};
use kiln_runtime::kernel::{BinaryOp, Expr, Kernel, Param, SharedArray, Special, Stmt, Var};
use kiln_runtime::machine::{launch, run_on_arguments, AlignedBytes, Binding, MachineOptions, Program, Region};
use kiln_runtime::sim::{run_kernel, SimArgument, SimError, SimOptions};
use kiln_runtime::{DType, Dim, SymbolBindings};

use crate::simulator::{
    add_arguments, bindings, block_sum, buffer, floats, shared_vector_rotation, sum_arguments, vector_add, vector_copy,
};

/// Runs `kernel` on the interpreter and on the machine from the same
/// arguments; the buffers must come out bit for bit the same.
fn both_engines(kernel: &Kernel, arguments: &[SimArgument], symbols: &SymbolBindings) -> Vec<SimArgument> {
    let mut interpreted = arguments.to_vec();
    run_kernel(kernel, &mut interpreted, symbols, SimOptions::default()).unwrap();
    for threads in [1, 2] {
        let mut machine = arguments.to_vec();
        run_on_arguments(kernel, &mut machine, symbols, MachineOptions { threads, ..MachineOptions::default() })
            .unwrap();
        for (got, expected) in machine.iter().zip(&interpreted) {
            if let (SimArgument::Buffer(got), SimArgument::Buffer(expected)) = (got, expected) {
                let bits = |data: &[f64]| data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got.data), bits(&expected.data), "{}: {threads} threads", kernel.name);
            }
        }
    }
    interpreted
}

#[test]
fn the_machine_matches_the_interpreter_bit_for_bit_on_the_simulator_kernels() {
    for n in [1, 63, 65, 64 * 97 + 5] {
        let out = both_engines(&vector_add(BinaryOp::Lt), &add_arguments(n), &bindings(n as i64));
        assert!(floats(&out[2]).iter().enumerate().all(|(i, &v)| v == 1.5 * i as f64));
    }
    both_engines(&block_sum(true), &sum_arguments(), &SymbolBindings::new());
    let n = 256 + 16;
    let source = buffer(DType::F32, (0..n + 4).map(|i| i as f64).collect());
    let copy_arguments = vec![source, buffer(DType::F32, vec![f64::NAN; n]), SimArgument::Scalar(n as f64)];
    both_engines(&vector_copy(4), &copy_arguments, &bindings(n as i64));
    both_engines(&shared_vector_rotation(true), &[buffer(DType::F32, vec![f64::NAN; 256])], &SymbolBindings::new());
}

#[test]
fn the_machine_reports_out_of_bounds_and_misaligned_accesses_as_the_interpreter_does() {
    let mut arguments = add_arguments(65);
    let error = run_on_arguments(&vector_add(BinaryOp::Le), &mut arguments, &bindings(65), MachineOptions::default())
        .unwrap_err();
    assert!(matches!(error, SimError::OutOfBounds { index: 65, length: 65, access: "read", .. }), "{error}");
    let n = 256 + 16;
    let mut arguments = vec![
        buffer(DType::F32, (0..n + 4).map(|i| i as f64).collect()),
        buffer(DType::F32, vec![0.0; n]),
        SimArgument::Scalar(n as f64),
    ];
    let error = run_on_arguments(&vector_copy(2), &mut arguments, &bindings(n as i64), MachineOptions::default());
    assert!(matches!(error, Err(SimError::Misaligned { width: 4, .. })), "{error:?}");
}

/// `block_sum` with its barrier inside `if thread < 32`: only warp 0 reaches it.
#[test]
fn a_barrier_one_warp_waits_at_while_the_others_finish_is_a_deadlock() {
    let mut kernel = block_sum(true);
    kernel.body[2] = Stmt::If {
        condition: lt(Expr::Cast(DType::I64, Box::new(special(Special::ThreadIndex))), i64(32)),
        then: vec![Stmt::Barrier],
        otherwise: Vec::new(),
    };
    let error =
        run_on_arguments(&kernel, &mut sum_arguments(), &SymbolBindings::new(), MachineOptions::default()).unwrap_err();
    assert!(matches!(error, SimError::Deadlock { .. }), "{error}");
    assert!(
        error.to_string().contains("warps [0] wait at barrier 1 (in text order), which warps [1, 2, 3] finished"),
        "{error}"
    );
}

#[test]
fn a_barrier_under_control_flow_that_diverges_within_a_warp_is_caught() {
    let mut kernel = block_sum(true);
    kernel.body[2] = Stmt::If {
        condition: lt(Expr::Cast(DType::I64, Box::new(special(Special::Lane))), i64(16)),
        then: vec![Stmt::Barrier],
        otherwise: Vec::new(),
    };
    let error =
        run_on_arguments(&kernel, &mut sum_arguments(), &SymbolBindings::new(), MachineOptions::default()).unwrap_err();
    assert!(matches!(error, SimError::DivergentBarrier { .. }), "{error}");
}

#[test]
fn warps_waiting_at_different_barriers_are_caught() {
    let mut kernel = block_sum(true);
    kernel.body[2] = Stmt::If {
        condition: lt(Expr::Cast(DType::I64, Box::new(special(Special::ThreadIndex))), i64(64)),
        then: vec![Stmt::Barrier],
        otherwise: vec![Stmt::Barrier],
    };
    let error =
        run_on_arguments(&kernel, &mut sum_arguments(), &SymbolBindings::new(), MachineOptions::default()).unwrap_err();
    assert!(matches!(error, SimError::DivergentBarrier { .. }), "{error}");
}

/// Two warps hand values back and forth through shared memory, waiting at a
/// barrier between each step: a warp must stop at each barrier and resume
/// with the other warp's writes visible, in every warp order.
fn ping_pong(rounds: i64) -> Kernel {
    let (t, value, round) = (Var(0), Var(1), Var(2));
    let thread = Expr::Cast(DType::I64, Box::new(special(Special::ThreadIndex)));
    let partner =
        Expr::Binary(BinaryOp::Rem, Box::new(kiln_runtime::kernel::build::add(var(t), i64(32))), Box::new(i64(64)));
    Kernel {
        name: "ping_pong".into(),
        params: vec![Param::Buffer { name: "out".into(), dtype: DType::F32, writable: true }],
        block_threads: 64,
        grid_blocks: Dim::constant(1),
        shared: vec![SharedArray::new("mailbox", DType::F32, 64)],
        body: vec![
            Stmt::Let { var: t, dtype: DType::I64, value: thread },
            Stmt::Let { var: value, dtype: DType::F32, value: Expr::Cast(DType::F32, Box::new(var(t))) },
            Stmt::For {
                var: round,
                start: i64(0),
                end: i64(rounds),
                step: 1,
                body: vec![
                    Stmt::SharedStore { array: 0, index: var(t), value: var(value) },
                    Stmt::Barrier,
                    Stmt::Assign {
                        var: value,
                        value: kiln_runtime::kernel::build::add(
                            Expr::SharedLoad { array: 0, index: Box::new(partner.clone()) },
                            f32(1.0),
                        ),
                    },
                    Stmt::Barrier,
                ],
            },
            Stmt::Store { buffer: 0, index: var(t), value: var(value) },
        ],
    }
}

#[test]
fn warps_resume_after_each_barrier_with_the_other_warps_writes_in_every_order() {
    let rounds = 5;
    for seed in 0..6 {
        let program = Program::compile(&ping_pong(rounds), 32).unwrap();
        let mut out = AlignedBytes::filled(64 * 4, 0xff);
        let options = MachineOptions { seed, ..MachineOptions::default() };
        let mut regions = [Region::ReadWrite(out.as_bytes_mut())];
        launch(
            &program,
            &mut regions,
            &[Binding::Buffer { region: 0, range: 0..256 }],
            &SymbolBindings::new(),
            options,
        )
        .unwrap();
        let values: Vec<f32> = out.as_bytes().chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        // After an odd number of swaps each thread holds its partner's start, plus one per round.
        let expected: Vec<f32> = (0..64).map(|t| ((t + 32) % 64) as f32 + rounds as f32).collect();
        assert_eq!(values, expected, "seed {seed}");
    }
    both_engines(&ping_pong(3), &[buffer(DType::F32, vec![0.0; 64])], &SymbolBindings::new());
}

#[test]
fn a_kernel_writing_a_read_only_buffer_or_bound_wrongly_is_refused() {
    let program = Program::compile(&vector_add(BinaryOp::Lt), 32).unwrap();
    let x = AlignedBytes::filled(256, 0);
    let mut z = AlignedBytes::filled(256, 0);
    let n = Binding::Scalar(64.0);
    let whole = |region| Binding::Buffer { region, range: 0..256 };
    // `z` (writable) bound to read-only memory.
    let mut regions = [Region::ReadOnly(x.as_bytes()), Region::ReadOnly(z.as_bytes())];
    let error = launch(
        &program,
        &mut regions,
        &[whole(0), whole(0), whole(1), n.clone()],
        &bindings(64),
        MachineOptions::default(),
    )
    .unwrap_err();
    assert!(error.to_string().contains("bound to read-only memory"), "{error}");
    // A range that is not 16-byte aligned.
    let mut regions = [Region::ReadOnly(x.as_bytes()), Region::ReadWrite(z.as_bytes_mut())];
    let skewed = Binding::Buffer { region: 0, range: 4..256 };
    let error = launch(
        &program,
        &mut regions,
        &[skewed, whole(0), whole(1), n.clone()],
        &bindings(64),
        MachineOptions::default(),
    )
    .unwrap_err();
    assert!(error.to_string().contains("16-byte-aligned"), "{error}");
    // A program compiled for warps of 32 launched with warps of 64.
    let arguments = [whole(0), whole(0), whole(1), n];
    let wave64 = MachineOptions { warp_size: 64, ..MachineOptions::default() };
    let error = launch(&program, &mut regions, &arguments, &bindings(64), wave64).unwrap_err();
    assert!(error.to_string().contains("warps of 64 lanes of a program compiled for 32"), "{error}");
}

/// One warp stores to shared memory at `thread × stride` (as one access of
/// `width` floats per lane), waits, reads it back the same way and writes
/// `y[thread × y_stride]`.
fn strided(stride: i64, width: usize, y_stride: i64) -> Kernel {
    let access = |target: &str| {
        if width == 1 {
            format!("{target}[(v0 * {stride})]")
        } else {
            format!("{target}.v{width}[(v0 * {stride})]")
        }
    };
    let vars: Vec<String> = (1..=width).map(|i| format!("v{i}")).collect();
    let ones: Vec<&str> = vec!["1.0"; width];
    let (store, load) = if width == 1 {
        (format!("  {} = 1.0\n", access("s")), format!("  let v1: f32 = {}\n", access("s")))
    } else {
        (
            format!("  {} = ({})\n", access("s"), ones.join(", ")),
            format!("  let {}: f32 = {}\n", vars.join(", "), access("s")),
        )
    };
    let text = format!(
        "kernel strided(out y: f32*) threads 32 blocks 1 {{\n  shared s: f32[2048] align 16\n  let v0: i64 = i64(thread)\n{store}  barrier\n{load}  y[(v0 * {y_stride})] = v1\n}}\n"
    );
    kiln_runtime::kernel::parse_kernel(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn counted(kernel: &Kernel, y_elements: usize) -> kiln_runtime::machine::Counters {
    let mut arguments = vec![buffer(DType::F32, vec![0.0; y_elements])];
    let options = MachineOptions { counters: true, ..MachineOptions::default() };
    run_on_arguments(kernel, &mut arguments, &SymbolBindings::new(), options).unwrap()
}

#[test]
fn shared_bank_conflicts_are_counted_per_phase_as_the_hardware_splits_requests() {
    // (stride in floats, floats per lane, wavefronts per request): 32-bit
    // accesses are served per warp, 64-bit per half-warp, 128-bit per quarter-warp.
    for (stride, width, per_request) in
        [(1, 1, 1), (0, 1, 1), (2, 1, 2), (8, 1, 8), (32, 1, 32), (2, 2, 2), (4, 4, 4), (8, 4, 8)]
    {
        let counters = counted(&strided(stride, width, 1), 32);
        assert_eq!(counters.shared_requests, 2, "stride {stride}, width {width}");
        assert_eq!(counters.shared_wavefronts, 2 * per_request, "stride {stride}, width {width}: {counters:?}");
        let phases = match width {
            1 => 1,
            2 => 2,
            _ => 4,
        };
        assert_eq!(counters.shared_conflict_wavefronts, 2 * (per_request - phases), "stride {stride}, width {width}");
    }
}

#[test]
fn global_traffic_is_counted_in_bytes_and_32_byte_sectors() {
    let coalesced = counted(&strided(1, 1, 1), 32);
    assert_eq!(
        (coalesced.global_requests, coalesced.global_bytes_written, coalesced.global_sectors_written),
        (1, 128, 4)
    );
    let scattered = counted(&strided(1, 1, 8), 256);
    assert_eq!((scattered.global_bytes_written, scattered.global_sectors_written), (128, 32));
    assert_eq!(counted(&strided(1, 1, 1), 32).global_bytes_read, 0);
    // Counting is off by default.
    let mut arguments = vec![buffer(DType::F32, vec![0.0; 32])];
    let quiet = run_on_arguments(&strided(1, 1, 1), &mut arguments, &SymbolBindings::new(), MachineOptions::default());
    assert_eq!(quiet.unwrap(), kiln_runtime::machine::Counters::default());
}

/// The checked machine judges by happens-before, not by the order it ran
/// warps in: after a barrier, warp 1 writes what warp 0 reads with no
/// barrier between them, and every seed reports the race — whichever warp
/// this seed ran first, and so whichever value the read saw.
#[test]
fn the_checked_machine_reports_a_race_whatever_order_the_warps_ran_in() {
    let kernel = kiln_runtime::kernel::parse_kernel(
        "kernel handoff(out y: f32*) threads 64 blocks 1 {
  shared s: f32[1] align 16
  let v0: i64 = i64(thread)
  if (v0 == 0) {
    s[0] = 1.0
  }
  barrier
  if (v0 == 32) {
    s[0] = 7.0
  }
  if (v0 == 0) {
    y[0] = s[0]
  }
}
",
    )
    .expect("parses");
    let mut outcomes = std::collections::BTreeSet::new();
    for seed in 0..16 {
        let mut fast = vec![buffer(DType::F32, vec![0.0])];
        let options = MachineOptions { seed, ..MachineOptions::default() };
        let outcome = match run_on_arguments(&kernel, &mut fast, &SymbolBindings::new(), options) {
            Ok(_) => floats(&fast[0])[0],
            Err(error) => panic!("seed {seed}: the fast mode does not check: {error}"),
        };
        outcomes.insert(outcome.to_bits());
        let mut checked = vec![buffer(DType::F32, vec![0.0])];
        let options = MachineOptions { seed, check: true, ..MachineOptions::default() };
        let error = run_on_arguments(&kernel, &mut checked, &SymbolBindings::new(), options).unwrap_err();
        assert!(matches!(error, SimError::SharedRace { ref array, .. } if array == "s"), "seed {seed}: {error}");
    }
    assert_eq!(outcomes.len(), 2, "both orders occurred among the seeds (the read saw 1 and 7)");
}

/// The instructions of `file` (in `testdata/kernels`) compiled for `warp_size`.
fn listing_of(file: &str, warp_size: usize) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/kernels").join(file);
    let kernel = kiln_runtime::kernel::parse_kernel(&std::fs::read_to_string(path).unwrap()).unwrap();
    Program::compile(&kernel, warp_size).unwrap().listing()
}

#[test]
fn the_compiler_knows_which_values_are_per_warp_and_which_are_affine_in_the_lane() {
    // Warps of 32: `thread / 32` is one value per warp, so `x[v1 + 140]` is
    // a uniform load; `x[v1*64 + (thread % 32)*2]` reads every other element
    // and the store's elements are consecutive.
    let warp32 = listing_of("lane_patterns.kir", 32);
    assert!(warp32.contains("WarpBase"), "{warp32}");
    assert!(warp32.contains("stride: 2"), "{warp32}");
    assert!(warp32.contains("StoreAffine") && warp32.contains("stride: 1"), "{warp32}");
    assert!(warp32.contains("Load { dst: U("), "{warp32}");
    assert_eq!(warp32.matches("Load { dst: V(").count(), 1, "only x[(thread/16)%2 + 128] gathers:\n{warp32}");
    // Warps of 64 straddle multiples of 32: the quotient and remainder by 32
    // vary within a warp, so those loads gather; the store stays affine.
    let warp64 = listing_of("lane_patterns_wave64.kir", 64);
    assert!(!warp64.contains("stride: 2") && !warp64.contains("Load { dst: U("), "{warp64}");
    assert_eq!(warp64.matches("Load { dst: V(").count(), 3, "{warp64}");
    assert!(warp64.contains("StoreAffine"), "{warp64}");
}
