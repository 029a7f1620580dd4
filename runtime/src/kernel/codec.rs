//! A compact, versioned binary encoding of kernel IR — how an artifact carries
//! its portable kernels for the simulator device.
//!
//! The encoding is a pre-order walk: each node is a tag byte followed by its
//! fields (integers as little-endian fixed width, strings and lists prefixed
//! by a u32 length, dims as their text form). Decoding never trusts the
//! input: every length is checked against the bytes left, nesting is capped
//! at [`MAX_DEPTH`], and parameter, variable and array indices are checked
//! against the kernel's declarations, so a corrupted kernel is an error,
//! never a panic or an out-of-bounds access in the simulator.

use crate::kernel::{
    BinaryOp, Expr, Kernel, Literal, Memory, MmaKind, Param, Rounding, SharedArray, Special, Stmt, UnaryOp, Var,
};
use crate::{DType, Dim};

/// Deepest nesting of expressions and statements that decoding accepts.
pub const MAX_DEPTH: usize = 512;

/// Why bytes did not decode into a kernel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kernel IR at byte {offset}: {message}")]
pub struct DecodeError {
    pub offset: usize,
    pub message: String,
}

/// Encodes `kernels` as one blob.
pub fn encode_kernels(kernels: &[&Kernel]) -> Vec<u8> {
    let mut writer = Writer(Vec::new());
    writer.u32(kernels.len() as u32);
    for kernel in kernels {
        writer.kernel(kernel);
    }
    writer.0
}

/// Decodes a blob written by [`encode_kernels`].
pub fn decode_kernels(bytes: &[u8]) -> Result<Vec<Kernel>, DecodeError> {
    let mut reader = Reader { bytes, offset: 0, depth: 0 };
    let count = reader.u32()? as usize;
    let mut kernels = Vec::new();
    for _ in 0..count {
        kernels.push(reader.kernel()?);
    }
    if reader.offset != bytes.len() {
        return Err(reader.error(format!("{} bytes after the last kernel", bytes.len() - reader.offset)));
    }
    Ok(kernels)
}

const DTYPES: [DType; DType::ALL.len()] = DType::ALL;
// Tables only grow at their ends: a tag's meaning never changes.
const UNARY: [UnaryOp; 12] = [
    UnaryOp::Neg,
    UnaryOp::Abs,
    UnaryOp::Sqrt,
    UnaryOp::Rsqrt,
    UnaryOp::Exp,
    UnaryOp::Log,
    UnaryOp::Tanh,
    UnaryOp::Erf,
    UnaryOp::Sin,
    UnaryOp::Cos,
    UnaryOp::Not,
    UnaryOp::BitNot,
];
const BINARY: [BinaryOp; 19] = [
    BinaryOp::Add,
    BinaryOp::Sub,
    BinaryOp::Mul,
    BinaryOp::Div,
    BinaryOp::Rem,
    BinaryOp::Pow,
    BinaryOp::Max,
    BinaryOp::Min,
    BinaryOp::Lt,
    BinaryOp::Le,
    BinaryOp::Eq,
    BinaryOp::Ne,
    BinaryOp::And,
    BinaryOp::Or,
    BinaryOp::Shl,
    BinaryOp::Shr,
    BinaryOp::BitAnd,
    BinaryOp::BitOr,
    BinaryOp::BitXor,
];
const ROUNDINGS: [Rounding; 4] = Rounding::ALL;
const SPECIALS: [Special; 5] =
    [Special::ThreadIndex, Special::BlockIndex, Special::BlockThreads, Special::GridBlocks, Special::Lane];

