//! A small builder over [`Graph`] for writing transformer graphs the way
//! exporters write them, with weights from a [`WeightStore`].

use std::collections::HashMap;

use kiln_ir::{BinaryOp, Constant, DType, Graph, Op, Tensor, UnaryOp, ValueRef};

use super::weights::WeightStore;
use super::HfImportError;

pub struct Builder<'a> {
    pub graph: Graph,
    weights: &'a WeightStore,
    /// Every float weight is converted to this dtype (a cast node where it differs).
    pub dtype: DType,
    counter: usize,
    scope: String,
    /// Weights already in the graph (a tied embedding is read twice).
    loaded: HashMap<String, ValueRef>,
}

impl<'a> Builder<'a> {
    pub fn new(weights: &'a WeightStore, dtype: DType) -> Builder<'a> {
        Builder { graph: Graph::new(), weights, dtype, counter: 0, scope: String::new(), loaded: HashMap::new() }
    }

    /// Names later nodes under `scope` (e.g. `layers.0.attention`).
    pub fn set_scope(&mut self, scope: &str) {
        self.scope = scope.to_string();
    }

    /// Adds a node; failures here are kiln bugs (the builder writes typed graphs).
    pub fn op(&mut self, op: Op, inputs: &[ValueRef]) -> Result<ValueRef, HfImportError> {
        self.counter += 1;
        let base = if self.scope.is_empty() {
            format!("{}{}", op.name(), self.counter)
        } else {
            format!("{}/{}{}", self.scope, op.name(), self.counter)
        };
        let name = self.graph.fresh_value_name(&base);
        self.graph.add_node(&name, op, inputs).map_err(|e| HfImportError::Build { message: e.to_string() })
    }

    pub fn binary(&mut self, op: BinaryOp, a: ValueRef, b: ValueRef) -> Result<ValueRef, HfImportError> {
        self.op(Op::Binary(op), &[a, b])
    }

    pub fn unary(&mut self, op: UnaryOp, x: ValueRef) -> Result<ValueRef, HfImportError> {
        self.op(Op::Unary(op), &[x])
    }

    pub fn constant(&mut self, constant: Constant) -> ValueRef {
        self.counter += 1;
        let name = self.graph.fresh_value_name(&format!("constant{}", self.counter));
        self.graph.add_constant(&name, constant)
    }

    pub fn ints(&mut self, values: &[i64]) -> ValueRef {
        self.constant(Constant::vector_i64(values))
    }

    pub fn scalar_i64(&mut self, value: i64) -> ValueRef {
        self.constant(Constant::scalar_i64(value))
    }

    /// A float scalar in the model's dtype.
    pub fn scalar(&mut self, value: f32) -> ValueRef {
        self.constant(Constant::from_tensor(&Tensor::from_f32(self.dtype, Vec::new(), vec![value])))
    }

    /// The first of `names` that the checkpoint holds, as a value in the model dtype.
    pub fn weight(&mut self, names: &[String]) -> Result<ValueRef, HfImportError> {
        self.optional_weight(names)?.ok_or_else(|| HfImportError::MissingTensor { names: names.to_vec() })
    }

    pub fn optional_weight(&mut self, names: &[String]) -> Result<Option<ValueRef>, HfImportError> {
        let Some(name) = names.iter().find(|n| self.weights.contains(n)) else {
            return Ok(None);
        };
        if let Some(value) = self.loaded.get(name.as_str()) {
            return Ok(Some(*value));
        }
        let constant = self.weights.constant(name).expect("present")?;
        let dtype = constant.dtype();
        let mut value = self.graph.add_constant(name, constant);
        if dtype.is_float() && dtype != self.dtype {
            value = self.op(Op::Cast { to: self.dtype }, &[value])?;
        }
        self.loaded.insert(name.clone(), value);
        Ok(Some(value))
    }

    /// `x · Wᵀ (+ b)` for a PyTorch `Linear` weight `[out, in]`.
    pub fn linear(
        &mut self,
        x: ValueRef,
        weight: &[String],
        bias: Option<&[String]>,
    ) -> Result<ValueRef, HfImportError> {
        let w = self.weight(weight)?;
        let transposed = self.op(Op::Transpose { permutation: vec![1, 0] }, &[w])?;
        let product = self.op(Op::MATMUL, &[x, transposed])?;
        match bias {
            Some(names) => {
                let b = self.weight(names)?;
                self.binary(BinaryOp::Add, product, b)
            }
            None => Ok(product),
        }
    }

    /// The size of dim `axis` of `x` as an i64 scalar.
    pub fn dim(&mut self, x: ValueRef, axis: i64) -> Result<ValueRef, HfImportError> {
        let shape = self.op(Op::Shape { start: 0, end: None }, &[x])?;
        let index = self.scalar_i64(axis);
        self.op(Op::Gather { axis: 0 }, &[shape, index])
    }

    /// `0..len` as i64.
    pub fn range(&mut self, length: ValueRef) -> Result<ValueRef, HfImportError> {
        let (zero, one) = (self.scalar_i64(0), self.scalar_i64(1));
        self.op(Op::Range, &[zero, length, one])
    }

    /// `[b, s, heads·d] → [b, heads, s, d]` (or `[b, heads, d, s]` when `transpose_last`).
    pub fn split_heads(
        &mut self,
        x: ValueRef,
        heads: i64,
        head_dim: i64,
        transpose_last: bool,
    ) -> Result<ValueRef, HfImportError> {
        let shape = self.ints(&[0, 0, heads, head_dim]);
        let split = self.op(Op::Reshape { allow_zero: false }, &[x, shape])?;
        let permutation = if transpose_last { vec![0, 2, 3, 1] } else { vec![0, 2, 1, 3] };
        self.op(Op::Transpose { permutation }, &[split])
    }

    /// `[b, heads, s, d] → [b, s, heads·d]`.
    pub fn merge_heads(&mut self, x: ValueRef, width: i64) -> Result<ValueRef, HfImportError> {
        let transposed = self.op(Op::Transpose { permutation: vec![0, 2, 1, 3] }, &[x])?;
        let shape = self.ints(&[0, 0, width]);
        self.op(Op::Reshape { allow_zero: false }, &[transposed, shape])
    }

    /// `softmax(q·kᵀ·scale + mask)·v` over `[b, h, s, d]` heads (`key_transposed` is `[b, h, d, s]`).
    pub fn attention(
        &mut self,
        query: ValueRef,
        key_transposed: ValueRef,
        value: ValueRef,
        scale: f32,
        additive_mask: ValueRef,
    ) -> Result<ValueRef, HfImportError> {
        let scores = self.op(Op::MATMUL, &[query, key_transposed])?;
        let scale = self.scalar(scale);
        let scaled = self.binary(BinaryOp::Mul, scores, scale)?;
        let masked = self.binary(BinaryOp::Add, scaled, additive_mask)?;
        let probabilities = self.op(Op::Softmax { axis: -1 }, &[masked])?;
        self.op(Op::MATMUL, &[probabilities, value])
    }

    /// `0` where `keep` is true and the dtype's lowest finite value elsewhere,
    /// as PyTorch builds additive masks.
    pub fn additive_mask(&mut self, keep: ValueRef) -> Result<ValueRef, HfImportError> {
        let zero = self.scalar(0.0);
        let lowest = self.scalar(lowest_finite(self.dtype));
        self.op(Op::Where, &[keep, zero, lowest])
    }

    pub fn finish(mut self, outputs: &[(&str, ValueRef)]) -> Graph {
        for (name, value) in outputs {
            self.graph.add_output(name, *value);
        }
        self.graph
    }
}

/// The lowest finite value of a float dtype.
pub fn lowest_finite(dtype: DType) -> f32 {
    match dtype {
        DType::F16 => -65504.0,
        DType::BF16 => -3.389_531_4e38,
        _ => f32::MIN,
    }
}
