//! The text form of kernel IR, for snapshots and `--emit-dir`.

use std::fmt::Write;

use super::{BinaryOp, Expr, Kernel, Literal, Param, Special, Stmt, UnaryOp};

/// Prints `kernel` as indented pseudo-code:
///
/// ```text
/// kernel add_relu(in x: f32*, in y: f32*, out z: f32*, n: i64) threads 256 blocks (n + 255)/256 {
///   let i: i64 = block * threads + thread
///   if i < n { z[i] = max(x[i] + y[i], 0.0) }
/// }
/// ```
pub fn print_kernel(kernel: &Kernel) -> String {
    let mut text = String::new();
    let params: Vec<String> = kernel
        .params
        .iter()
        .map(|p| match p {
            Param::Buffer { name, dtype, writable } => {
                format!("{} {name}: {dtype}*", if *writable { "out" } else { "in" })
            }
            Param::Scalar { name, dtype } => format!("{name}: {dtype}"),
        })
        .collect();
    let _ = writeln!(
        text,
        "kernel {}({}) threads {} blocks {} {{",
        kernel.name,
        params.join(", "),
        kernel.block_threads,
        kernel.grid_blocks
    );
    for array in &kernel.shared {
        let _ = writeln!(text, "  shared {}: {}[{}] align {}", array.name, array.dtype, array.elements, array.align);
    }
    print_block(kernel, &kernel.body, 1, &mut text);
    text.push_str("}\n");
    text
}

fn memory_name(kernel: &Kernel, memory: crate::kernel::Memory) -> &str {
    match memory {
        crate::kernel::Memory::Buffer(index) => kernel.params[index].name(),
        crate::kernel::Memory::Shared(index) => &kernel.shared[index].name,
    }
}

fn print_block(kernel: &Kernel, body: &[Stmt], depth: usize, text: &mut String) {
    let indent = "  ".repeat(depth);
    for stmt in body {
        match stmt {
            Stmt::Let { var, dtype, value } => {
                let _ = writeln!(text, "{indent}let v{}: {dtype} = {}", var.0, expr(kernel, value));
            }
            Stmt::Assign { var, value } => {
                let _ = writeln!(text, "{indent}v{} = {}", var.0, expr(kernel, value));
            }
            Stmt::Store { buffer, index, value } => {
                let _ = writeln!(
                    text,
                    "{indent}{}[{}] = {}",
                    kernel.params[*buffer].name(),
                    expr(kernel, index),
                    expr(kernel, value)
                );
            }
            Stmt::SharedStore { array, index, value } => {
                let _ = writeln!(
                    text,
                    "{indent}{}[{}] = {}",
                    kernel.shared[*array].name,
                    expr(kernel, index),
                    expr(kernel, value)
                );
            }
            Stmt::VectorLoad { vars, dtype, memory, index } => {
                let names: Vec<String> = vars.iter().map(|v| format!("v{}", v.0)).collect();
                let _ = writeln!(
                    text,
                    "{indent}let {}: {dtype} = {}.v{}[{}]",
                    names.join(", "),
                    memory_name(kernel, *memory),
                    vars.len(),
                    expr(kernel, index)
                );
            }
            Stmt::VectorStore { memory, index, values } => {
                let values: Vec<String> = values.iter().map(|v| expr(kernel, v)).collect();
                let _ = writeln!(
                    text,
                    "{indent}{}.v{}[{}] = ({})",
                    memory_name(kernel, *memory),
                    values.len(),
                    expr(kernel, index),
                    values.join(", ")
                );
            }
            Stmt::AtomicAdd { buffer, index, value } => {
                let _ = writeln!(
                    text,
                    "{indent}atomic {}[{}] += {}",
                    kernel.params[*buffer].name(),
                    expr(kernel, index),
                    expr(kernel, value)
                );
            }
            Stmt::If { condition, then, otherwise } => {
                let _ = writeln!(text, "{indent}if {} {{", expr(kernel, condition));
                print_block(kernel, then, depth + 1, text);
                if !otherwise.is_empty() {
                    let _ = writeln!(text, "{indent}}} else {{");
                    print_block(kernel, otherwise, depth + 1, text);
                }
                let _ = writeln!(text, "{indent}}}");
            }
            Stmt::For { var, start, end, step, body } => {
                let _ = writeln!(
                    text,
                    "{indent}for v{} in {}..{} by {step} {{",
                    var.0,
                    expr(kernel, start),
                    expr(kernel, end)
                );
                print_block(kernel, body, depth + 1, text);
                let _ = writeln!(text, "{indent}}}");
            }
            Stmt::Barrier => {
                let _ = writeln!(text, "{indent}barrier");
            }
            Stmt::LoadMatrix { vars, array, index, transpose } => {
                let names: Vec<String> = vars.iter().map(|v| format!("v{}", v.0)).collect();
                let _ = writeln!(
                    text,
                    "{indent}let {}: u32 = {} {}[{}]",
                    names.join(", "),
                    if *transpose { "ldmatrix_trans" } else { "ldmatrix" },
                    kernel.shared[*array].name,
                    expr(kernel, index)
                );
            }
            Stmt::MatrixMultiplyAccumulate { kind, acc, a, b } => {
                let acc: Vec<String> = acc.iter().map(|v| format!("v{}", v.0)).collect();
                let a: Vec<String> = a.iter().map(|e| expr(kernel, e)).collect();
                let b: Vec<String> = b.iter().map(|e| expr(kernel, e)).collect();
                let _ = writeln!(
                    text,
                    "{indent}mma.{} ({}) += ({}) * ({})",
                    kind.name(),
                    acc.join(", "),
                    a.join(", "),
                    b.join(", ")
                );
            }
            Stmt::AsyncCopy { array, shared_index, buffer, index, elements, source_elements } => {
                let _ = writeln!(
                    text,
                    "{indent}cp_async({}[{}], {}[{}], {elements}, {})",
                    kernel.shared[*array].name,
                    expr(kernel, shared_index),
                    kernel.params[*buffer].name(),
                    expr(kernel, index),
                    expr(kernel, source_elements)
                );
            }
            Stmt::AsyncCommit => {
                let _ = writeln!(text, "{indent}cp_async_commit");
            }
            Stmt::AsyncWait { pending } => {
                let _ = writeln!(text, "{indent}cp_async_wait {pending}");
            }
        }
    }
}

