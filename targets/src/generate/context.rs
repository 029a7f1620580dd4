//! What every generator shares: the kernel's parameters, fresh variables, and
//! the per-element expression of any value the group can see.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};

use kiln_ir::graph::{NodeIndex, ValueRef};
use kiln_ir::infer::symbolic_value;
use kiln_ir::{BinaryOp, DType, Dim, GeluApproximation, Graph, Op, UnaryOp};
use kiln_passes::fuse::contract::GroupContract;
use kiln_runtime::kernel::{self, build, dim_expr, Expr, Kernel, Literal, Param, SharedArray, Stmt, Var};

use super::ParamBinding;

/// An expression and the register type it produces (f32, i64 or bool).
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub expr: Expr,
    pub dtype: DType,
}

impl Value {
    pub fn float(expr: Expr) -> Value {
        Value { expr, dtype: DType::F32 }
    }
}

pub use kiln_runtime::kernel::register_type;

/// A thread's run of consecutive output elements (see the elementwise
/// generator): the coordinates of each lane of the run over `shape`. A stored
/// tensor of the same shape read at exactly those coordinates is read with one
/// vector load per run instead of one load per element.
pub struct VectorLanes {
    pub shape: Vec<Dim>,
    /// Coordinates of element `j` of the run; element 0 sits at a multiple of the run length.
    pub lanes: Vec<Vec<Expr>>,
    /// The linear index of element 0.
    pub first: Expr,
    /// Buffers already loaded, with the variable of each element.
    loaded: std::cell::RefCell<HashMap<usize, Vec<Var>>>,
}

impl VectorLanes {
    pub fn new(shape: Vec<Dim>, lanes: Vec<Vec<Expr>>, first: Expr) -> VectorLanes {
        VectorLanes { shape, lanes, first, loaded: Default::default() }
    }
}

pub struct KernelContext<'g> {
    pub graph: &'g Graph,
    pub contract: GroupContract,
    name: String,
    members: HashSet<NodeIndex>,
    params: Vec<Param>,
    bindings: Vec<ParamBinding>,
    buffer_of: HashMap<ValueRef, usize>,
    symbol_param: HashMap<String, usize>,
    /// Values the generator computes itself (an anchor's results), as
    /// `(coordinates, value)` entries: the entry whose coordinates equal the
    /// requested ones is taken (the last entry when none does; a single entry
    /// applies everywhere).
    pub overrides: HashMap<ValueRef, Vec<(Vec<Expr>, Value)>>,
    next_var: Cell<u32>,
    /// When set, loads of whole vectors replace per-element loads where they can.
    pub vector: Option<VectorLanes>,
    pub block_threads: u32,
    pub grid_blocks: Dim,
    pub shared: Vec<SharedArray>,
}

