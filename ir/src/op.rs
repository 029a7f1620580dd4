//! The closed set of graph operations.
//!
//! Every op's meaning is defined by the reference evaluator ([`crate::eval`]);
//! its output types by shape inference ([`crate::infer`]). Axes attributes may
//! be negative (counted from the end), as in ONNX; the evaluator and inference
//! normalize them against the input rank.

use std::fmt;

use kiln_runtime::{DType, Dim};

use crate::constant::Constant;

/// Elementwise operations of one input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Abs,
    Sqrt,
    Reciprocal,
    Exp,
    Log,
    Erf,
    Tanh,
    Sigmoid,
    Sin,
    Cos,
    Relu,
    /// `x · sigmoid(x)`.
    Silu,
    Floor,
    Ceil,
    /// Logical not of a bool tensor.
    Not,
    /// True where a float element is NaN.
    IsNan,
}

/// Elementwise operations of two inputs, with NumPy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    /// Float division; integer division truncates toward zero.
    Div,
    Pow,
    Max,
    Min,
    Equal,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    And,
    Or,
    Xor,
}

/// What a [`Op::Reduce`] computes over its axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
}

/// Which formula a [`Op::Gelu`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GeluApproximation {
    /// `x/2 · (1 + erf(x/√2))`.
    None,
    /// `x/2 · (1 + tanh(√(2/π) · (x + 0.044715·x³)))`.
    Tanh,
}

/// A graph operation. Inputs are positional; the arity of each op is given
/// by [`Op::input_arity`].
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A graph input; its name and type are the node's output value.
    Input,
    /// A constant tensor (weights, literals).
    Constant(Constant),
    Unary(UnaryOp),
    Binary(BinaryOp),
    /// `where(condition, x, y)` with broadcasting.
    Where,
    /// Converts to `to`: float→int truncates toward zero, anything→bool is `!= 0`.
    Cast {
        to: DType,
    },
    /// The input's shape (dims `start..end`) as a 1-D i64 tensor.
    Shape {
        start: i64,
        end: Option<i64>,
    },
    /// Inputs: data, shape (i64). `0` copies the input dim unless `allow_zero`;
    /// `-1` is inferred.
    Reshape {
        allow_zero: bool,
    },
    Transpose {
        permutation: Vec<usize>,
    },
    Squeeze {
        axes: Vec<i64>,
    },
    Unsqueeze {
        axes: Vec<i64>,
    },
    /// Reshapes to 2-D: dims before `axis` and dims from `axis` on.
    Flatten {
        axis: i64,
    },
    Concat {
        axis: i64,
    },
    /// Inputs: data, starts, ends, axes, steps (all 1-D i64, same length).
    /// Out-of-range starts and ends are clamped, as in ONNX.
    Slice,
    /// Inputs: data, indices (negative indices count from the end).
    Gather {
        axis: i64,
    },
    /// Inputs: data, indices; ONNX `GatherND`.
    GatherNd {
        batch_dims: i64,
    },
    /// Inputs: data, shape; broadcasts data to the shape.
    Expand,
    /// Inputs: start, limit, delta (scalars).
    Range,
    /// Input: shape; a tensor of that shape filled with `value` in `dtype`.
    ConstantOfShape {
        dtype: DType,
        value: f64,
    },
    /// Keeps the upper (or lower) triangle of the last two dims, relative to
    /// diagonal `diagonal`, and zeroes the rest.
    Trilu {
        upper: bool,
        diagonal: i64,
    },
    /// NumPy matmul: batched, broadcast over leading dims, of the inputs with
    /// their last two dims swapped where `transpose_a`/`transpose_b` say so.
    MatMul {
        transpose_a: bool,
        transpose_b: bool,
    },
    /// A small i64 tensor whose elements are dim expressions of the graph's
    /// symbols (a folded shape computation): rank 0 when `scalar`, else 1-D.
    Dims {
        values: Vec<Dim>,
        scalar: bool,
    },
    /// Inputs: gate, up. `silu(gate) · up`.
    SwiGlu,
    /// Inputs: x `[…, seq, d]`, cos `[seq, d]`, sin `[seq, d]` (broadcast over the
    /// leading dims). RoPE: `x·cos + rotate(x)·sin` over the last dim, where
    /// `rotate` pairs each element with a partner: rotate-half (Llama, GPT-NeoX;
    /// `interleaved` false) `rotate([x₁, x₂]) = [−x₂, x₁]` over the halves;
    /// interleaved (GPT-J; `interleaved` true) `rotate(x)[2i] = −x[2i+1]`,
    /// `rotate(x)[2i+1] = x[2i]`. The tables hold each pair's cos and sin at
    /// both of its positions.
    Rope {
        interleaved: bool,
    },
    /// Inputs: q `[b, hq, sq, d]`, k `[b, hkv, sk, d]`, v `[b, hkv, sk, dv]`, and
    /// when `mask` has padding, key_keep (bool or integer `[b, sk]`, nonzero = attend).
    /// Query head `h` reads key/value head `h / (hq / hkv)` (grouped-query).
    /// Scores `q·kᵀ·scale`; masked positions (padding keys, and keys after the
    /// query when causal, aligned at the end: key `j` is visible to query `i`
    /// when `j ≤ i + sk − sq`) get `score + mask_fill`. Softmax over keys (f32),
    /// then `·v`. A row with every key masked gives: with a finite
    /// `mask_fill` at the dtype's lowest value, the mean of v over the keys;
    /// with `mask_fill = −∞`, NaN — or 0 when `zero_fully_masked_rows` (the
    /// IsNaN guard exporters write). Output `[b, hq, sq, dv]`.
    Attention {
        scale: f32,
        mask: MaskKind,
        mask_fill: f32,
        zero_fully_masked_rows: bool,
        layout: SequenceLayout,
    },
    /// Reduces over `axes` (all axes when empty).
    Reduce {
        kind: ReduceKind,
        axes: Vec<i64>,
        keep_dims: bool,
    },
    Softmax {
        axis: i64,
    },
    /// Inputs: x, scale, optional bias. Normalizes over dims `axis..`, with
    /// statistics in f32.
    LayerNorm {
        axis: i64,
        epsilon: f32,
    },
    /// Inputs: x, scale. `x / sqrt(mean(x²) + epsilon) · scale` over dims `axis..`.
    RmsNorm {
        axis: i64,
        epsilon: f32,
    },
    Gelu {
        approximation: GeluApproximation,
    },
}

