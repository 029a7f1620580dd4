//! Recognizes scaled dot-product attention as exporters write it —
//! `softmax(q·kᵀ·scale + mask)·v`, the scale applied once or split as √scale
//! over q and kᵀ, an optional `IsNaN → Where` guard after the softmax, and
//! grouped-query heads repeated by `unsqueeze → expand → reshape` — as one
//! `attention` op.
//!
//! The mask is whatever the graph computes (an additive float mask, a boolean
//! mask through `where(m, 0, −inf)`, a constant causal table). Its meaning is
//! checked, not trusted: the mask subgraph is evaluated on probe inputs (all
//! keys kept, right and left padding, random padding with a fully padded row)
//! under concrete bindings, and the op's mask kind (none, padding from a
//! `[batch, keys]` tensor, causal, both) and fill value are accepted only if
//! they reproduce every probe exactly. Masks that match no kind stay as they are.
//!
//! Establishes: every such attention whose mask has a recognized kind is one op.

use std::collections::{HashMap, HashSet};

use kiln_ir::eval::{broadcast_shape, evaluate_values};
use kiln_ir::graph::{NodeIndex, ValueRef};
use kiln_ir::infer::merge_dims;
use kiln_ir::{BinaryOp, DType, Dim, Graph, MaskKind, Op, SequenceLayout, SymbolBindings, Tensor, UnaryOp};

use super::patterns::{binary, replace_with};
use crate::pass::{Pass, PassError};
use crate::util::{constant_scalar, has_single_use};

pub struct RecognizeAttention;

/// Peels multiplications and divisions by scalar constants off `value`.
fn peel_scale(graph: &Graph, mut value: ValueRef, scale: &mut f64) -> ValueRef {
    loop {
        let peeled = [BinaryOp::Mul, BinaryOp::Div].into_iter().find_map(|op| {
            let (a, b) = binary(graph, value, op)?;
            if let Some(c) = constant_scalar(graph, b) {
                return Some((a, if op == BinaryOp::Mul { c } else { 1.0 / c }));
            }
            if op == BinaryOp::Mul {
                if let Some(c) = constant_scalar(graph, a) {
                    return Some((b, c));
                }
            }
            None
        });
        match peeled {
            Some((inner, factor)) => {
                *scale *= factor;
                value = inner;
            }
            None => return value,
        }
    }
}

/// The `[b, hkv, s, d]` key/value heads that `repeat_kv` (`→ [b, hkv, 1, s, d]
/// → expand → [b, hkv·r, s, d]`) repeated into `value`, whatever view made the
/// size-1 axis; `None` when `value` is not such a repetition.
fn repeated_heads(graph: &Graph, value: ValueRef) -> Option<Repetition> {
    let Op::Reshape { .. } = graph.node(value.node).op else { return None };
    let expanded = graph.inputs_of(value.node)[0];
    if graph.node(expanded.node).op != Op::Expand {
        return None;
    }
    let source = graph.inputs_of(expanded.node)[0];
    let (x, e, y) =
        (&graph.value_type(source).shape, &graph.value_type(expanded).shape, &graph.value_type(value).shape);
    let repeats = e.get(2).and_then(Dim::as_constant)?;
    let fits = x.len() == 5
        && e.len() == 5
        && y.len() == 4
        && x[2] == Dim::constant(1)
        && e[0] == x[0]
        && e[1] == x[1]
        && e[3] == x[3]
        && e[4] == x[4]
        && y[0] == x[0]
        && y[1] == &x[1] * &Dim::constant(repeats)
        && y[2] == x[3]
        && y[3] == x[4];
    if !fits {
        return None;
    }
    match &graph.node(source.node).op {
        Op::Unsqueeze { axes } if axes.as_slice() == [2] => Some(Repetition::Of(graph.inputs_of(source.node)[0])),
        _ => Some(Repetition::Squeezing(source)),
    }
}

/// Where the unrepeated key/value heads are.
enum Repetition {
    /// An existing `[b, hkv, s, d]` value.
    Of(ValueRef),
    /// A `[b, hkv, 1, s, d]` value to squeeze on axis 2.
    Squeezing(ValueRef),
}

