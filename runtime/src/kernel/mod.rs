//! Kernel IR: a structured SIMT program, the portable form of one generated
//! kernel.
//!
//! A kernel runs as a grid of blocks of `block_threads` threads (warps of 32,
//! or 64 on AMD). Parameters are bare device pointers (element buffers) and
//! scalar dims — no memref descriptors. The body is structured: `let`/assign
//! of mutable per-thread variables, loads and stores (global buffers and
//! block-shared arrays; global accesses also as aligned vectors of up to 16
//! bytes), `if`, counted `for` loops, barriers, warp shuffles and atomics.
//! Values have native types (f32, f16, bf16, i32, i64, u32, u64, bool) with
//! integer and bit operations (shifts, and/or/xor, bit casts), conversions
//! with PTX's rounding modes and a one-rounding `fma`. Index arithmetic is
//! i64 so bounds past 2³¹ elements are safe.
//! The grid size is an expression of the model's symbolic dims.
//!
//! The same program is printed for snapshots ([`print_kernel`]), executed by
//! the simulator ([`crate::sim`]) and lowered to MLIR by `kiln-targets`.

pub mod codec;
pub mod filetest;
mod parse;
mod print;
mod uniformity;
mod verify;

use crate::{DType, Dim};

pub use parse::{parse_kernel, KernelParseError};
pub use print::print_kernel;
pub use uniformity::{divergent_vars, is_uniform};
pub use verify::{verify_kernel, KernelVerifyError};

/// A per-thread variable (mutable, typed at its `let`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Var(pub u32);

/// A literal. Literals are equal when their bits are (a NaN literal equals
/// itself, `0.0` and `-0.0` differ), so kernels compare as programs.
#[derive(Clone, Copy, Debug)]
pub enum Literal {
    F32(f32),
    I64(i64),
    I32(i32),
    Bool(bool),
}

impl PartialEq for Literal {
    fn eq(&self, other: &Literal) -> bool {
        match (self, other) {
            (Literal::F32(a), Literal::F32(b)) => a.to_bits() == b.to_bits(),
            (Literal::I64(a), Literal::I64(b)) => a == b,
            (Literal::I32(a), Literal::I32(b)) => a == b,
            (Literal::Bool(a), Literal::Bool(b)) => a == b,
            _ => false,
        }
    }
}

impl Literal {
    pub fn dtype(self) -> DType {
        match self {
            Literal::F32(_) => DType::F32,
            Literal::I64(_) => DType::I64,
            Literal::I32(_) => DType::I32,
            Literal::Bool(_) => DType::Bool,
        }
    }
}

/// Thread and launch coordinates (x dimension).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Special {
    ThreadIndex,
    BlockIndex,
    BlockThreads,
    GridBlocks,
    /// The thread's lane within its warp.
    Lane,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Abs,
    Sqrt,
    Rsqrt,
    Exp,
    Log,
    Tanh,
    Erf,
    Sin,
    Cos,
    /// Logical not: 1 (true) where the operand is zero.
    Not,
    /// Bitwise complement of an integer.
    BitNot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    /// Float division; integer division truncates.
    Div,
    /// Integer remainder (non-negative operands).
    Rem,
    /// Float power.
    Pow,
    Max,
    Min,
    Lt,
    Le,
    Eq,
    Ne,
    /// Logical and of truth values (nonzero is true).
    And,
    /// Logical or of truth values.
    Or,
    /// `a << (b mod width)`: integers; the amount is taken modulo the
    /// operand's bit width (as AMD hardware and Rust's `wrapping_shl` do), so
    /// every amount is defined; the lowering masks amounts it cannot prove in range.
    Shl,
    /// `a >> (b mod width)`: arithmetic for signed integers, logical for unsigned.
    Shr,
    BitAnd,
    BitOr,
    BitXor,
}

impl BinaryOp {
    pub fn is_comparison(self) -> bool {
        matches!(self, BinaryOp::Lt | BinaryOp::Le | BinaryOp::Eq | BinaryOp::Ne)
    }

    /// Shifts and bitwise operations: integer operands only.
    pub fn is_bitwise(self) -> bool {
        matches!(self, BinaryOp::Shl | BinaryOp::Shr | BinaryOp::BitAnd | BinaryOp::BitOr | BinaryOp::BitXor)
    }
}

