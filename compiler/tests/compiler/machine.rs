//! The fast simulator (the machine) against the checked one (the
//! interpreter, with every detector on): on every testdata model, at every
//! precision, their outputs are bit-identical.

use std::sync::Arc;

use kiln_passes::Precision;
use kiln_runtime::artifact::Artifact;
use kiln_runtime::{Device, HostTensor, Model, Session};

use crate::artifact::artifact_bytes;
use crate::common::{inputs_in, models};
use kiln_compiler::npy::tensor_to_host;

fn outputs_on(model: &Arc<Model>, device: Device, inputs: &[(String, HostTensor)]) -> Vec<(String, HostTensor)> {
    Session::new(model.clone(), device).expect("a simulator session").run(inputs).expect("runs")
}

#[test]
fn the_fast_and_the_checked_simulator_give_bit_identical_outputs_on_every_testdata_model() {
    for precision in [Precision::F32, Precision::F16, Precision::Bf16] {
        for case in models() {
            let bytes = artifact_bytes(&case.model, precision, &[]);
            let model = Arc::new(Model::from_artifact(Artifact::from_bytes(bytes).expect("opens")));
            let tensors = inputs_in(&case.directory, &case.inputs);
            let inputs: Vec<(String, HostTensor)> =
                case.inputs.iter().map(|name| (name.clone(), tensor_to_host(&tensors[name]))).collect();
            let fast = outputs_on(&model, Device::sim(false), &inputs);
            let checked = outputs_on(&model, Device::sim(true), &inputs);
            assert_eq!(fast.len(), checked.len());
            for ((name, fast), (_, checked)) in fast.iter().zip(&checked) {
                assert_eq!(fast.shape, checked.shape, "{} {precision:?} {name}", case.name);
                assert!(fast.bytes == checked.bytes, "{} at {precision:?}: `{name}` differs", case.name);
            }
        }
    }
}