fn unrepeated(graph: &mut Graph, repetition: Repetition) -> Result<ValueRef, PassError> {
    match repetition {
        Repetition::Of(value) => Ok(value),
        Repetition::Squeezing(value) => {
            let name = graph.fresh_value_name(&format!("{}.heads", graph.value_name(value)));
            graph
                .add_node(&name, Op::Squeeze { axes: vec![2] }, &[value])
                .map_err(|e| PassError::new("recognize_attention", e.to_string()))
        }
    }
}

/// The pieces of one matched attention.
struct Match {
    query: ValueRef,
    key: KeyInput,
    value: ValueRef,
    scale: f64,
    mask: Option<ValueRef>,
    guarded: bool,
    output: ValueRef,
}

/// The key as the matmul reads it.
enum KeyInput {
    /// `[b, h, s, d]` (the matmul transposed it).
    Rows(ValueRef),
    /// `[b, h, d, s]`.
    Columns(ValueRef),
}

fn match_attention(graph: &Graph, softmax: NodeIndex) -> Option<Match> {
    let Op::Softmax { axis } = graph.node(softmax).op else { return None };
    let scores_input = graph.inputs_of(softmax)[0];
    if axis != -1 && axis != graph.value_type(scores_input).rank() as i64 - 1 {
        return None;
    }
    let mut scale = 1.0;
    let scores_of = |value: ValueRef, scale: &mut f64| -> Option<(ValueRef, bool, ValueRef)> {
        let product = peel_scale(graph, value, scale);
        let Op::MatMul { transpose_a: false, transpose_b } = graph.node(product.node).op else { return None };
        let inputs = graph.inputs_of(product.node);
        (graph.value_type(product).rank() == 4).then_some((inputs[0], transpose_b, inputs[1]))
    };
    let (query, transposed, key, mask) = match binary(graph, scores_input, BinaryOp::Add) {
        Some((a, b)) => {
            let mut trial = 1.0;
            if let Some((q, t, k)) = scores_of(a, &mut trial) {
                scale = trial;
                (q, t, k, Some(b))
            } else {
                let (q, t, k) = scores_of(b, &mut scale)?;
                (q, t, k, Some(a))
            }
        }
        None => {
            let (q, t, k) = scores_of(scores_input, &mut scale)?;
            (q, t, k, None)
        }
    };
    let query = peel_scale(graph, query, &mut scale);
    let key = peel_scale(graph, key, &mut scale);
    let key = if transposed { KeyInput::Rows(key) } else { KeyInput::Columns(key) };

    let mut probabilities = ValueRef::new(softmax, 0);
    let mut guarded = false;
    let consumers = crate::util::consumer_nodes(graph, probabilities);
    if let [first, second] = consumers[..] {
        // The guard `where(is_nan(p), 0, p)`: p feeds both the is_nan and the where.
        let (check, select) =
            if graph.node(first).op == Op::Unary(UnaryOp::IsNan) { (first, second) } else { (second, first) };
        let check_value = ValueRef::new(check, 0);
        let select_inputs = graph.inputs_of(select);
        let is_guard = graph.node(check).op == Op::Unary(UnaryOp::IsNan)
            && graph.node(select).op == Op::Where
            && select_inputs[0] == check_value
            && constant_scalar(graph, select_inputs[1]) == Some(0.0)
            && select_inputs[2] == probabilities
            && graph.consumers(check_value).len() == 1
            && !graph.outputs().iter().any(|o| o.value == probabilities);
        if !is_guard {
            return None;
        }
        guarded = true;
        probabilities = ValueRef::new(select, 0);
    }
    if !has_single_use(graph, probabilities) {
        return None;
    }
    let (product, slot) = graph.consumers(probabilities)[0];
    if graph.node(product).op != Op::MATMUL || slot != 0 {
        return None;
    }
    let value = graph.inputs_of(product)[1];
    Some(Match { query, key, value, scale, mask, guarded, output: ValueRef::new(product, 0) })
}

/// A few small pseudo-random bits, deterministic.
struct Lcg(u64);

impl Lcg {
    fn bit(&mut self) -> bool {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) & 1 == 1
    }
}

/// The 0/1 keep patterns for a `[batch, keys]` mask, one per probe.
fn probe_patterns(batch: usize, keys: usize) -> Vec<Vec<bool>> {
    let mut random = Lcg(0x5eed);
    let mut patterns = vec![vec![true; batch * keys]];
    patterns.push((0..batch * keys).map(|i| i % keys < keys - (i / keys) % keys).collect());
    patterns.push((0..batch * keys).map(|i| i % keys >= (i / keys) % keys).collect());
    patterns.push(
        (0..batch * keys).map(|i| if i / keys == batch - 1 { false } else { random.bit() || i % keys == 0 }).collect(),
    );
    patterns
}