/// How a conversion rounds when the value is not representable: PTX's
/// `.rn`/`.rz`/`.rm`/`.rp` (`.rni`/`.rzi`/`.rmi`/`.rpi` to integers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rounding {
    /// To nearest, ties to even.
    Nearest,
    /// Toward zero.
    Zero,
    /// Toward negative infinity.
    Down,
    /// Toward positive infinity.
    Up,
}

impl Rounding {
    pub const ALL: [Rounding; 4] = [Rounding::Nearest, Rounding::Zero, Rounding::Down, Rounding::Up];

    /// The PTX modifier's name: `rn`, `rz`, `rm`, `rp`.
    pub fn name(self) -> &'static str {
        match self {
            Rounding::Nearest => "rn",
            Rounding::Zero => "rz",
            Rounding::Down => "rm",
            Rounding::Up => "rp",
        }
    }
}

/// A per-thread value.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Literal(Literal),
    Var(Var),
    /// The value of scalar parameter `n`.
    Param(usize),
    Special(Special),
    Unary(UnaryOp, Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    Select(Box<Expr>, Box<Expr>, Box<Expr>),
    /// Conversion to `dtype` as the simulator and the lowering define it:
    /// floats round to nearest even, floats to integers truncate toward zero
    /// (saturating, NaN to 0), integers wrap to narrower integers.
    Cast(DType, Box<Expr>),
    /// A conversion that rounds as `rounding` says: float to integer (then
    /// saturating, NaN to 0), integer to float, or f32 to f16/bf16.
    Convert {
        dtype: DType,
        rounding: Rounding,
        value: Box<Expr>,
    },
    /// The bits of the value as `dtype`, a register type of the same width
    /// (f32, i32 and u32; i64 and u64).
    Bitcast(DType, Box<Expr>),
    /// `a × b + c` on f32 with one rounding (`fma.rn.f32`).
    Fma(Box<Expr>, Box<Expr>, Box<Expr>),
    /// Element `index` of buffer parameter `buffer`, converted to f32 (floats),
    /// i64 (integers) or bool.
    Load {
        buffer: usize,
        index: Box<Expr>,
    },
    /// Element `index` of shared array `array`.
    SharedLoad {
        array: usize,
        index: Box<Expr>,
    },
    /// The value of `value` in lane `lane ^ mask` of the same warp.
    ShuffleXor {
        value: Box<Expr>,
        mask: u32,
    },
}

