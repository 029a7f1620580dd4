//! kiln-cli's integration tests: the standalone `kiln-run` binary on a
//! hand-built artifact.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use kiln_runtime::artifact::example::{scale_artifact, scale_expected as expected};
use kiln_runtime::npy::{read_npy, write_npy};
use kiln_runtime::HostTensor;

#[test]
fn kiln_run_runs_an_artifact_and_stays_small() {
    let directory = std::env::temp_dir().join(format!("kiln-run-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    let artifact = directory.join("scale.kiln");
    std::fs::write(&artifact, scale_artifact()).unwrap();
    let x: Vec<f32> = (0..12).map(|i| i as f32).collect();
    let input = directory.join("x.npy");
    write_npy(&input, &HostTensor::from_f32(vec![3, 4], &x)).unwrap();
    let binary = env!("CARGO_BIN_EXE_kiln-run");
    let output = Command::new(binary)
        .args([artifact.to_str().unwrap(), "--device", "sim", "--check", "--input"])
        .arg(format!("x={}", input.display()))
        .arg("--output-dir")
        .arg(directory.join("out"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let y = read_npy(&directory.join("out/y.npy")).unwrap();
    assert_eq!(y.to_f64_vec(), expected(&x));

    let described = Command::new(binary).args(["inspect", artifact.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&described.stdout);
    assert!(text.contains("input  x: f32[batch, 4]") && text.contains("bounds: batch=1..100"), "{text}");

    let no_gpu = Command::new(binary)
        .args([artifact.to_str().unwrap(), "--device", "cuda:3", "--input"])
        .arg(format!("x={}", input.display()))
        .arg("--output-dir")
        .arg(directory.join("cuda"))
        .output()
        .unwrap();
    if kiln_runtime::device::cuda::device_count() < 4 {
        assert!(!no_gpu.status.success());
        let stderr = String::from_utf8_lossy(&no_gpu.stderr);
        assert!(stderr.contains("no CUDA driver") || stderr.contains("CUDA device 3 does not exist"), "{stderr}");
    }

    let size = std::fs::metadata(binary).unwrap().len();
    eprintln!("kiln-run: {:.1} MiB", size as f64 / (1 << 20) as f64);
    assert!(size < 40 << 20, "kiln-run is {size} bytes");
    std::fs::remove_dir_all(&directory).unwrap();
}
