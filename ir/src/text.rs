//! The IR's text form: a printer and a parser with `parse(print(g)) == g`.
//!
//! ```text
//! graph {
//!   input %input_ids : i64[batch, seq]
//!   %w = constant : f32[1000, 64] blob<5a0c7f3e91d2b4a8>
//!   %eps = constant : f32[] dense<[1e-5]>
//!   %x = gather[axis=0](%w, %input_ids) : f32[batch, seq, 64] @"/embeddings/Gather"
//!   output "last_hidden_state" = %x
//! }
//! resources {
//!   5a0c7f3e91d2b4a8: "0a3f…"
//! }
//! ```
//!
//! Nodes print in [`Graph::canonical_order`]: inputs first, then a
//! deterministic topological order. A node's model name follows `@` when it
//! differs from its first output's name. Constants with at most
//! [`INLINE_ELEMENTS`] elements print inline; larger ones as a blob named by
//! the first 16 hex digits of their [`Constant::content_hash`], whose bytes
//! (hex) follow in the `resources` section. The summary form leaves the
//! resources out: it is for reading and snapshots, and parses only where no
//! blob is needed.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use kiln_runtime::{DType, Dim};

use crate::constant::Constant;
use crate::graph::{Graph, ValueRef};
use crate::group::{FusionGroup, GroupId, KernelKind};
use crate::op::{BinaryOp, GeluApproximation, MaskKind, Op, ReduceKind, SequenceLayout, UnaryOp};
use crate::tensor::{Tensor, TensorData, TensorType};

/// Constants with at most this many elements print inline.
pub const INLINE_ELEMENTS: usize = 16;
const BLOB_KEY_LENGTH: usize = 16;

/// The full text form, resources included: parses back to an equal graph.
pub fn print_graph(graph: &Graph) -> String {
    print(graph, true)
}

/// The text form without the resources section (blobs named by hash only).
pub fn print_graph_summary(graph: &Graph) -> String {
    print(graph, false)
}