/// One statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// Declares `var` with a type and an initial value.
    Let {
        var: Var,
        dtype: DType,
        value: Expr,
    },
    Assign {
        var: Var,
        value: Expr,
    },
    /// Writes element `index` of buffer parameter `buffer` (rounded to its dtype).
    Store {
        buffer: usize,
        index: Expr,
        value: Expr,
    },
    SharedStore {
        array: usize,
        index: Expr,
        value: Expr,
    },
    /// `buffer[index] += value`, atomically.
    AtomicAdd {
        buffer: usize,
        index: Expr,
        value: Expr,
    },
    If {
        condition: Expr,
        then: Vec<Stmt>,
        otherwise: Vec<Stmt>,
    },
    /// `for var in start..end by step` (step > 0); the bounds are read once.
    For {
        var: Var,
        start: Expr,
        end: Expr,
        step: i64,
        body: Vec<Stmt>,
    },
    /// Block-wide barrier; every thread of the block must reach it (no divergence).
    Barrier,
    /// Declares `vars` (typed `dtype`) from `vars.len()` consecutive elements of
    /// `memory` starting at `index`, in one access of at most 16 bytes (a
    /// power of two). `index` must be a multiple of the width: the access is
    /// aligned to its size (buffers start 256-byte aligned, shared arrays 16).
    VectorLoad {
        vars: Vec<Var>,
        dtype: DType,
        memory: Memory,
        index: Expr,
    },
    /// Writes `values` to consecutive elements of `memory` from `index`, in one
    /// aligned access of at most 16 bytes (as [`Stmt::VectorLoad`]).
    VectorStore {
        memory: Memory,
        index: Expr,
        values: Vec<Expr>,
    },
    /// `ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16`, a warp
    /// collective: declares `vars` (u32, one per 8×8 matrix) from shared
    /// array `array` (16-bit elements). Lanes `8i..8i+8` give, as `index`,
    /// the first element of rows 0–7 of matrix `i` (a row is 8 consecutive
    /// elements, 16 bytes, so `index` is a multiple of 8); the other lanes'
    /// indices are ignored. Lane `l` receives in `vars[i]` the elements
    /// (row `l/4`, columns `2(l%4)`, `2(l%4)+1`) of matrix `i`, the first in
    /// the low half; with `transpose`, (rows `2(l%4)`, `2(l%4)+1`, column `l/4`).
    /// Every lane of the warp must execute it (no divergent control).
    LoadMatrix {
        vars: Vec<Var>,
        array: usize,
        index: Expr,
        transpose: bool,
    },
    /// `mma.sync.aligned.{shape}.row.col.f32.{in}.{in}.f32`, a warp collective:
    /// `acc += A × B` for one 16×8 tile, with the fragments laid out per
    /// lane as the PTX ISA says ([`MmaKind`]). `acc` is four f32 variables,
    /// `a` four and `b` two u32 values (packed pairs of 16-bit elements, or
    /// one tf32 each). Products are exact and the sum of the products and the
    /// accumulator is rounded to f32 once (the simulators' model; hardware
    /// may differ in the last bits). Every lane of the warp must execute it.
    MatrixMultiplyAccumulate {
        kind: MmaKind,
        acc: Vec<Var>,
        a: Vec<Expr>,
        b: Vec<Expr>,
    },
    /// `cp.async` of `elements` consecutive elements (4, 8 or 16 bytes) of
    /// buffer `buffer` from `index` to shared array `array` (of the same
    /// dtype) from `shared_index`; both indices are multiples of `elements`.
    /// Only the first `source_elements` (clamped to `0..=elements`) are
    /// read; the rest of the destination is zero-filled. The copy joins the
    /// thread's open group ([`Stmt::AsyncCommit`]) and its destination may
    /// be read only after an [`Stmt::AsyncWait`] has completed that group
    /// (and, by another thread, after a barrier too).
    AsyncCopy {
        array: usize,
        shared_index: Expr,
        buffer: usize,
        index: Expr,
        elements: u32,
        source_elements: Expr,
    },
    /// `cp.async.commit_group`: closes the thread's open group of async copies.
    AsyncCommit,
    /// `cp.async.wait_group pending`: waits until at most `pending` of the
    /// thread's committed groups are still in flight (the newest ones).
    AsyncWait {
        pending: u32,
    },
}

/// The shape and input type of a [`Stmt::MatrixMultiplyAccumulate`], f32
/// accumulation in every case. With `g = lane / 4`, `t = lane % 4`, the
/// accumulator `c0..c3` holds D(g, 2t), D(g, 2t+1), D(g+8, 2t), D(g+8, 2t+1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MmaKind {
    /// m16n8k16, bf16 inputs. `a0..a3` hold A(g, 2t..2t+1), A(g+8, 2t..),
    /// A(g, 2t+8..), A(g+8, 2t+8..); `b0`, `b1` hold B(2t..2t+1, g),
    /// B(2t+8..2t+9, g) (the lower k in the low half).
    Bf16M16N8K16,
    /// m16n8k16, f16 inputs, laid out as [`MmaKind::Bf16M16N8K16`].
    F16M16N8K16,
    /// m16n8k8, tf32 inputs (f32 bits; the low 13 mantissa bits are
    /// ignored). `a0..a3` hold A(g, t), A(g+8, t), A(g, t+4), A(g+8, t+4);
    /// `b0`, `b1` hold B(t, g), B(t+4, g).
    Tf32M16N8K8,
}

impl MmaKind {
    pub const ALL: [MmaKind; 3] = [MmaKind::Bf16M16N8K16, MmaKind::F16M16N8K16, MmaKind::Tf32M16N8K8];