/// Which masks an [`Op::Attention`] applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MaskKind {
    None,
    /// Keys marked false in the key_keep input are masked.
    Padding,
    Causal,
    CausalAndPadding,
}

impl MaskKind {
    pub const ALL: [MaskKind; 4] = [MaskKind::None, MaskKind::Padding, MaskKind::Causal, MaskKind::CausalAndPadding];

    pub fn has_padding(self) -> bool {
        matches!(self, MaskKind::Padding | MaskKind::CausalAndPadding)
    }

    pub fn is_causal(self) -> bool {
        matches!(self, MaskKind::Causal | MaskKind::CausalAndPadding)
    }

    pub fn name(self) -> &'static str {
        match self {
            MaskKind::None => "none",
            MaskKind::Padding => "padding",
            MaskKind::Causal => "causal",
            MaskKind::CausalAndPadding => "causal_padding",
        }
    }
}

/// How sequences of a batch lie in memory for attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SequenceLayout {
    /// `[batch, seq]` with padding at the end of shorter sequences.
    Padded,
}

/// How many inputs an op takes: `minimum..=maximum`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arity {
    pub minimum: usize,
    pub maximum: usize,
}

const fn arity(minimum: usize, maximum: usize) -> Arity {
    Arity { minimum, maximum }
}

impl Op {
    /// A plain matmul (no transposed inputs).
    pub const MATMUL: Op = Op::MatMul { transpose_a: false, transpose_b: false };

