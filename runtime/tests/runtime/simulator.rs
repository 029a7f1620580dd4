//! The simulator runs correct kernels and catches each kind of broken one.

use kiln_runtime::kernel::build::{add, global_thread_index, i64, load, lt, param, special, var};
use kiln_runtime::kernel::{print_kernel, BinaryOp, Expr, Kernel, Memory, Param, SharedArray, Special, Stmt, Var};
use kiln_runtime::sim::{run_kernel, SimArgument, SimBuffer, SimError, SimOptions};
use kiln_runtime::{DType, Dim, SymbolBindings};

pub(crate) fn buffer(dtype: DType, data: Vec<f64>) -> SimArgument {
    SimArgument::Buffer(SimBuffer { dtype, data })
}

pub(crate) fn floats(argument: &SimArgument) -> &[f64] {
    match argument {
        SimArgument::Buffer(b) => &b.data,
        SimArgument::Scalar(_) => panic!("not a buffer"),
    }
}

pub(crate) fn bindings(n: i64) -> SymbolBindings {
    [("n".to_string(), n)].into()
}

/// `z[i] = x[i] + y[i]` for `i` where `guard(i, n)`.
pub(crate) fn vector_add(guard: BinaryOp) -> Kernel {
    let i = Var(0);
    Kernel {
        name: "vector_add".into(),
        params: vec![
            Param::Buffer { name: "x".into(), dtype: DType::F32, writable: false },
            Param::Buffer { name: "y".into(), dtype: DType::F32, writable: false },
            Param::Buffer { name: "z".into(), dtype: DType::F32, writable: true },
            Param::Scalar { name: "n".into(), dtype: DType::I64 },
        ],
        block_threads: 64,
        grid_blocks: Dim::parse("(n + 63)/64").unwrap(),
        shared: Vec::new(),
        body: vec![
            Stmt::Let { var: i, dtype: DType::I64, value: global_thread_index() },
            Stmt::If {
                condition: Expr::Binary(guard, Box::new(var(i)), Box::new(param(3))),
                then: vec![Stmt::Store { buffer: 2, index: var(i), value: add(load(0, var(i)), load(1, var(i))) }],
                otherwise: Vec::new(),
            },
        ],
    }
}

pub(crate) fn add_arguments(n: usize) -> Vec<SimArgument> {
    vec![
        buffer(DType::F32, (0..n).map(|i| i as f64).collect()),
        buffer(DType::F32, (0..n).map(|i| 0.5 * i as f64).collect()),
        buffer(DType::F32, vec![f64::NAN; n]),
        SimArgument::Scalar(n as f64),
    ]
}

#[test]
fn a_vector_add_covers_every_element_for_sizes_that_are_not_multiples_of_the_block() {
    for n in [1, 63, 64, 65, 200] {
        let mut arguments = add_arguments(n);
        run_kernel(&vector_add(BinaryOp::Lt), &mut arguments, &bindings(n as i64), SimOptions::default()).unwrap();
        let expected: Vec<f64> = (0..n).map(|i| 1.5 * i as f64).collect();
        assert_eq!(floats(&arguments[2]), expected.as_slice(), "n = {n}");
    }
}

#[test]
fn an_off_by_one_bound_is_an_out_of_bounds_read() {
    let mut arguments = add_arguments(65);
    let error =
        run_kernel(&vector_add(BinaryOp::Le), &mut arguments, &bindings(65), SimOptions::default()).unwrap_err();
    assert!(matches!(error, SimError::OutOfBounds { index: 65, length: 65, access: "read", .. }), "{error}");
}

#[test]
fn blocks_writing_the_same_elements_are_caught() {
    let mut kernel = vector_add(BinaryOp::Lt);
    // Every block writes z[thread]: blocks overlap.
    kernel.body[0] = Stmt::Let {
        var: Var(0),
        dtype: DType::I64,
        value: Expr::Cast(DType::I64, Box::new(special(Special::ThreadIndex))),
    };
    let mut arguments = add_arguments(128);
    let error = run_kernel(&kernel, &mut arguments, &bindings(128), SimOptions::default()).unwrap_err();
    assert!(matches!(error, SimError::OverlappingWrites { .. }), "{error}");
}

