//! The fast simulator (the machine) against the independent oracle (the
//! interpreter, with every detector on) and against its own checked mode:
//! on every testdata model, at every precision, their outputs are
//! bit-identical and neither checked run finds anything wrong.

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
fn the_machine_its_checked_mode_and_the_checked_interpreter_give_bit_identical_outputs_on_every_testdata_model() {
    let interpreter = Device { executor: Some("interpreter".into()), ordinal: 0, check: true };
    for precision in [Precision::F32, Precision::F16, Precision::Bf16] {
        for case in models() {
            let bytes = artifact_bytes(&case.model, precision, &[]);
            let model = Arc::new(Model::from_artifact(Artifact::from_bytes(bytes).expect("opens")));
            let tensors = inputs_in(&case.directory, &case.inputs);
            let inputs: Vec<(String, HostTensor)> =
                case.inputs.iter().map(|name| (name.clone(), tensor_to_host(&tensors[name]))).collect();
            let fast = outputs_on(&model, Device::sim(false), &inputs);
            for (mode, device) in [("checked interpreter", interpreter.clone()), ("checked machine", Device::sim(true))]
            {
                let checked = outputs_on(&model, device, &inputs);
                assert_eq!(fast.len(), checked.len());
                for ((name, fast), (_, checked)) in fast.iter().zip(&checked) {
                    assert_eq!(fast.shape, checked.shape, "{} {precision:?} {name}", case.name);
                    assert!(
                        fast.bytes == checked.bytes,
                        "{} at {precision:?}: `{name}` differs on the {mode}",
                        case.name
                    );
                }
            }
        }
    }
}

/// The machine's counters as a performance engineer reads them: on MiniLM,
/// every matmul streams each weight matrix once per 32 rows of the whole
/// batch (batch dims fold into M for a shared weight), in fully used 32-byte sectors (coalesced, whether the weight is
/// stored k-by-n or packed n-by-k), and its shared-memory tiles are nearly
/// free of bank conflicts.
#[test]
fn minilm_matmuls_stream_each_weight_once_per_row_tile_coalesced_and_without_bank_conflicts() {
    let bytes = artifact_bytes(&crate::common::minilm_directory(), Precision::F32, &[]);
    let model = Arc::new(Model::from_artifact(Artifact::from_bytes(bytes).expect("opens")));
    let directory = crate::common::testdata().join("minilm");
    let names = ["input_ids", "attention_mask", "token_type_ids"].map(String::from);
    let tensors = inputs_in(&directory, &names);
    let inputs: Vec<(String, HostTensor)> =
        names.iter().map(|name| (name.clone(), tensor_to_host(&tensors[name]))).collect();
    let (batch, seq) = (inputs[0].1.shape[0], inputs[0].1.shape[1]);
    let row_tiles = (batch * seq).div_ceil(32) as f64;
    let mut session = Session::new(model, Device::sim(false)).expect("a simulator session");
    let launches = session.profile(&inputs, 1).expect("profiles");
    let mut matrices = 0;
    for launch in launches.iter().filter(|l| l.kernel.contains("matmul")) {
        let counters = launch.counters.as_ref().expect("the machine counts");
        let conflicts = counters.shared_conflict_wavefronts as f64 / counters.shared_wavefronts.max(1) as f64;
        assert!(
            conflicts < 0.05,
            "{}: {:.1}% of shared wavefronts are conflict replays",
            launch.kernel,
            conflicts * 100.0
        );
        for weight in launch.weights.iter().filter(|w| w.bytes >= 64 * 1024) {
            // The encoder's matmuls read every token; the pooler's one row per sequence.
            let tiles = if weight.name.starts_with("layers.") { row_tiles } else { batch.div_ceil(32) as f64 };
            assert_eq!(
                weight.passes(),
                tiles,
                "{}: `{}` read {:.2} times",
                launch.kernel,
                weight.name,
                weight.passes()
            );
            assert!(
                weight.sector_efficiency() > 0.99,
                "{}: `{}` uses {:.2} of the sectors it touches",
                launch.kernel,
                weight.name,
                weight.sector_efficiency()
            );
            matrices += 1;
        }
    }
    assert!(matrices >= 25, "{matrices} weight matrices checked (6 layers of 4 matmuls, the pooler)");
}
