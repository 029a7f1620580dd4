//! Which version of each default-domain op a model's opset selects, and
//! whether kiln implements that version.
//!
//! An ONNX model names one opset per domain; each op means what its newest
//! version at or below that opset says (`Softmax` at opset 11 is Softmax-11,
//! which flattens to 2-D; at opset 13 it is Softmax-13, which does not). kiln
//! reads any opset of the default domain up to [`NEWEST_OPSET`] and checks
//! every node's op version against [`VERSIONS`]: versions older than an op's
//! `oldest` (legacy broadcasting, `consumed_inputs`, attributes later made
//! inputs that kiln does not read) are refused by name. The importers in
//! `ops.rs` read the old forms kiln does implement (attribute `axes` and
//! `split`, `Clip`'s attribute bounds, `Softmax`'s 2-D coercion).
//!
//! `changed` lists each op's `since_version`s as onnx 1.23.2's schemas give
//! them (`onnx.defs.get_all_schemas_with_history()`); regenerate them from
//! there when adding an op.

/// The newest default-domain opset kiln knows (what onnx 1.23 writes).
pub const NEWEST_OPSET: i64 = 28;

/// One op's version history and the oldest version kiln implements.
pub struct OpVersions {
    pub op: &'static str,
    /// The opsets at which ONNX introduced a new version of the op, ascending.
    pub changed: &'static [i64],
    /// The oldest of `changed` whose meaning kiln implements; every later one is implemented too.
    pub oldest: i64,
}

/// What a model's opset selects for one op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selected {
    /// Version `.0` of the op, which kiln implements.
    Implemented(i64),
    /// Version `version` of the op, older than the `oldest` kiln implements.
    TooOld { version: i64, oldest: i64 },
    /// The op did not exist yet at this opset; ONNX added it at `added`.
    NotYetDefined { added: i64 },
}

/// The version of default-domain `op` that `opset` selects, or `None` for ops
/// outside [`VERSIONS`] (ONNX Runtime's extensions to the default domain, which have one version).
pub fn select(op: &str, opset: i64) -> Option<Selected> {
    let entry = VERSIONS.iter().find(|entry| entry.op == op)?;
    Some(match entry.changed.iter().rev().find(|&&version| version <= opset) {
        None => Selected::NotYetDefined { added: entry.changed[0] },
        Some(&version) if version < entry.oldest => Selected::TooOld { version, oldest: entry.oldest },
        Some(&version) => Selected::Implemented(version),
    })
}

