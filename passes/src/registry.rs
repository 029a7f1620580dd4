//! Every pass by name, and the phase policy as data: which passes each phase
//! runs, in which order, and whether it repeats them to a fixed point. The
//! pipeline, `--dump-ir` file names, errors and the filetests all go through
//! [`by_name`], so a pass's name is spelled once, in its own `Pass::name`.

use crate::canonicalize::{
    collapse_view_chains::CollapseViewChains, eliminate_common_subexpressions::EliminateCommonSubexpressions,
    eliminate_dead_code::EliminateDeadCode, fold_constants::FoldConstants, fold_shapes::FoldShapes,
    fold_transposes_into_matmul::FoldTransposesIntoMatmul, remove_identities::RemoveIdentities,
};
use crate::fuse::{
    form_fusion_groups::FormFusionGroups, materialize_outputs::MaterializeOutputs, merge_projections::MergeProjections,
    reductions_to_last_axis::ReductionsToLastAxis,
};
use crate::layout::pack_matmul_weights::PackMatmulWeights;
use crate::pass::Pass;
use crate::pipeline::{Phase, PipelineOptions};
use crate::precision::lower_precision::LowerPrecision;
use crate::recognize::{
    recognize_attention::RecognizeAttention, recognize_gelu::RecognizeGelu, recognize_layer_norm::RecognizeLayerNorm,
    recognize_rms_norm::RecognizeRmsNorm, recognize_rope::RecognizeRope, recognize_silu::RecognizeSilu,
};

/// Makes a pass for the pipeline's options (only `lower_precision` reads them).
type MakePass = fn(&PipelineOptions) -> Box<dyn Pass>;

/// Every pass. A new pass is one row here and its name in a phase below.
const PASSES: &[MakePass] = &[
    |_| Box::new(FoldShapes),
    |_| Box::new(FoldConstants),
    |_| Box::new(RemoveIdentities),
    |_| Box::new(FoldTransposesIntoMatmul),
    |_| Box::new(CollapseViewChains),
    |_| Box::new(EliminateCommonSubexpressions),
    |_| Box::new(EliminateDeadCode),
    |_| Box::new(RecognizeLayerNorm),
    |_| Box::new(RecognizeRmsNorm),
    |_| Box::new(RecognizeGelu),
    |_| Box::new(RecognizeSilu),
    |_| Box::new(RecognizeRope),
    |_| Box::new(RecognizeAttention),
    |_| Box::new(MergeProjections),
    |_| Box::new(ReductionsToLastAxis),
    |_| Box::new(MaterializeOutputs),
    |_| Box::new(FormFusionGroups),
    |_| Box::new(PackMatmulWeights),
    |options| Box::new(LowerPrecision { precision: options.precision }),
];

/// The pass called `name`, made for `options`.
pub fn by_name(name: &str, options: &PipelineOptions) -> Option<Box<dyn Pass>> {
    PASSES.iter().map(|make| make(options)).find(|pass| pass.name() == name)
}

/// Every pass's name.
pub fn names() -> Vec<&'static str> {
    let options = PipelineOptions::default();
    PASSES.iter().map(|make| make(&options).name()).collect()
}

/// How a phase runs its passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// In order, again and again until a round changes nothing.
    FixedPoint,
    /// In order, once: the phase's rewrite is not idempotent by construction
    /// (lowering precision rewrites dtypes once).
    Once,
}

/// One phase: its passes, in order, and its schedule.
pub struct PhasePolicy {
    pub phase: Phase,
    pub passes: &'static [&'static str],
    pub schedule: Schedule,
}

/// The phases kiln compiles with, in order (`plan` follows them).
pub const PHASES: &[PhasePolicy] = &[
    PhasePolicy {
        phase: Phase::Canonicalize,
        passes: &[
            "fold_shapes",
            "fold_constants",
            "remove_identities",
            "fold_transposes_into_matmul",
            "collapse_view_chains",
            "eliminate_common_subexpressions",
            "eliminate_dead_code",
        ],
        schedule: Schedule::FixedPoint,
    },
    PhasePolicy {
        phase: Phase::Recognize,
        passes: &[
            "recognize_layer_norm",
            "recognize_rms_norm",
            "recognize_gelu",
            "recognize_silu",
            "recognize_rope",
            "recognize_attention",
            "remove_identities",
            "eliminate_common_subexpressions",
            "eliminate_dead_code",
        ],
        schedule: Schedule::FixedPoint,
    },
    PhasePolicy {
        phase: Phase::Fuse,
        passes: &[
            "merge_projections",
            "fold_constants",
            "reductions_to_last_axis",
            "eliminate_dead_code",
            "materialize_outputs",
            "form_fusion_groups",
        ],
        schedule: Schedule::FixedPoint,
    },
    PhasePolicy {
        phase: Phase::Layout,
        passes: &["pack_matmul_weights", "eliminate_dead_code"],
        schedule: Schedule::FixedPoint,
    },
    PhasePolicy {
        phase: Phase::Precision,
        passes: &["lower_precision", "eliminate_dead_code"],
        schedule: Schedule::Once,
    },
];

/// The schedule of the phase that runs `pass` first (filetests run a pass as its phase would).
pub fn schedule_of(pass: &str) -> Schedule {
    PHASES.iter().find(|p| p.passes.contains(&pass)).map_or(Schedule::FixedPoint, |p| p.schedule)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_names_known_passes_and_every_pass_runs_in_a_phase() {
        let options = PipelineOptions::default();
        let all = names();
        let mut unique = all.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), all.len(), "two passes share a name: {all:?}");
        for policy in PHASES {
            for name in policy.passes {
                assert!(by_name(name, &options).is_some(), "phase {} names `{name}`", policy.phase);
            }
        }
        for name in all {
            assert!(PHASES.iter().any(|p| p.passes.contains(&name)), "`{name}` runs in no phase");
        }
        assert_eq!(schedule_of("lower_precision"), Schedule::Once);
        assert!(by_name("no_such_pass", &options).is_none());
    }
}