impl<'g> KernelContext<'g> {
    pub fn new(graph: &'g Graph, contract: &GroupContract, name: &str) -> KernelContext<'g> {
        let members: HashSet<NodeIndex> = graph.group_nodes(contract.id).into_iter().collect();
        let mut context = KernelContext {
            graph,
            contract: contract.clone(),
            name: name.to_string(),
            members,
            params: Vec::new(),
            bindings: Vec::new(),
            buffer_of: HashMap::new(),
            symbol_param: HashMap::new(),
            overrides: HashMap::new(),
            next_var: Cell::new(0),
            vector: None,
            block_threads: 256,
            grid_blocks: Dim::constant(1),
            shared: Vec::new(),
        };
        for input in &contract.inputs {
            let source = input.source;
            let is_dims = matches!(graph.node(source.node).op, Op::Dims { .. });
            if context.buffer_of.contains_key(&source) || context.scalar_constant(source).is_some() || is_dims {
                continue;
            }
            context.add_buffer(source, ParamBinding::Input(source));
        }
        for &output in &contract.outputs {
            context.add_buffer(output, ParamBinding::Output(output));
        }
        let mut symbols: Vec<String> = graph
            .input_values()
            .iter()
            .flat_map(|v| graph.value_type(*v).shape.iter().flat_map(|d| d.symbols()))
            .collect();
        symbols.sort();
        symbols.dedup();
        for symbol in symbols {
            context.symbol_param.insert(symbol.clone(), context.params.len());
            context.params.push(Param::Scalar { name: symbol.clone(), dtype: DType::I64 });
            context.bindings.push(ParamBinding::Symbol(symbol));
        }
        context
    }

    /// A buffer parameter for the stored tensor `value` (written when `binding` is an output).
    fn add_buffer(&mut self, value: ValueRef, binding: ParamBinding) {
        let writable = matches!(binding, ParamBinding::Output(_));
        let name = parameter_name(self.graph.value_name(value));
        self.buffer_of.insert(value, self.params.len());
        self.params.push(Param::Buffer { name, dtype: self.graph.value_type(value).dtype, writable });
        self.bindings.push(binding);
    }

    /// The kernel, once its body is built.
    pub fn finish(self, body: Vec<Stmt>) -> Result<(Kernel, Vec<ParamBinding>), String> {
        let kernel = Kernel {
            name: self.name,
            params: self.params,
            block_threads: self.block_threads,
            grid_blocks: self.grid_blocks,
            shared: self.shared,
            body,
        };
        Ok((kernel, self.bindings))
    }

    pub fn fresh_var(&self) -> Var {
        self.next_var.set(self.next_var.get() + 1);
        Var(self.next_var.get())
    }

    /// `let v: dtype = value` and `v` as an expression (literals and
    /// variables are returned as they are).
    pub fn bind(&self, body: &mut Vec<Stmt>, value: Value) -> Value {
        if matches!(value.expr, Expr::Literal(_) | Expr::Var(_)) {
            return value;
        }
        let var = self.fresh_var();
        body.push(Stmt::Let { var, dtype: value.dtype, value: value.expr });
        Value { expr: build::var(var), dtype: value.dtype }
    }

    /// Element `coords` of stored tensor `value` from a vector load, when
    /// [`KernelContext::vector`] is set, the tensor has the run's shape, a run
    /// of its dtype fits one vector access, and `coords` are one lane's
    /// coordinates. The load is emitted into `body` at the first such read.
    fn vector_element(&self, body: &mut Vec<Stmt>, value: ValueRef, buffer: usize, coords: &[Expr]) -> Option<Value> {
        let vector = self.vector.as_ref()?;
        let ty = self.graph.value_type(value);
        let width = vector.lanes.len();
        if ty.shape != vector.shape || !kernel::is_vector_width(ty.dtype, width) {
            return None;
        }
        let lane = vector.lanes.iter().position(|lane| lane.as_slice() == coords)?;
        let dtype = register_type(ty.dtype);
        let mut loaded = vector.loaded.borrow_mut();
        let vars = loaded.entry(buffer).or_insert_with(|| {
            let vars: Vec<Var> = (0..width).map(|_| self.fresh_var()).collect();
            body.push(Stmt::VectorLoad {
                vars: vars.clone(),
                dtype,
                memory: kernel::Memory::Buffer(buffer),
                index: vector.first.clone(),
            });
            vars
        });
        Some(Value { expr: build::var(vars[lane]), dtype })
    }

    fn bind_coords(&self, body: &mut Vec<Stmt>, coords: Vec<Expr>) -> Vec<Expr> {
        coords.into_iter().map(|c| self.bind(body, Value { expr: c, dtype: DType::I64 }).expr).collect()
    }

    pub fn add_shared(&mut self, name: &str, dtype: DType, elements: usize) -> usize {
        self.shared.push(SharedArray::new(name, dtype, elements));
        self.shared.len() - 1
    }

    /// Makes `value` read as `computed` wherever the generator asks for it.
    pub fn set_override(&mut self, value: ValueRef, computed: Value) {
        self.overrides.insert(value, vec![(Vec::new(), computed)]);
    }

    /// The buffer parameter a stored tensor is read from or written to.
    pub fn buffer(&self, value: ValueRef) -> Result<usize, String> {
        self.buffer_of
            .get(&value)
            .copied()
            .ok_or_else(|| format!("`{}` is not a parameter", self.graph.value_name(value)))
    }

    /// An i64 expression of a dim.
    pub fn dim(&self, dim: &Dim) -> Result<Expr, String> {
        dim_expr(dim, &|name| self.symbol_param.get(name).copied())
            .ok_or_else(|| format!("dim `{dim}` uses a symbol the model's inputs do not"))
    }

    pub fn dims(&self, value: ValueRef) -> Result<Vec<Expr>, String> {
        self.graph.value_type(value).shape.iter().map(|d| self.dim(d)).collect()
    }

    /// The single value of a one-element constant.
    fn scalar_constant(&self, value: ValueRef) -> Option<Value> {
        let constant = self.graph.as_constant(value).filter(|c| c.element_count() == 1)?;
        let tensor = constant.to_tensor();
        let number = tensor.to_f64_vec()[0];
        Some(match register_type(constant.dtype()) {
            DType::F32 => Value::float(Expr::Literal(Literal::F32(number as f32))),
            DType::Bool => Value { expr: Expr::Literal(Literal::Bool(number != 0.0)), dtype: DType::Bool },
            _ => Value { expr: Expr::Literal(Literal::I64(number as i64)), dtype: DType::I64 },
        })
    }

    /// The element of `value` at `coords` (one i64 expression per dim).
    /// Intermediate indices and values are bound to variables in `body`,
    /// which must run before (and under the same conditions as) the use.
    pub fn value_at(&self, body: &mut Vec<Stmt>, value: ValueRef, coords: &[Expr]) -> Result<Value, String> {
        if let Some(entries) = self.overrides.get(&value) {
            // Coordinates built the same way as an entry's are that entry.
            if let Some((_, exact)) = entries.iter().find(|(at, _)| at.as_slice() == coords) {
                return Ok(exact.clone());
            }
            let (_, last) = entries.last().ok_or("an empty override")?;
            let mut result = last.clone();
            for (at, candidate) in entries.iter().rev().skip(1) {
                let same = at
                    .iter()
                    .zip(coords)
                    .map(|(a, b)| build::binary(kernel::BinaryOp::Eq, a.clone(), b.clone()))
                    .reduce(|p, q| build::binary(kernel::BinaryOp::And, p, q))
                    .unwrap_or(Expr::Literal(Literal::Bool(true)));
                result = Value {
                    expr: Expr::Select(Box::new(same), Box::new(candidate.expr.clone()), Box::new(result.expr)),
                    dtype: result.dtype,
                };
            }
            return Ok(result);
        }
        if let Some(literal) = self.scalar_constant(value) {
            return Ok(literal);
        }
        if let Op::Dims { values, .. } = &self.graph.node(value.node).op {
            // A dims value's elements are expressions of the symbols: no buffer holds them.
            let mut elements = values.iter().map(|dim| self.dim(dim)).collect::<Result<Vec<_>, _>>()?;
            let mut element = elements.pop().ok_or("an empty dims value")?;
            if let Some(index) = coords.first() {
                for (position, candidate) in elements.into_iter().enumerate().rev() {
                    let here = build::binary(kernel::BinaryOp::Eq, index.clone(), build::i64(position as i64));
                    element = Expr::Select(Box::new(here), Box::new(candidate), Box::new(element));
                }
            }
            return Ok(Value { expr: element, dtype: DType::I64 });
        }
        let node = self.graph.node(value.node);
        let inputs = self.graph.inputs_of(value.node);
        let is_member = self.members.contains(&value.node);
        let is_view = kiln_passes::fuse::form_fusion_groups::role(self.graph, value.node)
            == kiln_passes::fuse::form_fusion_groups::Role::View;
        if !is_member && !is_view {
            let buffer = self.buffer(value)?;
            if let Some(loaded) = self.vector_element(body, value, buffer, coords) {
                return Ok(loaded);
            }
            let index = linear_index(coords, &self.dims(value)?);
            let dtype = register_type(self.graph.value_type(value).dtype);
            return Ok(Value { expr: build::load(buffer, index), dtype });
        }
        let output_shape = &self.graph.value_type(value).shape;
        let at = |body: &mut Vec<Stmt>, input: ValueRef| -> Result<Value, String> {
            let coords = broadcast_coords(coords, output_shape, &self.graph.value_type(input).shape);
            let value = self.value_at(body, input, &coords)?;
            Ok(self.bind(body, value))
        };
        match &node.op {
            Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } => {
                let linear =
                    self.bind(body, Value { expr: linear_index(coords, &self.dims(value)?), dtype: DType::I64 });
                let source_coords = self.bind_coords(body, unravel(linear.expr, &self.dims(inputs[0])?));
                self.value_at(body, inputs[0], &source_coords)
            }
            Op::Transpose { permutation } => {
                let mut source_coords = vec![build::i64(0); coords.len()];
                for (i, &p) in permutation.iter().enumerate() {
                    source_coords[p] = coords[i].clone();
                }
                self.value_at(body, inputs[0], &source_coords)
            }
            Op::Expand => {
                let source_coords = broadcast_coords(coords, output_shape, &self.graph.value_type(inputs[0]).shape);
                self.value_at(body, inputs[0], &source_coords)
            }
            Op::Slice => {
                let known =
                    |index: usize| symbolic_value(self.graph, inputs[index]).ok_or("a slice with unknown bounds");
                let (starts, axes, steps) = (known(1)?, known(3)?, known(4)?);
                let source_shape = &self.graph.value_type(inputs[0]).shape;
                let mut source_coords = coords.to_vec();
                for ((start, axis), step) in starts.iter().zip(&axes).zip(&steps) {
                    let rank = coords.len() as i64;
                    let axis = axis.as_constant().ok_or("a slice over a symbolic axis")?;
                    let axis = if axis < 0 { axis + rank } else { axis } as usize;
                    let step = step.as_constant().ok_or("a slice with a symbolic step")?;
                    let start = match start.as_constant() {
                        Some(s) if s < 0 => &source_shape[axis] + &Dim::constant(s),
                        _ => start.clone(),
                    };
                    source_coords[axis] =
                        build::add(build::mul(coords[axis].clone(), build::i64(step)), self.dim(&start)?);
                }
                let source_coords = self.bind_coords(body, source_coords);
                self.value_at(body, inputs[0], &source_coords)
            }
            Op::Gather { axis } if is_view => {
                let index = self.scalar_constant(inputs[1]).ok_or("a view gather needs one constant index")?;
                let Expr::Literal(Literal::I64(index)) = index.expr else {
                    return Err("a non-integer gather index".into());
                };
                let data_shape = &self.graph.value_type(inputs[0]).shape;
                let axis = kiln_ir::op::normalize_axis(*axis, data_shape.len()).ok_or("gather axis out of range")?;
                let index = if index < 0 { &data_shape[axis] + &Dim::constant(index) } else { Dim::constant(index) };
                let mut source_coords = coords[..axis].to_vec();
                source_coords.push(self.dim(&index)?);
                source_coords.extend_from_slice(&coords[axis..]);
                self.value_at(body, inputs[0], &source_coords)
            }
            Op::Range => {
                let start = symbolic_value(self.graph, inputs[0])
                    .and_then(|v| v.first().cloned())
                    .ok_or("a range with an unknown start")?;
                let delta = symbolic_value(self.graph, inputs[2])
                    .and_then(|v| v.first().cloned())
                    .ok_or("a range with an unknown step")?;
                let position = build::add(self.dim(&start)?, build::mul(coords[0].clone(), self.dim(&delta)?));
                Ok(match register_type(self.graph.value_type(value).dtype) {
                    DType::F32 => Value::float(build::cast(DType::F32, position)),
                    _ => Value { expr: position, dtype: DType::I64 },
                })
            }
            Op::ConstantOfShape { dtype, value: fill } => Ok(match register_type(*dtype) {
                DType::F32 => Value::float(build::f32(*fill as f32)),
                DType::Bool => Value { expr: Expr::Literal(Literal::Bool(*fill != 0.0)), dtype: DType::Bool },
                _ => Value { expr: build::i64(*fill as i64), dtype: DType::I64 },
            }),
            Op::Unary(op) => {
                let x = at(body, inputs[0])?;
                unary(*op, x)
            }
            Op::Binary(op) => {
                let (a, b) = (at(body, inputs[0])?, at(body, inputs[1])?);
                binary(*op, a, b)
            }
            Op::Where => {
                let (condition, a, b) = (at(body, inputs[0])?, at(body, inputs[1])?, at(body, inputs[2])?);
                Ok(Value {
                    expr: Expr::Select(Box::new(truth(condition)), Box::new(a.expr), Box::new(b.expr)),
                    dtype: a.dtype,
                })
            }
            Op::Cast { to } => {
                let source = at(body, inputs[0])?;
                Ok(match (*to, register_type(*to)) {
                    (DType::Bool, _) => Value { expr: truth(source), dtype: DType::Bool },
                    (to, DType::F32) if to != DType::F32 => {
                        Value::float(build::cast(DType::F32, build::cast(to, source.expr)))
                    }
                    (_, register) => Value { expr: build::cast(register, source.expr), dtype: register },
                })
            }
            Op::Gelu { approximation } => {
                let x = at(body, inputs[0])?;
                Ok(gelu(*approximation, x))
            }
            Op::SwiGlu => {
                let (gate, up) = (at(body, inputs[0])?, at(body, inputs[1])?);
                Ok(binary_value(kernel::BinaryOp::Mul, silu(gate), up))
            }
            Op::Rope { interleaved } => {
                let x_shape = self.graph.value_type(inputs[0]).shape.clone();
                let depth = x_shape.last().and_then(Dim::as_constant).ok_or("rope over a symbolic depth")?;
                let last = coords.len() - 1;
                let position = coords[last].clone();
                let mut partner = coords.to_vec();
                // `lower`: the pair's first element, whose partner comes after it and is negated.
                let (lower, step) = if *interleaved {
                    let parity = build::binary(kernel::BinaryOp::BitAnd, position.clone(), build::i64(1));
                    (build::binary(kernel::BinaryOp::Eq, parity, build::i64(0)), 1)
                } else {
                    (build::lt(position.clone(), build::i64(depth / 2)), depth / 2)
                };
                partner[last] = Expr::Select(
                    Box::new(lower.clone()),
                    Box::new(build::add(position.clone(), build::i64(step))),
                    Box::new(build::add(position, build::i64(-step))),
                );
                let partner = self.bind_coords(body, partner);
                let x = self.value_at(body, inputs[0], coords)?;
                let x = self.bind(body, x);
                let other = self.value_at(body, inputs[0], &partner)?;
                let other = self.bind(body, other);
                let rotated = Value::float(Expr::Select(
                    Box::new(lower),
                    Box::new(build::unary(kernel::UnaryOp::Neg, other.expr.clone())),
                    Box::new(other.expr),
                ));
                let (cos, sin) = (at(body, inputs[1])?, at(body, inputs[2])?);
                Ok(binary_value(
                    kernel::BinaryOp::Add,
                    binary_value(kernel::BinaryOp::Mul, x, cos),
                    binary_value(kernel::BinaryOp::Mul, rotated, sin),
                ))
            }
            Op::Gather { axis } => {
                let data_shape = self.graph.value_type(inputs[0]).shape.clone();
                let index_rank = self.graph.value_type(inputs[1]).rank();
                let axis = kiln_ir::op::normalize_axis(*axis, data_shape.len()).ok_or("gather axis out of range")?;
                let index = self.value_at(body, inputs[1], &coords[axis..axis + index_rank])?;
                let index =
                    self.bind(body, Value { expr: build::cast(DType::I64, index.expr), dtype: DType::I64 }).expr;
                let size = self.dim(&data_shape[axis])?;
                let normalized = Expr::Select(
                    Box::new(build::lt(index.clone(), build::i64(0))),
                    Box::new(build::add(index.clone(), size)),
                    Box::new(index),
                );
                let mut data_coords = coords[..axis].to_vec();
                data_coords.push(normalized);
                data_coords.extend_from_slice(&coords[axis + index_rank..]);
                let data_coords = self.bind_coords(body, data_coords);
                self.value_at(body, inputs[0], &data_coords)
            }
            Op::Concat { axis } => {
                let rank = coords.len();
                let axis = kiln_ir::op::normalize_axis(*axis, rank).ok_or("concat axis out of range")?;
                let mut offset = build::i64(0);
                let mut pieces = Vec::new();
                for &input in &inputs {
                    let size = self.dim(&self.graph.value_type(input).shape[axis])?;
                    let mut local = coords.to_vec();
                    // Clamped, so the branches a select does not take still read in bounds.
                    let shifted = build::binary(kernel::BinaryOp::Sub, coords[axis].clone(), offset.clone());
                    local[axis] = build::binary(
                        kernel::BinaryOp::Max,
                        build::i64(0),
                        build::binary(
                            kernel::BinaryOp::Min,
                            shifted,
                            build::binary(kernel::BinaryOp::Sub, size.clone(), build::i64(1)),
                        ),
                    );
                    let end = build::add(offset.clone(), size);
                    let local = self.bind_coords(body, local);
                    let piece = self.value_at(body, input, &local)?;
                    pieces.push((end.clone(), self.bind(body, piece)));
                    offset = end;
                }
                let (_, mut result) = pieces.pop().ok_or("an empty concat")?;
                while let Some((end, piece)) = pieces.pop() {
                    result = Value {
                        expr: Expr::Select(
                            Box::new(build::lt(coords[axis].clone(), end)),
                            Box::new(piece.expr),
                            Box::new(result.expr),
                        ),
                        dtype: piece.dtype,
                    };
                }
                Ok(result)
            }
            op => Err(format!("`{}` ({}) has no per-element form", node.name, op.name())),
        }
    }
}

