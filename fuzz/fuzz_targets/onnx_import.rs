//! Arbitrary bytes as an ONNX model: an error or a verified graph, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(graph) = kiln_compiler::onnx::import_onnx_bytes(data, Path::new("fuzz.onnx"), Path::new("/nonexistent")) {
        kiln_ir::verify(&graph).expect("the importer returns verified graphs");
    }
});