fn position<T: PartialEq>(table: &[T], item: &T) -> u8 {
    table.iter().position(|t| t == item).expect("every variant is in its table") as u8
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, value: u8) {
        self.0.push(value);
    }
    fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn string(&mut self, text: &str) {
        self.u32(text.len() as u32);
        self.0.extend_from_slice(text.as_bytes());
    }
    fn dtype(&mut self, dtype: DType) {
        self.u8(position(&DTYPES, &dtype));
    }
    fn memory(&mut self, memory: Memory) {
        match memory {
            Memory::Buffer(index) => {
                self.u8(0);
                self.u32(index as u32);
            }
            Memory::Shared(index) => {
                self.u8(1);
                self.u32(index as u32);
            }
        }
    }

    fn kernel(&mut self, kernel: &Kernel) {
        self.string(&kernel.name);
        self.u32(kernel.params.len() as u32);
        for param in &kernel.params {
            match param {
                Param::Buffer { name, dtype, writable } => {
                    self.u8(0);
                    self.string(name);
                    self.dtype(*dtype);
                    self.u8(*writable as u8);
                }
                Param::Scalar { name, dtype } => {
                    self.u8(1);
                    self.string(name);
                    self.dtype(*dtype);
                }
            }
        }
        self.u32(kernel.block_threads);
        self.string(&kernel.grid_blocks.to_string());
        self.u32(kernel.shared.len() as u32);
        for array in &kernel.shared {
            self.string(&array.name);
            self.dtype(array.dtype);
            self.u64(array.elements as u64);
            self.u32(array.align as u32);
        }
        self.block(&kernel.body);
    }

    fn block(&mut self, body: &[Stmt]) {
        self.u32(body.len() as u32);
        for stmt in body {
            self.stmt(stmt);
        }
    }

    fn stmt(&mut self, stmt: &Stmt) {
        match stmt {
            Stmt::Let { var, dtype, value } => {
                self.u8(0);
                self.u32(var.0);
                self.dtype(*dtype);
                self.expr(value);
            }
            Stmt::Assign { var, value } => {
                self.u8(1);
                self.u32(var.0);
                self.expr(value);
            }
            Stmt::Store { buffer, index, value } => {
                self.u8(2);
                self.u32(*buffer as u32);
                self.expr(index);
                self.expr(value);
            }
            Stmt::SharedStore { array, index, value } => {
                self.u8(3);
                self.u32(*array as u32);
                self.expr(index);
                self.expr(value);
            }
            Stmt::AtomicAdd { buffer, index, value } => {
                self.u8(4);
                self.u32(*buffer as u32);
                self.expr(index);
                self.expr(value);
            }
            Stmt::If { condition, then, otherwise } => {
                self.u8(5);
                self.expr(condition);
                self.block(then);
                self.block(otherwise);
            }
            Stmt::For { var, start, end, step, body } => {
                self.u8(6);
                self.u32(var.0);
                self.expr(start);
                self.expr(end);
                self.u64(*step as u64);
                self.block(body);
            }
            Stmt::Barrier => self.u8(7),
            Stmt::VectorLoad { vars, dtype, memory, index } => {
                self.u8(8);
                self.u32(vars.len() as u32);
                vars.iter().for_each(|v| self.u32(v.0));
                self.dtype(*dtype);
                self.memory(*memory);
                self.expr(index);
            }
            Stmt::VectorStore { memory, index, values } => {
                self.u8(9);
                self.u32(values.len() as u32);
                self.memory(*memory);
                self.expr(index);
                values.iter().for_each(|v| self.expr(v));
            }
            Stmt::LoadMatrix { vars, array, index, transpose } => {
                self.u8(10);
                self.u32(vars.len() as u32);
                vars.iter().for_each(|v| self.u32(v.0));
                self.u32(*array as u32);
                self.u8(*transpose as u8);
                self.expr(index);
            }
            Stmt::MatrixMultiplyAccumulate { kind, acc, a, b } => {
                self.u8(11);
                self.u8(MmaKind::ALL.iter().position(|k| k == kind).expect("listed") as u8);
                for list in [acc.len(), a.len(), b.len()] {
                    self.u32(list as u32);
                }
                acc.iter().for_each(|v| self.u32(v.0));
                a.iter().chain(b).for_each(|e| self.expr(e));
            }
            Stmt::AsyncCopy { array, shared_index, buffer, index, elements, source_elements } => {
                self.u8(12);
                self.u32(*array as u32);
                self.expr(shared_index);
                self.u32(*buffer as u32);
                self.expr(index);
                self.u32(*elements);
                self.expr(source_elements);
            }
            Stmt::AsyncCommit => self.u8(13),
            Stmt::AsyncWait { pending } => {
                self.u8(14);
                self.u32(*pending);
            }
        }
    }

    fn expr(&mut self, expr: &Expr) {
        match expr {
            Expr::Literal(literal) => {
                self.u8(0);
                match literal {
                    Literal::F32(value) => {
                        self.u8(0);
                        self.u32(value.to_bits());
                    }
                    Literal::I64(value) => {
                        self.u8(1);
                        self.u64(*value as u64);
                    }
                    Literal::I32(value) => {
                        self.u8(2);
                        self.u32(*value as u32);
                    }
                    Literal::Bool(value) => {
                        self.u8(3);
                        self.u8(*value as u8);
                    }
                }
            }
            Expr::Var(var) => {
                self.u8(1);
                self.u32(var.0);
            }
            Expr::Param(index) => {
                self.u8(2);
                self.u32(*index as u32);
            }
            Expr::Special(special) => {
                self.u8(3);
                self.u8(position(&SPECIALS, special));
            }
            Expr::Unary(op, a) => {
                self.u8(4);
                self.u8(position(&UNARY, op));
                self.expr(a);
            }
            Expr::Binary(op, a, b) => {
                self.u8(5);
                self.u8(position(&BINARY, op));
                self.expr(a);
                self.expr(b);
            }
            Expr::Select(c, a, b) => {
                self.u8(6);
                self.expr(c);
                self.expr(a);
                self.expr(b);
            }
            Expr::Cast(dtype, a) => {
                self.u8(7);
                self.dtype(*dtype);
                self.expr(a);
            }
            Expr::Load { buffer, index } => {
                self.u8(8);
                self.u32(*buffer as u32);
                self.expr(index);
            }
            Expr::SharedLoad { array, index } => {
                self.u8(9);
                self.u32(*array as u32);
                self.expr(index);
            }
            Expr::ShuffleXor { value, mask } => {
                self.u8(10);
                self.u32(*mask);
                self.expr(value);
            }
            Expr::Convert { dtype, rounding, value } => {
                self.u8(11);
                self.dtype(*dtype);
                self.u8(position(&ROUNDINGS, rounding));
                self.expr(value);
            }
            Expr::Bitcast(dtype, a) => {
                self.u8(12);
                self.dtype(*dtype);
                self.expr(a);
            }
            Expr::Fma(a, b, c) => {
                self.u8(13);
                self.expr(a);
                self.expr(b);
                self.expr(c);
            }
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
    depth: usize,
}

/// What the kernel being decoded declares, for checking references.
struct Declared {
    params: usize,
    buffers: Vec<bool>,
    /// Each parameter's dtype.
    dtypes: Vec<DType>,
    shared: usize,
    shared_dtypes: Vec<DType>,
}

impl<'a> Reader<'a> {
    fn error(&self, message: String) -> DecodeError {
        DecodeError { offset: self.offset, message }
    }

    fn take(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.offset.checked_add(count).filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(|| self.error(format!("needs {count} more bytes; the blob ends")))?;
        let slice = &self.bytes[self.offset..end];
        self.offset = end;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    /// A list length, checked against the bytes left (each item takes ≥ 1 byte).
    fn length(&mut self) -> Result<usize, DecodeError> {
        let length = self.u32()? as usize;
        if length > self.bytes.len() - self.offset {
            return Err(self.error(format!("a list of {length} items is longer than the blob")));
        }
        Ok(length)
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        let length = self.length()?;
        let bytes = self.take(length)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.error("a name is not UTF-8".into()))
    }
    fn tag<T: Copy>(&mut self, table: &[T], what: &str) -> Result<T, DecodeError> {
        let tag = self.u8()? as usize;
        table.get(tag).copied().ok_or_else(|| self.error(format!("unknown {what} tag {tag}")))
    }
    fn dtype(&mut self) -> Result<DType, DecodeError> {
        self.tag(&DTYPES, "dtype")
    }
    fn descend(&mut self) -> Result<(), DecodeError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(format!("nesting deeper than {MAX_DEPTH}")));
        }
        Ok(())
    }

    fn kernel(&mut self) -> Result<Kernel, DecodeError> {
        let name = self.string()?;
        let mut params = Vec::new();
        for _ in 0..self.length()? {
            params.push(match self.u8()? {
                0 => Param::Buffer { name: self.string()?, dtype: self.dtype()?, writable: self.u8()? != 0 },
                1 => Param::Scalar { name: self.string()?, dtype: self.dtype()? },
                tag => return Err(self.error(format!("unknown parameter tag {tag}"))),
            });
        }
        let block_threads = self.u32()?;
        if !(1..=1024).contains(&block_threads) {
            return Err(self.error(format!("block of {block_threads} threads (1 to 1024)")));
        }
        let grid_text = self.string()?;
        let grid_blocks = Dim::parse(&grid_text).map_err(|e| self.error(format!("grid `{grid_text}`: {e}")))?;
        let mut shared = Vec::new();
        for _ in 0..self.length()? {
            let name = self.string()?;
            let dtype = self.dtype()?;
            let elements = self.u64()?;
            if elements > (1 << 20) {
                return Err(self.error(format!("shared array `{name}` of {elements} elements")));
            }
            let align = self.u32()? as usize;
            if !align.is_power_of_two() || !(SharedArray::MIN_ALIGN..=SharedArray::MAX_ALIGN).contains(&align) {
                return Err(self.error(format!("shared array `{name}` aligned to {align} bytes")));
            }
            shared.push(SharedArray { name, dtype, elements: elements as usize, align });
        }
        let declared = Declared {
            params: params.len(),
            buffers: params.iter().map(|p| matches!(p, Param::Buffer { .. })).collect(),
            dtypes: params
                .iter()
                .map(|p| match p {
                    Param::Buffer { dtype, .. } | Param::Scalar { dtype, .. } => *dtype,
                })
                .collect(),
            shared: shared.len(),
            shared_dtypes: shared.iter().map(|a| a.dtype).collect(),
        };
        let body = self.block(&declared)?;
        let kernel = Kernel { name, params, block_threads, grid_blocks, shared, body };
        // Operand counts and copy sizes the simulators rely on.
        fn shapes(kernel: &Kernel, body: &[Stmt]) -> Option<String> {
            body.iter().find_map(|stmt| match stmt {
                Stmt::If { then, otherwise, .. } => shapes(kernel, then).or_else(|| shapes(kernel, otherwise)),
                Stmt::For { body, .. } => shapes(kernel, body),
                _ => super::collective_shape_error(kernel, stmt),
            })
        }
        match shapes(&kernel, &kernel.body) {
            Some(problem) => Err(self.error(format!("kernel `{}`: {problem}", kernel.name))),
            None => Ok(kernel),
        }
    }

    fn block(&mut self, declared: &Declared) -> Result<Vec<Stmt>, DecodeError> {
        self.descend()?;
        let mut body = Vec::new();
        for _ in 0..self.length()? {
            body.push(self.stmt(declared)?);
        }
        self.depth -= 1;
        Ok(body)
    }

    fn buffer(&mut self, declared: &Declared) -> Result<usize, DecodeError> {
        let index = self.u32()? as usize;
        match declared.buffers.get(index) {
            Some(true) => Ok(index),
            _ => Err(self.error(format!("parameter {index} is not a buffer parameter"))),
        }
    }

    /// A vector access's memory, checked to exist and to take `count` elements at once.
    fn memory(&mut self, declared: &Declared, count: usize) -> Result<Memory, DecodeError> {
        let (memory, dtype) = match self.u8()? {
            0 => {
                let index = self.buffer(declared)?;
                (Memory::Buffer(index), declared.dtypes[index])
            }
            1 => {
                let index = self.array(declared)?;
                (Memory::Shared(index), declared.shared_dtypes[index])
            }
            tag => return Err(self.error(format!("unknown memory tag {tag}"))),
        };
        if !crate::kernel::is_vector_width(dtype, count) {
            return Err(self.error(format!("a vector of {count} {dtype} elements")));
        }
        Ok(memory)
    }

    fn array(&mut self, declared: &Declared) -> Result<usize, DecodeError> {
        let index = self.u32()? as usize;
        if index >= declared.shared {
            return Err(self.error(format!("shared array {index} is not declared")));
        }
        Ok(index)
    }

    fn stmt(&mut self, declared: &Declared) -> Result<Stmt, DecodeError> {
        Ok(match self.u8()? {
            0 => Stmt::Let { var: Var(self.u32()?), dtype: self.dtype()?, value: self.expr(declared)? },
            1 => Stmt::Assign { var: Var(self.u32()?), value: self.expr(declared)? },
            2 => {
                Stmt::Store { buffer: self.buffer(declared)?, index: self.expr(declared)?, value: self.expr(declared)? }
            }
            3 => Stmt::SharedStore {
                array: self.array(declared)?,
                index: self.expr(declared)?,
                value: self.expr(declared)?,
            },
            4 => Stmt::AtomicAdd {
                buffer: self.buffer(declared)?,
                index: self.expr(declared)?,
                value: self.expr(declared)?,
            },
            5 => Stmt::If {
                condition: self.expr(declared)?,
                then: self.block(declared)?,
                otherwise: self.block(declared)?,
            },
            6 => {
                let var = Var(self.u32()?);
                let start = self.expr(declared)?;
                let end = self.expr(declared)?;
                let step = self.u64()? as i64;
                if step <= 0 {
                    return Err(self.error(format!("loop step {step} (must be positive)")));
                }
                Stmt::For { var, start, end, step, body: self.block(declared)? }
            }
            7 => Stmt::Barrier,
            8 => {
                let count = self.length()?;
                let vars = (0..count).map(|_| self.u32().map(Var)).collect::<Result<Vec<_>, _>>()?;
                let dtype = self.dtype()?;
                let memory = self.memory(declared, count)?;
                Stmt::VectorLoad { vars, dtype, memory, index: self.expr(declared)? }
            }
            9 => {
                let count = self.length()?;
                let memory = self.memory(declared, count)?;
                let index = self.expr(declared)?;
                let values = (0..count).map(|_| self.expr(declared)).collect::<Result<Vec<_>, _>>()?;
                Stmt::VectorStore { memory, index, values }
            }
            10 => {
                let count = self.length()?;
                let vars = (0..count).map(|_| self.u32().map(Var)).collect::<Result<Vec<_>, _>>()?;
                let array = self.array(declared)?;
                let transpose = self.u8()? != 0;
                Stmt::LoadMatrix { vars, array, index: self.expr(declared)?, transpose }
            }
            11 => {
                let tag = self.u8()? as usize;
                let kind = *MmaKind::ALL.get(tag).ok_or_else(|| self.error(format!("unknown mma kind {tag}")))?;
                let (acc_count, a_count, b_count) = (self.length()?, self.length()?, self.length()?);
                let acc = (0..acc_count).map(|_| self.u32().map(Var)).collect::<Result<Vec<_>, _>>()?;
                let a = (0..a_count).map(|_| self.expr(declared)).collect::<Result<Vec<_>, _>>()?;
                let b = (0..b_count).map(|_| self.expr(declared)).collect::<Result<Vec<_>, _>>()?;
                Stmt::MatrixMultiplyAccumulate { kind, acc, a, b }
            }
            12 => Stmt::AsyncCopy {
                array: self.array(declared)?,
                shared_index: self.expr(declared)?,
                buffer: self.buffer(declared)?,
                index: self.expr(declared)?,
                elements: self.u32()?,
                source_elements: self.expr(declared)?,
            },
            13 => Stmt::AsyncCommit,
            14 => Stmt::AsyncWait { pending: self.u32()? },
            tag => return Err(self.error(format!("unknown statement tag {tag}"))),
        })
    }

    fn boxed(&mut self, declared: &Declared) -> Result<Box<Expr>, DecodeError> {
        Ok(Box::new(self.expr(declared)?))
    }

    fn expr(&mut self, declared: &Declared) -> Result<Expr, DecodeError> {
        self.descend()?;
        let expr = match self.u8()? {
            0 => Expr::Literal(match self.u8()? {
                0 => Literal::F32(f32::from_bits(self.u32()?)),
                1 => Literal::I64(self.u64()? as i64),
                2 => Literal::I32(self.u32()? as i32),
                3 => Literal::Bool(self.u8()? != 0),
                tag => return Err(self.error(format!("unknown literal tag {tag}"))),
            }),
            1 => Expr::Var(Var(self.u32()?)),
            2 => {
                let index = self.u32()? as usize;
                if index >= declared.params || declared.buffers[index] {
                    return Err(self.error(format!("parameter {index} is not a scalar parameter")));
                }
                Expr::Param(index)
            }
            3 => Expr::Special(self.tag(&SPECIALS, "special value")?),
            4 => Expr::Unary(self.tag(&UNARY, "unary op")?, self.boxed(declared)?),
            5 => Expr::Binary(self.tag(&BINARY, "binary op")?, self.boxed(declared)?, self.boxed(declared)?),
            6 => Expr::Select(self.boxed(declared)?, self.boxed(declared)?, self.boxed(declared)?),
            7 => Expr::Cast(self.dtype()?, self.boxed(declared)?),
            8 => Expr::Load { buffer: self.buffer(declared)?, index: self.boxed(declared)? },
            9 => Expr::SharedLoad { array: self.array(declared)?, index: self.boxed(declared)? },
            10 => {
                let mask = self.u32()?;
                Expr::ShuffleXor { mask, value: self.boxed(declared)? }
            }
            11 => Expr::Convert {
                dtype: self.dtype()?,
                rounding: self.tag(&ROUNDINGS, "rounding mode")?,
                value: self.boxed(declared)?,
            },
            12 => Expr::Bitcast(self.dtype()?, self.boxed(declared)?),
            13 => Expr::Fma(self.boxed(declared)?, self.boxed(declared)?, self.boxed(declared)?),
            tag => return Err(self.error(format!("unknown expression tag {tag}"))),
        };
        self.depth -= 1;
        Ok(expr)
    }
}