/// A parameter name from a value name.
fn parameter_name(name: &str) -> String {
    let cleaned: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    if cleaned.starts_with(|c: char| c.is_ascii_digit()) {
        format!("t_{cleaned}")
    } else {
        cleaned
    }
}

/// Row-major linear index of `coords` in a tensor of `dims`.
pub fn linear_index(coords: &[Expr], dims: &[Expr]) -> Expr {
    let mut index = build::i64(0);
    for (coord, dim) in coords.iter().zip(dims) {
        index = match index {
            Expr::Literal(Literal::I64(0)) => coord.clone(),
            // `(x / d) · d + x % d` is `x` (the coords of an unraveled index).
            Expr::Binary(kernel::BinaryOp::Div, x, d)
                if *d == *dim && *coord == build::binary(kernel::BinaryOp::Rem, (*x).clone(), dim.clone()) =>
            {
                *x
            }
            index => build::add(build::mul(index, dim.clone()), coord.clone()),
        };
    }
    index
}

/// Coordinates of row-major `linear` in a tensor of `dims`.
pub fn unravel(linear: Expr, dims: &[Expr]) -> Vec<Expr> {
    let mut coords = vec![build::i64(0); dims.len()];
    let mut rest = linear;
    for (i, dim) in dims.iter().enumerate().rev() {
        if i == 0 {
            coords[0] = rest.clone();
        } else {
            coords[i] = build::binary(kernel::BinaryOp::Rem, rest.clone(), dim.clone());
            rest = build::binary(kernel::BinaryOp::Div, rest, dim.clone());
        }
    }
    coords
}

