//! The MLIR toolchain links and reaches PTX on this machine.

use kiln_targets::toolchain;

#[test]
fn mlir_lowers_a_gpu_kernel_to_ptx() {
    let ptx = toolchain::vector_add_ptx_through_mlir("sm_80").expect("lowering");
    assert!(ptx.contains(".target sm_80"), "{ptx}");
    assert!(ptx.contains(".entry vector_add"), "{ptx}");
    assert!(ptx.contains("add.f32") || ptx.contains("add.rn.f32"), "{ptx}");
}
