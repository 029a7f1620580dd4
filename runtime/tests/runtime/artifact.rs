//! The hand-built artifact of `kiln_runtime::artifact::example` — one
//! kernel, `y = x · w + 1` over a `batch × 4` input — written, opened and run
//! through the library; and the kernel IR codec on its own.

use std::sync::Arc;

use kiln_runtime::artifact::example::{scale_artifact, scale_expected as expected, scale_kernel};
use kiln_runtime::artifact::manifest::{Argument, ArgumentSource};
use kiln_runtime::artifact::{write_artifact, ArtifactParts};
use kiln_runtime::kernel::build::{f32, var};
use kiln_runtime::kernel::codec::{decode_kernels, encode_kernels};
use kiln_runtime::kernel::{Stmt, Var};
use kiln_runtime::{Artifact, Device, HostTensor, Model, RunError, Session};

#[test]
fn the_kernel_codec_round_trips_and_rejects_garbage() {
    let kernel = scale_kernel();
    let bytes = encode_kernels(&[&kernel, &kernel]);
    assert_eq!(decode_kernels(&bytes).unwrap(), vec![kernel.clone(), kernel]);
    for length in 0..bytes.len() {
        assert!(decode_kernels(&bytes[..length]).is_err(), "a blob cut to {length} bytes decoded");
    }
    // A store through the scalar parameter is caught by the decoder, not the simulator.
    let mut broken = scale_kernel();
    broken.body[1] = Stmt::Store { buffer: 3, index: var(Var(0)), value: f32(0.0) };
    assert!(decode_kernels(&encode_kernels(&[&broken])).unwrap_err().message.contains("not a buffer parameter"));
}

#[test]
fn a_hand_built_artifact_runs_through_a_simulator_session() {
    let artifact = Artifact::from_bytes(scale_artifact()).unwrap();
    assert_eq!(artifact.kernel_ir, vec![scale_kernel()]);
    let model = Arc::new(Model::from_artifact(artifact));
    let mut session = Session::new(model.clone(), Device::sim(true)).unwrap();
    for batch in [1usize, 17, 100] {
        let x: Vec<f32> = (0..batch * 4).map(|i| i as f32 * 0.25 - 3.0).collect();
        let outputs = session.run(&[("x".into(), HostTensor::from_f32(vec![batch, 4], &x))]).unwrap();
        assert_eq!(outputs[0].0, "y");
        assert_eq!(outputs[0].1.shape, vec![batch, 4]);
        assert_eq!(outputs[0].1.to_f64_vec(), expected(&x));
    }
    let error = session.run(&[("x".into(), HostTensor::from_f32(vec![101, 4], &[0.0; 404]))]).unwrap_err();
    assert!(matches!(error, RunError::OutOfBounds { value: 101, .. }), "{error}");
    let error = session.run(&[("x".into(), HostTensor::from_f32(vec![2, 3], &[0.0; 6]))]).unwrap_err();
    assert!(matches!(error, RunError::InputShape { .. }), "{error}");
    // Device-resident tensors belong to CUDA sessions.
    let error = session.upload(&HostTensor::from_f32(vec![1, 4], &[0.0; 4])).err().unwrap();
    assert!(matches!(error, RunError::NotOnDevice), "{error}");
    // The session is Send and the model Sync: another thread can run its own session.
    let other = std::thread::spawn(move || {
        let mut session = Session::new(model, Device::sim(false)).unwrap();
        session.run(&[("x".into(), HostTensor::from_f32(vec![1, 4], &[1.0; 4]))]).unwrap()
    });
    assert_eq!(other.join().unwrap()[0].1.to_f64_vec(), expected(&[1.0; 4]));
}

#[test]
fn a_manifest_that_binds_a_weight_to_a_writable_parameter_is_corrupt() {
    let bytes = scale_artifact();
    let artifact = Artifact::from_bytes(bytes).unwrap();
    let mut manifest = artifact.manifest.clone();
    manifest.entry_points[0].launches[0].variants[0].arguments[2] =
        Argument { source: Some(ArgumentSource::Weight(0)) };
    let kernel = scale_kernel();
    let parts = ArtifactParts { manifest, weights: artifact.weights_blob(), kernels: vec![&kernel], code: Vec::new() };
    let mut rewritten = Vec::new();
    write_artifact(parts, &mut rewritten).unwrap();
    let error = Artifact::from_bytes(rewritten).unwrap_err();
    assert!(error.to_string().contains("parameter `y`: a writable parameter bound to a weight"), "{error}");
}

#[test]
fn models_are_shared_across_threads_and_sessions_move_between_them() {
    fn send_and_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_and_sync::<Model>();
    send_and_sync::<Arc<Model>>();
    send::<Session>();
}