pub const VERSIONS: &[OpVersions] = &[
    OpVersions { op: "Abs", changed: &[1, 6, 13], oldest: 6 },
    OpVersions { op: "Add", changed: &[1, 6, 7, 13, 14], oldest: 7 },
    OpVersions { op: "And", changed: &[1, 7], oldest: 7 },
    OpVersions { op: "Attention", changed: &[23, 24, 25], oldest: 23 },
    OpVersions { op: "Cast", changed: &[1, 6, 9, 13, 19, 21, 23, 24, 25, 28], oldest: 6 },
    OpVersions { op: "CastLike", changed: &[15, 19, 21, 23, 24, 25], oldest: 15 },
    OpVersions { op: "Ceil", changed: &[1, 6, 13], oldest: 6 },
    OpVersions { op: "Clip", changed: &[1, 6, 11, 12, 13], oldest: 6 },
    OpVersions { op: "Concat", changed: &[1, 4, 11, 13], oldest: 4 },
    OpVersions { op: "Constant", changed: &[1, 9, 11, 12, 13, 19, 21, 23, 24, 25], oldest: 1 },
    OpVersions { op: "ConstantOfShape", changed: &[9, 20, 21, 23, 24, 25], oldest: 9 },
    OpVersions { op: "Cos", changed: &[7, 22], oldest: 7 },
    OpVersions { op: "Div", changed: &[1, 6, 7, 13, 14], oldest: 7 },
    OpVersions { op: "Dropout", changed: &[1, 6, 7, 10, 12, 13, 22], oldest: 7 },
    OpVersions { op: "Equal", changed: &[1, 7, 11, 13, 19], oldest: 7 },
    OpVersions { op: "Erf", changed: &[9, 13], oldest: 9 },
    OpVersions { op: "Exp", changed: &[1, 6, 13], oldest: 6 },
    OpVersions { op: "Expand", changed: &[8, 13], oldest: 8 },
    OpVersions { op: "Flatten", changed: &[1, 9, 11, 13, 21, 23, 24, 25], oldest: 1 },
    OpVersions { op: "Floor", changed: &[1, 6, 13], oldest: 6 },
    OpVersions { op: "Gather", changed: &[1, 11, 13], oldest: 1 },
    OpVersions { op: "GatherND", changed: &[11, 12, 13], oldest: 11 },
    OpVersions { op: "Gelu", changed: &[20], oldest: 20 },
    OpVersions { op: "Gemm", changed: &[1, 6, 7, 9, 11, 13], oldest: 7 },
    OpVersions { op: "Greater", changed: &[1, 7, 9, 13], oldest: 7 },
    OpVersions { op: "GreaterOrEqual", changed: &[12, 16], oldest: 12 },
    OpVersions { op: "Identity", changed: &[1, 13, 14, 16, 19, 21, 23, 24, 25], oldest: 1 },
    OpVersions { op: "IsNaN", changed: &[9, 13, 20], oldest: 9 },
    // Version 1 is ONNX Runtime's, registered in the default domain with
    // opset 17's meaning (its transformer optimizer writes it at opsets 13–16).
    OpVersions { op: "LayerNormalization", changed: &[1, 17], oldest: 1 },
    OpVersions { op: "Less", changed: &[1, 7, 9, 13], oldest: 7 },
    OpVersions { op: "LessOrEqual", changed: &[12, 16], oldest: 12 },
    OpVersions { op: "Log", changed: &[1, 6, 13], oldest: 6 },
    OpVersions { op: "MatMul", changed: &[1, 9, 13], oldest: 1 },
    OpVersions { op: "Max", changed: &[1, 6, 8, 12, 13], oldest: 6 },
    OpVersions { op: "Min", changed: &[1, 6, 8, 12, 13], oldest: 6 },
    OpVersions { op: "Mul", changed: &[1, 6, 7, 13, 14], oldest: 7 },
    OpVersions { op: "Neg", changed: &[1, 6, 13], oldest: 6 },
    OpVersions { op: "Not", changed: &[1], oldest: 1 },
    OpVersions { op: "Or", changed: &[1, 7], oldest: 7 },
    OpVersions { op: "Pow", changed: &[1, 7, 12, 13, 15], oldest: 7 },
    OpVersions { op: "RMSNormalization", changed: &[23], oldest: 23 },
    OpVersions { op: "RotaryEmbedding", changed: &[23], oldest: 23 },
    OpVersions { op: "Range", changed: &[11, 27], oldest: 11 },
    OpVersions { op: "Reciprocal", changed: &[1, 6, 13], oldest: 6 },
    OpVersions { op: "ReduceMax", changed: &[1, 11, 12, 13, 18, 20], oldest: 1 },
    OpVersions { op: "ReduceMean", changed: &[1, 11, 13, 18], oldest: 1 },
    OpVersions { op: "ReduceMin", changed: &[1, 11, 12, 13, 18, 20], oldest: 1 },
    OpVersions { op: "ReduceProd", changed: &[1, 11, 13, 18], oldest: 1 },
    OpVersions { op: "ReduceSum", changed: &[1, 11, 13], oldest: 1 },
    OpVersions { op: "Relu", changed: &[1, 6, 13, 14], oldest: 6 },
    OpVersions { op: "Reshape", changed: &[1, 5, 13, 14, 19, 21, 23, 24, 25], oldest: 5 },
    OpVersions { op: "Shape", changed: &[1, 13, 15, 19, 21, 23, 24, 25], oldest: 1 },
    OpVersions { op: "Sigmoid", changed: &[1, 6, 13], oldest: 6 },
    OpVersions { op: "Sin", changed: &[7, 22], oldest: 7 },
    OpVersions { op: "Slice", changed: &[1, 10, 11, 13], oldest: 10 },
    OpVersions { op: "Softmax", changed: &[1, 11, 13], oldest: 1 },
    OpVersions { op: "Split", changed: &[1, 2, 11, 13, 18], oldest: 2 },
    OpVersions { op: "Sqrt", changed: &[1, 6, 13], oldest: 6 },
    OpVersions { op: "Squeeze", changed: &[1, 11, 13, 21, 23, 24, 25], oldest: 1 },
    OpVersions { op: "Sub", changed: &[1, 6, 7, 13, 14], oldest: 7 },
    OpVersions { op: "Swish", changed: &[24], oldest: 24 },
    OpVersions { op: "Tanh", changed: &[1, 6, 13], oldest: 6 },
    OpVersions { op: "Transpose", changed: &[1, 13, 21, 23, 24, 25], oldest: 1 },
    OpVersions { op: "Trilu", changed: &[14], oldest: 14 },
    OpVersions { op: "Unsqueeze", changed: &[1, 11, 13, 21, 23, 24, 25], oldest: 1 },
    OpVersions { op: "Where", changed: &[9, 16], oldest: 9 },
    OpVersions { op: "Xor", changed: &[1, 7], oldest: 7 },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_opset_selects_the_newest_version_at_or_below_it() {
        assert_eq!(select("Softmax", 12), Some(Selected::Implemented(11)));
        assert_eq!(select("Softmax", 13), Some(Selected::Implemented(13)));
        assert_eq!(select("Add", 6), Some(Selected::TooOld { version: 6, oldest: 7 }));
        assert_eq!(select("Trilu", 13), Some(Selected::NotYetDefined { added: 14 }));
        assert_eq!(select("SimplifiedLayerNormalization", 17), None);
        // ONNX Runtime's LayerNormalization-1, which its optimizer writes below opset 17.
        assert_eq!(select("LayerNormalization", 14), Some(Selected::Implemented(1)));
    }

    #[test]
    fn every_history_is_ascending_and_names_its_oldest() {
        for entry in VERSIONS {
            assert!(entry.changed.windows(2).all(|pair| pair[0] < pair[1]), "{}", entry.op);
            assert!(entry.changed.contains(&entry.oldest), "{}", entry.op);
            assert!(entry.changed.iter().all(|&version| version <= NEWEST_OPSET), "{}", entry.op);
        }
    }

    #[test]
    fn every_default_domain_op_kiln_imports_has_a_history() {
        for (op, _) in super::super::ops::DEFAULT_DOMAIN {
            // ONNX Runtime's own op, registered in the default domain with one version.
            if *op != "SimplifiedLayerNormalization" {
                assert!(VERSIONS.iter().any(|entry| entry.op == *op), "{op} has no version history");
            }
        }
    }
}