/// The coordinates of an input broadcast to `output` shape: right-aligned,
/// with 0 for dims of size 1 that the output widens.
pub fn broadcast_coords(coords: &[Expr], output: &[Dim], input: &[Dim]) -> Vec<Expr> {
    let offset = output.len() - input.len();
    input
        .iter()
        .enumerate()
        .map(|(i, dim)| {
            let out = &output[i + offset];
            if dim.as_constant() == Some(1) && out.as_constant() != Some(1) {
                build::i64(0)
            } else {
                coords[i + offset].clone()
            }
        })
        .collect()
}

fn truth(value: Value) -> Expr {
    match value.dtype {
        DType::Bool => value.expr,
        DType::F32 => build::binary(kernel::BinaryOp::Ne, value.expr, build::f32(0.0)),
        _ => build::binary(kernel::BinaryOp::Ne, value.expr, build::i64(0)),
    }
}

fn binary_value(op: kernel::BinaryOp, a: Value, b: Value) -> Value {
    let dtype = if op.is_comparison() { DType::Bool } else { a.dtype };
    Value { expr: build::binary(op, a.expr, b.expr), dtype }
}

fn silu(x: Value) -> Value {
    // x / (1 + exp(-x))
    let exp = build::unary(kernel::UnaryOp::Exp, build::unary(kernel::UnaryOp::Neg, x.expr.clone()));
    Value::float(build::binary(kernel::BinaryOp::Div, x.expr, build::add(build::f32(1.0), exp)))
}

