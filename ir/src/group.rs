//! Fusion groups: the sets of nodes that become one generated kernel.
//!
//! Each node may name the group it belongs to; the graph holds a table of
//! groups with their kernel kind and layout notes. Groups are made by the
//! fuse phase and printed in the IR text, so `kiln inspect` shows which ops
//! became which kernel.

use std::collections::BTreeMap;
use std::fmt;

/// The id of a fusion group (`g3` in IR text).
pub type GroupId = u32;

/// What kind of kernel a fusion group becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KernelKind {
    /// Elementwise and broadcast chains.
    Elementwise,
    /// Row reductions: softmax, LayerNorm, RmsNorm, reductions, with prologue and epilogue.
    RowReduction,
    /// Embedding gathers (+ sums + a norm).
    Gather,
    /// Matrix multiply with prologue and epilogue.
    Matmul,
    /// Fused attention (online softmax).
    Attention,
}

impl KernelKind {
    pub const ALL: [KernelKind; 5] = [
        KernelKind::Elementwise,
        KernelKind::RowReduction,
        KernelKind::Gather,
        KernelKind::Matmul,
        KernelKind::Attention,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KernelKind::Elementwise => "elementwise",
            KernelKind::RowReduction => "row_reduction",
            KernelKind::Gather => "gather",
            KernelKind::Matmul => "matmul",
            KernelKind::Attention => "attention",
        }
    }
}

impl fmt::Display for KernelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One fusion group: its kernel kind and notes the later phases record
/// (weight layout, math precision), as `key=value` text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FusionGroup {
    pub kind: KernelKind,
    pub notes: BTreeMap<String, String>,
}

impl FusionGroup {
    pub fn new(kind: KernelKind) -> FusionGroup {
        FusionGroup { kind, notes: BTreeMap::new() }
    }
}