fn print(graph: &Graph, with_resources: bool) -> String {
    let mut text = String::from("graph {\n");
    for (id, group) in graph.groups() {
        let _ = write!(text, "  group g{id} : {}", group.kind);
        if !group.notes.is_empty() {
            let notes: Vec<String> = group.notes.iter().map(|(k, v)| format!("{k}={}", quote(v))).collect();
            let _ = write!(text, " [{}]", notes.join(", "));
        }
        text.push('\n');
    }
    let mut resources: BTreeMap<String, &Constant> = BTreeMap::new();
    for index in graph.canonical_order() {
        let node = graph.node(index);
        let names: Vec<String> = node.outputs.iter().map(|v| value_token(&v.name)).collect();
        let types: Vec<String> = node.outputs.iter().map(|v| v.ty.to_string()).collect();
        match &node.op {
            Op::Input => {
                let _ = writeln!(text, "  input {} : {}", names[0], types[0]);
                continue;
            }
            Op::Constant(constant) => {
                let body = if constant.element_count() <= INLINE_ELEMENTS {
                    format!("dense<{}>", inline_values(&constant.to_tensor()))
                } else {
                    let key = constant.content_hash()[..BLOB_KEY_LENGTH].to_string();
                    resources.insert(key.clone(), constant);
                    format!("blob<{key}>")
                };
                let _ = write!(text, "  {} = constant : {} {body}", names[0], types[0]);
            }
            op => {
                let arguments: Vec<String> =
                    graph.inputs_of(index).iter().map(|v| value_token(graph.value_name(*v))).collect();
                let attributes = attributes_of(op);
                let attributes = if attributes.is_empty() {
                    String::new()
                } else {
                    let parts: Vec<String> = attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("[{}]", parts.join(", "))
                };
                let _ = write!(
                    text,
                    "  {} = {}{attributes}({}) : {}",
                    names.join(", "),
                    op.name(),
                    arguments.join(", "),
                    types.join(", ")
                );
            }
        }
        if let Some(group) = node.group {
            let _ = write!(text, " in g{group}");
        }
        if node.outputs.first().is_none_or(|v| v.name != node.name) {
            let _ = write!(text, " @{}", quote(&node.name));
        }
        text.push('\n');
    }
    for output in graph.outputs() {
        let _ = writeln!(text, "  output {} = {}", quote(&output.name), value_token(graph.value_name(output.value)));
    }
    text.push_str("}\n");
    if with_resources && !resources.is_empty() {
        text.push_str("resources {\n");
        for (key, constant) in resources {
            let _ = write!(text, "  {key}: \"");
            for byte in constant.bytes() {
                let _ = write!(text, "{byte:02x}");
            }
            text.push_str("\"\n");
        }
        text.push_str("}\n");
    }
    text
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

fn quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

fn value_token(name: &str) -> String {
    if is_plain_name(name) {
        format!("%{name}")
    } else {
        format!("%{}", quote(name))
    }
}

fn inline_values(tensor: &Tensor) -> String {
    let items: Vec<String> = match &tensor.data {
        TensorData::Float(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        TensorData::Double(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        TensorData::Int(v) => v.iter().map(|x| x.to_string()).collect(),
        TensorData::Bool(v) => v.iter().map(|x| x.to_string()).collect(),
    };
    format!("[{}]", items.join(", "))
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    format!("[{}]", items.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", "))
}

/// An op's attributes as `(name, text)` pairs, in a fixed order.
fn attributes_of(op: &Op) -> Vec<(&'static str, String)> {
    match op {
        Op::Cast { to } => vec![("to", to.to_string())],
        Op::Shape { start, end } => {
            let mut attributes = vec![("start", start.to_string())];
            if let Some(end) = end {
                attributes.push(("end", end.to_string()));
            }
            attributes
        }
        Op::Reshape { allow_zero } => vec![("allow_zero", allow_zero.to_string())],
        Op::Transpose { permutation } => vec![("permutation", list(permutation))],
        Op::Squeeze { axes } | Op::Unsqueeze { axes } => vec![("axes", list(axes))],
        Op::Flatten { axis } | Op::Concat { axis } | Op::Gather { axis } | Op::Softmax { axis } => {
            vec![("axis", axis.to_string())]
        }
        Op::GatherNd { batch_dims } => vec![("batch_dims", batch_dims.to_string())],
        Op::ConstantOfShape { dtype, value } => vec![("dtype", dtype.to_string()), ("value", format!("{value:?}"))],
        Op::Trilu { upper, diagonal } => vec![("upper", upper.to_string()), ("diagonal", diagonal.to_string())],
        Op::Reduce { axes, keep_dims, .. } => vec![("axes", list(axes)), ("keep_dims", keep_dims.to_string())],
        Op::LayerNorm { axis, epsilon } | Op::RmsNorm { axis, epsilon } => {
            vec![("axis", axis.to_string()), ("epsilon", format!("{epsilon:?}"))]
        }
        Op::Gelu { approximation } => vec![(
            "approximation",
            match approximation {
                GeluApproximation::None => "none",
                GeluApproximation::Tanh => "tanh",
            }
            .to_string(),
        )],
        Op::Input
        | Op::Constant(_)
        | Op::Unary(_)
        | Op::Binary(_)
        | Op::Where
        | Op::Slice
        | Op::Expand
        | Op::Range
        | Op::SwiGlu
        | Op::Rope { interleaved: false } => Vec::new(),
        Op::Rope { interleaved: true } => vec![("interleaved", "true".to_string())],
        Op::MatMul { transpose_a, transpose_b } => {
            let mut attributes = Vec::new();
            if *transpose_a {
                attributes.push(("transpose_a", "true".to_string()));
            }
            if *transpose_b {
                attributes.push(("transpose_b", "true".to_string()));
            }
            attributes
        }
        Op::Dims { values, scalar } => vec![("values", list(values)), ("scalar", scalar.to_string())],
        Op::Attention { scale, mask, mask_fill, zero_fully_masked_rows, layout } => vec![
            ("scale", format!("{scale:?}")),
            ("mask", mask.name().to_string()),
            ("mask_fill", format!("{mask_fill:?}")),
            ("zero_fully_masked_rows", zero_fully_masked_rows.to_string()),
            (
                "layout",
                match layout {
                    SequenceLayout::Padded => "padded",
                }
                .to_string(),
            ),
        ],
    }
}

/// Text that is not a valid graph, with the line at fault (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Parses the text form. Types written in the text must equal the inferred ones.
pub fn parse_graph(text: &str) -> Result<Graph, ParseError> {
    let lines: Vec<&str> = text.lines().collect();
    let resources = parse_resources(&lines)?;
    let mut graph = Graph::new();
    let mut values: HashMap<String, ValueRef> = HashMap::new();
    let mut line_number = 0;
    let mut in_graph = false;
    for (index, raw) in lines.iter().enumerate() {
        line_number = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        if !in_graph {
            if line == "graph {" {
                in_graph = true;
                continue;
            }
            return Err(ParseError { line: line_number, message: "expected `graph {`".into() });
        }
        if line == "}" {
            return Ok(graph);
        }
        let error = |message: String| ParseError { line: line_number, message };
        let mut cursor = Cursor { text: line, position: 0 };
        parse_statement(&mut cursor, &mut graph, &mut values, &resources).map_err(error)?;
    }
    Err(ParseError { line: line_number, message: "the graph is not closed with `}`".into() })
}

fn parse_resources(lines: &[&str]) -> Result<HashMap<String, Vec<u8>>, ParseError> {
    let mut resources = HashMap::new();
    let Some(start) = lines.iter().position(|l| l.trim() == "resources {") else {
        return Ok(resources);
    };
    for (offset, raw) in lines[start + 1..].iter().enumerate() {
        let line_number = start + offset + 2;
        let line = raw.trim();
        if line == "}" {
            return Ok(resources);
        }
        let error = |message: &str| ParseError { line: line_number, message: message.to_string() };
        let (key, hex) = line.split_once(": ").ok_or_else(|| error("expected `key: \"hex\"`"))?;
        let hex =
            hex.strip_prefix('"').and_then(|h| h.strip_suffix('"')).ok_or_else(|| error("expected quoted hex"))?;
        if hex.len() % 2 != 0 {
            return Err(error("odd number of hex digits"));
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| error("invalid hex digit"))?;
        resources.insert(key.to_string(), bytes);
    }
    Err(ParseError { line: lines.len(), message: "the resources section is not closed with `}`".into() })
}

struct Cursor<'a> {
    text: &'a str,
    position: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.position..]
    }

    fn skip_spaces(&mut self) {
        while self.rest().starts_with(' ') {
            self.position += 1;
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_spaces();
        if self.rest().starts_with(token) {
            self.position += token.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), String> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(format!("expected `{token}` at `{}`", self.rest()))
        }
    }

    fn word(&mut self) -> Result<&'a str, String> {
        self.skip_spaces();
        let length = self.rest().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').count();
        if length == 0 {
            return Err(format!("expected a word at `{}`", self.rest()));
        }
        let word = &self.rest()[..length];
        self.position += length;
        Ok(word)
    }

    fn quoted(&mut self) -> Result<String, String> {
        self.expect("\"")?;
        let mut text = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((offset, c)) = chars.next() {
            match c {
                '"' => {
                    self.position += offset + 1;
                    return Ok(text);
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => text.push('\n'),
                    Some((_, escaped)) => text.push(escaped),
                    None => break,
                },
                c => text.push(c),
            }
        }
        Err("unterminated string".into())
    }

    fn value_name(&mut self) -> Result<String, String> {
        self.expect("%")?;
        if self.rest().starts_with('"') {
            return self.quoted();
        }
        let length = self.rest().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.').count();
        if length == 0 {
            return Err(format!("expected a value name at `{}`", self.rest()));
        }
        let name = self.rest()[..length].to_string();
        self.position += length;
        Ok(name)
    }

    /// Text up to the matching close bracket, `open` already eaten.
    fn until_close(&mut self, open: char, close: char) -> Result<&'a str, String> {
        let mut depth = 1;
        for (offset, c) in self.rest().char_indices() {
            if c == open {
                depth += 1;
            } else if c == close {
                depth -= 1;
                if depth == 0 {
                    let inside = &self.rest()[..offset];
                    self.position += offset + 1;
                    return Ok(inside);
                }
            }
        }
        Err(format!("missing `{close}`"))
    }

    fn tensor_type(&mut self) -> Result<TensorType, String> {
        let dtype: DType = self.word()?.parse().map_err(|e: kiln_runtime::dtype::UnknownDType| e.to_string())?;
        self.expect("[")?;
        let inside = self.until_close('[', ']')?;
        let shape = split_top_level(inside)
            .into_iter()
            .map(|d| Dim::parse(d.trim()).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TensorType::new(dtype, shape))
    }
}