    /// The op's name in IR text and histograms.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Constant(_) => "constant",
            Op::Unary(op) => op.name(),
            Op::Binary(op) => op.name(),
            Op::Where => "where",
            Op::Cast { .. } => "cast",
            Op::Shape { .. } => "shape",
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Squeeze { .. } => "squeeze",
            Op::Unsqueeze { .. } => "unsqueeze",
            Op::Flatten { .. } => "flatten",
            Op::Concat { .. } => "concat",
            Op::Slice => "slice",
            Op::Gather { .. } => "gather",
            Op::GatherNd { .. } => "gather_nd",
            Op::Expand => "expand",
            Op::Range => "range",
            Op::ConstantOfShape { .. } => "constant_of_shape",
            Op::Trilu { .. } => "trilu",
            Op::MatMul { .. } => "matmul",
            Op::Dims { .. } => "dims",
            Op::SwiGlu => "swiglu",
            Op::Rope { .. } => "rope",
            Op::Attention { .. } => "attention",
            Op::Reduce { kind, .. } => kind.name(),
            Op::Softmax { .. } => "softmax",
            Op::LayerNorm { .. } => "layer_norm",
            Op::RmsNorm { .. } => "rms_norm",
            Op::Gelu { .. } => "gelu",
        }
    }

    pub fn input_arity(&self) -> Arity {
        match self {
            Op::Input | Op::Constant(_) | Op::Dims { .. } => arity(0, 0),
            Op::SwiGlu => arity(2, 2),
            Op::Rope { .. } => arity(3, 3),
            Op::Attention { mask, .. } if mask.has_padding() => arity(4, 4),
            Op::Attention { .. } => arity(3, 3),
            Op::Unary(_)
            | Op::Cast { .. }
            | Op::Shape { .. }
            | Op::Transpose { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Flatten { .. }
            | Op::ConstantOfShape { .. }
            | Op::Trilu { .. }
            | Op::Reduce { .. }
            | Op::Softmax { .. }
            | Op::Gelu { .. } => arity(1, 1),
            Op::Binary(_)
            | Op::Reshape { .. }
            | Op::Gather { .. }
            | Op::GatherNd { .. }
            | Op::Expand
            | Op::MatMul { .. } => arity(2, 2),
            Op::RmsNorm { .. } => arity(2, 2),
            Op::LayerNorm { .. } => arity(2, 3),
            Op::Where | Op::Range => arity(3, 3),
            Op::Slice => arity(5, 5),
            Op::Concat { .. } => arity(1, usize::MAX),
        }
    }

    pub fn is_elementwise(&self) -> bool {
        matches!(
            self,
            Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast { .. } | Op::Gelu { .. } | Op::SwiGlu | Op::Rope { .. }
        )
    }

    pub fn is_reduction(&self) -> bool {
        matches!(self, Op::Reduce { .. } | Op::Softmax { .. } | Op::LayerNorm { .. } | Op::RmsNorm { .. })
    }

    /// Ops that only move or reinterpret data, or compute on shapes.
    pub fn is_data_movement(&self) -> bool {
        matches!(
            self,
            Op::Shape { .. }
                | Op::Reshape { .. }
                | Op::Transpose { .. }
                | Op::Squeeze { .. }
                | Op::Unsqueeze { .. }
                | Op::Flatten { .. }
                | Op::Concat { .. }
                | Op::Slice
                | Op::Gather { .. }
                | Op::GatherNd { .. }
                | Op::Expand
        )
    }
}

impl UnaryOp {
    pub const ALL: [UnaryOp; 17] = [
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Sqrt,
        UnaryOp::Reciprocal,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Erf,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Sin,
        UnaryOp::Cos,
        UnaryOp::Relu,
        UnaryOp::Silu,
        UnaryOp::Floor,
        UnaryOp::Ceil,
        UnaryOp::Not,
        UnaryOp::IsNan,
    ];

    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Abs => "abs",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Reciprocal => "reciprocal",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Erf => "erf",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Sin => "sin",
            UnaryOp::Cos => "cos",
            UnaryOp::Relu => "relu",
            UnaryOp::Silu => "silu",
            UnaryOp::Floor => "floor",
            UnaryOp::Ceil => "ceil",
            UnaryOp::Not => "not",
            UnaryOp::IsNan => "is_nan",
        }
    }
}

impl BinaryOp {
    pub const ALL: [BinaryOp; 15] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Pow,
        BinaryOp::Max,
        BinaryOp::Min,
        BinaryOp::Equal,
        BinaryOp::Less,
        BinaryOp::LessOrEqual,
        BinaryOp::Greater,
        BinaryOp::GreaterOrEqual,
        BinaryOp::And,
        BinaryOp::Or,
        BinaryOp::Xor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Pow => "pow",
            BinaryOp::Max => "max",
            BinaryOp::Min => "min",
            BinaryOp::Equal => "equal",
            BinaryOp::Less => "less",
            BinaryOp::LessOrEqual => "less_or_equal",
            BinaryOp::Greater => "greater",
            BinaryOp::GreaterOrEqual => "greater_or_equal",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
            BinaryOp::Xor => "xor",
        }
    }

    /// Comparisons produce bool from numbers.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Equal | BinaryOp::Less | BinaryOp::LessOrEqual | BinaryOp::Greater | BinaryOp::GreaterOrEqual
        )
    }

    /// Logical ops take and produce bool.
    pub fn is_logical(self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or | BinaryOp::Xor)
    }
}

impl ReduceKind {
    pub const ALL: [ReduceKind; 5] =
        [ReduceKind::Sum, ReduceKind::Mean, ReduceKind::Max, ReduceKind::Min, ReduceKind::Prod];

    pub fn name(self) -> &'static str {
        match self {
            ReduceKind::Sum => "reduce_sum",
            ReduceKind::Mean => "reduce_mean",
            ReduceKind::Max => "reduce_max",
            ReduceKind::Min => "reduce_min",
            ReduceKind::Prod => "reduce_prod",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Normalizes a possibly negative axis against `rank`; `None` when out of range.
pub fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let rank = rank as i64;
    let axis = if axis < 0 { axis + rank } else { axis };
    (0..rank).contains(&axis).then_some(axis as usize)
}
