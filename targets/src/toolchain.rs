//! Proof that MLIR (melior) and LLVM (inkwell) are linked and can reach PTX.

use inkwell::context::Context as LlvmContext;
use inkwell::targets::{CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetTriple};
use inkwell::OptimizationLevel;
use melior::dialect::DialectRegistry;
use melior::ir::Module;
use melior::pass::OperationPassManager;
use melior::pass::PassManager;
use melior::utility::{register_all_dialects, register_all_llvm_translations, register_all_passes};
use melior::Context;

/// A toolchain step failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolchainError {
    #[error("MLIR could not parse the module")]
    MlirParse,
    #[error("MLIR pass pipeline `{pipeline}` failed: {message}")]
    MlirPipeline { pipeline: String, message: String },
    #[error("the lowered module holds no PTX")]
    NoPtx,
    #[error("LLVM: {0}")]
    Llvm(String),
}

/// An MLIR context with every dialect, pass and LLVM translation registered.
pub fn mlir_context() -> Context {
    let registry = DialectRegistry::new();
    register_all_dialects(&registry);
    register_all_passes();
    let context = Context::new();
    context.append_dialect_registry(&registry);
    context.load_all_available_dialects();
    register_all_llvm_translations(&context);
    context
}

const VECTOR_ADD_MLIR: &str = r#"
module attributes {gpu.container_module} {
  gpu.module @kernels {
    gpu.func @vector_add(%a: memref<?xf32>, %b: memref<?xf32>, %c: memref<?xf32>, %n: index) kernel {
      %tid = gpu.thread_id x
      %bid = gpu.block_id x
      %bdim = gpu.block_dim x
      %base = arith.muli %bid, %bdim : index
      %i = arith.addi %base, %tid : index
      %inside = arith.cmpi ult, %i, %n : index
      scf.if %inside {
        %x = memref.load %a[%i] : memref<?xf32>
        %y = memref.load %b[%i] : memref<?xf32>
        %z = arith.addf %x, %y : f32
        memref.store %z, %c[%i] : memref<?xf32>
      }
      gpu.return
    }
  }
}
"#;

/// Lowers a vector-add `gpu.func` to PTX for `chip` (e.g. `sm_80`) with
/// MLIR's `gpu-lower-to-nvvm-pipeline`, and returns the PTX text.
pub fn vector_add_ptx_through_mlir(chip: &str) -> Result<String, ToolchainError> {
    let context = mlir_context();
    let mut module = Module::parse(&context, VECTOR_ADD_MLIR).ok_or(ToolchainError::MlirParse)?;
    let pipeline =
        format!("builtin.module(gpu-lower-to-nvvm-pipeline{{cubin-chip={chip} cubin-features=+ptx80 opt-level=3 cubin-format=isa}})");
    let pass_manager = PassManager::new(&context);
    parse_pass_pipeline(pass_manager.as_operation_pass_manager(), &pipeline)
        .map_err(|message| ToolchainError::MlirPipeline { pipeline: pipeline.clone(), message })?;
    pass_manager
        .run(&mut module)
        .map_err(|error| ToolchainError::MlirPipeline { pipeline: pipeline.clone(), message: error.to_string() })?;
    let text = module.as_operation().to_string();
    extract_ptx(&text).ok_or(ToolchainError::NoPtx)
}

/// Parses a textual pass pipeline (`builtin.module(...)`) into `manager`,
/// returning MLIR's diagnostic text when the pipeline does not parse.
pub fn parse_pass_pipeline(manager: OperationPassManager, pipeline: &str) -> Result<(), String> {
    unsafe extern "C" fn collect(message: mlir_sys::MlirStringRef, data: *mut std::ffi::c_void) {
        // SAFETY: `data` is the `String` passed below; MLIR gives valid bytes.
        let text = unsafe { &mut *(data as *mut String) };
        let bytes = unsafe { std::slice::from_raw_parts(message.data as *const u8, message.length) };
        text.push_str(&String::from_utf8_lossy(bytes));
    }
    let mut diagnostics = String::new();
    let pipeline_ref = mlir_sys::MlirStringRef { data: pipeline.as_ptr() as *const _, length: pipeline.len() };
    // SAFETY: the manager is live for the call; the callback only appends to `diagnostics`.
    let result = unsafe {
        mlir_sys::mlirParsePassPipeline(
            manager.to_raw(),
            pipeline_ref,
            Some(collect),
            &mut diagnostics as *mut String as *mut std::ffi::c_void,
        )
    };
    if result.value == 0 {
        return Err(if diagnostics.is_empty() { "the pipeline does not parse".into() } else { diagnostics });
    }
    Ok(())
}

/// The PTX held in a `gpu.binary` op's `assembly = "..."` attribute, unescaped.
pub fn extract_ptx(module_text: &str) -> Option<String> {
    extract_assembly(module_text).filter(|text| text.contains(".version"))
}

/// The text of the first `assembly = "..."` attribute of a `gpu.binary` (PTX
/// or AMDGPU assembly), unescaped.
pub fn extract_assembly(module_text: &str) -> Option<String> {
    let marker = "assembly = \"";
    let start = module_text.find(marker)? + marker.len();
    let bytes = &module_text.as_bytes()[start..];
    let mut ptx = Vec::new();
    let mut index = 0;
    while index < bytes.len() && bytes[index] != b'"' {
        if bytes[index] == b'\\' && index + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).ok()?;
            match u8::from_str_radix(hex, 16) {
                Ok(byte) => {
                    ptx.push(byte);
                    index += 3;
                }
                Err(_) => {
                    ptx.push(bytes[index + 1]);
                    index += 2;
                }
            }
        } else {
            ptx.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(ptx).ok()
}

/// Emits PTX for `chip` from a one-instruction LLVM IR kernel through
/// inkwell's NVPTX target machine.
pub fn empty_kernel_ptx_through_llvm(chip: &str) -> Result<String, ToolchainError> {
    Target::initialize_nvptx(&InitializationConfig::default());
    let triple = TargetTriple::create("nvptx64-nvidia-cuda");
    let target = Target::from_triple(&triple).map_err(|error| ToolchainError::Llvm(error.to_string()))?;
    let machine = target
        .create_target_machine(
            &triple,
            chip,
            "+ptx80",
            OptimizationLevel::Default,
            RelocMode::Default,
            CodeModel::Default,
        )
        .ok_or_else(|| ToolchainError::Llvm(format!("no NVPTX target machine for {chip}")))?;
    let context = LlvmContext::create();
    let module = context.create_module("kiln_toolchain_check");
    let function = module.add_function("kiln_empty", context.void_type().fn_type(&[], false), None);
    let builder = context.create_builder();
    builder.position_at_end(context.append_basic_block(function, "entry"));
    builder.build_return(None).map_err(|error| ToolchainError::Llvm(error.to_string()))?;
    let buffer = machine
        .write_to_memory_buffer(&module, FileType::Assembly)
        .map_err(|error| ToolchainError::Llvm(error.to_string()))?;
    Ok(String::from_utf8_lossy(buffer.as_slice()).into_owned())
}
