//! ONNX nodes into IR ops, one function per family of op types.
//!
//! Optional ONNX inputs become constants or attributes here, so IR ops have
//! fixed arities; ops that the IR lacks (Gemm, the contrib ops) become small
//! subgraphs of IR ops.

use kiln_ir::infer::constant_ints;
use kiln_ir::{BinaryOp, Constant, DType, Dim, GeluApproximation, Op, ReduceKind, Tensor, UnaryOp, ValueRef};
use onnx_protobuf::{AttributeProto, NodeProto};

use super::tensors::{constant_from_proto, dtype_from_onnx};
use super::Importer;

/// Imports one node of one op type.
pub(super) type ImportFn = fn(&mut NodeImport<'_>) -> Result<()>;

/// The default domain (`""` or `ai.onnx`): op type → importer. Adding an op
/// is one row here (and its function below); "is it supported" is a lookup.
pub(super) const DEFAULT_DOMAIN: &[(&str, ImportFn)] = &[
    ("Abs", |n| unary(n, UnaryOp::Abs)),
    ("Add", |n| binary(n, BinaryOp::Add)),
    ("And", |n| binary(n, BinaryOp::And)),
    ("Attention", super::attention::import_attention),
    ("Cast", import_cast),
    ("CastLike", import_cast_like),
    ("Ceil", |n| unary(n, UnaryOp::Ceil)),
    ("Clip", import_clip),
    ("Concat", import_concat),
    ("Constant", import_constant),
    ("ConstantOfShape", import_constant_of_shape),
    ("Cos", |n| unary(n, UnaryOp::Cos)),
    ("Div", |n| binary(n, BinaryOp::Div)),
    ("Dropout", import_dropout),
    ("Equal", |n| binary(n, BinaryOp::Equal)),
    ("Erf", |n| unary(n, UnaryOp::Erf)),
    ("Exp", |n| unary(n, UnaryOp::Exp)),
    ("Expand", |n| two_inputs(n, Op::Expand)),
    ("Flatten", import_flatten),
    ("Floor", |n| unary(n, UnaryOp::Floor)),
    ("Gather", |n| {
        let axis = n.int("axis", 0);
        two_inputs(n, Op::Gather { axis })
    }),
    ("GatherND", |n| {
        let batch_dims = n.int("batch_dims", 0);
        two_inputs(n, Op::GatherNd { batch_dims })
    }),
    ("Gelu", import_gelu),
    ("Gemm", import_gemm),
    ("Greater", |n| binary(n, BinaryOp::Greater)),
    ("GreaterOrEqual", |n| binary(n, BinaryOp::GreaterOrEqual)),
    ("Identity", import_identity),
    ("IsNaN", |n| unary(n, UnaryOp::IsNan)),
    ("LayerNormalization", import_layer_norm),
    ("Less", |n| binary(n, BinaryOp::Less)),
    ("LessOrEqual", |n| binary(n, BinaryOp::LessOrEqual)),
    ("Log", |n| unary(n, UnaryOp::Log)),
    ("MatMul", |n| two_inputs(n, Op::MATMUL)),
    ("Max", |n| variadic(n, BinaryOp::Max)),
    ("Min", |n| variadic(n, BinaryOp::Min)),
    ("Mul", |n| binary(n, BinaryOp::Mul)),
    ("Neg", |n| unary(n, UnaryOp::Neg)),
    ("Not", |n| unary(n, UnaryOp::Not)),
    ("Or", |n| binary(n, BinaryOp::Or)),
    ("Pow", |n| binary(n, BinaryOp::Pow)),
    ("RMSNormalization", import_rms_norm),
    ("RotaryEmbedding", import_rotary_embedding),
    ("Range", import_range),
    ("Reciprocal", |n| unary(n, UnaryOp::Reciprocal)),
    ("ReduceMax", |n| import_reduce(n, ReduceKind::Max)),
    ("ReduceMean", |n| import_reduce(n, ReduceKind::Mean)),
    ("ReduceMin", |n| import_reduce(n, ReduceKind::Min)),
    ("ReduceProd", |n| import_reduce(n, ReduceKind::Prod)),
    ("ReduceSum", |n| import_reduce(n, ReduceKind::Sum)),
    ("Relu", |n| unary(n, UnaryOp::Relu)),
    ("Reshape", import_reshape),
    ("Shape", import_shape),
    ("Sigmoid", |n| unary(n, UnaryOp::Sigmoid)),
    // ONNX Runtime registers it in the default domain too.
    ("SimplifiedLayerNormalization", super::contrib::simplified_layer_norm),
    ("Sin", |n| unary(n, UnaryOp::Sin)),
    ("Slice", import_slice),
    ("Softmax", import_softmax),
    ("Split", import_split),
    ("Sqrt", |n| unary(n, UnaryOp::Sqrt)),
    ("Squeeze", import_squeeze_or_unsqueeze),
    ("Sub", |n| binary(n, BinaryOp::Sub)),
    ("Swish", import_swish),
    ("Tanh", |n| unary(n, UnaryOp::Tanh)),
    ("Transpose", import_transpose),
    ("Trilu", import_trilu),
    ("Unsqueeze", import_squeeze_or_unsqueeze),
    ("Where", import_where),
    ("Xor", |n| binary(n, BinaryOp::Xor)),
];

/// The importer of `op_type` in `domain`, if kiln has one.
pub(super) fn importer(domain: &str, op_type: &str) -> Option<ImportFn> {
    let table = match domain {
        "" | "ai.onnx" => DEFAULT_DOMAIN,
        "com.microsoft" => super::contrib::MICROSOFT_DOMAIN,
        _ => return None,
    };
    table.iter().find(|(name, _)| *name == op_type).map(|&(_, import)| import)
}

/// Whether kiln imports `op_type` of `domain`.
pub fn is_supported(domain: &str, op_type: &str) -> bool {
    importer(domain, op_type).is_some()
}

/// One node being imported: its inputs, attributes, and a way to emit IR.
pub(super) struct NodeImport<'a> {
    pub(super) importer: &'a mut Importer,
    pub(super) node: &'a NodeProto,
    pub(super) name: &'a str,
    emitted: usize,
}

