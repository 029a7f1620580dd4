//! How each kernel-IR construct lowers to MLIR, one snapshot per construct, so
//! a change in the lowering of one op is visible on its own.

use kiln_runtime::kernel::build::{add, f32, i64, load, var};
use kiln_runtime::kernel::{BinaryOp, Expr, Kernel, Memory, Param, SharedArray, Special, Stmt, UnaryOp, Var};
use kiln_runtime::{DType, Dim};
use kiln_targets::lower::mlir::{kernel_function, Vendor};
use kiln_targets::lower::nvptx::{find_libdevice, lower_to_ptx};

/// A one-thread kernel over buffers x (f32), y (bf16 out), m (i32) and scalar n.
fn kernel_with(body: Vec<Stmt>) -> Kernel {
    Kernel {
        name: "probe".into(),
        params: vec![
            Param::Buffer { name: "x".into(), dtype: DType::F32, writable: false },
            Param::Buffer { name: "y".into(), dtype: DType::BF16, writable: true },
            Param::Buffer { name: "m".into(), dtype: DType::I32, writable: false },
            Param::Scalar { name: "n".into(), dtype: DType::I64 },
        ],
        block_threads: 32,
        grid_blocks: Dim::constant(1),
        shared: vec![SharedArray::new("tile", DType::F32, 32)],
        body,
    }
}

fn lowered(body: Vec<Stmt>) -> String {
    kernel_function(&kernel_with(body), Vendor::Nvidia).unwrap()
}

fn store(value: Expr) -> Stmt {
    Stmt::Store { buffer: 1, index: i64(0), value }
}

