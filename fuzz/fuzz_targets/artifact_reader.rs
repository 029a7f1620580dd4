//! Arbitrary bytes as an artifact: opening gives an error or a fully
//! validated artifact, never a panic. The bytes are tried twice: as a whole
//! file (header and section table parsing), and cut into manifest, weights
//! and kernel-IR sections wrapped with valid checksums, so the fuzzer reaches
//! the manifest and kernel IR decoders and the structural checks behind them.
#![no_main]

use kiln_runtime::artifact::{write_container, SectionKind};
use kiln_runtime::Artifact;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Artifact::from_bytes(data.to_vec());
    if data.len() < 4 {
        return;
    }
    let first = u16::from_le_bytes([data[0], data[1]]) as usize % data.len();
    let second = first + u16::from_le_bytes([data[2], data[3]]) as usize % (data.len() - first + 1);
    let sections = [
        (SectionKind::Manifest, &data[4.min(first)..first]),
        (SectionKind::Weights, &data[first..second]),
        (SectionKind::KernelIr, &data[second..]),
    ];
    let mut file = Vec::new();
    write_container(&sections, &mut file).expect("writes to memory");
    if let Ok(artifact) = Artifact::from_bytes(file) {
        for index in 0..artifact.weights.len() {
            assert_eq!(artifact.weight_bytes(index).len(), artifact.weights[index].file_range.len());
        }
    }
});