/// Splits on commas outside parentheses and brackets; empty text gives nothing.
fn split_top_level(text: &str) -> Vec<&str> {
    if text.trim().is_empty() {
        return Vec::new();
    }
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (offset, c) in text.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..offset]);
                start = offset + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_statement(
    cursor: &mut Cursor,
    graph: &mut Graph,
    values: &mut HashMap<String, ValueRef>,
    resources: &HashMap<String, Vec<u8>>,
) -> Result<(), String> {
    if cursor.eat("input ") {
        let name = cursor.value_name()?;
        cursor.expect(":")?;
        let ty = cursor.tensor_type()?;
        cursor.skip_spaces();
        if !cursor.rest().is_empty() {
            return Err(format!("unexpected `{}`", cursor.rest()));
        }
        let value = graph.add_input(&name, ty);
        return define(values, name, value);
    }
    if cursor.eat("group ") {
        cursor.expect("g")?;
        let id: GroupId = cursor.word()?.parse().map_err(|_| "a group id is a number".to_string())?;
        cursor.expect(":")?;
        let kind_name = cursor.word()?;
        let kind = KernelKind::ALL
            .into_iter()
            .find(|k| k.name() == kind_name)
            .ok_or(format!("unknown kernel kind `{kind_name}`"))?;
        let mut group = FusionGroup::new(kind);
        if cursor.eat("[") {
            loop {
                let key = cursor.word()?.to_string();
                cursor.expect("=")?;
                group.notes.insert(key, cursor.quoted()?);
                if cursor.eat("]") {
                    break;
                }
                cursor.expect(",")?;
            }
        }
        if graph.groups_mut().insert(id, group).is_some() {
            return Err(format!("group g{id} is declared twice"));
        }
        return Ok(());
    }
    if cursor.eat("output ") {
        let name = cursor.quoted()?;
        cursor.expect("=")?;
        let value = lookup(values, &cursor.value_name()?)?;
        cursor.skip_spaces();
        if !cursor.rest().is_empty() {
            return Err(format!("unexpected `{}`", cursor.rest()));
        }
        graph.add_output(&name, value);
        return Ok(());
    }
    let mut names = vec![cursor.value_name()?];
    while cursor.eat(",") {
        names.push(cursor.value_name()?);
    }
    cursor.expect("=")?;
    let op_name = cursor.word()?;
    if op_name == "constant" {
        cursor.expect(":")?;
        let ty = cursor.tensor_type()?;
        let shape = ty.constant_shape().ok_or("a constant has a constant shape")?;
        let constant = if cursor.eat("dense<") {
            cursor.expect("[")?;
            let inside = cursor.until_close('[', ']')?;
            cursor.expect(">")?;
            Constant::from_tensor(&parse_inline(ty.dtype, shape, inside)?)
        } else if cursor.eat("blob<") {
            let key = cursor.word()?;
            cursor.expect(">")?;
            let bytes = resources.get(key).ok_or_else(|| format!("blob<{key}> has no data in a resources section"))?;
            let constant = Constant::from_bytes(ty.dtype, shape, bytes.clone()).map_err(|e| e.to_string())?;
            if !constant.content_hash().starts_with(key) {
                return Err(format!("the data of blob<{key}> does not match its hash"));
            }
            constant
        } else {
            return Err("expected `dense<` or `blob<`".into());
        };
        let group = group_of(cursor, graph)?;
        let node_name = node_name(cursor, &names[0])?;
        let value = graph.add_constant(&names[0], constant);
        graph.node_mut(value.node).group = group;
        graph.node_mut(value.node).name = node_name;
        return define(values, names.swap_remove(0), value);
    }
    let attributes: HashMap<String, String> = if cursor.eat("[") {
        let inside = cursor.until_close('[', ']')?;
        split_top_level(inside)
            .into_iter()
            .map(|pair| {
                let (key, value) =
                    pair.split_once('=').ok_or_else(|| format!("attribute `{pair}` is not key=value"))?;
                Ok((key.trim().to_string(), value.trim().to_string()))
            })
            .collect::<Result<_, String>>()?
    } else {
        HashMap::new()
    };
    let op = op_from_text(op_name, &attributes)?;
    cursor.expect("(")?;
    let mut inputs = Vec::new();
    if !cursor.eat(")") {
        loop {
            inputs.push(lookup(values, &cursor.value_name()?)?);
            if cursor.eat(")") {
                break;
            }
            cursor.expect(",")?;
        }
    }
    cursor.expect(":")?;
    let mut types = vec![cursor.tensor_type()?];
    while cursor.eat(",") {
        types.push(cursor.tensor_type()?);
    }
    let group = group_of(cursor, graph)?;
    let node_name = node_name(cursor, &names[0])?;
    let outputs = graph.add_node_with_output_names(&node_name, op, &inputs, &names).map_err(|e| e.to_string())?;
    if let Some(first) = outputs.first() {
        graph.node_mut(first.node).group = group;
    }
    if outputs.len() != names.len() {
        return Err(format!("{} names for {} outputs", names.len(), outputs.len()));
    }
    for ((name, value), ty) in names.into_iter().zip(outputs).zip(types) {
        if *graph.value_type(value) != ty {
            return Err(format!("`{name}` is written {ty} but infers as {}", graph.value_type(value)));
        }
        define(values, name, value)?;
    }
    Ok(())
}