    /// The text form's name: `m16n8k16.bf16`, `m16n8k16.f16`, `m16n8k8.tf32`.
    pub fn name(self) -> &'static str {
        match self {
            MmaKind::Bf16M16N8K16 => "m16n8k16.bf16",
            MmaKind::F16M16N8K16 => "m16n8k16.f16",
            MmaKind::Tf32M16N8K8 => "m16n8k8.tf32",
        }
    }

    /// The K extent of one instruction.
    pub fn k(self) -> usize {
        match self {
            MmaKind::Tf32M16N8K8 => 8,
            _ => 16,
        }
    }

    /// Elements of A at `(row, column)` of the 16×K tile for each of lane
    /// `lane`'s four `a` registers and each element within the register
    /// (two 16-bit halves, low first, or one tf32).
    pub fn a_element(self, lane: usize, register: usize, half: usize) -> (usize, usize) {
        let (g, t) = (lane / 4, lane % 4);
        let row = g + 8 * (register % 2);
        match self {
            MmaKind::Tf32M16N8K8 => (row, t + 4 * (register / 2)),
            _ => (row, 2 * t + half + 8 * (register / 2)),
        }
    }

    /// The element `(k, n)` of the K×8 B tile in lane `lane`'s `b` register
    /// `register`, half `half` (as [`MmaKind::a_element`]).
    pub fn b_element(self, lane: usize, register: usize, half: usize) -> (usize, usize) {
        let (g, t) = (lane / 4, lane % 4);
        match self {
            MmaKind::Tf32M16N8K8 => (t + 4 * register, g),
            _ => (2 * t + half + 8 * register, g),
        }
    }

    /// The element `(row, column)` of the 16×8 accumulator in lane `lane`'s
    /// accumulator `register` (0..4).
    pub fn c_element(lane: usize, register: usize) -> (usize, usize) {
        let (g, t) = (lane / 4, lane % 4);
        (g + 8 * (register / 2), 2 * t + register % 2)
    }

    /// Elements one `a`/`b` register holds: 2 (16-bit halves) or 1 (tf32).
    pub fn elements_per_register(self) -> usize {
        match self {
            MmaKind::Tf32M16N8K8 => 1,
            _ => 2,
        }
    }
}

/// What is wrong with the shape of a warp-collective or async-copy
/// statement — operand counts, copy sizes, element types — or `None`; the
/// verifier, the codec and both simulators refuse such a statement.
pub fn collective_shape_error(kernel: &Kernel, stmt: &Stmt) -> Option<String> {
    match stmt {
        Stmt::LoadMatrix { vars, array, .. } => {
            let dtype = kernel.shared.get(*array)?.dtype;
            if dtype.size_in_bytes() != 2 {
                return Some(format!("ldmatrix of {dtype} elements (it loads 16-bit elements)"));
            }
            (![1, 2, 4].contains(&vars.len())).then(|| format!("ldmatrix of {} matrices (1, 2 or 4)", vars.len()))
        }
        Stmt::MatrixMultiplyAccumulate { kind, acc, a, b } => {
            (acc.len() != 4 || a.len() != 4 || b.len() != 2).then(|| {
                format!(
                    "mma.{} takes 4 accumulators, 4 A and 2 B registers, not {}, {} and {}",
                    kind.name(),
                    acc.len(),
                    a.len(),
                    b.len()
                )
            })
        }
        Stmt::AsyncCopy { array, buffer, elements, .. } => {
            let destination = kernel.shared.get(*array)?.dtype;
            let source = kernel.memory_dtype(Memory::Buffer(*buffer))?;
            if source != destination {
                return Some(format!("a cp.async from {source} elements to a shared array of {destination}"));
            }
            let bytes = *elements as usize * source.size_in_bytes();
            (![4, 8, 16].contains(&bytes)).then(|| format!("a cp.async of {bytes} bytes (4, 8 or 16)"))
        }
        _ => None,
    }
}

/// The element `(row, column)` of 8×8 matrix `register` that lane `lane`
/// receives from a [`Stmt::LoadMatrix`] in half `half` of that register.
pub fn load_matrix_element(lane: usize, half: usize, transpose: bool) -> (usize, usize) {
    let (g, t) = (lane / 4, lane % 4);
    if transpose {
        (2 * t + half, g)
    } else {
        (g, 2 * t + half)
    }
}

/// What a vector access reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Memory {
    /// Buffer parameter `n` (global memory).
    Buffer(usize),
    /// Shared array `n`.
    Shared(usize),
}

impl Kernel {
    /// The element dtype of `memory`, when it names a buffer parameter or a shared array.
    pub fn memory_dtype(&self, memory: Memory) -> Option<DType> {
        match memory {
            Memory::Buffer(index) => match self.params.get(index)? {
                Param::Buffer { dtype, .. } => Some(*dtype),
                Param::Scalar { .. } => None,
            },
            Memory::Shared(index) => Some(self.shared.get(index)?.dtype),
        }
    }
}