type Result<T> = std::result::Result<T, String>;

impl NodeImport<'_> {
    /// Input `index`, or `None` when absent or given as the empty name.
    pub(super) fn optional_input(&self, index: usize) -> Result<Option<ValueRef>> {
        match self.node.input.get(index).map(String::as_str) {
            None | Some("") => Ok(None),
            Some(name) => self
                .importer
                .values
                .get(name)
                .copied()
                .map(Some)
                .ok_or_else(|| format!("input `{name}` is not defined")),
        }
    }

    pub(super) fn input(&self, index: usize) -> Result<ValueRef> {
        self.optional_input(index)?.ok_or_else(|| format!("input {index} is missing"))
    }

    pub(super) fn attribute(&self, name: &str) -> Option<&AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    pub(super) fn int(&self, name: &str, default: i64) -> i64 {
        self.attribute(name).map_or(default, |a| a.i)
    }

    pub(super) fn float(&self, name: &str, default: f32) -> f32 {
        self.attribute(name).map_or(default, |a| a.f)
    }

    pub(super) fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.attribute(name).map(|a| a.ints.clone())
    }

    pub(super) fn string(&self, name: &str) -> Option<String> {
        self.attribute(name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }

    pub(super) fn dtype_of(&self, value: ValueRef) -> DType {
        self.importer.graph.value_type(value).dtype
    }

    /// `value` as i64: index and length inputs may be i32; the IR's take i64.
    pub(super) fn as_i64(&mut self, value: ValueRef) -> Result<ValueRef> {
        if self.dtype_of(value) == DType::I64 {
            Ok(value)
        } else {
            self.emit(Op::Cast { to: DType::I64 }, &[value])
        }
    }

    /// Constant integer values of input `index` (axes, pads, …).
    pub(super) fn constant_ints_input(&self, index: usize, what: &str) -> Result<Option<Vec<i64>>> {
        match self.optional_input(index)? {
            None => Ok(None),
            Some(value) => constant_ints(&self.importer.graph, value, what).map(Some).map_err(|e| e.to_string()),
        }
    }

    /// The ONNX output name of output `index` (empty when unused).
    pub(super) fn output_name(&self, index: usize) -> &str {
        self.node.output.get(index).map_or("", String::as_str)
    }

    /// Adds an intermediate IR node whose value gets a fresh name derived from the node.
    pub(super) fn emit(&mut self, op: Op, inputs: &[ValueRef]) -> Result<ValueRef> {
        self.emitted += 1;
        let base = format!("{}/{}{}", self.name, op.name(), self.emitted);
        let name = self.importer.graph.fresh_value_name(&base);
        let value = self.importer.graph.add_node(&name, op, inputs).map_err(|e| e.to_string())?;
        self.importer.graph.node_mut(value.node).name = self.name.to_string();
        Ok(value)
    }

    /// Adds the IR node that computes ONNX output `index`, named after it.
    pub(super) fn emit_output(&mut self, index: usize, op: Op, inputs: &[ValueRef]) -> Result<ValueRef> {
        let output = self.output_name(index).to_string();
        if output.is_empty() {
            return self.emit(op, inputs);
        }
        let name = self.importer.graph.fresh_value_name(&output);
        let value = self
            .importer
            .graph
            .add_node_with_output_names(self.name, op, inputs, &[name])
            .map_err(|e| e.to_string())?[0];
        self.bind(index, value);
        Ok(value)
    }

    /// Makes ONNX output `index` refer to an existing IR value.
    pub(super) fn bind(&mut self, index: usize, value: ValueRef) {
        let output = self.output_name(index);
        if !output.is_empty() {
            self.importer.values.insert(output.to_string(), value);
        }
    }

    pub(super) fn constant(&mut self, constant: Constant) -> ValueRef {
        self.emitted += 1;
        let name = self.importer.graph.fresh_value_name(&format!("{}/constant{}", self.name, self.emitted));
        self.importer.graph.add_constant(&name, constant)
    }

    pub(super) fn ints_constant(&mut self, values: &[i64]) -> ValueRef {
        self.constant(Constant::vector_i64(values))
    }

    /// A rank-0 i64 constant.
    pub(super) fn ints_scalar(&mut self, value: i64) -> ValueRef {
        self.constant(Constant::scalar_i64(value))
    }

    /// A rank-0 i64 value that is `dim` (a symbol's value at run time).
    pub(super) fn dims_scalar(&mut self, dim: &Dim) -> Result<ValueRef> {
        self.emit(Op::Dims { values: vec![dim.clone()], scalar: true }, &[])
    }

    pub(super) fn scalar(&mut self, dtype: DType, value: f32) -> ValueRef {
        let constant = if dtype.is_float() {
            Constant::scalar_f32(dtype, value)
        } else if dtype == DType::Bool {
            Constant::from_tensor(&Tensor::from_bool(Vec::new(), vec![value != 0.0]))
        } else {
            Constant::from_tensor(&Tensor::from_i64(dtype, Vec::new(), vec![value as i64]))
        };
        self.constant(constant)
    }

    /// Fails unless only the outputs in `supported` are used.
    pub(super) fn require_outputs(&self, supported: &[usize]) -> Result<()> {
        for (index, name) in self.node.output.iter().enumerate() {
            if !name.is_empty() && !supported.contains(&index) {
                return Err(format!("output {index} (`{name}`) is not supported"));
            }
        }
        Ok(())
    }
}