/// Block sums: each thread stores its element to shared memory; after the
/// barrier, thread 0 adds them up.
pub(crate) fn block_sum(with_barrier: bool) -> Kernel {
    let (t, total, k) = (Var(0), Var(1), Var(2));
    let mut body = vec![
        Stmt::Let { var: t, dtype: DType::I64, value: Expr::Cast(DType::I64, Box::new(special(Special::ThreadIndex))) },
        Stmt::SharedStore { array: 0, index: var(t), value: load(0, global_thread_index()) },
    ];
    if with_barrier {
        body.push(Stmt::Barrier);
    }
    body.push(Stmt::If {
        condition: Expr::Binary(BinaryOp::Eq, Box::new(var(t)), Box::new(i64(0))),
        then: vec![
            Stmt::Let { var: total, dtype: DType::F32, value: kiln_runtime::kernel::build::f32(0.0) },
            Stmt::For {
                var: k,
                start: i64(0),
                end: i64(128),
                step: 1,
                body: vec![Stmt::Assign {
                    var: total,
                    value: add(var(total), Expr::SharedLoad { array: 0, index: Box::new(var(k)) }),
                }],
            },
            Stmt::Store {
                buffer: 1,
                index: Expr::Cast(DType::I64, Box::new(special(Special::BlockIndex))),
                value: var(total),
            },
        ],
        otherwise: Vec::new(),
    });
    Kernel {
        name: "block_sum".into(),
        params: vec![
            Param::Buffer { name: "x".into(), dtype: DType::F32, writable: false },
            Param::Buffer { name: "sums".into(), dtype: DType::F32, writable: true },
        ],
        block_threads: 128,
        grid_blocks: Dim::constant(3),
        shared: vec![SharedArray::new("partial", DType::F32, 128)],
        body,
    }
}

pub(crate) fn sum_arguments() -> Vec<SimArgument> {
    vec![buffer(DType::F32, (0..384).map(|i| (i % 7) as f64).collect()), buffer(DType::F32, vec![0.0; 3])]
}

#[test]
fn a_block_reduction_through_shared_memory_is_exact() {
    let mut arguments = sum_arguments();
    run_kernel(&block_sum(true), &mut arguments, &SymbolBindings::new(), SimOptions::default()).unwrap();
    let expected: Vec<f64> = (0..3).map(|b| (b * 128..(b + 1) * 128).map(|i| (i % 7) as f64).sum()).collect();
    assert_eq!(floats(&arguments[1]), expected.as_slice());
}

#[test]
fn a_missing_barrier_is_a_shared_memory_race_whatever_the_warp_order() {
    for seed in 0..4 {
        let mut arguments = sum_arguments();
        let options = SimOptions { seed, ..SimOptions::default() };
        let error = run_kernel(&block_sum(false), &mut arguments, &SymbolBindings::new(), options).unwrap_err();
        assert!(
            matches!(error, SimError::SharedRace { .. } | SimError::UninitializedShared { .. }),
            "seed {seed}: {error}"
        );
    }
    // The fast mode runs without the checks.
    let mut arguments = sum_arguments();
    let fast = SimOptions { check: false, ..SimOptions::default() };
    run_kernel(&block_sum(false), &mut arguments, &SymbolBindings::new(), fast).unwrap();
}