#[test]
fn each_construct_lowers_to_its_own_mlir() {
    let v = Var(1);
    let cases: Vec<(&str, Vec<Stmt>)> = vec![
        ("load_and_store_with_conversion", vec![store(load(0, i64(3)))]),
        ("integer_load_widens", vec![Stmt::Let { var: v, dtype: DType::I64, value: load(2, i64(1)) }]),
        (
            "let_and_assign",
            vec![
                Stmt::Let { var: v, dtype: DType::F32, value: f32(1.5) },
                Stmt::Assign { var: v, value: add(var(v), f32(2.0)) },
            ],
        ),
        (
            "unary_math",
            vec![store(Expr::Unary(UnaryOp::Erf, Box::new(Expr::Unary(UnaryOp::Exp, Box::new(load(0, i64(0)))))))],
        ),
        (
            "binary_and_compare",
            vec![store(Expr::Select(
                Box::new(Expr::Binary(BinaryOp::Lt, Box::new(load(0, i64(0))), Box::new(f32(0.0)))),
                Box::new(f32(1.0)),
                Box::new(f32(2.0)),
            ))],
        ),
        (
            "special_registers",
            vec![Stmt::Let {
                var: v,
                dtype: DType::I64,
                value: Expr::Cast(DType::I64, Box::new(Expr::Special(Special::ThreadIndex))),
            }],
        ),
        (
            "if_else",
            vec![Stmt::If {
                condition: Expr::Binary(BinaryOp::Lt, Box::new(Expr::Param(3)), Box::new(i64(4))),
                then: vec![store(f32(1.0))],
                otherwise: vec![store(f32(2.0))],
            }],
        ),
        (
            "counted_loop",
            vec![Stmt::For { var: v, start: i64(0), end: Expr::Param(3), step: 2, body: vec![store(f32(0.0))] }],
        ),
        (
            "shared_memory_and_barrier",
            vec![
                Stmt::SharedStore { array: 0, index: i64(0), value: f32(1.0) },
                Stmt::Barrier,
                store(Expr::SharedLoad { array: 0, index: Box::new(i64(0)) }),
            ],
        ),
        ("warp_shuffle", vec![store(Expr::ShuffleXor { value: Box::new(load(0, i64(0))), mask: 16 })]),
        ("atomic_add", vec![Stmt::AtomicAdd { buffer: 1, index: i64(0), value: f32(1.0) }]),
        (
            "vector_load_and_store",
            vec![
                Stmt::VectorLoad {
                    vars: vec![Var(2), Var(3), Var(4), Var(5)],
                    dtype: DType::F32,
                    memory: Memory::Buffer(0),
                    index: i64(4),
                },
                Stmt::VectorStore {
                    memory: Memory::Buffer(1),
                    index: i64(8),
                    values: vec![
                        var(Var(2)),
                        var(Var(3)),
                        var(Var(4)),
                        var(Var(5)),
                        f32(0.0),
                        f32(0.0),
                        f32(0.0),
                        f32(1.0),
                    ],
                },
            ],
        ),
        (
            "shared_vector_load_and_store",
            vec![
                Stmt::VectorStore {
                    memory: Memory::Shared(0),
                    index: i64(4),
                    values: vec![f32(1.0), f32(2.0), f32(3.0), f32(4.0)],
                },
                Stmt::Barrier,
                Stmt::VectorLoad {
                    vars: vec![Var(2), Var(3)],
                    dtype: DType::F32,
                    memory: Memory::Shared(0),
                    index: i64(6),
                },
                store(add(var(Var(2)), var(Var(3)))),
            ],
        ),
    ];
    let libdevice = find_libdevice();
    for (name, body) in cases {
        insta::assert_snapshot!(format!("lowering_{name}"), lowered(body.clone()));
        // Each snippet is valid MLIR that reaches PTX.
        let kernel = kernel_with(body);
        lower_to_ptx(&[&kernel], "sm_80", libdevice.as_deref()).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn amd_kernels_carry_their_work_group_size() {
    let text = kernel_function(&kernel_with(vec![store(f32(1.0))]), Vendor::Amd).unwrap();
    assert!(text.contains("rocdl.reqd_work_group_size = array<i32: 32, 1, 1>"), "{text}");
}

#[test]
fn shared_arrays_beyond_48_kib_live_in_dynamic_shared_memory() {
    let mut kernel = kernel_with(vec![
        Stmt::SharedStore { array: 1, index: i64(16383), value: f32(1.0) },
        Stmt::SharedStore { array: 0, index: i64(0), value: f32(2.0) },
        Stmt::Barrier,
        store(add(
            Expr::SharedLoad { array: 1, index: Box::new(i64(16383)) },
            Expr::SharedLoad { array: 0, index: Box::new(i64(0)) },
        )),
    ]);
    kernel.shared.push(SharedArray::new("big", DType::F32, 16384));
    assert!(kernel.uses_dynamic_shared());
    assert_eq!(kernel.shared_offsets(), vec![0, 128]);
    assert_eq!(kernel.dynamic_shared_bytes(), 128 + 65536);
    let mlir = kiln_targets::lower::mlir::kernel_module(&[&kernel], "", Vendor::Nvidia).unwrap();
    assert!(!mlir.contains("gpu.dynamic_shared_memory"), "{mlir}");
    assert!(mlir.contains("memref.get_global @probe_dynamic_shared"), "{mlir}");
    assert!(mlir.contains("memref.view %dynamic[%offset1][]"), "{mlir}");
    let ptx = lower_to_ptx(&[&kernel], "sm_90", find_libdevice().as_deref()).unwrap();
    // An external shared array: the launch's dynamic bytes, starting at the
    // dynamic window's base, never on top of a static array.
    assert!(ptx.contains(".extern .shared .align 16 .b8 probe_dynamic_shared[]"), "{ptx}");
    assert!(!ptx.contains("__dynamic_shmem"), "{ptx}");
    if let Some(ptxas) = kiln_targets::lower::nvptx::find_ptxas() {
        let assembly = kiln_targets::lower::nvptx::assemble(&ptxas, &ptx, "sm_90").unwrap();
        assert_eq!(assembly.kernels[0].shared_bytes, 0, "all of the kernel's shared memory is dynamic");
    }
    // A small kernel keeps its static arrays.
    assert!(!kernel_with(Vec::new()).uses_dynamic_shared());
}

#[test]
fn static_shared_arrays_are_aligned_as_the_kernel_ir_says() {
    use kiln_runtime::kernel::build::{binary, special};
    // Each thread stages x[t] in both arrays and reads its neighbour's slots
    // after the barrier, so the arrays survive optimization.
    let thread = || special(Special::ThreadIndex);
    let neighbour = || binary(BinaryOp::Rem, add(thread(), i64(1)), i64(32));
    let mut kernel = kernel_with(vec![
        Stmt::SharedStore { array: 0, index: thread(), value: load(0, thread()) },
        Stmt::SharedStore { array: 1, index: thread(), value: load(0, thread()) },
        Stmt::Barrier,
        Stmt::Store {
            buffer: 1,
            index: thread(),
            value: add(
                Expr::SharedLoad { array: 0, index: Box::new(neighbour()) },
                Expr::SharedLoad { array: 1, index: Box::new(neighbour()) },
            ),
        },
    ]);
    kernel.shared.push(SharedArray { align: 128, ..SharedArray::new("wide", DType::F16, 32) });
    let ptx = lower_to_ptx(&[&kernel], "sm_80", find_libdevice().as_deref()).unwrap();
    let declarations: Vec<&str> = ptx.lines().filter(|l| l.contains(".shared .align")).map(str::trim).collect();
    assert!(declarations.iter().any(|l| l.starts_with(".shared .align 16 .b8") && l.ends_with("[128];")), "{ptx}");
    assert!(declarations.iter().any(|l| l.starts_with(".shared .align 128 .b8") && l.ends_with("[64];")), "{ptx}");
    assert_eq!(declarations.len(), 2, "{ptx}");
}
