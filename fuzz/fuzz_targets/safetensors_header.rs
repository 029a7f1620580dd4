//! Arbitrary bytes as a safetensors file: an error, or tensors that lie inside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tensors) = kiln_compiler::hf::parse_safetensors(data) {
        for tensor in tensors {
            assert!(tensor.offset + tensor.length <= data.len(), "{tensor:?} leaves the file");
        }
    }
});