#[test]
fn a_barrier_under_divergent_control_flow_is_caught() {
    let mut kernel = block_sum(true);
    kernel.body[2] = Stmt::If {
        condition: lt(Expr::Cast(DType::I64, Box::new(special(Special::ThreadIndex))), i64(32)),
        then: vec![Stmt::Barrier],
        otherwise: Vec::new(),
    };
    let mut arguments = sum_arguments();
    let error = run_kernel(&kernel, &mut arguments, &SymbolBindings::new(), SimOptions::default()).unwrap_err();
    assert!(matches!(error, SimError::DivergentBarrier { .. }), "{error}");
}

#[test]
fn reading_shared_memory_nobody_wrote_is_caught() {
    let mut kernel = block_sum(true);
    // Only the first warp stores; thread 0 then reads all 128 elements.
    let store = kernel.body.remove(1);
    kernel.body.insert(
        1,
        Stmt::If {
            condition: lt(Expr::Cast(DType::I64, Box::new(special(Special::ThreadIndex))), i64(32)),
            then: vec![store],
            otherwise: Vec::new(),
        },
    );
    let mut arguments = sum_arguments();
    let error = run_kernel(&kernel, &mut arguments, &SymbolBindings::new(), SimOptions::default()).unwrap_err();
    assert!(matches!(error, SimError::UninitializedShared { index: 32, .. }), "{error}");
}

#[test]
fn warp_shuffles_reduce_within_a_warp_in_wave32_and_wave64() {
    for warp_size in [32usize, 64] {
        let value = Var(0);
        let mut body = vec![Stmt::Let {
            var: value,
            dtype: DType::F32,
            value: load(0, Expr::Cast(DType::I64, Box::new(special(Special::ThreadIndex)))),
        }];
        let mut offset = warp_size as u32 / 2;
        while offset > 0 {
            body.push(Stmt::Assign {
                var: value,
                value: add(var(value), Expr::ShuffleXor { value: Box::new(var(value)), mask: offset }),
            });
            offset /= 2;
        }
        body.push(Stmt::If {
            condition: Expr::Binary(
                BinaryOp::Eq,
                Box::new(Expr::Cast(DType::I64, Box::new(special(Special::ThreadIndex)))),
                Box::new(i64(0)),
            ),
            then: vec![Stmt::Store { buffer: 1, index: i64(0), value: var(value) }],
            otherwise: Vec::new(),
        });
        let kernel = Kernel {
            name: "warp_sum".into(),
            params: vec![
                Param::Buffer { name: "x".into(), dtype: DType::F32, writable: false },
                Param::Buffer { name: "sum".into(), dtype: DType::F32, writable: true },
            ],
            block_threads: warp_size as u32,
            grid_blocks: Dim::constant(1),
            shared: Vec::new(),
            body,
        };
        let mut arguments =
            vec![buffer(DType::F32, (0..warp_size).map(|i| i as f64).collect()), buffer(DType::F32, vec![0.0])];
        let options = SimOptions { warp_size, ..SimOptions::default() };
        run_kernel(&kernel, &mut arguments, &SymbolBindings::new(), options).unwrap();
        assert_eq!(floats(&arguments[1])[0], (warp_size * (warp_size - 1) / 2) as f64);
    }
}

#[test]
fn kernels_print_as_readable_text() {
    insta::assert_snapshot!(print_kernel(&vector_add(BinaryOp::Lt)));
}

/// `y[4i..4i+4] = x[4i+offset..4i+offset+4]` as one vector load and one vector store per thread.
pub(crate) fn vector_copy(offset: i64) -> Kernel {
    let (i, a, b, c, d) = (Var(0), Var(1), Var(2), Var(3), Var(4));
    Kernel {
        name: "vector_copy".into(),
        params: vec![
            Param::Buffer { name: "x".into(), dtype: DType::F32, writable: false },
            Param::Buffer { name: "y".into(), dtype: DType::F32, writable: true },
            Param::Scalar { name: "n".into(), dtype: DType::I64 },
        ],
        block_threads: 64,
        grid_blocks: Dim::parse("(n + 255)/256").unwrap(),
        shared: Vec::new(),
        body: vec![
            Stmt::Let {
                var: i,
                dtype: DType::I64,
                value: kiln_runtime::kernel::build::mul(global_thread_index(), i64(4)),
            },
            Stmt::If {
                condition: lt(var(i), param(2)),
                then: vec![
                    Stmt::VectorLoad {
                        vars: vec![a, b, c, d],
                        dtype: DType::F32,
                        memory: Memory::Buffer(0),
                        index: add(var(i), i64(offset)),
                    },
                    Stmt::VectorStore {
                        memory: Memory::Buffer(1),
                        index: var(i),
                        values: vec![var(a), var(b), var(c), var(d)],
                    },
                ],
                otherwise: Vec::new(),
            },
        ],
    }
}

