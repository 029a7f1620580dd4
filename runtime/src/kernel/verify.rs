//! The static verifier of kernel IR: what must hold of any kernel before it
//! is lowered, simulated or shipped.
//!
//! - **types**: every expression has one register type
//!   ([`super::register_type`]); binary operands agree, indices and loop
//!   bounds are integers, conditions are bool or integers; shifts and
//!   bitwise operations take integers, bit casts keep the width, `fma` takes
//!   f32, rounding conversions go between floats and integers or narrow f32;
//!   a `let` or an assignment keeps its variable's type (a float may round
//!   to another float);
//! - **definition before use**: a variable is read only inside the block of
//!   its `let` (or loop) after it, and assigned only there;
//! - **parameters as declared**: loads, stores and vector accesses name
//!   buffer parameters or shared arrays; stores and atomics only writable
//!   buffers; scalar reads only scalar parameters; vector widths are legal;
//! - **barriers** only under control flow that is the same in every thread
//!   of the block ([`super::divergent_vars`]);
//! - **static shared memory**: arrays within the device limit, aligned to a
//!   power of two, constant indices within their array.

use std::collections::{HashMap, HashSet};

use super::{
    collective_shape_error, divergent_vars, is_register_type, is_uniform, is_vector_width, register_type, Expr, Kernel,
    Literal, Memory, Param, Rounding, SharedArray, Stmt, UnaryOp, Var,
};
use crate::DType;

/// Shared memory a block may have on the devices kiln targets (sm_90's 227 KiB).
pub const SHARED_LIMIT: usize = 227 * 1024;

/// What is wrong with a kernel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kernel `{kernel}`: {message}")]
pub struct KernelVerifyError {
    pub kernel: String,
    pub message: String,
}

/// Checks every rule in the module docs; the first violation is the error.
pub fn verify_kernel(kernel: &Kernel) -> Result<(), KernelVerifyError> {
    let fail = |message: String| KernelVerifyError { kernel: kernel.name.clone(), message };
    if !(1..=1024).contains(&kernel.block_threads) {
        return Err(fail(format!("{} threads per block (1 to 1024)", kernel.block_threads)));
    }
    let mut names = HashSet::new();
    for name in kernel.params.iter().map(Param::name).chain(kernel.shared.iter().map(|a| a.name.as_str())) {
        if !names.insert(name) {
            return Err(fail(format!("two parameters or shared arrays are called `{name}`")));
        }
    }
    for array in &kernel.shared {
        if !array.align.is_power_of_two()
            || array.align < SharedArray::MIN_ALIGN
            || array.align > SharedArray::MAX_ALIGN
        {
            return Err(fail(format!("shared `{}` is aligned to {} bytes", array.name, array.align)));
        }
    }
    let element_types = kernel
        .params
        .iter()
        .map(|param| match param {
            Param::Buffer { name, dtype, .. } | Param::Scalar { name, dtype } => (name, *dtype),
        })
        .chain(kernel.shared.iter().map(|array| (&array.name, array.dtype)));
    for (name, dtype) in element_types {
        if !dtype.has_kernels() {
            return Err(fail(format!("`{name}` holds {dtype}, an element type kiln's kernels do not compute with")));
        }
    }
    if kernel.shared_bytes() > SHARED_LIMIT {
        return Err(fail(format!("{} bytes of shared memory (at most {SHARED_LIMIT})", kernel.shared_bytes())));
    }
    let mut checker = Checker { kernel, divergent: divergent_vars(&kernel.body), scopes: vec![HashMap::new()] };
    checker.block(&kernel.body, true).map_err(fail)
}

struct Checker<'k> {
    kernel: &'k Kernel,
    divergent: HashSet<Var>,
    /// Variables in scope, innermost block last, with their register types.
    scopes: Vec<HashMap<Var, DType>>,
}

/// Whether a value of type `value` may be written to a variable of `var`:
/// the same type, or floats (rounded).
fn assignable(value: DType, var: DType) -> bool {
    value == var || (value.is_float() && var.is_float())
}