/// Whether `count` elements of `dtype` form one vector access kernel IR allows:
/// a power of two of at least 2 elements, at most 16 bytes.
pub fn is_vector_width(dtype: DType, count: usize) -> bool {
    count >= 2 && count.is_power_of_two() && count * dtype.size_in_bytes() <= 16
}

/// The register type of values of `dtype` — of a load from memory of
/// `dtype`, and of the values generators compute for tensors of `dtype`:
/// floats are f32, bool is bool, the integers of tensors (i8, u8, i32, i64:
/// indices, token ids) are i64 (sign- or zero-extended) so index arithmetic
/// cannot overflow, and u32 and u64 — bit patterns such as packed weights —
/// keep their width. The one rule the interpreter, the machine, the
/// generators and the lowering share (the lowering's loads widen to it).
pub fn register_type(dtype: DType) -> DType {
    match dtype {
        d if d.is_float() => DType::F32,
        DType::Bool => DType::Bool,
        DType::U32 => DType::U32,
        DType::U64 => DType::U64,
        _ => DType::I64,
    }
}

/// Whether `dtype` is a type kernel IR values (registers) can have.
pub fn is_register_type(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::F32 | DType::F16 | DType::BF16 | DType::I64 | DType::I32 | DType::U32 | DType::U64 | DType::Bool
    )
}

/// A kernel parameter.
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    /// A device pointer to elements of `dtype`.
    Buffer { name: String, dtype: DType, writable: bool },
    /// A scalar (dims are i64).
    Scalar { name: String, dtype: DType },
}

impl Param {
    pub fn name(&self) -> &str {
        match self {
            Param::Buffer { name, .. } | Param::Scalar { name, .. } => name,
        }
    }
}

/// A block-shared array.
#[derive(Clone, Debug, PartialEq)]
pub struct SharedArray {
    pub name: String,
    pub dtype: DType,
    pub elements: usize,
    /// Alignment of the array's first byte: a power of two, at least
    /// [`SharedArray::MIN_ALIGN`], so every vector access of up to 16 bytes at
    /// an element index that is a multiple of its width is aligned. The
    /// lowering emits it (`.shared .align N`) and the simulator holds kernels to it.
    pub align: usize,
}

impl SharedArray {
    /// The least alignment of a shared array: the widest vector access.
    pub const MIN_ALIGN: usize = 16;
    /// The greatest alignment the codec accepts.
    pub const MAX_ALIGN: usize = 1024;

    /// An array aligned to [`SharedArray::MIN_ALIGN`].
    pub fn new(name: &str, dtype: DType, elements: usize) -> SharedArray {
        SharedArray { name: name.to_string(), dtype, elements, align: SharedArray::MIN_ALIGN }
    }

    /// Bytes the array holds.
    pub fn bytes(&self) -> usize {
        self.elements * self.dtype.size_in_bytes()
    }
}

/// One kernel variant.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    pub name: String,
    pub params: Vec<Param>,
    /// Threads per block (a constant per variant; emitted as `reqntid`).
    pub block_threads: u32,
    /// Blocks in the grid, as an expression of the model's symbols.
    pub grid_blocks: Dim,
    pub shared: Vec<SharedArray>,
    pub body: Vec<Stmt>,
}

/// Static shared memory a kernel may declare (CUDA's limit without opt-in).
pub const STATIC_SHARED_LIMIT: usize = 48 * 1024;

impl Kernel {
    /// Bytes of shared memory the kernel declares.
    pub fn shared_bytes(&self) -> usize {
        self.shared_offsets().last().map_or(0, |&last| last + self.shared[self.shared.len() - 1].bytes())
    }

    /// Whether the shared arrays exceed [`STATIC_SHARED_LIMIT`] and so live in
    /// dynamic shared memory, sized at launch (with the opt-in attribute above
    /// 48 KiB, which the CUDA executor sets).
    pub fn uses_dynamic_shared(&self) -> bool {
        self.shared_bytes() > STATIC_SHARED_LIMIT
    }