/// The optional ` in gN` of a node line.
fn group_of(cursor: &mut Cursor, graph: &Graph) -> Result<Option<GroupId>, String> {
    if !cursor.eat("in g") {
        return Ok(None);
    }
    let id: GroupId = cursor.word()?.parse().map_err(|_| "a group id is a number".to_string())?;
    if !graph.groups().contains_key(&id) {
        return Err(format!("group g{id} is not declared"));
    }
    Ok(Some(id))
}

fn node_name(cursor: &mut Cursor, first_output: &str) -> Result<String, String> {
    let name = if cursor.eat("@") { cursor.quoted()? } else { first_output.to_string() };
    cursor.skip_spaces();
    if !cursor.rest().is_empty() {
        return Err(format!("unexpected `{}`", cursor.rest()));
    }
    Ok(name)
}

fn define(values: &mut HashMap<String, ValueRef>, name: String, value: ValueRef) -> Result<(), String> {
    if values.insert(name.clone(), value).is_some() {
        return Err(format!("`%{name}` is defined twice"));
    }
    Ok(())
}

fn lookup(values: &HashMap<String, ValueRef>, name: &str) -> Result<ValueRef, String> {
    values.get(name).copied().ok_or_else(|| format!("`%{name}` is used before it is defined"))
}

fn parse_inline(dtype: DType, shape: Vec<usize>, inside: &str) -> Result<Tensor, String> {
    let items: Vec<&str> = split_top_level(inside).into_iter().map(str::trim).collect();
    if items.len() != shape.iter().product::<usize>() {
        return Err(format!("{} values for shape {shape:?}", items.len()));
    }
    let bad = |item: &str| format!("`{item}` is not a {dtype} value");
    Ok(match dtype {
        DType::Bool => Tensor::from_bool(
            shape,
            items.iter().map(|i| i.parse::<bool>().map_err(|_| bad(i))).collect::<Result<_, _>>()?,
        ),
        d if d.is_float() => Tensor::from_f32(
            d,
            shape,
            items.iter().map(|i| parse_float(i).ok_or_else(|| bad(i))).collect::<Result<_, _>>()?,
        ),
        d => Tensor::from_i64(
            d,
            shape,
            items.iter().map(|i| i.parse::<i64>().map_err(|_| bad(i))).collect::<Result<_, _>>()?,
        ),
    })
}