/// Imports one node, binding its ONNX outputs to IR values.
pub(super) fn import_node(importer: &mut Importer, node: &NodeProto, name: &str) -> Result<()> {
    let import = self::importer(&node.domain, &node.op_type)
        .ok_or_else(|| format!("`{}` is not supported (checked before import began)", node.op_type))?;
    import(&mut NodeImport { importer, node, name, emitted: 0 })
}

fn unary(n: &mut NodeImport, op: UnaryOp) -> Result<()> {
    n.require_outputs(&[0])?;
    let x = n.input(0)?;
    n.emit_output(0, Op::Unary(op), &[x]).map(|_| ())
}

fn binary(n: &mut NodeImport, op: BinaryOp) -> Result<()> {
    let (a, mut b) = (n.input(0)?, n.input(1)?);
    if op == BinaryOp::Pow && n.dtype_of(b) != n.dtype_of(a) {
        let to = n.dtype_of(a);
        b = n.emit(Op::Cast { to }, &[b])?;
    }
    n.emit_output(0, Op::Binary(op), &[a, b]).map(|_| ())
}

/// An op of exactly the node's first two inputs.
fn two_inputs(n: &mut NodeImport, op: Op) -> Result<()> {
    let inputs = [n.input(0)?, n.input(1)?];
    n.emit_output(0, op, &inputs).map(|_| ())
}

/// `Max`/`Min` of any number of inputs, folded left.
fn variadic(n: &mut NodeImport, op: BinaryOp) -> Result<()> {
    let count = n.node.input.len();
    let mut accumulator = n.input(0)?;
    if count == 1 {
        n.bind(0, accumulator);
    }
    for index in 1..count {
        let next = n.input(index)?;
        accumulator = if index + 1 == count {
            n.emit_output(0, Op::Binary(op), &[accumulator, next])?
        } else {
            n.emit(Op::Binary(op), &[accumulator, next])?
        };
    }
    Ok(())
}

fn import_identity(n: &mut NodeImport) -> Result<()> {
    n.require_outputs(&[0])?;
    let x = n.input(0)?;
    n.bind(0, x);
    Ok(())
}

/// Dropout at inference is the identity (its mask, output 1, all true);
/// training mode (random masks) is refused.
fn import_dropout(n: &mut NodeImport) -> Result<()> {
    if let Some(training) = n.optional_input(2)? {
        match constant_ints(&n.importer.graph, training, "training_mode") {
            Ok(values) if values.iter().all(|&v| v == 0) => {}
            Ok(_) => {
                return Err("not supported: Dropout in training mode (random masks); kiln compiles inference".into())
            }
            Err(_) => {
                return Err(format!(
                    "not supported: training_mode (`{}`) is only known at run time, and training mode draws random \
                     masks; kiln compiles inference",
                    n.node.input[2]
                ))
            }
        }
    }
    let x = n.input(0)?;
    n.bind(0, x);
    if !n.output_name(1).is_empty() {
        // At inference nothing is dropped: the mask keeps every element (a
        // bool mask from Dropout-10 on, ones of the input's type before).
        let mask_type = if n.importer.opset >= 10 { DType::Bool } else { n.dtype_of(x) };
        let keep = n.scalar(mask_type, 1.0);
        let shape = n.emit(Op::Shape { start: 0, end: None }, &[x])?;
        n.emit_output(1, Op::Expand, &[keep, shape])?;
    }
    Ok(())
}

fn import_where(n: &mut NodeImport) -> Result<()> {
    let inputs = [n.input(0)?, n.input(1)?, n.input(2)?];
    n.emit_output(0, Op::Where, &inputs).map(|_| ())
}

fn import_cast(n: &mut NodeImport) -> Result<()> {
    refuse_unless_default(n, "round_mode", "up")?;
    let to = dtype_from_onnx(n.int("to", 0) as i32)?;
    let x = n.input(0)?;
    emit_cast(n, x, to)
}

