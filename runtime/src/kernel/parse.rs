//! The parser of kernel IR's text form: `parse_kernel(print_kernel(k)) == k`.
//!
//! Reads exactly what [`super::print_kernel`] writes, so kernels can be
//! written by hand for tests (`*.kir` files) and read back from
//! `kiln compile --emit-dir`. `//` comments run to the end of a line. Names resolve as the printer writes them: an
//! identifier is a buffer parameter, a scalar parameter or a shared array
//! by name, else a variable `vN`, else a special (`thread`, `block`,
//! `threads`, `blocks`, `lane`).

use std::str::FromStr;

use super::{
    BinaryOp, Expr, Kernel, Literal, Memory, MmaKind, Param, Rounding, SharedArray, Special, Stmt, UnaryOp, Var,
};
use crate::{DType, Dim};

/// Why a text is not a kernel, with the line (from 1) at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct KernelParseError {
    pub line: usize,
    pub message: String,
}

/// Parses one kernel in the text form [`super::print_kernel`] writes.
pub fn parse_kernel(text: &str) -> Result<Kernel, KernelParseError> {
    let tokens = tokenize(text)?;
    let mut parser = Parser { tokens, at: 0, kernel: None };
    let kernel = parser.kernel(text)?;
    if let Some(token) = parser.tokens.get(parser.at) {
        return Err(KernelParseError {
            line: token.line,
            message: format!("unexpected `{}` after the kernel", token.text),
        });
    }
    Ok(kernel)
}

#[derive(Clone, Debug, PartialEq)]
struct Token {
    text: String,
    line: usize,
}

fn tokenize(text: &str) -> Result<Vec<Token>, KernelParseError> {
    let mut tokens = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line_number = number + 1;
        // `//` starts a comment to the end of the line (filetests keep their directives there).
        let line = line.split_once("//").map_or(line, |(code, _)| code);
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let start = i;
            if c.is_whitespace() {
                i += 1;
                continue;
            }
            let starts_number = c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit() || *n == 'i'))
                    && tokens.last().is_none_or(|t: &Token| !ends_operand(&t.text));
            if starts_number {
                i += 1;
                while i < chars.len() {
                    let d = chars[i];
                    let exponent_sign = (d == '-' || d == '+') && matches!(chars[i - 1], 'e' | 'E');
                    let decimal_point = d == '.' && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
                    if d.is_ascii_alphanumeric() || decimal_point || exponent_sign {
                        i += 1;
                    } else {
                        break;
                    }
                }
            } else if c.is_alphabetic() || c == '_' {
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            } else {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                i += if ["==", "!=", "<=", "&&", "||", "..", "+=", "<<", ">>"].contains(&two.as_str()) { 2 } else { 1 };
                if !"()[]{},:=<+-*/%.&|^".contains(c) && i - start == 1 {
                    return Err(KernelParseError { line: line_number, message: format!("unexpected character `{c}`") });
                }
            }
            tokens.push(Token { text: chars[start..i].iter().collect(), line: line_number });
        }
    }
    Ok(tokens)
}

/// Whether a token can end an operand (so a following `-` is subtraction).
fn ends_operand(token: &str) -> bool {
    token == ")" || token == "]" || token.chars().next().is_some_and(|c| c.is_alphanumeric() || c == '_')
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    /// The kernel's header once read: names resolve against it.
    kernel: Option<Kernel>,
}