#[test]
fn vector_accesses_move_whole_aligned_vectors_and_misalignment_is_caught() {
    let n = 256 + 16;
    let run = |offset: i64, source_length: usize| {
        let mut arguments = vec![
            buffer(DType::F32, (0..source_length).map(|i| i as f64).collect()),
            buffer(DType::F32, vec![f64::NAN; n]),
            SimArgument::Scalar(n as f64),
        ];
        run_kernel(&vector_copy(offset), &mut arguments, &bindings(n as i64), SimOptions::default()).map(|_| arguments)
    };
    let copied = run(0, n).unwrap();
    assert_eq!(floats(&copied[1]), (0..n).map(|i| i as f64).collect::<Vec<_>>().as_slice());
    let shifted = run(4, n + 4).unwrap();
    assert_eq!(floats(&shifted[1]), (4..n + 4).map(|i| i as f64).collect::<Vec<_>>().as_slice());
    assert!(matches!(run(2, n + 4), Err(SimError::Misaligned { width: 4, .. })), "a 4-wide access at element 2");
    assert!(matches!(run(4, n + 2), Err(SimError::OutOfBounds { access: "read", .. })), "the last vector overruns x");
}

#[test]
fn the_fast_mode_spreads_blocks_over_threads_with_the_same_results() {
    let n = 64 * 97 + 5;
    let mut fast = add_arguments(n);
    let options = SimOptions { check: false, ..SimOptions::default() };
    run_kernel(&vector_add(BinaryOp::Lt), &mut fast, &bindings(n as i64), options).unwrap();
    let mut checked = add_arguments(n);
    run_kernel(&vector_add(BinaryOp::Lt), &mut checked, &bindings(n as i64), SimOptions::default()).unwrap();
    assert_eq!(floats(&fast[2]), floats(&checked[2]));
    assert!(floats(&fast[2]).iter().enumerate().all(|(i, &v)| v == 1.5 * i as f64));
}

/// Each of 64 threads writes 4 values to shared memory as one vector, then —
/// after the barrier, or without it when `barrier` is false — reads its
/// neighbour's 4 as one vector.
pub(crate) fn shared_vector_rotation(barrier: bool) -> Kernel {
    let (t, a, b, c, d) = (Var(0), Var(1), Var(2), Var(3), Var(4));
    let neighbour = Expr::Binary(BinaryOp::Rem, Box::new(add(var(t), i64(1))), Box::new(i64(64)));
    let mut body = vec![
        Stmt::Let { var: t, dtype: DType::I64, value: Expr::Cast(DType::I64, Box::new(special(Special::ThreadIndex))) },
        Stmt::VectorStore {
            memory: Memory::Shared(0),
            index: kiln_runtime::kernel::build::mul(var(t), i64(4)),
            values: (0..4)
                .map(|j| {
                    kiln_runtime::kernel::build::cast(
                        DType::F32,
                        add(kiln_runtime::kernel::build::mul(var(t), i64(4)), i64(j)),
                    )
                })
                .collect(),
        },
    ];
    if barrier {
        body.push(Stmt::Barrier);
    }
    body.push(Stmt::VectorLoad {
        vars: vec![a, b, c, d],
        dtype: DType::F32,
        memory: Memory::Shared(0),
        index: kiln_runtime::kernel::build::mul(neighbour, i64(4)),
    });
    body.push(Stmt::VectorStore {
        memory: Memory::Buffer(0),
        index: kiln_runtime::kernel::build::mul(var(t), i64(4)),
        values: vec![var(a), var(b), var(c), var(d)],
    });
    Kernel {
        name: "shared_vector_rotation".into(),
        params: vec![Param::Buffer { name: "y".into(), dtype: DType::F32, writable: true }],
        block_threads: 64,
        grid_blocks: Dim::constant(1),
        shared: vec![SharedArray::new("stage", DType::F32, 256)],
        body,
    }
}