/// What the mask subgraph turned out to be.
struct MaskMeaning {
    kind: MaskKind,
    keep: Option<ValueRef>,
    fill: f32,
}

fn ancestors(graph: &Graph, value: ValueRef) -> HashSet<NodeIndex> {
    let mut seen = HashSet::new();
    let mut stack = vec![value.node];
    while let Some(node) = stack.pop() {
        if seen.insert(node) {
            stack.extend(graph.inputs_of(node).into_iter().map(|v| v.node));
        }
    }
    seen
}

fn understand_mask(graph: &Graph, mask: ValueRef, query: ValueRef, key_rows: ValueRef) -> Option<MaskMeaning> {
    let mask_type = graph.value_type(mask);
    if !mask_type.dtype.is_float() || mask_type.rank() > 4 {
        return None;
    }
    let region = ancestors(graph, mask);
    let mut symbols: Vec<String> =
        graph.input_values().iter().flat_map(|v| graph.value_type(*v).shape.iter().flat_map(|d| d.symbols())).collect();
    symbols.sort();
    symbols.dedup();
    let bindings: SymbolBindings = symbols.into_iter().zip([3i64, 5, 7, 11, 13]).collect();
    let concrete = |dim: &Dim| dim.evaluate(&bindings).ok().and_then(|v| usize::try_from(v).ok());
    let (q_shape, k_shape) = (&graph.value_type(query).shape, &graph.value_type(key_rows).shape);
    let (batch, queries, keys) = (concrete(&q_shape[0])?, concrete(&q_shape[2])?, concrete(&k_shape[2])?);
    if batch == 0 || keys == 0 || batch * queries * keys > 1 << 16 {
        return None;
    }
    // Candidate keep tensors: [batch, keys] integer or bool values feeding the mask.
    let mut candidates: Vec<ValueRef> = region
        .iter()
        .map(|&n| ValueRef::new(n, 0))
        .filter(|v| {
            let t = graph.value_type(*v);
            (t.dtype.is_integer() || t.dtype == DType::Bool)
                && t.rank() == 2
                && merge_dims(&t.shape[0], &q_shape[0]).is_ok()
                && t.shape[1] == k_shape[2]
        })
        .collect();
    candidates.sort_by_key(|v| (graph.node(v.node).op != Op::Input, v.node));
    // Probe inputs: every graph input in the region gets its own pattern.
    let region_inputs: Vec<ValueRef> = graph.input_values().into_iter().filter(|v| region.contains(&v.node)).collect();
    let mut observations: Vec<(Tensor, Vec<Tensor>)> = Vec::new();
    for (probe, pattern) in probe_patterns(batch, keys).into_iter().enumerate() {
        let mut inputs = HashMap::new();
        for (index, input) in region_inputs.iter().enumerate() {
            let ty = graph.value_type(*input);
            let shape: Vec<usize> = ty.shape.iter().map(concrete).collect::<Option<_>>()?;
            let count: usize = shape.iter().product();
            let bits: Vec<bool> = if shape == [batch, keys] {
                pattern.clone()
            } else {
                let mut random = Lcg(probe as u64 * 31 + index as u64);
                (0..count).map(|_| random.bit()).collect()
            };
            let tensor = match ty.dtype {
                DType::Bool => Tensor::from_bool(shape, bits),
                d if d.is_float() => Tensor::from_f32(d, shape, bits.iter().map(|&b| b as u8 as f32).collect()),
                d => Tensor::from_i64(d, shape, bits.iter().map(|&b| b as i64).collect()),
            };
            inputs.insert(graph.value_name(*input).to_string(), tensor);
        }
        let mut targets = vec![mask];
        targets.extend(candidates.iter().copied());
        let mut values = evaluate_values(graph, &inputs, &bindings, &targets).ok()?;
        let mask_value = values.remove(0);
        observations.push((mask_value, values));
    }
    // The mask as [batch, queries, keys] (heads must not matter).
    let mut fill: Option<f32> = None;
    let mut masked_per_probe = Vec::new();
    for (mask_value, _) in &observations {
        let full = [batch, 1, queries, keys];
        let padded: Vec<usize> =
            std::iter::repeat_n(1, 4 - mask_value.shape.len()).chain(mask_value.shape.iter().copied()).collect();
        if padded[1] != 1 || broadcast_shape(&[&padded, &full]).as_deref() != Some(&full[..]) {
            return None;
        }
        let values = mask_value.as_floats()?;
        let mut masked = vec![false; batch * queries * keys];
        for b in 0..batch {
            for i in 0..queries {
                for j in 0..keys {
                    let at = (if padded[0] == 1 { 0 } else { b }) * padded[2] * padded[3]
                        + (if padded[2] == 1 { 0 } else { i }) * padded[3]
                        + j;
                    let v = values[at];
                    if v != 0.0 {
                        if fill.is_some_and(|f| f != v) {
                            return None;
                        }
                        fill = Some(v);
                        masked[(b * queries + i) * keys + j] = true;
                    }
                }
            }
        }
        masked_per_probe.push(masked);
    }
    let causal = |i: usize, j: usize| j + queries > i + keys;
    let explains = |keep: Option<usize>, is_causal: bool| {
        observations.iter().zip(&masked_per_probe).all(|((_, candidate_values), masked)| {
            let keep_values = keep.map(|k| candidate_values[k].to_f64_vec());
            (0..batch).all(|b| {
                (0..queries).all(|i| {
                    (0..keys).all(|j| {
                        let padded = keep_values.as_ref().is_some_and(|k| k[b * keys + j] == 0.0);
                        masked[(b * queries + i) * keys + j] == (padded || (is_causal && causal(i, j)))
                    })
                })
            })
        })
    };
    let Some(fill) = fill else {
        return Some(MaskMeaning { kind: MaskKind::None, keep: None, fill: 0.0 });
    };
    if explains(None, true) {
        return Some(MaskMeaning { kind: MaskKind::Causal, keep: None, fill });
    }
    for (index, candidate) in candidates.iter().enumerate() {
        if explains(Some(index), false) {
            return Some(MaskMeaning { kind: MaskKind::Padding, keep: Some(*candidate), fill });
        }
    }
    for (index, candidate) in candidates.iter().enumerate() {
        if explains(Some(index), true) {
            return Some(MaskMeaning { kind: MaskKind::CausalAndPadding, keep: Some(*candidate), fill });
        }
    }
    None
}