impl Parser {
    fn line(&self) -> usize {
        self.tokens.get(self.at).or(self.tokens.last()).map_or(1, |t| t.line)
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, KernelParseError> {
        Err(KernelParseError { line: self.line(), message: message.into() })
    }

    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.at).map(|t| t.text.as_str())
    }

    fn peek_at(&self, offset: usize) -> Option<&str> {
        self.tokens.get(self.at + offset).map(|t| t.text.as_str())
    }

    fn next(&mut self) -> Result<String, KernelParseError> {
        match self.tokens.get(self.at) {
            Some(token) => {
                self.at += 1;
                Ok(token.text.clone())
            }
            None => self.error("unexpected end of the kernel"),
        }
    }

    fn expect(&mut self, text: &str) -> Result<(), KernelParseError> {
        match self.peek() {
            Some(found) if found == text => {
                self.at += 1;
                Ok(())
            }
            Some(found) => {
                let found = found.to_string();
                self.error(format!("expected `{text}`, found `{found}`"))
            }
            None => self.error(format!("expected `{text}` at the end")),
        }
    }

    fn identifier(&mut self) -> Result<String, KernelParseError> {
        let token = self.next()?;
        if token.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_') {
            Ok(token)
        } else {
            self.at -= 1;
            self.error(format!("expected a name, found `{token}`"))
        }
    }

    fn dtype(&mut self) -> Result<DType, KernelParseError> {
        let name = self.identifier()?;
        DType::from_str(&name).or_else(|e| {
            self.at -= 1;
            self.error(e.to_string())
        })
    }

    fn integer<T: FromStr>(&mut self) -> Result<T, KernelParseError> {
        let token = self.next()?;
        token.parse().or_else(|_| {
            self.at -= 1;
            self.error(format!("expected an integer, found `{token}`"))
        })
    }

    fn kernel(&mut self, text: &str) -> Result<Kernel, KernelParseError> {
        self.expect("kernel")?;
        let name = self.identifier()?;
        self.expect("(")?;
        let mut params = Vec::new();
        while self.peek() != Some(")") {
            if !params.is_empty() {
                self.expect(",")?;
            }
            params.push(self.param()?);
        }
        self.expect(")")?;
        self.expect("threads")?;
        let block_threads = self.integer()?;
        self.expect("blocks")?;
        // The grid is a dim expression: the rest of the header line before its `{`.
        let header_line = self.line();
        let line_text = text.lines().nth(header_line - 1).unwrap_or("");
        let line_text = line_text.split_once("//").map_or(line_text, |(code, _)| code);
        let after = line_text.rsplit_once(" blocks ").map(|(_, rest)| rest).unwrap_or("");
        let grid_text = after.trim_end().strip_suffix('{').unwrap_or(after).trim();
        let grid_blocks = Dim::parse(grid_text).or_else(|e| self.error(format!("grid `{grid_text}`: {e}")))?;
        while self.peek() != Some("{") || self.tokens[self.at].line != header_line {
            if self.tokens.get(self.at).is_none_or(|t| t.line != header_line) {
                return self.error("expected `{` ending the kernel header");
            }
            self.at += 1;
        }
        self.expect("{")?;
        let mut shared = Vec::new();
        while self.peek() == Some("shared") {
            self.at += 1;
            let name = self.identifier()?;
            self.expect(":")?;
            let dtype = self.dtype()?;
            self.expect("[")?;
            let elements = self.integer()?;
            self.expect("]")?;
            self.expect("align")?;
            let align = self.integer()?;
            shared.push(SharedArray { name, dtype, elements, align });
        }
        self.kernel = Some(Kernel { name: name.clone(), params, block_threads, grid_blocks, shared, body: Vec::new() });
        let body = self.block()?;
        let mut kernel = self.kernel.take().expect("set above");
        kernel.body = body;
        Ok(kernel)
    }

    fn param(&mut self) -> Result<Param, KernelParseError> {
        let first = self.identifier()?;
        if first == "in" || first == "out" {
            let name = self.identifier()?;
            self.expect(":")?;
            let dtype = self.dtype()?;
            self.expect("*")?;
            return Ok(Param::Buffer { name, dtype, writable: first == "out" });
        }
        self.expect(":")?;
        Ok(Param::Scalar { name: first, dtype: self.dtype()? })
    }

    /// Statements up to the `}` closing the block (consumed).
    fn block(&mut self) -> Result<Vec<Stmt>, KernelParseError> {
        let mut body = Vec::new();
        loop {
            match self.peek() {
                Some("}") => {
                    self.at += 1;
                    return Ok(body);
                }
                Some(_) => body.push(self.statement()?),
                None => return self.error("expected `}`"),
            }
        }
    }

    fn statement(&mut self) -> Result<Stmt, KernelParseError> {
        let first = self.next()?;
        match first.as_str() {
            "barrier" => Ok(Stmt::Barrier),
            "cp_async_commit" => Ok(Stmt::AsyncCommit),
            "cp_async_wait" => Ok(Stmt::AsyncWait { pending: self.integer()? }),
            "cp_async" if self.peek() == Some("(") => {
                self.expect("(")?;
                let name = self.identifier()?;
                let array = self.shared_named(&name)?;
                let shared_index = self.bracketed()?;
                self.expect(",")?;
                let name = self.identifier()?;
                let buffer = self.buffer_named(&name)?;
                let index = self.bracketed()?;
                self.expect(",")?;
                let elements = self.integer()?;
                self.expect(",")?;
                let source_elements = self.expr()?;
                self.expect(")")?;
                Ok(Stmt::AsyncCopy { array, shared_index, buffer, index, elements, source_elements })
            }
            "mma" if self.peek() == Some(".") => {
                let mut name = String::new();
                while self.peek() == Some(".") {
                    self.at += 1;
                    if !name.is_empty() {
                        name.push('.');
                    }
                    name.push_str(&self.identifier()?);
                }
                let Some(kind) = MmaKind::ALL.into_iter().find(|k| k.name() == name) else {
                    let known: Vec<&str> = MmaKind::ALL.iter().map(|k| k.name()).collect();
                    return self.error(format!("unknown mma `{name}` (kiln has {})", known.join(", ")));
                };
                self.expect("(")?;
                let mut acc = vec![self.var()?];
                while self.peek() == Some(",") {
                    self.at += 1;
                    acc.push(self.var()?);
                }
                self.expect(")")?;
                self.expect("+=")?;
                let a = self.expr_list()?;
                self.expect("*")?;
                let b = self.expr_list()?;
                Ok(Stmt::MatrixMultiplyAccumulate { kind, acc, a, b })
            }
            "let" => {
                let mut vars = vec![self.var()?];
                while self.peek() == Some(",") {
                    self.at += 1;
                    vars.push(self.var()?);
                }
                self.expect(":")?;
                let dtype = self.dtype()?;
                self.expect("=")?;
                if let Some(transpose) = self.load_matrix_keyword() {
                    self.at += 1;
                    let name = self.identifier()?;
                    let array = self.shared_named(&name)?;
                    let index = self.bracketed()?;
                    if dtype != DType::U32 {
                        return self.error(format!("ldmatrix declares u32 variables, not {dtype}"));
                    }
                    return Ok(Stmt::LoadMatrix { vars, array, index, transpose });
                }
                if vars.len() == 1 && !self.is_vector_access() {
                    return Ok(Stmt::Let { var: vars[0], dtype, value: self.expr()? });
                }
                let (memory, width) = self.vector_memory()?;
                if width != vars.len() {
                    return self.error(format!("{} variables for a vector of {width}", vars.len()));
                }
                let index = self.bracketed()?;
                Ok(Stmt::VectorLoad { vars, dtype, memory, index })
            }
            "if" => {
                let condition = self.expr()?;
                self.expect("{")?;
                let then = self.block()?;
                let mut otherwise = Vec::new();
                if self.peek() == Some("else") {
                    self.at += 1;
                    self.expect("{")?;
                    otherwise = self.block()?;
                }
                Ok(Stmt::If { condition, then, otherwise })
            }
            "for" => {
                let var = self.var()?;
                self.expect("in")?;
                let start = self.expr()?;
                self.expect("..")?;
                let end = self.expr()?;
                self.expect("by")?;
                let step = self.integer()?;
                self.expect("{")?;
                let body = self.block()?;
                Ok(Stmt::For { var, start, end, step, body })
            }
            "atomic" => {
                let name = self.identifier()?;
                let buffer = self.buffer_named(&name)?;
                let index = self.bracketed()?;
                self.expect("+=")?;
                Ok(Stmt::AtomicAdd { buffer, index, value: self.expr()? })
            }
            _ => {
                self.at -= 1;
                if self.is_vector_access() {
                    let (memory, width) = self.vector_memory()?;
                    let index = self.bracketed()?;
                    self.expect("=")?;
                    let values = self.expr_list()?;
                    if values.len() != width {
                        return self.error(format!("{} values for a vector of {width}", values.len()));
                    }
                    return Ok(Stmt::VectorStore { memory, index, values });
                }
                let name = self.identifier()?;
                if self.peek() == Some("[") {
                    let index = self.bracketed()?;
                    self.expect("=")?;
                    let value = self.expr()?;
                    return match self.memory_named(&name)? {
                        Memory::Buffer(buffer) => Ok(Stmt::Store { buffer, index, value }),
                        Memory::Shared(array) => Ok(Stmt::SharedStore { array, index, value }),
                    };
                }
                let var = self.var_named(&name)?;
                self.expect("=")?;
                Ok(Stmt::Assign { var, value: self.expr()? })
            }
        }
    }

    /// Whether the next tokens are `name . vN [`: a vector access.
    fn is_vector_access(&self) -> bool {
        self.peek_at(1) == Some(".") && self.peek_at(3) == Some("[")
    }

    fn vector_memory(&mut self) -> Result<(Memory, usize), KernelParseError> {
        let name = self.identifier()?;
        let memory = self.memory_named(&name)?;
        self.expect(".")?;
        let width = self.identifier()?;
        match width.strip_prefix('v').and_then(|n| n.parse().ok()) {
            Some(width) => Ok((memory, width)),
            None => self.error(format!("expected a vector width `vN`, found `{width}`")),
        }
    }

    fn bracketed(&mut self) -> Result<Expr, KernelParseError> {
        self.expect("[")?;
        let index = self.expr()?;
        self.expect("]")?;
        Ok(index)
    }

    fn var(&mut self) -> Result<Var, KernelParseError> {
        let name = self.identifier()?;
        self.var_named(&name)
    }

    fn var_named(&self, name: &str) -> Result<Var, KernelParseError> {
        match name.strip_prefix('v').and_then(|n| n.parse().ok()) {
            Some(n) => Ok(Var(n)),
            None => self.error(format!("`{name}` is not a variable (`vN`)")),
        }
    }

    fn header(&self) -> &Kernel {
        self.kernel.as_ref().expect("the header is read before the body")
    }

    fn param_index(&self, name: &str) -> Option<usize> {
        self.header().params.iter().position(|p| p.name() == name)
    }

    fn memory_named(&self, name: &str) -> Result<Memory, KernelParseError> {
        if let Some(index) = self.param_index(name) {
            return match self.header().params[index] {
                Param::Buffer { .. } => Ok(Memory::Buffer(index)),
                Param::Scalar { .. } => self.error(format!("`{name}` is a scalar parameter, not memory")),
            };
        }
        match self.header().shared.iter().position(|a| a.name == name) {
            Some(index) => Ok(Memory::Shared(index)),
            None => self.error(format!("no buffer parameter or shared array `{name}`")),
        }
    }

    fn buffer_named(&self, name: &str) -> Result<usize, KernelParseError> {
        match self.memory_named(name)? {
            Memory::Buffer(index) => Ok(index),
            Memory::Shared(_) => self.error(format!("`{name}` is shared memory, not a buffer parameter")),
        }
    }

    fn shared_named(&self, name: &str) -> Result<usize, KernelParseError> {
        match self.memory_named(name)? {
            Memory::Shared(index) => Ok(index),
            Memory::Buffer(_) => self.error(format!("`{name}` is a buffer parameter, not a shared array")),
        }
    }

    /// `Some(transpose)` when the next tokens are `ldmatrix[_trans] NAME [`.
    fn load_matrix_keyword(&self) -> Option<bool> {
        let transpose = match self.peek()? {
            "ldmatrix" => false,
            "ldmatrix_trans" => true,
            _ => return None,
        };
        (self.peek_at(2) == Some("[")).then_some(transpose)
    }

    /// `( expr, expr, … )`.
    fn expr_list(&mut self) -> Result<Vec<Expr>, KernelParseError> {
        self.expect("(")?;
        let mut values = vec![self.expr()?];
        while self.peek() == Some(",") {
            self.at += 1;
            values.push(self.expr()?);
        }
        self.expect(")")?;
        Ok(values)
    }

    fn expr(&mut self) -> Result<Expr, KernelParseError> {
        let token = self.next()?;
        if token == "(" {
            let a = self.expr()?;
            let symbol = self.next()?;
            let op = match symbol.as_str() {
                "+" => BinaryOp::Add,
                "-" => BinaryOp::Sub,
                "*" => BinaryOp::Mul,
                "/" => BinaryOp::Div,
                "%" => BinaryOp::Rem,
                "<" => BinaryOp::Lt,
                "<=" => BinaryOp::Le,
                "==" => BinaryOp::Eq,
                "!=" => BinaryOp::Ne,
                "&&" => BinaryOp::And,
                "||" => BinaryOp::Or,
                "<<" => BinaryOp::Shl,
                ">>" => BinaryOp::Shr,
                "&" => BinaryOp::BitAnd,
                "|" => BinaryOp::BitOr,
                "^" => BinaryOp::BitXor,
                _ => {
                    self.at -= 1;
                    return self.error(format!("expected a binary operator, found `{symbol}`"));
                }
            };
            let b = self.expr()?;
            self.expect(")")?;
            return Ok(Expr::Binary(op, Box::new(a), Box::new(b)));
        }
        if let Some(literal) = literal(&token) {
            return Ok(Expr::Literal(literal));
        }
        if !token.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_') {
            self.at -= 1;
            return self.error(format!("expected an expression, found `{token}`"));
        }
        if self.peek() == Some("(") {
            return self.call(&token);
        }
        if self.peek() == Some("[") {
            let index = Box::new(self.bracketed()?);
            return Ok(match self.memory_named(&token)? {
                Memory::Buffer(buffer) => Expr::Load { buffer, index },
                Memory::Shared(array) => Expr::SharedLoad { array, index },
            });
        }
        if let Some(index) = self.param_index(&token) {
            return match self.header().params[index] {
                Param::Scalar { .. } => Ok(Expr::Param(index)),
                Param::Buffer { .. } => self.error(format!("`{token}` is a buffer; read it as `{token}[index]`")),
            };
        }
        let special = match token.as_str() {
            "thread" => Some(Special::ThreadIndex),
            "block" => Some(Special::BlockIndex),
            "threads" => Some(Special::BlockThreads),
            "blocks" => Some(Special::GridBlocks),
            "lane" => Some(Special::Lane),
            _ => None,
        };
        match special {
            Some(special) => Ok(Expr::Special(special)),
            None => Ok(Expr::Var(self.var_named(&token)?)),
        }
    }

    fn call(&mut self, function: &str) -> Result<Expr, KernelParseError> {
        self.expect("(")?;
        if function == "convert" || function == "bitcast" {
            let dtype = self.dtype()?;
            self.expect(",")?;
            let rounding = if function == "convert" {
                let name = self.next()?;
                let Some(rounding) = Rounding::ALL.into_iter().find(|r| r.name() == name) else {
                    self.at -= 1;
                    return self.error(format!("`{name}` is not a rounding mode (rn, rz, rm, rp)"));
                };
                self.expect(",")?;
                Some(rounding)
            } else {
                None
            };
            let value = Box::new(self.expr()?);
            self.expect(")")?;
            return Ok(match rounding {
                Some(rounding) => Expr::Convert { dtype, rounding, value },
                None => Expr::Bitcast(dtype, value),
            });
        }
        let mut arguments = vec![self.expr()?];
        while self.peek() == Some(",") {
            self.at += 1;
            if function == "shuffle_xor" {
                let mask = self.integer()?;
                self.expect(")")?;
                let value = Box::new(arguments.remove(0));
                return Ok(Expr::ShuffleXor { value, mask });
            }
            arguments.push(self.expr()?);
        }
        self.expect(")")?;
        let count = arguments.len();
        let mut arguments = arguments.into_iter().map(Box::new);
        let mut take = || arguments.next().expect("counted");
        let unary = match function {
            "neg" => Some(UnaryOp::Neg),
            "abs" => Some(UnaryOp::Abs),
            "sqrt" => Some(UnaryOp::Sqrt),
            "rsqrt" => Some(UnaryOp::Rsqrt),
            "exp" => Some(UnaryOp::Exp),
            "log" => Some(UnaryOp::Log),
            "tanh" => Some(UnaryOp::Tanh),
            "erf" => Some(UnaryOp::Erf),
            "sin" => Some(UnaryOp::Sin),
            "cos" => Some(UnaryOp::Cos),
            "not" => Some(UnaryOp::Not),
            "bitnot" => Some(UnaryOp::BitNot),
            _ => None,
        };
        let binary = match function {
            "max" => Some(BinaryOp::Max),
            "min" => Some(BinaryOp::Min),
            "pow" => Some(BinaryOp::Pow),
            _ => None,
        };
        match (function, count) {
            (_, 1) if unary.is_some() => Ok(Expr::Unary(unary.expect("matched"), take())),
            (_, 2) if binary.is_some() => Ok(Expr::Binary(binary.expect("matched"), take(), take())),
            ("select", 3) => Ok(Expr::Select(take(), take(), take())),
            ("fma", 3) => Ok(Expr::Fma(take(), take(), take())),
            (name, 1) if DType::from_str(name).is_ok() => {
                Ok(Expr::Cast(DType::from_str(name).expect("checked"), take()))
            }
            _ => self.error(format!("`{function}` with {count} arguments is not a kernel IR function")),
        }
    }
}

/// A literal as the printer writes it: `1.5` (f32, Rust's shortest form),
/// `7` (i64), `7i32`, `true`, `inf`, `NaN`.
fn literal(token: &str) -> Option<Literal> {
    match token {
        "true" => return Some(Literal::Bool(true)),
        "false" => return Some(Literal::Bool(false)),
        "inf" => return Some(Literal::F32(f32::INFINITY)),
        "-inf" => return Some(Literal::F32(f32::NEG_INFINITY)),
        "NaN" => return Some(Literal::F32(f32::NAN)),
        _ => {}
    }
    let first = token.chars().next()?;
    if !(first.is_ascii_digit() || first == '-') {
        return None;
    }
    if let Some(digits) = token.strip_suffix("i32") {
        return digits.parse().ok().map(Literal::I32);
    }
    if token.contains(['.', 'e', 'E']) {
        return token.parse().ok().map(Literal::F32);
    }
    token.parse().ok().map(Literal::I64)
}