fn is_integer(dtype: DType) -> bool {
    matches!(dtype, DType::I64 | DType::I32 | DType::U32 | DType::U64)
}

/// Why `value` cannot be converted to `to` with `rounding`, if it cannot:
/// the conversions PTX rounds — float → integer and integer → f32 in every
/// mode, f32 → f16/bf16 to nearest or toward zero.
fn rounding_conversion_error(value: DType, to: DType, rounding: Rounding) -> Option<String> {
    let narrowing = value == DType::F32 && matches!(to, DType::F16 | DType::BF16);
    if narrowing {
        return matches!(rounding, Rounding::Down | Rounding::Up)
            .then(|| format!("f32 to {to} rounds {} (to nearest or toward zero only)", rounding.name()));
    }
    let float_integer = (value.is_float() && is_integer(to)) || (is_integer(value) && to == DType::F32);
    (!float_integer).then(|| format!("a rounding conversion from {value} to {to}"))
}

/// The bit width of `dtype` as a bit-cast operand, for register types that can be bit-cast.
fn bitcast_width(dtype: DType) -> Option<usize> {
    match dtype {
        DType::F32 | DType::I32 | DType::U32 => Some(32),
        DType::I64 | DType::U64 => Some(64),
        _ => None,
    }
}

impl Checker<'_> {
    fn var_type(&self, var: Var) -> Option<DType> {
        self.scopes.iter().rev().find_map(|scope| scope.get(&var).copied())
    }

    fn declare(&mut self, var: Var, dtype: DType) {
        self.scopes.last_mut().expect("a scope").insert(var, dtype);
    }

    fn nested(&mut self, body: &[Stmt], uniform: bool, loop_var: Option<Var>) -> Result<(), String> {
        self.scopes.push(HashMap::new());
        if let Some(var) = loop_var {
            self.declare(var, DType::I64);
        }
        let result = self.block(body, uniform);
        self.scopes.pop();
        result
    }

    fn block(&mut self, body: &[Stmt], uniform: bool) -> Result<(), String> {
        body.iter().try_for_each(|stmt| self.statement(stmt, uniform))
    }

    fn buffer(&self, buffer: usize, write: bool, what: &str) -> Result<DType, String> {
        match self.kernel.params.get(buffer) {
            Some(Param::Buffer { name, writable, dtype }) => {
                if write && !writable {
                    return Err(format!("{what} writes `{name}`, an input buffer"));
                }
                Ok(*dtype)
            }
            Some(Param::Scalar { name, .. }) => Err(format!("{what} addresses `{name}`, a scalar parameter")),
            None => Err(format!("{what} addresses parameter {buffer}, which does not exist")),
        }
    }

    fn shared(&self, array: usize, index: &Expr) -> Result<DType, String> {
        let Some(shared) = self.kernel.shared.get(array) else {
            return Err(format!("shared array {array} does not exist"));
        };
        if let Expr::Literal(Literal::I64(i)) = index {
            if *i < 0 || *i as usize >= shared.elements {
                return Err(format!("shared `{}`[{i}] is outside its {} elements", shared.name, shared.elements));
            }
        }
        Ok(shared.dtype)
    }

    fn memory(&self, memory: Memory, index: &Expr, write: bool, what: &str) -> Result<DType, String> {
        match memory {
            Memory::Buffer(buffer) => self.buffer(buffer, write, what),
            Memory::Shared(array) => self.shared(array, index),
        }
    }

    fn index(&self, index: &Expr, what: &str) -> Result<(), String> {
        let dtype = self.expr(index)?;
        if !is_integer(dtype) {
            return Err(format!("the index of {what} is {dtype}, not an integer"));
        }
        Ok(())
    }

    fn statement(&mut self, stmt: &Stmt, uniform: bool) -> Result<(), String> {
        match stmt {
            Stmt::Let { var, dtype, value } => {
                let found = self.expr(value)?;
                if !assignable(found, *dtype) {
                    return Err(format!("`let v{}: {dtype}` is given a {found}", var.0));
                }
                self.declare(*var, *dtype);
            }
            Stmt::Assign { var, value } => {
                let found = self.expr(value)?;
                let Some(dtype) = self.var_type(*var) else {
                    return Err(format!("v{} is assigned outside the block of its let", var.0));
                };
                if !assignable(found, dtype) {
                    return Err(format!("v{} ({dtype}) is assigned a {found}", var.0));
                }
            }
            Stmt::Store { buffer, index, value } | Stmt::AtomicAdd { buffer, index, value } => {
                let atomic = matches!(stmt, Stmt::AtomicAdd { .. });
                let what = if atomic { "an atomic add" } else { "a store" };
                self.buffer(*buffer, true, what)?;
                self.index(index, what)?;
                let found = self.expr(value)?;
                if atomic && !found.is_float() {
                    return Err(format!("an atomic add of a {found} (atomics add floats)"));
                }
            }
            Stmt::SharedStore { array, index, value } => {
                self.shared(*array, index)?;
                self.index(index, "a shared store")?;
                self.expr(value)?;
            }
            Stmt::VectorLoad { vars, dtype, memory, index } => {
                let element = self.memory(*memory, index, false, "a vector load")?;
                if !is_vector_width(element, vars.len()) {
                    return Err(format!("a vector load of {} {element} elements", vars.len()));
                }
                self.index(index, "a vector load")?;
                if !assignable(register_type(element), *dtype) {
                    return Err(format!("a vector load of {element} into {dtype} variables"));
                }
                for var in vars {
                    self.declare(*var, *dtype);
                }
            }
            Stmt::VectorStore { memory, index, values } => {
                let element = self.memory(*memory, index, true, "a vector store")?;
                if !is_vector_width(element, values.len()) {
                    return Err(format!("a vector store of {} {element} elements", values.len()));
                }
                self.index(index, "a vector store")?;
                for value in values {
                    self.expr(value)?;
                }
            }
            Stmt::If { condition, then, otherwise } => {
                let found = self.expr(condition)?;
                if found != DType::Bool && !is_integer(found) {
                    return Err(format!("an if condition of type {found}"));
                }
                let inner = uniform && is_uniform(condition, &self.divergent);
                self.nested(then, inner, None)?;
                self.nested(otherwise, inner, None)?;
            }
            Stmt::For { var, start, end, step, body } => {
                if *step <= 0 {
                    return Err(format!("loop v{} steps by {step} (steps are positive)", var.0));
                }
                for (bound, which) in [(start, "start"), (end, "end")] {
                    let found = self.expr(bound)?;
                    if !is_integer(found) {
                        return Err(format!("loop v{}'s {which} is {found}, not an integer", var.0));
                    }
                }
                let inner = uniform && is_uniform(start, &self.divergent) && is_uniform(end, &self.divergent);
                self.nested(body, inner, Some(*var))?;
            }
            Stmt::Barrier => {
                if !uniform {
                    return Err("a barrier under control flow that differs between threads of a block".into());
                }
            }
            Stmt::LoadMatrix { vars, array, index, .. } => {
                self.warp_collective("ldmatrix", uniform)?;
                self.shared(*array, index)?;
                if let Some(error) = collective_shape_error(self.kernel, stmt) {
                    return Err(error);
                }
                self.index(index, "an ldmatrix")?;
                for var in vars {
                    self.declare(*var, DType::U32);
                }
            }
            Stmt::MatrixMultiplyAccumulate { acc, a, b, .. } => {
                self.warp_collective("mma", uniform)?;
                if let Some(error) = collective_shape_error(self.kernel, stmt) {
                    return Err(error);
                }
                for var in acc {
                    match self.var_type(*var) {
                        Some(DType::F32) => {}
                        Some(other) => return Err(format!("mma accumulator v{} is {other}, not f32", var.0)),
                        None => return Err(format!("mma accumulator v{} is used outside the block of its let", var.0)),
                    }
                }
                for operand in a.iter().chain(b) {
                    let found = self.expr(operand)?;
                    if found != DType::U32 {
                        return Err(format!("an mma operand of type {found} (operands are u32 registers)"));
                    }
                }
            }
            Stmt::AsyncCopy { array, shared_index, buffer, index, source_elements, .. } => {
                self.buffer(*buffer, false, "a cp.async")?;
                self.shared(*array, shared_index)?;
                if let Some(error) = collective_shape_error(self.kernel, stmt) {
                    return Err(error);
                }
                self.index(shared_index, "a cp.async")?;
                self.index(index, "a cp.async")?;
                let found = self.expr(source_elements)?;
                if !is_integer(found) {
                    return Err(format!("a cp.async's source element count is {found}, not an integer"));
                }
            }
            Stmt::AsyncCommit | Stmt::AsyncWait { .. } => {}
        }
        Ok(())
    }

    /// A warp collective needs whole warps that all execute it.
    fn warp_collective(&self, what: &str, uniform: bool) -> Result<(), String> {
        if self.kernel.block_threads % 32 != 0 {
            return Err(format!(
                "{what} in a block of {} threads (warp collectives need whole warps)",
                self.kernel.block_threads
            ));
        }
        if !uniform {
            return Err(format!("{what} under control flow that differs between threads (every lane must execute it)"));
        }
        Ok(())
    }

    fn expr(&self, expr: &Expr) -> Result<DType, String> {
        Ok(match expr {
            Expr::Literal(literal) => literal.dtype(),
            Expr::Var(var) => self.var_type(*var).ok_or_else(|| format!("v{} is read before its let", var.0))?,
            Expr::Param(index) => match self.kernel.params.get(*index) {
                Some(Param::Scalar { dtype, .. }) => *dtype,
                Some(Param::Buffer { name, .. }) => return Err(format!("`{name}`, a buffer, is read as a scalar")),
                None => return Err(format!("parameter {index} does not exist")),
            },
            Expr::Special(_) => DType::I32,
            Expr::Unary(op, a) => {
                let found = self.expr(a)?;
                let float_only = !matches!(op, UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Not | UnaryOp::BitNot);
                if float_only && !found.is_float() || *op == UnaryOp::BitNot && !is_integer(found) {
                    return Err(format!("{op:?} of a {found}"));
                }
                found
            }
            Expr::Binary(op, a, b) => {
                let (x, y) = (self.expr(a)?, self.expr(b)?);
                if x != y {
                    return Err(format!("{op:?} of a {x} and a {y}"));
                }
                if op.is_bitwise() && !is_integer(x) {
                    return Err(format!("{op:?} of {x}s (shifts and bitwise operations take integers)"));
                }
                if op.is_comparison() {
                    DType::Bool
                } else {
                    x
                }
            }
            Expr::Select(c, a, b) => {
                let condition = self.expr(c)?;
                let (x, y) = (self.expr(a)?, self.expr(b)?);
                if condition != DType::Bool && !is_integer(condition) {
                    return Err(format!("a select on a {condition}"));
                }
                if x != y {
                    return Err(format!("a select between a {x} and a {y}"));
                }
                x
            }
            Expr::Cast(dtype, a) => {
                self.expr(a)?;
                if !is_register_type(*dtype) {
                    return Err(format!("a cast to {dtype}, which is not a register type"));
                }
                *dtype
            }
            Expr::Convert { dtype, rounding, value } => {
                let found = self.expr(value)?;
                if let Some(error) = rounding_conversion_error(found, *dtype, *rounding) {
                    return Err(error);
                }
                *dtype
            }
            Expr::Bitcast(dtype, a) => {
                let found = self.expr(a)?;
                match (bitcast_width(found), bitcast_width(*dtype)) {
                    (Some(from), Some(to)) if from == to => *dtype,
                    _ => {
                        return Err(format!("a bit cast from {found} to {dtype} (same-width f32, i32, u32, i64, u64)"))
                    }
                }
            }
            Expr::Fma(a, b, c) => {
                let types = [self.expr(a)?, self.expr(b)?, self.expr(c)?];
                if types != [DType::F32; 3] {
                    return Err(format!("an fma of {}, {} and {} (fma takes f32)", types[0], types[1], types[2]));
                }
                DType::F32
            }
            Expr::Load { buffer, index } => {
                let element = self.buffer(*buffer, false, "a load")?;
                self.index(index, "a load")?;
                register_type(element)
            }
            Expr::SharedLoad { array, index } => {
                let element = self.shared(*array, index)?;
                self.index(index, "a shared load")?;
                register_type(element)
            }
            Expr::ShuffleXor { value, mask } => {
                if *mask >= 64 {
                    return Err(format!("a shuffle across {mask} lanes"));
                }
                self.expr(value)?
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::parse_kernel;

    fn error_of(body: &str) -> String {
        let text = format!(
            "kernel k(in x: f32*, out y: f32*, n: i64) threads 64 blocks 1 {{\n  shared s: f32[64] align 16\n{body}}}\n"
        );
        let kernel = parse_kernel(&text).unwrap();
        verify_kernel(&kernel).err().map(|e| e.message).unwrap_or_default()
    }

    #[test]
    fn each_rule_rejects_what_breaks_it() {
        assert_eq!(error_of("  let v0: i64 = i64(thread)\n  y[v0] = x[v0]\n"), "");
        assert!(error_of("  y[v0] = 1.0\n").contains("v0 is read before its let"));
        assert!(error_of("  let v0: i64 = (1 + 1.0)\n").contains("Add of a i64 and a f32"));
        assert!(error_of("  x[0] = 1.0\n").contains("writes `x`, an input buffer"));
        // The parser refuses `n[0]` already; a kernel built in code can still say it.
        let mut kernel =
            parse_kernel("kernel k(out y: f32*, n: i64) threads 32 blocks 1 {\n  y[0] = 1.0\n}\n").unwrap();
        kernel.body = vec![Stmt::Store {
            buffer: 0,
            index: Expr::Literal(Literal::I64(0)),
            value: Expr::Load { buffer: 1, index: Box::new(Expr::Literal(Literal::I64(0))) },
        }];
        assert!(verify_kernel(&kernel).unwrap_err().message.contains("`n`, a scalar parameter"));
        assert!(error_of("  s[64] = 1.0\n").contains("outside its 64 elements"));
        assert!(error_of("  if (i64(thread) < 32) {\n    barrier\n  }\n").contains("a barrier under control flow"));
        assert_eq!(
            error_of("  if (i64(block) < 32) {\n    barrier\n  }\n"),
            "",
            "a block-uniform branch may hold a barrier"
        );
        assert!(error_of("  if (i64(thread) < 32) {\n    let v1: f32 = 1.0\n  }\n  y[0] = v1\n")
            .contains("v1 is read before"));
        assert!(error_of("  y[0] = (x[0] >> x[1])\n").contains("shifts and bitwise operations take integers"));
        assert!(error_of("  y[0] = f32(bitcast(u64, x[0]))\n").contains("a bit cast from f32 to u64"));
        assert_eq!(error_of("  y[0] = bitcast(f32, bitcast(u32, x[0]))\n"), "");
        assert!(error_of("  y[0] = fma(x[0], x[1], f16(1.0))\n").contains("fma takes f32"));
        assert!(error_of("  y[0] = convert(f16, rm, x[0])\n").contains("to nearest or toward zero only"));
        assert!(error_of("  y[0] = convert(f16, rz, i64(thread))\n").contains("a rounding conversion from i64 to f16"));
        assert_eq!(error_of("  y[0] = convert(f32, rp, convert(u64, rm, x[0]))\n"), "");
        assert!(error_of("  y[0] = f32(bitnot(x[0]))\n").contains("BitNot of a f32"));
        let eight = "  let v0, v1, v2, v3, v4, v5, v6, v7: f32 = x.v8[0]\n";
        assert!(error_of(eight).contains("a vector load of 8 f32 elements"), "{}", error_of(eight));
    }
}
