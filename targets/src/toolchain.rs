//! The MLIR toolchain: a context with everything registered, pass-pipeline
//! parsing, extraction of PTX and assembly from lowered modules, and a small
//! proof kernel that reaches PTX.

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