/// A cast to an 8-bit float: saturating (ONNX's default, `saturate=1`), or
/// with `saturate=0` overflowing as the format does — magnitudes past its
/// rounding threshold become ±infinity (E5M2) or NaN (the others), built as
/// a `where` over the saturating cast.
fn emit_cast(n: &mut NodeImport, x: ValueRef, to: DType) -> Result<()> {
    let threshold = kiln_runtime::dtype::overflow_threshold(to);
    let from = n.dtype_of(x);
    let (Some((threshold, inclusive)), 0, false) = (threshold, n.int("saturate", 1), from == DType::Bool) else {
        return n.emit_output(0, Op::Cast { to }, &[x]).map(|_| ());
    };
    let saturated = n.emit(Op::Cast { to }, &[x])?;
    // Compared as floats: the thresholds do not fit every integer type.
    let (x, from) = if from.is_float() { (x, from) } else { (n.emit(Op::Cast { to: DType::F32 }, &[x])?, DType::F32) };
    let magnitude = n.emit(Op::Unary(UnaryOp::Abs), &[x])?;
    let limit = n.scalar(from, threshold);
    let compare = if inclusive { BinaryOp::GreaterOrEqual } else { BinaryOp::Greater };
    let overflows = n.emit(Op::Binary(compare), &[magnitude, limit])?;
    let overflowed = if to == DType::F8E5M2 {
        let zero = n.scalar(from, 0.0);
        let negative = n.emit(Op::Binary(BinaryOp::Less), &[x, zero])?;
        let (up, down) = (n.scalar(to, f32::INFINITY), n.scalar(to, f32::NEG_INFINITY));
        n.emit(Op::Where, &[negative, down, up])?
    } else {
        n.scalar(to, f32::NAN)
    };
    n.emit_output(0, Op::Where, &[overflows, overflowed, saturated]).map(|_| ())
}

fn import_cast_like(n: &mut NodeImport) -> Result<()> {
    refuse_unless_default(n, "round_mode", "up")?;
    let (x, like) = (n.input(0)?, n.input(1)?);
    let to = n.dtype_of(like);
    emit_cast(n, x, to)
}

fn import_shape(n: &mut NodeImport) -> Result<()> {
    let x = n.input(0)?;
    let end = n.attribute("end").map(|a| a.i);
    n.emit_output(0, Op::Shape { start: n.int("start", 0), end }, &[x]).map(|_| ())
}

fn import_reshape(n: &mut NodeImport) -> Result<()> {
    let allow_zero = n.int("allowzero", 0) != 0;
    two_inputs(n, Op::Reshape { allow_zero })
}

fn import_transpose(n: &mut NodeImport) -> Result<()> {
    let x = n.input(0)?;
    let rank = n.importer.graph.value_type(x).rank();
    let permutation = match n.ints("perm") {
        Some(perm) => perm
            .iter()
            .map(|&p| usize::try_from(p).map_err(|_| format!("negative perm entry {p}")))
            .collect::<Result<Vec<_>>>()?,
        None => (0..rank).rev().collect(),
    };
    n.emit_output(0, Op::Transpose { permutation }, &[x]).map(|_| ())
}

fn import_squeeze_or_unsqueeze(n: &mut NodeImport) -> Result<()> {
    let x = n.input(0)?;
    let axes = match n.constant_ints_input(1, "axes")? {
        Some(axes) => axes,
        None => n.ints("axes").unwrap_or_default(),
    };
    let op = if n.node.op_type == "Squeeze" { Op::Squeeze { axes } } else { Op::Unsqueeze { axes } };
    n.emit_output(0, op, &[x]).map(|_| ())
}

fn import_flatten(n: &mut NodeImport) -> Result<()> {
    let x = n.input(0)?;
    n.emit_output(0, Op::Flatten { axis: n.int("axis", 1) }, &[x]).map(|_| ())
}

fn import_concat(n: &mut NodeImport) -> Result<()> {
    let inputs = (0..n.node.input.len()).map(|i| n.input(i)).collect::<Result<Vec<_>>>()?;
    n.emit_output(0, Op::Concat { axis: n.int("axis", 0) }, &inputs).map(|_| ())
}

/// Fails, naming the attribute, unless string attribute `name` is absent or `default`.
fn refuse_unless_default(n: &NodeImport, name: &str, default: &str) -> Result<()> {
    match n.string(name) {
        Some(value) if value != default => {
            Err(format!("not supported: {name} `{value}` (kiln implements `{default}`)"))
        }
        _ => Ok(()),
    }
}

fn import_range(n: &mut NodeImport) -> Result<()> {
    if n.int("stash_type", 1) != 1 {
        return Err(format!("not supported: stash_type {} (kiln computes Range in float32)", n.int("stash_type", 1)));
    }
    let inputs = [n.input(0)?, n.input(1)?, n.input(2)?];
    n.emit_output(0, Op::Range, &inputs).map(|_| ())
}