fn parse_float(text: &str) -> Option<f32> {
    match text {
        "NaN" => Some(f32::NAN),
        "inf" => Some(f32::INFINITY),
        "-inf" => Some(f32::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

fn op_from_text(name: &str, attributes: &HashMap<String, String>) -> Result<Op, String> {
    let text = |key: &str| attributes.get(key).map(String::as_str).ok_or_else(|| format!("{name} needs `{key}`"));
    let integer = |key: &str| text(key)?.parse::<i64>().map_err(|_| format!("`{key}` of {name} is not an integer"));
    let boolean = |key: &str| text(key)?.parse::<bool>().map_err(|_| format!("`{key}` of {name} is not a bool"));
    let float = |key: &str| parse_float(text(key)?).ok_or_else(|| format!("`{key}` of {name} is not a number"));
    let integers = |key: &str| -> Result<Vec<i64>, String> {
        let inside =
            text(key)?.strip_prefix('[').and_then(|t| t.strip_suffix(']')).ok_or(format!("`{key}` is not a list"))?;
        split_top_level(inside)
            .into_iter()
            .map(|i| i.trim().parse::<i64>().map_err(|_| format!("`{key}` holds `{i}`")))
            .collect()
    };
    let dtype = |key: &str| text(key)?.parse::<DType>().map_err(|e| e.to_string());
    if let Some(unary) = UnaryOp::ALL.into_iter().find(|u| u.name() == name) {
        return Ok(Op::Unary(unary));
    }
    if let Some(binary) = BinaryOp::ALL.into_iter().find(|b| b.name() == name) {
        return Ok(Op::Binary(binary));
    }
    if let Some(kind) = ReduceKind::ALL.into_iter().find(|k| k.name() == name) {
        return Ok(Op::Reduce { kind, axes: integers("axes")?, keep_dims: boolean("keep_dims")? });
    }
    Ok(match name {
        "where" => Op::Where,
        "cast" => Op::Cast { to: dtype("to")? },
        "shape" => Op::Shape {
            start: integer("start")?,
            end: attributes.contains_key("end").then(|| integer("end")).transpose()?,
        },
        "reshape" => Op::Reshape { allow_zero: boolean("allow_zero")? },
        "transpose" => Op::Transpose {
            permutation: integers("permutation")?
                .into_iter()
                .map(|p| usize::try_from(p).map_err(|_| format!("negative permutation entry {p}")))
                .collect::<Result<_, _>>()?,
        },
        "squeeze" => Op::Squeeze { axes: integers("axes")? },
        "unsqueeze" => Op::Unsqueeze { axes: integers("axes")? },
        "flatten" => Op::Flatten { axis: integer("axis")? },
        "concat" => Op::Concat { axis: integer("axis")? },
        "slice" => Op::Slice,
        "gather" => Op::Gather { axis: integer("axis")? },
        "gather_nd" => Op::GatherNd { batch_dims: integer("batch_dims")? },
        "expand" => Op::Expand,
        "range" => Op::Range,
        "constant_of_shape" => Op::ConstantOfShape {
            dtype: dtype("dtype")?,
            value: text("value")?.parse::<f64>().map_err(|_| "`value` is not a number".to_string())?,
        },
        "trilu" => Op::Trilu { upper: boolean("upper")?, diagonal: integer("diagonal")? },
        "matmul" => Op::MatMul {
            transpose_a: attributes.contains_key("transpose_a") && boolean("transpose_a")?,
            transpose_b: attributes.contains_key("transpose_b") && boolean("transpose_b")?,
        },
        "dims" => {
            let inside =
                text("values")?.strip_prefix('[').and_then(|t| t.strip_suffix(']')).ok_or("`values` is not a list")?;
            let values = split_top_level(inside)
                .into_iter()
                .map(|d| Dim::parse(d.trim()).map_err(|e| e.to_string()))
                .collect::<Result<_, _>>()?;
            Op::Dims { values, scalar: boolean("scalar")? }
        }
        "swiglu" => Op::SwiGlu,
        "rope" => Op::Rope { interleaved: attributes.contains_key("interleaved") && boolean("interleaved")? },
        "attention" => Op::Attention {
            scale: float("scale")?,
            mask: MaskKind::ALL
                .into_iter()
                .find(|m| m.name() == text("mask").unwrap_or(""))
                .ok_or_else(|| format!("unknown attention mask `{}`", text("mask").unwrap_or("")))?,
            mask_fill: float("mask_fill")?,
            zero_fully_masked_rows: boolean("zero_fully_masked_rows")?,
            layout: match text("layout")? {
                "padded" => SequenceLayout::Padded,
                other => return Err(format!("unknown sequence layout `{other}`")),
            },
        },
        "softmax" => Op::Softmax { axis: integer("axis")? },
        "layer_norm" => Op::LayerNorm { axis: integer("axis")?, epsilon: float("epsilon")? },
        "rms_norm" => Op::RmsNorm { axis: integer("axis")?, epsilon: float("epsilon")? },
        "gelu" => Op::Gelu {
            approximation: match text("approximation")? {
                "none" => GeluApproximation::None,
                "tanh" => GeluApproximation::Tanh,
                other => return Err(format!("unknown gelu approximation `{other}`")),
            },
        },
        other => return Err(format!("unknown op `{other}`")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::BinaryOp;

    fn small_graph() -> Graph {
        let mut graph = Graph::new();
        let x = graph.add_input("x", TensorType::new(DType::F32, vec![Dim::symbol("batch"), Dim::constant(20)]));
        let weights: Vec<f32> = (0..400).map(|i| i as f32 * 0.25).collect();
        let w = graph.add_constant("w", Constant::from_tensor(&Tensor::from_f32(DType::F32, vec![20, 20], weights)));
        let one = graph.add_constant("one", Constant::scalar_f32(DType::F32, 1.0));
        let y = graph.add_node("/layer/MatMul", Op::MATMUL, &[x, w]).unwrap();
        let z = graph.add_node("z", Op::Binary(BinaryOp::Add), &[y, one]).unwrap();
        graph.add_output("out put", z);
        graph
    }

    #[test]
    fn round_trips_with_blobs_and_quoted_names() {
        let graph = small_graph();
        let text = print_graph(&graph);
        assert!(text.contains("blob<"), "{text}");
        assert!(text.contains("%\"/layer/MatMul\""), "{text}");
        let parsed = parse_graph(&text).unwrap();
        assert_eq!(parsed, graph);
        assert_eq!(print_graph(&parsed), text);
    }

    #[test]
    fn summary_names_blobs_without_data() {
        let text = print_graph_summary(&small_graph());
        assert!(!text.contains("resources"));
        let error = parse_graph(&text).unwrap_err();
        assert!(error.message.contains("no data"), "{error}");
    }

    #[test]
    fn rejects_a_written_type_that_disagrees_with_inference() {
        let text = "graph {\n  input %x : f32[4]\n  %y = neg(%x) : f32[5]\n}\n";
        let error = parse_graph(text).unwrap_err();
        assert_eq!(error.line, 3);
    }

    #[test]
    fn rejects_use_before_definition() {
        let text = "graph {\n  %y = neg(%x) : f32[5]\n}\n";
        assert!(parse_graph(text).unwrap_err().message.contains("before it is defined"));
    }
}