impl Pass for RecognizeAttention {
    fn name(&self) -> &'static str {
        "recognize_attention"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        let mut changed = false;
        for node in graph.topological_order() {
            if !graph.contains(node) {
                continue;
            }
            let Some(found) = match_attention(graph, node) else { continue };
            let key_rows = match found.key {
                KeyInput::Rows(key) => key,
                KeyInput::Columns(key) => match &graph.node(key.node).op {
                    Op::Transpose { permutation } if permutation.as_slice() == [0, 1, 3, 2] => {
                        graph.inputs_of(key.node)[0]
                    }
                    _ => {
                        let name = graph.fresh_value_name(&format!("{}.rows", graph.value_name(key)));
                        graph
                            .add_node(&name, Op::Transpose { permutation: vec![0, 1, 3, 2] }, &[key])
                            .map_err(|e| PassError::new(self.name(), e.to_string()))?
                    }
                },
            };
            let meaning = match found.mask {
                Some(mask) => match understand_mask(graph, mask, found.query, key_rows) {
                    Some(meaning) => meaning,
                    None => continue,
                },
                None => MaskMeaning { kind: MaskKind::None, keep: None, fill: 0.0 },
            };
            let (key, value) = match (repeated_heads(graph, key_rows), repeated_heads(graph, found.value)) {
                (Some(k), Some(v)) => (unrepeated(graph, k)?, unrepeated(graph, v)?),
                _ => (key_rows, found.value),
            };
            let mut inputs = vec![found.query, key, value];
            inputs.extend(meaning.keep);
            let op = Op::Attention {
                scale: found.scale as f32,
                mask: meaning.kind,
                mask_fill: meaning.fill,
                zero_fully_masked_rows: found.guarded,
                layout: SequenceLayout::Padded,
            };
            replace_with(graph, self.name(), found.output, op, &inputs)?;
            changed = true;
        }
        Ok(changed)
    }
}