fn import_constant_of_shape(n: &mut NodeImport) -> Result<()> {
    let shape = n.input(0)?;
    let node = n.node;
    let (dtype, value) = match node.attribute.iter().find(|a| a.name == "value").and_then(|a| a.t.as_ref()) {
        Some(tensor) => {
            let constant = constant_from_proto(tensor, &mut n.importer.external)?;
            let value = constant.to_tensor().to_f64_vec().first().copied().ok_or("empty `value` tensor")?;
            (constant.dtype(), value)
        }
        None => (DType::F32, 0.0),
    };
    n.emit_output(0, Op::ConstantOfShape { dtype, value }, &[shape]).map(|_| ())
}

/// Trilu: kiln's trilu op when the diagonal offset `k` is a constant. A `k`
/// known only at run time decides no shape, so it stays an input: the node
/// becomes `where(column − row ≥ k, x, 0)` (`≤` for the lower triangle) over
/// the last two dims.
fn import_trilu(n: &mut NodeImport) -> Result<()> {
    let x = n.input(0)?;
    let upper = n.int("upper", 1) != 0;
    let k = match n.optional_input(1)? {
        None => return n.emit_output(0, Op::Trilu { upper, diagonal: 0 }, &[x]).map(|_| ()),
        Some(k) => k,
    };
    if let Ok(values) = constant_ints(&n.importer.graph, k, "k") {
        let diagonal = *values.first().ok_or("empty k")?;
        return n.emit_output(0, Op::Trilu { upper, diagonal }, &[x]).map(|_| ());
    }
    let ty = n.importer.graph.value_type(x).clone();
    if ty.rank() < 2 {
        return Err(format!("a rank-{} input (Trilu needs at least 2 dims)", ty.rank()));
    }
    let (rows, columns) = (ty.shape[ty.rank() - 2].clone(), ty.shape[ty.rank() - 1].clone());
    let indices = |n: &mut NodeImport, length: &Dim, axis: i64| -> Result<ValueRef> {
        let (start, limit, step) = (n.ints_scalar(0), n.dims_scalar(length)?, n.ints_scalar(1));
        let range = n.emit(Op::Range, &[start, limit, step])?;
        let axes = vec![axis];
        n.emit(Op::Unsqueeze { axes }, &[range])
    };
    let row = indices(n, &rows, 1)?;
    let column = indices(n, &columns, 0)?;
    let offset = n.emit(Op::Binary(BinaryOp::Sub), &[column, row])?;
    let k = n.as_i64(k)?;
    let keep =
        n.emit(Op::Binary(if upper { BinaryOp::GreaterOrEqual } else { BinaryOp::LessOrEqual }), &[offset, k])?;
    let zero = n.scalar(ty.dtype, 0.0);
    n.emit_output(0, Op::Where, &[keep, x, zero]).map(|_| ())
}

/// Softmax-13 normalizes along `axis` (default -1). Softmax-1 and -11 (opsets
/// before 13) flatten the input to 2-D at `axis` (default 1) and normalize
/// each row of the 2-D form: kiln imports that as a flatten, a softmax over the
/// last axis and a reshape back (only the softmax when `axis` is the last).
fn import_softmax(n: &mut NodeImport) -> Result<()> {
    let x = n.input(0)?;
    if n.importer.opset >= 13 {
        return n.emit_output(0, Op::Softmax { axis: n.int("axis", -1) }, &[x]).map(|_| ());
    }
    let rank = n.importer.graph.value_type(x).rank() as i64;
    let axis = n.int("axis", 1);
    let axis = if axis < 0 { axis + rank } else { axis };
    if !(0..rank.max(1)).contains(&axis) {
        return Err(format!("axis {} is out of range for rank {rank}", n.int("axis", 1)));
    }
    if axis == rank - 1 {
        return n.emit_output(0, Op::Softmax { axis }, &[x]).map(|_| ());
    }
    let rows = n.emit(Op::Flatten { axis }, &[x])?;
    let normalized = n.emit(Op::Softmax { axis: 1 }, &[rows])?;
    let shape = n.emit(Op::Shape { start: 0, end: None }, &[x])?;
    n.emit_output(0, Op::Reshape { allow_zero: false }, &[normalized, shape]).map(|_| ())
}

