//! The one pipeline: named phases of passes, verification after every pass,
//! and observation hooks for `--dump-ir`.

use std::fmt;
use std::str::FromStr;

use kiln_ir::{verify, Graph, SymbolBindings};

use crate::pass::{Pass, PassError};
use crate::plan::{plan_memory, MemoryPlan};
use crate::precision::lower_precision::Precision;
use crate::registry::{by_name, Schedule, PHASES};

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
    pub precision: Precision,
    /// The largest value of each symbol (the memory plan is chosen for these;
    /// symbols not named default to [`DEFAULT_BOUND`]).
    pub bounds: SymbolBindings,
}

/// The bound of a symbol that the options do not name.
pub const DEFAULT_BOUND: i64 = 512;

/// `batch ≤ 64`, `seq ≤ 512`: the bounds when none are given.
pub fn default_bounds() -> SymbolBindings {
    [("batch".to_string(), 64), ("seq".to_string(), 512)].into()
}

impl Default for PipelineOptions {
    fn default() -> PipelineOptions {
        PipelineOptions {
            verify_each_pass: cfg!(debug_assertions),
            stop_after: Phase::Plan,
            precision: Precision::F32,
            bounds: default_bounds(),
        }
    }
}

impl PipelineOptions {
    /// The bounds with every symbol of `graph` present.
    pub fn bounds_for(&self, graph: &Graph) -> SymbolBindings {
        let mut bounds = self.bounds.clone();
        for input in graph.input_values() {
            for dim in &graph.value_type(input).shape {
                for symbol in dim.symbols() {
                    bounds.entry(symbol).or_insert(DEFAULT_BOUND);
                }
            }
        }
        bounds
    }
}

/// Phases of passes, as [`PHASES`] lays them out: a phase runs its passes in
/// order, repeatedly until none changes the graph (at most [`MAX_ROUNDS`]
/// rounds), or once when its schedule says so.
pub struct Pipeline {
    phases: Vec<PhasePasses>,
    options: PipelineOptions,
}

/// A phase with its passes made.
struct PhasePasses {
    phase: Phase,
    schedule: Schedule,
    passes: Vec<Box<dyn Pass>>,
}

/// A phase that still changes the graph after this many rounds is an error.
pub const MAX_ROUNDS: usize = 16;

impl Pipeline {
    /// The pipeline kiln compiles with.
    pub fn new(options: PipelineOptions) -> Pipeline {
        let phases = PHASES
            .iter()
            .map(|policy| {
                let passes = policy
                    .passes
                    .iter()
                    .map(|name| by_name(name, &options).unwrap_or_else(|| panic!("PHASES names no pass `{name}`")))
                    .collect();
                PhasePasses { phase: policy.phase, schedule: policy.schedule, passes }
            })
            .collect();
        Pipeline { phases, options }
    }

    /// Runs every phase up to `stop_after`; `observe(phase, pass, graph)` sees
    /// the graph after every pass that changed it. Returns the memory plan
    /// when the plan phase ran.
    pub fn run(
        &self,
        graph: &mut Graph,
        observe: &mut dyn FnMut(Phase, &str, &Graph),
    ) -> Result<Option<MemoryPlan>, PassError> {
        // `KILN_TIME_PASSES=1`: the time spent in each pass, on stderr at the end.
        let timing = std::env::var_os("KILN_TIME_PASSES").is_some();
        let mut times: Vec<(&str, std::time::Duration)> = Vec::new();
        for PhasePasses { phase, schedule, passes } in &self.phases {
            if *phase > self.options.stop_after {
                break;
            }
            let mut round = 0;
            loop {
                let mut changed = false;
                for pass in passes {
                    let started = std::time::Instant::now();
                    let ran = pass.run(graph)?;
                    if timing {
                        match times.iter_mut().find(|(name, _)| *name == pass.name()) {
                            Some((_, total)) => *total += started.elapsed(),
                            None => times.push((pass.name(), started.elapsed())),
                        }
                    }
                    if ran {
                        changed = true;
                        if self.options.verify_each_pass || cfg!(debug_assertions) {
                            verify(graph)
                                .map_err(|e| PassError::new(pass.name(), format!("left the graph invalid: {e}")))?;
                        }
                        observe(*phase, pass.name(), graph);
                    }
                }
                if !changed || *schedule == Schedule::Once {
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
        if timing {
            times.sort_by_key(|(_, time)| std::cmp::Reverse(*time));
            for (name, time) in &times {
                eprintln!("  pass {name}: {time:.2?}");
            }
        }
        if self.options.stop_after < Phase::Plan {
            return Ok(None);
        }
        let plan = plan_memory(graph, &self.options.bounds_for(graph))
            .map_err(|e| PassError::new("plan_memory", e.to_string()))?;
        observe(Phase::Plan, "plan_memory", graph);
        Ok(Some(plan))
    }
}