fn expr(kernel: &Kernel, e: &Expr) -> String {
    match e {
        Expr::Literal(Literal::F32(v)) => format!("{v:?}"),
        Expr::Literal(Literal::I64(v)) => v.to_string(),
        Expr::Literal(Literal::I32(v)) => format!("{v}i32"),
        Expr::Literal(Literal::Bool(v)) => v.to_string(),
        Expr::Var(var) => format!("v{}", var.0),
        Expr::Param(index) => kernel.params[*index].name().to_string(),
        Expr::Special(special) => match special {
            Special::ThreadIndex => "thread",
            Special::BlockIndex => "block",
            Special::BlockThreads => "threads",
            Special::GridBlocks => "blocks",
            Special::Lane => "lane",
        }
        .to_string(),
        Expr::Unary(op, a) => format!("{}({})", unary_name(*op), expr(kernel, a)),
        Expr::Binary(op, a, b) => match binary_symbol(*op) {
            Some(symbol) => format!("({} {symbol} {})", expr(kernel, a), expr(kernel, b)),
            None => format!(
                "{}({}, {})",
                match op {
                    BinaryOp::Max => "max",
                    BinaryOp::Min => "min",
                    _ => "pow",
                },
                expr(kernel, a),
                expr(kernel, b)
            ),
        },
        Expr::Select(c, a, b) => format!("select({}, {}, {})", expr(kernel, c), expr(kernel, a), expr(kernel, b)),
        Expr::Cast(dtype, a) => format!("{dtype}({})", expr(kernel, a)),
        Expr::Convert { dtype, rounding, value } => {
            format!("convert({dtype}, {}, {})", rounding.name(), expr(kernel, value))
        }
        Expr::Bitcast(dtype, a) => format!("bitcast({dtype}, {})", expr(kernel, a)),
        Expr::Fma(a, b, c) => format!("fma({}, {}, {})", expr(kernel, a), expr(kernel, b), expr(kernel, c)),
        Expr::Load { buffer, index } => format!("{}[{}]", kernel.params[*buffer].name(), expr(kernel, index)),
        Expr::SharedLoad { array, index } => format!("{}[{}]", kernel.shared[*array].name, expr(kernel, index)),
        Expr::ShuffleXor { value, mask } => format!("shuffle_xor({}, {mask})", expr(kernel, value)),
    }
}

fn unary_name(op: UnaryOp) -> &'static str {
    match op {
        UnaryOp::Neg => "neg",
        UnaryOp::Abs => "abs",
        UnaryOp::Sqrt => "sqrt",
        UnaryOp::Rsqrt => "rsqrt",
        UnaryOp::Exp => "exp",
        UnaryOp::Log => "log",
        UnaryOp::Tanh => "tanh",
        UnaryOp::Erf => "erf",
        UnaryOp::Sin => "sin",
        UnaryOp::Cos => "cos",
        UnaryOp::Not => "not",
        UnaryOp::BitNot => "bitnot",
    }
}

fn binary_symbol(op: BinaryOp) -> Option<&'static str> {
    Some(match op {
        BinaryOp::Add => "+",
        BinaryOp::Sub => "-",
        BinaryOp::Mul => "*",
        BinaryOp::Div => "/",
        BinaryOp::Rem => "%",
        BinaryOp::Lt => "<",
        BinaryOp::Le => "<=",
        BinaryOp::Eq => "==",
        BinaryOp::Ne => "!=",
        BinaryOp::And => "&&",
        BinaryOp::Or => "||",
        BinaryOp::Shl => "<<",
        BinaryOp::Shr => ">>",
        BinaryOp::BitAnd => "&",
        BinaryOp::BitOr => "|",
        BinaryOp::BitXor => "^",
        BinaryOp::Max | BinaryOp::Min | BinaryOp::Pow => return None,
    })
}
