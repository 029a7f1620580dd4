//! The MLIR and LLVM toolchains link and reach PTX on this machine.

use kiln_targets::toolchain;

#[test]
fn mlir_lowers_a_gpu_kernel_to_ptx() {
    let ptx = toolchain::vector_add_ptx_through_mlir("sm_80").expect("lowering");
    assert!(ptx.contains(".target sm_80"), "{ptx}");
    assert!(ptx.contains(".entry vector_add"), "{ptx}");
    assert!(ptx.contains("add.f32") || ptx.contains("add.rn.f32"), "{ptx}");
}

#[test]
fn llvm_emits_ptx_for_sm_90() {
    let ptx = toolchain::empty_kernel_ptx_through_llvm("sm_90").expect("emission");
    assert!(ptx.contains(".target sm_90"), "{ptx}");
    assert!(ptx.contains("kiln_empty"), "{ptx}");
}
