//! The one pipeline: named phases of passes, verification after every pass,
//! and observation hooks for `--dump-ir`.

use std::fmt;
use std::str::FromStr;

use kiln_ir::{verify, Graph};

use crate::canonicalize::{
    collapse_view_chains::CollapseViewChains, eliminate_common_subexpressions::EliminateCommonSubexpressions,
    eliminate_dead_code::EliminateDeadCode, fold_constants::FoldConstants, fold_shapes::FoldShapes,
    fold_transposes_into_matmul::FoldTransposesIntoMatmul, remove_identities::RemoveIdentities,
};
use crate::fuse::{form_fusion_groups::FormFusionGroups, merge_projections::MergeProjections};
use crate::pass::{Pass, PassError};
use crate::recognize::{
    recognize_attention::RecognizeAttention, recognize_gelu::RecognizeGelu, recognize_layer_norm::RecognizeLayerNorm,
    recognize_rms_norm::RecognizeRmsNorm, recognize_rope::RecognizeRope, recognize_silu::RecognizeSilu,
};

/// The phases, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    Canonicalize,
    Recognize,
    Fuse,
    Layout,
    Precision,
    Plan,
}

impl Phase {
    pub const ALL: [Phase; 6] =
        [Phase::Canonicalize, Phase::Recognize, Phase::Fuse, Phase::Layout, Phase::Precision, Phase::Plan];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Canonicalize => "canonicalize",
            Phase::Recognize => "recognize",
            Phase::Fuse => "fuse",
            Phase::Layout => "layout",
            Phase::Precision => "precision",
            Phase::Plan => "plan",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Phase {
    type Err = String;
    fn from_str(text: &str) -> Result<Phase, String> {
        Phase::ALL.into_iter().find(|p| p.name() == text).ok_or_else(|| {
            let names: Vec<&str> = Phase::ALL.iter().map(|p| p.name()).collect();
            format!("unknown phase `{text}` (phases: {})", names.join(", "))
        })
    }
}

/// What the pipeline is asked to do.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineOptions {
    /// Run the verifier after every pass (always on in debug builds).
    pub verify_each_pass: bool,
    /// Stop after this phase (inclusive).
    pub stop_after: Phase,
}

impl Default for PipelineOptions {
    fn default() -> PipelineOptions {
        PipelineOptions { verify_each_pass: cfg!(debug_assertions), stop_after: Phase::Plan }
    }
}

/// Phases of passes. A phase runs its passes in order, repeatedly, until none
/// changes the graph (at most [`MAX_ROUNDS`] rounds).
pub struct Pipeline {
    phases: Vec<(Phase, Vec<Box<dyn Pass>>)>,
    options: PipelineOptions,
}

/// A phase that still changes the graph after this many rounds is an error.
pub const MAX_ROUNDS: usize = 16;

impl Pipeline {
    /// The pipeline kiln compiles with.
    pub fn new(options: PipelineOptions) -> Pipeline {
        let canonicalize: Vec<Box<dyn Pass>> = vec![
            Box::new(FoldShapes),
            Box::new(FoldConstants),
            Box::new(RemoveIdentities),
            Box::new(FoldTransposesIntoMatmul),
            Box::new(CollapseViewChains),
            Box::new(EliminateCommonSubexpressions),
            Box::new(EliminateDeadCode),
        ];
        let recognize: Vec<Box<dyn Pass>> = vec![
            Box::new(RecognizeLayerNorm),
            Box::new(RecognizeRmsNorm),
            Box::new(RecognizeGelu),
            Box::new(RecognizeSilu),
            Box::new(RecognizeRope),
            Box::new(RecognizeAttention),
            Box::new(RemoveIdentities),
            Box::new(EliminateCommonSubexpressions),
            Box::new(EliminateDeadCode),
        ];
        let fuse: Vec<Box<dyn Pass>> = vec![
            Box::new(MergeProjections),
            Box::new(FoldConstants),
            Box::new(EliminateDeadCode),
            Box::new(FormFusionGroups),
        ];
        Pipeline {
            phases: vec![(Phase::Canonicalize, canonicalize), (Phase::Recognize, recognize), (Phase::Fuse, fuse)],
            options,
        }
    }

    /// Runs every phase up to `stop_after`; `observe(phase, pass, graph)` sees
    /// the graph after every pass that changed it.
    pub fn run(&self, graph: &mut Graph, observe: &mut dyn FnMut(Phase, &str, &Graph)) -> Result<(), PassError> {
        for (phase, passes) in &self.phases {
            if *phase > self.options.stop_after {
                break;
            }
            let mut round = 0;
            loop {
                let mut changed = false;
                for pass in passes {
                    if pass.run(graph)? {
                        changed = true;
                        if self.options.verify_each_pass || cfg!(debug_assertions) {
                            verify(graph)
                                .map_err(|e| PassError::new(pass.name(), format!("left the graph invalid: {e}")))?;
                        }
                        observe(*phase, pass.name(), graph);
                    }
                }
                if !changed {
                    break;
                }
                round += 1;
                if round == MAX_ROUNDS {
                    return Err(PassError::new(
                        "pipeline",
                        format!("phase {phase} did not settle in {MAX_ROUNDS} rounds"),
                    ));
                }
            }
        }
        Ok(())
    }
}