    /// Dynamic shared memory bytes each launch must provide.
    pub fn dynamic_shared_bytes(&self) -> usize {
        if self.uses_dynamic_shared() {
            self.shared_bytes()
        } else {
            0
        }
    }

    /// Byte offset of each shared array when they are laid out back to back,
    /// each at its own alignment (the layout in dynamic shared memory).
    pub fn shared_offsets(&self) -> Vec<usize> {
        let mut offset = 0usize;
        self.shared
            .iter()
            .map(|array| {
                let start = offset.div_ceil(array.align) * array.align;
                offset = start + array.bytes();
                start
            })
            .collect()
    }

    /// Whether the kernel uses NVIDIA sm_80 instructions (`ldmatrix`,
    /// `mma.sync`, `cp.async`): only such GPUs (and the simulators) run it,
    /// and targets without them neither lower it nor launch it.
    pub fn uses_tensor_cores(&self) -> bool {
        fn any(body: &[Stmt]) -> bool {
            body.iter().any(|stmt| match stmt {
                Stmt::LoadMatrix { .. }
                | Stmt::MatrixMultiplyAccumulate { .. }
                | Stmt::AsyncCopy { .. }
                | Stmt::AsyncCommit
                | Stmt::AsyncWait { .. } => true,
                Stmt::If { then, otherwise, .. } => any(then) || any(otherwise),
                Stmt::For { body, .. } => any(body),
                _ => false,
            })
        }
        any(&self.body)
    }

    /// The alignment dynamic shared memory must have: the largest array's.
    pub fn shared_align(&self) -> usize {
        self.shared.iter().map(|a| a.align).max().unwrap_or(SharedArray::MIN_ALIGN)
    }
}

/// The i64 value of `dim`, with each symbol read from the scalar parameter
/// `symbol_param(name)` gives; `None` when a symbol has no parameter.
pub fn dim_expr(dim: &Dim, symbol_param: &dyn Fn(&str) -> Option<usize>) -> Option<Expr> {
    use crate::DimNode;
    fn lower(node: &DimNode, symbol_param: &dyn Fn(&str) -> Option<usize>) -> Option<Expr> {
        let pair = |op: BinaryOp, a: &DimNode, b: &DimNode| -> Option<Expr> {
            Some(Expr::Binary(op, Box::new(lower(a, symbol_param)?), Box::new(lower(b, symbol_param)?)))
        };
        Some(match node {
            DimNode::Constant(value) => Expr::Literal(Literal::I64(*value)),
            DimNode::Symbol(name) => Expr::Param(symbol_param(name)?),
            DimNode::Add(a, b) => pair(BinaryOp::Add, a, b)?,
            DimNode::Mul(a, b) => pair(BinaryOp::Mul, a, b)?,
            // Dims are non-negative, so truncating division and remainder are the floor forms.
            DimNode::FloorDiv(a, d) => Expr::Binary(
                BinaryOp::Div,
                Box::new(lower(a, symbol_param)?),
                Box::new(Expr::Literal(Literal::I64(*d))),
            ),
            DimNode::Rem(a, d) => Expr::Binary(
                BinaryOp::Rem,
                Box::new(lower(a, symbol_param)?),
                Box::new(Expr::Literal(Literal::I64(*d))),
            ),
            DimNode::Min(a, b) => pair(BinaryOp::Min, a, b)?,
            DimNode::Max(a, b) => pair(BinaryOp::Max, a, b)?,
        })
    }
    lower(&dim.to_node(), symbol_param)
}

/// Arithmetic on expressions reads as the arithmetic it builds:
/// `(row * 2 + i) * DEPTH + kk` is `Binary(Add, Binary(Mul, …), …)` node for
/// node. An `i64` operand is an i64 literal; `lt`, `le`, `eq`, `and` build
/// comparisons and conjunctions.
mod arithmetic {
    use super::{BinaryOp, Expr, Literal};