#[test]
fn shared_memory_vectors_are_race_checked_like_scalars() {
    let mut arguments = vec![buffer(DType::F32, vec![f64::NAN; 256])];
    run_kernel(&shared_vector_rotation(true), &mut arguments, &SymbolBindings::new(), SimOptions::default()).unwrap();
    let expected: Vec<f64> = (0..256).map(|i| ((i + 4) % 256) as f64).collect();
    assert_eq!(floats(&arguments[0]), expected.as_slice());
    let mut arguments = vec![buffer(DType::F32, vec![f64::NAN; 256])];
    let error =
        run_kernel(&shared_vector_rotation(false), &mut arguments, &SymbolBindings::new(), SimOptions::default());
    assert!(matches!(error, Err(SimError::SharedRace { .. }) | Err(SimError::UninitializedShared { .. })), "{error:?}");
}

#[test]
fn kernels_parse_back_from_their_text_and_hand_written_text_parses() {
    use kiln_runtime::kernel::{parse_kernel, print_kernel};
    for kernel in [vector_add(BinaryOp::Lt), block_sum(true), vector_copy(4), shared_vector_rotation(true)] {
        let text = print_kernel(&kernel);
        assert_eq!(parse_kernel(&text).unwrap(), kernel, "{text}");
    }
    let text = "kernel scale(in x: f32*, out y: f32*, n: i64) threads 64 blocks ((n + 63)/64) {
  let v0: i64 = ((i64(block) * i64(threads)) + i64(thread))
  if (v0 < n) {
    y[v0] = (x[v0] * -2.5)
  } else {
    barrier
  }
}
";
    let kernel = parse_kernel(text).unwrap();
    assert_eq!(print_kernel(&kernel), text);
    let mut arguments =
        vec![buffer(DType::F32, vec![1.0, 2.0]), buffer(DType::F32, vec![0.0, 0.0]), SimArgument::Scalar(2.0)];
    let error = run_kernel(&kernel, &mut arguments, &bindings(2), SimOptions::default()).unwrap_err();
    assert!(matches!(error, SimError::DivergentBarrier { .. }), "the else branch's barrier: {error}");
    let bad = parse_kernel("kernel k(in x: f32*) threads 32 blocks 1 {\n  x[0] = (y + 1)\n}\n").unwrap_err();
    assert_eq!(bad.line, 2, "{bad}");
    assert!(bad.to_string().contains("`y` is not a variable"), "{bad}");
}

#[test]
fn expressions_built_with_operators_are_the_trees_they_read_as() {
    use kiln_runtime::kernel::build::{binary, var};
    let (row, kk) = (Var(1), Var(2));
    let written = (var(row) * 2 + 1) * 16 + var(kk);
    let spelled = binary(
        BinaryOp::Add,
        binary(BinaryOp::Mul, binary(BinaryOp::Add, binary(BinaryOp::Mul, var(row), i64(2)), i64(1)), i64(16)),
        var(kk),
    );
    assert_eq!(written, spelled);
    assert_eq!(
        var(row).lt(var(kk)).and(var(kk) % 4),
        binary(BinaryOp::And, lt(var(row), var(kk)), binary(BinaryOp::Rem, var(kk), i64(4)))
    );
}