/// LayerNormalization; its optional outputs `Mean` and `InvStdDev` (over the
/// axes from `axis` on, kept as size-1 dims, in the `stash_type` precision)
/// are computed beside the fused op.
fn import_layer_norm(n: &mut NodeImport) -> Result<()> {
    let x = n.input(0)?;
    let mut inputs = vec![x, n.input(1)?];
    inputs.extend(n.optional_input(2)?);
    let (axis, epsilon) = (n.int("axis", -1), n.float("epsilon", 1e-5));
    n.emit_output(0, Op::LayerNorm { axis, epsilon }, &inputs)?;
    if n.output_name(1).is_empty() && n.output_name(2).is_empty() {
        return Ok(());
    }
    let stash_type = n.int("stash_type", 1);
    if stash_type != 1 {
        return Err(format!("stash_type {stash_type} is not supported (1, float32, is)"));
    }
    let rank = n.importer.graph.value_type(x).rank() as i64;
    let first = if axis < 0 { axis + rank } else { axis };
    if !(0..rank).contains(&first) {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    let axes: Vec<i64> = (first..rank).collect();
    let stats = if n.dtype_of(x) == DType::F32 { x } else { n.emit(Op::Cast { to: DType::F32 }, &[x])? };
    let mean_op = |axes: &[i64]| Op::Reduce { kind: ReduceKind::Mean, axes: axes.to_vec(), keep_dims: true };
    let mean = n.emit_output(1, mean_op(&axes), &[stats])?;
    if n.output_name(2).is_empty() {
        return Ok(());
    }
    let centered = n.emit(Op::Binary(BinaryOp::Sub), &[stats, mean])?;
    let squared = n.emit(Op::Binary(BinaryOp::Mul), &[centered, centered])?;
    let variance = n.emit(mean_op(&axes), &[squared])?;
    let eps = n.scalar(DType::F32, epsilon);
    let shifted = n.emit(Op::Binary(BinaryOp::Add), &[variance, eps])?;
    let deviation = n.emit(Op::Unary(UnaryOp::Sqrt), &[shifted])?;
    n.emit_output(2, Op::Unary(UnaryOp::Reciprocal), &[deviation]).map(|_| ())
}

/// `min(max(x, lo), hi)`, either bound optional: inputs from opset 11 on,
/// float attributes `min` and `max` in Clip-6.
fn import_clip(n: &mut NodeImport) -> Result<()> {
    let x = n.input(0)?;
    let (low, high) = if n.importer.opset < 11 {
        // Clip-6: the bounds are float attributes, each optional.
        let dtype = n.dtype_of(x);
        let low = n.attribute("min").map(|a| a.f);
        let high = n.attribute("max").map(|a| a.f);
        (low.map(|v| n.scalar(dtype, v)), high.map(|v| n.scalar(dtype, v)))
    } else {
        (n.optional_input(1)?, n.optional_input(2)?)
    };
    match (low, high) {
        (None, None) => {
            n.bind(0, x);
            Ok(())
        }
        (Some(low), None) => n.emit_output(0, Op::Binary(BinaryOp::Max), &[x, low]).map(|_| ()),
        (None, Some(high)) => n.emit_output(0, Op::Binary(BinaryOp::Min), &[x, high]).map(|_| ()),
        (Some(low), Some(high)) => {
            let raised = n.emit(Op::Binary(BinaryOp::Max), &[x, low])?;
            n.emit_output(0, Op::Binary(BinaryOp::Min), &[raised, high]).map(|_| ())
        }
    }
}

/// RotaryEmbedding (opset 23) as kiln's rope op, as ONNX defines it: `X` is
/// `[batch, heads, seq, head]`, or `[batch, seq, hidden]` with `num_heads`;
/// the first `rotary_embedding_dim` (default: all) of each head rotate by the
/// cos/sin caches (rows picked by `position_ids`, or given per batch and
/// position), as halves or, with `interleaved`, as even/odd pairs; the rest
/// of each head passes through.
fn import_rotary_embedding(n: &mut NodeImport) -> Result<()> {
    let (x, cos_cache, sin_cache) = (n.input(0)?, n.input(1)?, n.input(2)?);
    let positions = n.optional_input(3)?;
    let ty = n.importer.graph.value_type(x).clone();
    let interleaved = n.int("interleaved", 0) != 0;
    // [batch, seq, heads, head]: the layout the rotation works in.
    let (work, head) = match ty.rank() {
        4 => (n.emit(Op::Transpose { permutation: vec![0, 2, 1, 3] }, &[x])?, ty.shape[3].clone()),
        3 => {
            let heads = n.int("num_heads", 0);
            let hidden = ty.shape[2].as_constant().ok_or("not supported: a hidden size known only at run time")?;
            if heads < 1 || hidden % heads != 0 {
                return Err(format!("num_heads {heads} does not divide the hidden size {hidden} (3-D input needs it)"));
            }
            let (heads, head) = (Dim::constant(heads), Dim::constant(hidden / heads));
            let shape = vec![ty.shape[0].clone(), ty.shape[1].clone(), heads.clone(), head.clone()];
            let shape = n.emit(Op::Dims { values: shape, scalar: false }, &[])?;
            (n.emit(Op::Reshape { allow_zero: false }, &[x, shape])?, head)
        }
        rank => return Err(format!("input of rank {rank} (3 or 4 expected)")),
    };
    let head = head.as_constant().ok_or("not supported: a head size known only at run time")?;
    let rotated = match n.int("rotary_embedding_dim", 0) {
        0 => head,
        dim => dim,
    };
    if rotated % 2 != 0 || rotated > head || rotated < 2 {
        return Err(format!("rotary_embedding_dim {rotated} for heads of {head}"));
    }
    let half = rotated / 2;
    // The caches as [batch, seq, 1, half].
    let mut caches = Vec::new();
    for cache in [cos_cache, sin_cache] {
        let width = n.importer.graph.value_type(cache).shape.last().and_then(Dim::as_constant);
        if width != Some(half) {
            return Err(format!(
                "a cache {} wide for rotary_embedding_dim {rotated} (its last dim must be {half})",
                n.importer.graph.value_type(cache)
            ));
        }
        let rows = match positions {
            Some(positions) => n.emit(Op::Gather { axis: 0 }, &[cache, positions])?,
            None => cache,
        };
        caches.push(n.emit(Op::Unsqueeze { axes: vec![2] }, &[rows])?);
    }
    // kiln's rope op takes full-width tables, each pair's cos and sin at both
    // of its positions: the halves side by side (rotate-half) or each value twice (interleaved).
    let mut tables = Vec::new();
    for cache in caches {
        let mut shape = n.importer.graph.value_type(cache).shape.clone();
        let table = if interleaved {
            let column = n.emit(Op::Unsqueeze { axes: vec![4] }, &[cache])?;
            let twice = n.emit(Op::Concat { axis: 4 }, &[column, column])?;
            *shape.last_mut().expect("rank 4") = Dim::constant(rotated);
            let shape = n.emit(Op::Dims { values: shape, scalar: false }, &[])?;
            n.emit(Op::Reshape { allow_zero: false }, &[twice, shape])?
        } else {
            n.emit(Op::Concat { axis: 3 }, &[cache, cache])?
        };
        tables.push(table);
    }
    let slice = |n: &mut NodeImport, value, start: i64, end: i64| -> Result<ValueRef> {
        let (starts, ends) = (n.ints_constant(&[start]), n.ints_constant(&[end]));
        let (axes, steps) = (n.ints_constant(&[3]), n.ints_constant(&[1]));
        n.emit(Op::Slice, &[value, starts, ends, axes, steps])
    };
    let turning = if rotated < head { slice(n, work, 0, rotated)? } else { work };
    let mut parts = vec![n.emit(Op::Rope { interleaved }, &[turning, tables[0], tables[1]])?];
    if rotated < head {
        parts.push(slice(n, work, rotated, head)?);
    }
    let output = if parts.len() == 1 { parts[0] } else { n.emit(Op::Concat { axis: 3 }, &parts)? };
    match ty.rank() {
        4 => n.emit_output(0, Op::Transpose { permutation: vec![0, 2, 1, 3] }, &[output]).map(|_| ()),
        _ => {
            let shape = n.emit(Op::Dims { values: ty.shape.clone(), scalar: false }, &[])?;
            n.emit_output(0, Op::Reshape { allow_zero: false }, &[output, shape]).map(|_| ())
        }
    }
}

/// `x · sigmoid(alpha · x)` (opset 24).
fn import_swish(n: &mut NodeImport) -> Result<()> {
    let x = n.input(0)?;
    let alpha = n.float("alpha", 1.0);
    let argument = if alpha == 1.0 {
        x
    } else {
        let alpha = n.scalar(n.dtype_of(x), alpha);
        n.emit(Op::Binary(BinaryOp::Mul), &[x, alpha])?
    };
    let gate = n.emit(Op::Unary(UnaryOp::Sigmoid), &[argument])?;
    n.emit_output(0, Op::Binary(BinaryOp::Mul), &[x, gate]).map(|_| ())
}

/// Split along `axis` into slices: sizes from the `split` input (opset 13
/// and later) or attribute (earlier), else `num_outputs` parts (opset 18 and
/// later; the last one smaller when the dim does not divide), else equal parts.
fn import_split(n: &mut NodeImport) -> Result<()> {
    let x = n.input(0)?;
    let ty = n.importer.graph.value_type(x).clone();
    let rank = ty.rank() as i64;
    let axis = n.int("axis", 0);
    let axis = if axis < 0 { axis + rank } else { axis };
    if !(0..rank).contains(&axis) {
        return Err(format!("axis {} is out of range for rank {rank}", n.int("axis", 0)));
    }
    let outputs = n.node.output.len();
    let sizes = match n.constant_ints_input(1, "split") {
        Ok(Some(sizes)) => sizes,
        Ok(None) => match n.ints("split") {
            Some(sizes) => sizes,
            None => {
                let length = ty.shape[axis as usize].as_constant().ok_or_else(|| {
                    format!(
                        "not supported: splitting dim {} (`{}`) into equal parts needs its length at compile time",
                        axis, ty.shape[axis as usize]
                    )
                })?;
                let parts = match n.attribute("num_outputs") {
                    Some(attribute) => attribute.i,
                    None => outputs as i64,
                };
                if parts < 1 || parts as usize != outputs {
                    return Err(format!("num_outputs {parts} for {outputs} outputs"));
                }
                let part = (length + parts - 1) / parts;
                (0..parts).map(|i| (length - i * part).clamp(0, part)).collect()
            }
        },
        Err(_) => {
            return Err("not supported: the split sizes (input 1) are only known at run time; kiln needs them at \
                        compile time to plan the outputs"
                .into())
        }
    };
    if sizes.len() != outputs {
        return Err(format!("{} split sizes for {outputs} outputs", sizes.len()));
    }
    let mut start = 0i64;
    for (index, &size) in sizes.iter().enumerate() {
        if size < 0 {
            return Err(format!("split size {size}"));
        }
        let (starts, ends) = (n.ints_constant(&[start]), n.ints_constant(&[start + size]));
        let (axes, steps) = (n.ints_constant(&[axis]), n.ints_constant(&[1]));
        n.emit_output(index, Op::Slice, &[x, starts, ends, axes, steps])?;
        start += size;
    }
    Ok(())
}

fn import_rms_norm(n: &mut NodeImport) -> Result<()> {
    if n.int("stash_type", 1) != 1 {
        return Err(format!("not supported: stash_type {} (kiln's statistics are float32)", n.int("stash_type", 1)));
    }
    let inputs = [n.input(0)?, n.input(1)?];
    let op = Op::RmsNorm { axis: n.int("axis", -1), epsilon: n.float("epsilon", 1e-5) };
    n.emit_output(0, op, &inputs).map(|_| ())
}

fn import_gelu(n: &mut NodeImport) -> Result<()> {
    let x = n.input(0)?;
    let approximation = match n.string("approximate").as_deref() {
        None | Some("none") => GeluApproximation::None,
        Some("tanh") => GeluApproximation::Tanh,
        Some(other) => return Err(format!("unknown approximate `{other}`")),
    };
    n.emit_output(0, Op::Gelu { approximation }, &[x]).map(|_| ())
}

fn import_constant(n: &mut NodeImport) -> Result<()> {
    let attribute = n.node.attribute.first().ok_or("a Constant without a value")?;
    let constant = match attribute.name.as_str() {
        "value" => {
            constant_from_proto(attribute.t.as_ref().ok_or("`value` holds no tensor")?, &mut n.importer.external)?
        }
        "value_float" => Constant::scalar_f32(DType::F32, attribute.f),
        "value_floats" => {
            Constant::from_tensor(&Tensor::from_f32(DType::F32, vec![attribute.floats.len()], attribute.floats.clone()))
        }
        "value_int" => Constant::scalar_i64(attribute.i),
        "value_ints" => Constant::vector_i64(&attribute.ints),
        other => return Err(format!("Constant attribute `{other}` is not supported")),
    };
    let name = n.importer.graph.fresh_value_name(n.output_name(0));
    let value = n.importer.graph.add_constant(&name, constant);
    n.bind(0, value);
    Ok(())
}

fn import_slice(n: &mut NodeImport) -> Result<()> {
    let (data, starts, ends) = (n.input(0)?, n.input(1)?, n.input(2)?);
    let count = n
        .importer
        .graph
        .value_type(starts)
        .shape
        .first()
        .and_then(|d| d.as_constant())
        .ok_or("starts must be a 1-D tensor of known length")? as usize;
    let axes = match n.optional_input(3)? {
        Some(axes) => axes,
        None => n.ints_constant(&(0..count as i64).collect::<Vec<_>>()),
    };
    let steps = match n.optional_input(4)? {
        Some(steps) => steps,
        None => n.ints_constant(&vec![1; count]),
    };
    let inputs = [data, n.as_i64(starts)?, n.as_i64(ends)?, n.as_i64(axes)?, n.as_i64(steps)?];
    n.emit_output(0, Op::Slice, &inputs)?;
    Ok(())
}

/// `alpha · A' · B' + beta · C`, with `'` the optional transposes.
fn import_gemm(n: &mut NodeImport) -> Result<()> {
    let (mut a, mut b) = (n.input(0)?, n.input(1)?);
    if n.int("transA", 0) != 0 {
        a = n.emit(Op::Transpose { permutation: vec![1, 0] }, &[a])?;
    }
    if n.int("transB", 0) != 0 {
        b = n.emit(Op::Transpose { permutation: vec![1, 0] }, &[b])?;
    }
    let (alpha, beta) = (n.float("alpha", 1.0), n.float("beta", 1.0));
    let c = n.optional_input(2)?;
    let dtype = n.dtype_of(a);
    let mut product = if alpha == 1.0 && c.is_none() {
        return n.emit_output(0, Op::MATMUL, &[a, b]).map(|_| ());
    } else {
        n.emit(Op::MATMUL, &[a, b])?
    };
    if alpha != 1.0 {
        let scale = n.scalar(dtype, alpha);
        product = if c.is_none() {
            return n.emit_output(0, Op::Binary(BinaryOp::Mul), &[product, scale]).map(|_| ());
        } else {
            n.emit(Op::Binary(BinaryOp::Mul), &[product, scale])?
        };
    }
    let mut c = c.expect("handled above");
    if beta != 1.0 {
        let scale = n.scalar(dtype, beta);
        c = n.emit(Op::Binary(BinaryOp::Mul), &[c, scale])?;
    }
    n.emit_output(0, Op::Binary(BinaryOp::Add), &[product, c])?;
    Ok(())
}

fn import_reduce(n: &mut NodeImport, kind: ReduceKind) -> Result<()> {
    let x = n.input(0)?;
    let axes = match n.constant_ints_input(1, "axes")? {
        Some(axes) => axes,
        None => n.ints("axes").unwrap_or_default(),
    };
    if axes.is_empty() && n.int("noop_with_empty_axes", 0) != 0 {
        n.bind(0, x);
        return Ok(());
    }
    n.emit_output(0, Op::Reduce { kind, axes, keep_dims: n.int("keepdims", 1) != 0 }, &[x])?;
    Ok(())
}