    macro_rules! operator {
        ($trait:ident, $method:ident, $op:expr) => {
            impl std::ops::$trait for Expr {
                type Output = Expr;
                fn $method(self, other: Expr) -> Expr {
                    Expr::Binary($op, Box::new(self), Box::new(other))
                }
            }
            impl std::ops::$trait<i64> for Expr {
                type Output = Expr;
                fn $method(self, other: i64) -> Expr {
                    Expr::Binary($op, Box::new(self), Box::new(Expr::Literal(Literal::I64(other))))
                }
            }
            impl std::ops::$trait<&Expr> for Expr {
                type Output = Expr;
                fn $method(self, other: &Expr) -> Expr {
                    Expr::Binary($op, Box::new(self), Box::new(other.clone()))
                }
            }
        };
    }
    operator!(Add, add, BinaryOp::Add);
    operator!(Sub, sub, BinaryOp::Sub);
    operator!(Mul, mul, BinaryOp::Mul);
    operator!(Div, div, BinaryOp::Div);
    operator!(Rem, rem, BinaryOp::Rem);
    operator!(Shl, shl, BinaryOp::Shl);
    operator!(Shr, shr, BinaryOp::Shr);
    operator!(BitAnd, bitand, BinaryOp::BitAnd);
    operator!(BitOr, bitor, BinaryOp::BitOr);
    operator!(BitXor, bitxor, BinaryOp::BitXor);

    impl Expr {
        fn compare(self, op: BinaryOp, other: impl Into<Expr>) -> Expr {
            Expr::Binary(op, Box::new(self), Box::new(other.into()))
        }
        /// `self < other`.
        pub fn lt(self, other: impl Into<Expr>) -> Expr {
            self.compare(BinaryOp::Lt, other)
        }
        /// `self <= other`.
        pub fn le(self, other: impl Into<Expr>) -> Expr {
            self.compare(BinaryOp::Le, other)
        }
        /// `self == other`.
        pub fn equals(self, other: impl Into<Expr>) -> Expr {
            self.compare(BinaryOp::Eq, other)
        }
        /// `self && other`.
        pub fn and(self, other: impl Into<Expr>) -> Expr {
            self.compare(BinaryOp::And, other)
        }
    }

    impl From<i64> for Expr {
        fn from(value: i64) -> Expr {
            Expr::Literal(Literal::I64(value))
        }
    }

    impl From<&Expr> for Expr {
        fn from(value: &Expr) -> Expr {
            value.clone()
        }
    }
}

/// Shorthands for building expressions.
pub mod build {
    use super::*;

    pub fn f32(value: f32) -> Expr {
        Expr::Literal(Literal::F32(value))
    }
    pub fn i64(value: i64) -> Expr {
        Expr::Literal(Literal::I64(value))
    }
    pub fn var(var: Var) -> Expr {
        Expr::Var(var)
    }
    pub fn param(index: usize) -> Expr {
        Expr::Param(index)
    }
    pub fn special(special: Special) -> Expr {
        Expr::Special(special)
    }
    pub fn binary(op: BinaryOp, a: Expr, b: Expr) -> Expr {
        Expr::Binary(op, Box::new(a), Box::new(b))
    }
    pub fn unary(op: UnaryOp, a: Expr) -> Expr {
        Expr::Unary(op, Box::new(a))
    }
    pub fn add(a: Expr, b: Expr) -> Expr {
        binary(BinaryOp::Add, a, b)
    }
    pub fn mul(a: Expr, b: Expr) -> Expr {
        binary(BinaryOp::Mul, a, b)
    }
    pub fn lt(a: Expr, b: Expr) -> Expr {
        binary(BinaryOp::Lt, a, b)
    }
    pub fn load(buffer: usize, index: Expr) -> Expr {
        Expr::Load { buffer, index: Box::new(index) }
    }
    pub fn cast(dtype: DType, value: Expr) -> Expr {
        Expr::Cast(dtype, Box::new(value))
    }
    pub fn convert(dtype: DType, rounding: Rounding, value: Expr) -> Expr {
        Expr::Convert { dtype, rounding, value: Box::new(value) }
    }
    pub fn bitcast(dtype: DType, value: Expr) -> Expr {
        Expr::Bitcast(dtype, Box::new(value))
    }
    pub fn fma(a: Expr, b: Expr, c: Expr) -> Expr {
        Expr::Fma(Box::new(a), Box::new(b), Box::new(c))
    }
    /// `blockIdx · blockDim + threadIdx` as i64.
    pub fn global_thread_index() -> Expr {
        add(
            mul(cast(DType::I64, special(Special::BlockIndex)), cast(DType::I64, special(Special::BlockThreads))),
            cast(DType::I64, special(Special::ThreadIndex)),
        )
    }
}