fn gelu(approximation: GeluApproximation, x: Value) -> Value {
    let half_x = build::mul(build::f32(0.5), x.expr.clone());
    let inner = match approximation {
        GeluApproximation::None => {
            build::unary(kernel::UnaryOp::Erf, build::mul(x.expr, build::f32(std::f32::consts::FRAC_1_SQRT_2)))
        }
        GeluApproximation::Tanh => {
            let cube = build::mul(x.expr.clone(), build::mul(x.expr.clone(), x.expr.clone()));
            let argument = build::mul(
                build::f32((2.0 / std::f32::consts::PI).sqrt()),
                build::add(x.expr, build::mul(build::f32(0.044715), cube)),
            );
            build::unary(kernel::UnaryOp::Tanh, argument)
        }
    };
    Value::float(build::mul(half_x, build::add(build::f32(1.0), inner)))
}

fn unary(op: UnaryOp, x: Value) -> Result<Value, String> {
    use kernel::UnaryOp as K;
    let float = |k: K, x: Value| Value::float(build::unary(k, x.expr));
    Ok(match op {
        UnaryOp::Neg => Value { expr: build::unary(K::Neg, x.expr), dtype: x.dtype },
        UnaryOp::Abs => Value { expr: build::unary(K::Abs, x.expr), dtype: x.dtype },
        UnaryOp::Sqrt => float(K::Sqrt, x),
        UnaryOp::Reciprocal => Value::float(build::binary(kernel::BinaryOp::Div, build::f32(1.0), x.expr)),
        UnaryOp::Exp => float(K::Exp, x),
        UnaryOp::Log => float(K::Log, x),
        UnaryOp::Erf => float(K::Erf, x),
        UnaryOp::Tanh => float(K::Tanh, x),
        UnaryOp::Sin => float(K::Sin, x),
        UnaryOp::Cos => float(K::Cos, x),
        UnaryOp::Sigmoid => {
            let exp = build::unary(K::Exp, build::unary(K::Neg, x.expr));
            Value::float(build::binary(kernel::BinaryOp::Div, build::f32(1.0), build::add(build::f32(1.0), exp)))
        }
        UnaryOp::Silu => silu(x),
        UnaryOp::Relu => {
            let zero = if x.dtype == DType::F32 { build::f32(0.0) } else { build::i64(0) };
            Value { expr: build::binary(kernel::BinaryOp::Max, x.expr, zero), dtype: x.dtype }
        }
        UnaryOp::Not => Value { expr: build::unary(K::Not, x.expr), dtype: DType::Bool },
        UnaryOp::IsNan => {
            Value { expr: build::binary(kernel::BinaryOp::Ne, x.expr.clone(), x.expr), dtype: DType::Bool }
        }
        UnaryOp::Floor | UnaryOp::Ceil => return Err(format!("{} has no kernel form yet", op.name())),
    })
}

fn binary(op: BinaryOp, a: Value, b: Value) -> Result<Value, String> {
    use kernel::BinaryOp as K;
    let kernel_op = match op {
        BinaryOp::Add => K::Add,
        BinaryOp::Sub => K::Sub,
        BinaryOp::Mul => K::Mul,
        BinaryOp::Div => K::Div,
        BinaryOp::Pow => K::Pow,
        BinaryOp::Max => K::Max,
        BinaryOp::Min => K::Min,
        BinaryOp::Equal => K::Eq,
        BinaryOp::Less => K::Lt,
        BinaryOp::LessOrEqual => K::Le,
        BinaryOp::Greater => return Ok(binary_value(K::Lt, b, a)),
        BinaryOp::GreaterOrEqual => return Ok(binary_value(K::Le, b, a)),
        BinaryOp::And => K::And,
        BinaryOp::Or => K::Or,
        BinaryOp::Xor => K::Ne,
    };
    Ok(binary_value(kernel_op, a, b))
}
