//! Kernel IR → MLIR text: one `gpu.func` per kernel in a `gpu.module`.
//!
//! The lowering is one-to-one: buffer parameters are bare `!llvm.ptr`s
//! (element addresses by `llvm.getelementptr`), scalars are `i64`/`f32`,
//! shared arrays are workgroup attributions, per-thread variables are
//! `llvm.alloca` slots (promoted to registers by LLVM), `if`/`for` are
//! `scf.if`/`scf.for`, barriers `gpu.barrier`, shuffles `gpu.shuffle xor`,
//! math functions `math.*` (resolved by linking libdevice). The block size is
//! `nvvm.reqntid` (NVIDIA) or `rocdl.reqd_work_group_size` (AMD).

use std::collections::BTreeMap;
use std::fmt::Write;

use kiln_runtime::kernel::{
    BinaryOp, Expr, Kernel, Literal, Memory, MmaKind, Param, Rounding, Special, Stmt, UnaryOp, Var,
};
use kiln_runtime::DType;

/// Which vendor's attributes the function carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    Nvidia,
    Amd,
}

/// The MLIR type of a register of `dtype`.
fn register_type(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::I64 | DType::U64 => "i64",
        DType::I32 | DType::U32 => "i32",
        DType::Bool => "i1",
        DType::I16 | DType::U16 => "i16",
        DType::F64 => "f64",
        // The 8-bit floats and the sub-byte types (kept one per byte) as their bytes.
        _ => "i8",
    }
}

/// The MLIR type of one element of a buffer of `dtype` in memory.
fn memory_type(dtype: DType) -> &'static str {
    match dtype {
        DType::Bool => "i8",
        other => register_type(other),
    }
}

/// A value of the function: SSA name and register dtype.
#[derive(Clone)]
struct Ssa {
    name: String,
    dtype: DType,
}

struct Emitter<'k> {
    kernel: &'k Kernel,
    vendor: Vendor,
    text: String,
    depth: usize,
    counter: usize,
    variables: BTreeMap<Var, DType>,
}

/// The `gpu.func` of `kernel` (without the enclosing module).
pub fn kernel_function(kernel: &Kernel, vendor: Vendor) -> Result<String, String> {
    let mut variables = BTreeMap::new();
    collect_variables(&kernel.body, &mut variables);
    let mut emitter = Emitter { kernel, vendor, text: String::new(), depth: 2, counter: 0, variables };
    emitter.function(vendor)?;
    Ok(emitter.text)
}

/// A whole module for `target_attribute` (e.g. `#nvvm.target<…>`) holding `kernels`.
pub fn kernel_module(kernels: &[&Kernel], target_attribute: &str, vendor: Vendor) -> Result<String, String> {
    let mut text = String::from("module attributes {gpu.container_module} {\n");
    let _ = writeln!(text, "  gpu.module @kernels [{target_attribute}] {{");
    for kernel in kernels.iter().filter(|k| k.uses_dynamic_shared()) {
        text.push_str(&dynamic_shared_global(kernel));
    }
    for kernel in kernels {
        text.push_str(&kernel_function(kernel, vendor)?);
    }
    text.push_str("  }\n}\n");
    Ok(text)
}

/// The symbol of `kernel`'s dynamic shared memory.
fn dynamic_shared_symbol(kernel: &Kernel) -> String {
    format!("{}_dynamic_shared", kernel.name)
}

/// The module-level declaration of `kernel`'s dynamic shared memory: a
/// public, uninitialized, zero-length workgroup global, which becomes
/// `.extern .shared .align N .b8 name[]` in PTX (the launch provides the
/// bytes). `gpu.dynamic_shared_memory` is not used: it lowers to an internal
/// zero-length array that ptxas may place on top of static shared arrays.
fn dynamic_shared_global(kernel: &Kernel) -> String {
    format!(
        "    memref.global @{} : memref<0xi8, #gpu.address_space<workgroup>> {{alignment = {} : i64}}\n",
        dynamic_shared_symbol(kernel),
        kernel.shared_align()
    )
}

fn collect_variables(body: &[Stmt], variables: &mut BTreeMap<Var, DType>) {
    for stmt in body {
        match stmt {
            Stmt::Let { var, dtype, .. } => {
                variables.insert(*var, *dtype);
            }
            Stmt::VectorLoad { vars, dtype, .. } => {
                vars.iter().for_each(|var| {
                    variables.insert(*var, *dtype);
                });
            }
            Stmt::LoadMatrix { vars, .. } => {
                vars.iter().for_each(|var| {
                    variables.insert(*var, DType::U32);
                });
            }
            Stmt::If { then, otherwise, .. } => {
                collect_variables(then, variables);
                collect_variables(otherwise, variables);
            }
            Stmt::For { var, body, .. } => {
                variables.insert(*var, DType::I64);
                collect_variables(body, variables);
            }
            _ => {}
        }
    }
}

impl Emitter<'_> {
    fn line(&mut self, line: &str) {
        for _ in 0..self.depth {
            self.text.push_str("  ");
        }
        self.text.push_str(line);
        self.text.push('\n');
    }

    fn fresh(&mut self) -> String {
        self.counter += 1;
        format!("%t{}", self.counter)
    }

    fn function(&mut self, vendor: Vendor) -> Result<(), String> {
        let kernel = self.kernel;
        let params: Vec<String> = kernel
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| match p {
                Param::Buffer { .. } => format!("%arg{i}: !llvm.ptr"),
                Param::Scalar { dtype, .. } => format!("%arg{i}: {}", register_type(*dtype)),
            })
            .collect();
        let dynamic = kernel.uses_dynamic_shared();
        let workgroup: Vec<String> = kernel
            .shared
            .iter()
            .enumerate()
            .filter(|_| !dynamic)
            .map(|(i, a)| {
                format!(
                    "%shared{i}: memref<{}x{}, #gpu.address_space<workgroup>> {{llvm.align = {} : i64}}",
                    a.elements,
                    memory_type(a.dtype),
                    a.align
                )
            })
            .collect();
        let workgroup =
            if workgroup.is_empty() { String::new() } else { format!(" workgroup({})", workgroup.join(", ")) };
        let size = kernel.block_threads;
        let attributes = match vendor {
            Vendor::Nvidia => format!("nvvm.reqntid = array<i32: {size}, 1, 1>"),
            Vendor::Amd => format!(
                "rocdl.reqd_work_group_size = array<i32: {size}, 1, 1>, rocdl.flat_work_group_size = \"{size},{size}\""
            ),
        };
        self.depth = 2;
        self.line(&format!(
            "gpu.func @{}({}){workgroup} kernel attributes {{{attributes}}} {{",
            kernel.name,
            params.join(", ")
        ));
        self.depth = 3;
        self.line("%one = arith.constant 1 : i64");
        if dynamic {
            // Beyond the static limit, the arrays are views into the dynamic
            // shared memory the launch provides (`Kernel::dynamic_shared_bytes`),
            // declared as an external shared array (see `dynamic_shared_global`).
            let global = dynamic_shared_symbol(kernel);
            self.line(&format!("%dynamic = memref.get_global @{global} : memref<0xi8, #gpu.address_space<workgroup>>"));
            for (index, (array, offset)) in kernel.shared.iter().zip(kernel.shared_offsets()).enumerate() {
                self.line(&format!("%offset{index} = arith.constant {offset} : index"));
                self.line(&format!(
                    "%shared{index} = memref.view %dynamic[%offset{index}][] : memref<0xi8, #gpu.address_space<workgroup>> to memref<{}x{}, #gpu.address_space<workgroup>>",
                    array.elements,
                    memory_type(array.dtype)
                ));
            }
        }
        let variables: Vec<(Var, DType)> = self.variables.iter().map(|(v, d)| (*v, *d)).collect();
        for (var, dtype) in variables {
            self.line(&format!("%v{} = llvm.alloca %one x {} : (i64) -> !llvm.ptr", var.0, register_type(dtype)));
        }
        self.block(&kernel.body)?;
        self.line("gpu.return");
        self.depth = 2;
        self.line("}");
        Ok(())
    }

    fn block(&mut self, body: &[Stmt]) -> Result<(), String> {
        for stmt in body {
            self.statement(stmt)?;
        }
        Ok(())
    }

    fn statement(&mut self, stmt: &Stmt) -> Result<(), String> {
        match stmt {
            Stmt::Let { var, dtype, value } => {
                let value = self.expression(value)?;
                let value = self.convert(value, *dtype)?;
                self.line(&format!("llvm.store {}, %v{} : {}, !llvm.ptr", value.name, var.0, register_type(*dtype)));
            }
            Stmt::Assign { var, value } => {
                let dtype = *self.variables.get(var).ok_or(format!("v{} has no let", var.0))?;
                let value = self.expression(value)?;
                let value = self.convert(value, dtype)?;
                self.line(&format!("llvm.store {}, %v{} : {}, !llvm.ptr", value.name, var.0, register_type(dtype)));
            }
            Stmt::Store { buffer, index, value } | Stmt::AtomicAdd { buffer, index, value } => {
                let Param::Buffer { dtype, .. } = &self.kernel.params[*buffer] else {
                    return Err("a store to a scalar".into());
                };
                let dtype = *dtype;
                let address = self.address(*buffer, index)?;
                let value = self.expression(value)?;
                let value = self.store_form(value, dtype)?;
                if matches!(stmt, Stmt::AtomicAdd { .. }) {
                    let operation = if dtype.is_float() { "fadd" } else { "add" };
                    let result = self.fresh();
                    self.line(&format!(
                        "{result} = llvm.atomicrmw {operation} {address}, {} monotonic : !llvm.ptr, {}",
                        value,
                        memory_type(dtype)
                    ));
                } else {
                    self.line(&format!("llvm.store {value}, {address} : {}, !llvm.ptr", memory_type(dtype)));
                }
            }
            Stmt::VectorLoad { vars, dtype: var_dtype, memory, index } => {
                let (element, vector) = self.vector_type(*memory, vars.len())?;
                let alignment = vars.len() * element.size_in_bytes();
                let loaded = match *memory {
                    Memory::Buffer(buffer) => {
                        let address = self.address(buffer, index)?;
                        let loaded = self.fresh();
                        self.line(&format!(
                            "{loaded} = llvm.load {address} {{alignment = {alignment} : i64}} : !llvm.ptr -> {vector}"
                        ));
                        loaded
                    }
                    Memory::Shared(array) => {
                        let index = self.index(index)?;
                        let memref = self.shared_memref(array);
                        let loaded = self.fresh();
                        self.line(&format!(
                            "{loaded} = vector.load %shared{array}[{index}] {{alignment = {alignment} : i64}} : {memref}, {vector}"
                        ));
                        loaded
                    }
                };
                for (position, var) in vars.iter().enumerate() {
                    let (lane, value) = (self.fresh(), self.fresh());
                    self.line(&format!("{lane} = llvm.mlir.constant({position} : i32) : i32"));
                    self.line(&format!("{value} = llvm.extractelement {loaded}[{lane} : i32] : {vector}"));
                    let value = self.register_form(value, element)?;
                    let value = self.convert(value, *var_dtype)?;
                    self.line(&format!(
                        "llvm.store {}, %v{} : {}, !llvm.ptr",
                        value.name,
                        var.0,
                        register_type(*var_dtype)
                    ));
                }
            }
            Stmt::VectorStore { memory, index, values } => {
                let (element, vector) = self.vector_type(*memory, values.len())?;
                let mut assembled = self.fresh();
                self.line(&format!("{assembled} = llvm.mlir.poison : {vector}"));
                for (position, value) in values.iter().enumerate() {
                    let value = self.expression(value)?;
                    let value = self.store_form(value, element)?;
                    let (lane, next) = (self.fresh(), self.fresh());
                    self.line(&format!("{lane} = llvm.mlir.constant({position} : i32) : i32"));
                    self.line(&format!("{next} = llvm.insertelement {value}, {assembled}[{lane} : i32] : {vector}"));
                    assembled = next;
                }
                let alignment = values.len() * element.size_in_bytes();
                match *memory {
                    Memory::Buffer(buffer) => {
                        let address = self.address(buffer, index)?;
                        self.line(&format!(
                            "llvm.store {assembled}, {address} {{alignment = {alignment} : i64}} : {vector}, !llvm.ptr"
                        ));
                    }
                    Memory::Shared(array) => {
                        let index = self.index(index)?;
                        let memref = self.shared_memref(array);
                        self.line(&format!(
                            "vector.store {assembled}, %shared{array}[{index}] {{alignment = {alignment} : i64}} : {memref}, {vector}"
                        ));
                    }
                }
            }
            Stmt::SharedStore { array, index, value } => {
                let dtype = self.kernel.shared[*array].dtype;
                let index = self.index(index)?;
                let value = self.expression(value)?;
                let value = self.store_form(value, dtype)?;
                let elements = self.kernel.shared[*array].elements;
                self.line(&format!(
                    "memref.store {value}, %shared{array}[{index}] : memref<{elements}x{}, #gpu.address_space<workgroup>>",
                    memory_type(dtype)
                ));
            }
            Stmt::If { condition, then, otherwise } => {
                let condition = self.expression(condition)?;
                let condition = self.convert(condition, DType::Bool)?;
                self.line(&format!("scf.if {} {{", condition.name));
                self.depth += 1;
                self.block(then)?;
                self.depth -= 1;
                if otherwise.is_empty() {
                    self.line("}");
                } else {
                    self.line("} else {");
                    self.depth += 1;
                    self.block(otherwise)?;
                    self.depth -= 1;
                    self.line("}");
                }
            }
            Stmt::For { var, start, end, step, body } => {
                let start = self.expression(start)?;
                let start = self.convert(start, DType::I64)?;
                let end = self.expression(end)?;
                let end = self.convert(end, DType::I64)?;
                let step_name = self.fresh();
                self.line(&format!("{step_name} = arith.constant {step} : i64"));
                let induction = self.fresh();
                self.line(&format!("scf.for {induction} = {} to {} step {step_name} : i64 {{", start.name, end.name));
                self.depth += 1;
                self.line(&format!("llvm.store {induction}, %v{} : i64, !llvm.ptr", var.0));
                self.block(body)?;
                self.depth -= 1;
                self.line("}");
            }
            Stmt::Barrier => self.line("gpu.barrier"),
            Stmt::LoadMatrix { vars, array, index, transpose } => {
                self.nvidia_only("ldmatrix")?;
                let index = self.index(index)?;
                let memref = self.shared_memref(*array);
                let element = memory_type(self.kernel.shared[*array].dtype);
                let count = vars.len();
                let matrices = self.fresh();
                self.line(&format!(
                    "{matrices} = nvgpu.ldmatrix %shared{array}[{index}] {{numTiles = {count} : i32, transpose = {transpose}}} : {memref} -> vector<{count}x2x{element}>"
                ));
                for (position, var) in vars.iter().enumerate() {
                    let (pair, word, value) = (self.fresh(), self.fresh(), self.fresh());
                    self.line(&format!(
                        "{pair} = vector.extract {matrices}[{position}] : vector<2x{element}> from vector<{count}x2x{element}>"
                    ));
                    self.line(&format!("{word} = vector.bitcast {pair} : vector<2x{element}> to vector<1xi32>"));
                    self.line(&format!("{value} = vector.extract {word}[0] : i32 from vector<1xi32>"));
                    self.line(&format!("llvm.store {value}, %v{} : i32, !llvm.ptr", var.0));
                }
            }
            Stmt::MatrixMultiplyAccumulate { kind, acc, a, b } => {
                self.nvidia_only("mma")?;
                // f16 operands are `vector<2xf16>` in NVVM; bf16 and tf32 ones are i32.
                let (ptx_type, operand_type, k) = match kind {
                    MmaKind::Bf16M16N8K16 => ("bf16", "i32", 16),
                    MmaKind::F16M16N8K16 => ("f16", "vector<2xf16>", 16),
                    MmaKind::Tf32M16N8K8 => ("tf32", "i32", 8),
                };
                let mut operands = Vec::with_capacity(6);
                for operand in a.iter().chain(b) {
                    let value = self.expression(operand)?;
                    let value = self.convert(value, DType::U32)?;
                    if operand_type == "i32" {
                        operands.push(value.name);
                    } else {
                        let cast = self.fresh();
                        self.line(&format!("{cast} = llvm.bitcast {} : i32 to {operand_type}", value.name));
                        operands.push(cast);
                    }
                }
                let mut accumulators = Vec::with_capacity(4);
                for var in acc {
                    accumulators.push(self.expression(&Expr::Var(*var))?.name);
                }
                let result = self.fresh();
                self.line(&format!(
                    "{result} = nvvm.mma.sync A[{}] B[{}] C[{}] {{layoutA = #nvvm.mma_layout<row>, layoutB = #nvvm.mma_layout<col>, \
                     multiplicandAPtxType = #nvvm.mma_type<{ptx_type}>, multiplicandBPtxType = #nvvm.mma_type<{ptx_type}>, \
                     shape = #nvvm.shape<m = 16, n = 8, k = {k}>}} : ({operand_type}, {operand_type}, f32) -> !llvm.struct<(f32, f32, f32, f32)>",
                    operands[..4].join(", "),
                    operands[4..].join(", "),
                    accumulators.join(", ")
                ));
                for (position, var) in acc.iter().enumerate() {
                    let value = self.fresh();
                    self.line(&format!(
                        "{value} = llvm.extractvalue {result}[{position}] : !llvm.struct<(f32, f32, f32, f32)>"
                    ));
                    self.line(&format!("llvm.store {value}, %v{} : f32, !llvm.ptr", var.0));
                }
            }
            Stmt::AsyncCopy { array, shared_index, buffer, index, elements, source_elements } => {
                self.nvidia_only("cp.async")?;
                let size = self.kernel.shared[*array].dtype.size_in_bytes();
                let bytes = *elements as usize * size;
                // The destination: the array's shared address plus the byte offset.
                let memref = self.shared_memref(*array);
                let (base, base_i64) = (self.fresh(), self.fresh());
                self.line(&format!(
                    "{base} = memref.extract_aligned_pointer_as_index %shared{array} : {memref} -> index"
                ));
                self.line(&format!("{base_i64} = arith.index_cast {base} : index to i64"));
                let offset = self.expression(shared_index)?;
                let offset = self.convert(offset, DType::I64)?;
                let (scale, scaled, address, destination) = (self.fresh(), self.fresh(), self.fresh(), self.fresh());
                self.line(&format!("{scale} = arith.constant {size} : i64"));
                self.line(&format!("{scaled} = arith.muli {}, {scale} : i64", offset.name));
                self.line(&format!("{address} = arith.addi {base_i64}, {scaled} : i64"));
                self.line(&format!("{destination} = llvm.inttoptr {address} : i64 to !llvm.ptr<3>"));
                let generic = self.address(*buffer, index)?;
                let source = self.fresh();
                self.line(&format!("{source} = llvm.addrspacecast {generic} : !llvm.ptr to !llvm.ptr<1>"));
                // cg (L2 only) exists for 16 bytes; smaller copies go through L1 (ca).
                let cache = if bytes == 16 { "cg" } else { "ca" };
                if literal_integer(source_elements) == Some(*elements as i64) {
                    self.line(&format!(
                        "nvvm.cp.async.shared.global {destination}, {source}, {bytes}, cache = {cache} : !llvm.ptr<3>, !llvm.ptr<1>"
                    ));
                } else {
                    let valid = self.expression(source_elements)?;
                    let valid = self.convert(valid, DType::I64)?;
                    let (zero, full, low, high, scale, in_bytes, narrow) = (
                        self.fresh(),
                        self.fresh(),
                        self.fresh(),
                        self.fresh(),
                        self.fresh(),
                        self.fresh(),
                        self.fresh(),
                    );
                    self.line(&format!("{zero} = arith.constant 0 : i64"));
                    self.line(&format!("{full} = arith.constant {elements} : i64"));
                    self.line(&format!("{low} = arith.maxsi {}, {zero} : i64", valid.name));
                    self.line(&format!("{high} = arith.minsi {low}, {full} : i64"));
                    self.line(&format!("{scale} = arith.constant {size} : i64"));
                    self.line(&format!("{in_bytes} = arith.muli {high}, {scale} : i64"));
                    self.line(&format!("{narrow} = arith.trunci {in_bytes} : i64 to i32"));
                    self.line(&format!(
                        "nvvm.cp.async.shared.global {destination}, {source}, {bytes}, cache = {cache}, {narrow} : !llvm.ptr<3>, !llvm.ptr<1>, i32"
                    ));
                }
            }
            Stmt::AsyncCommit => {
                self.nvidia_only("cp.async.commit_group")?;
                self.line("nvvm.cp.async.commit.group");
            }
            Stmt::AsyncWait { pending } => {
                self.nvidia_only("cp.async.wait_group")?;
                self.line(&format!("nvvm.cp.async.wait.group {pending}"));
            }
        }
        Ok(())
    }

    /// An error for NVIDIA-only instructions in a kernel lowered for AMD
    /// (generators give AMD targets kernels without them).
    fn nvidia_only(&self, instruction: &str) -> Result<(), String> {
        match self.vendor {
            Vendor::Nvidia => Ok(()),
            Vendor::Amd => Err(format!("{instruction} is an NVIDIA instruction; it has no AMDGPU lowering")),
        }
    }

    /// The element dtype of `memory` and the MLIR type of `count` of its elements.
    fn vector_type(&self, memory: Memory, count: usize) -> Result<(DType, String), String> {
        let dtype = self.kernel.memory_dtype(memory).ok_or("a vector access to a scalar parameter")?;
        if !kiln_runtime::kernel::is_vector_width(dtype, count) {
            return Err(format!("a vector of {count} {dtype} elements"));
        }
        Ok((dtype, format!("vector<{count}x{}>", memory_type(dtype))))
    }

    /// The memref type of shared array `array`.
    fn shared_memref(&self, array: usize) -> String {
        let shared = &self.kernel.shared[array];
        format!("memref<{}x{}, #gpu.address_space<workgroup>>", shared.elements, memory_type(shared.dtype))
    }

    /// `&buffer[index]`.
    fn address(&mut self, buffer: usize, index: &Expr) -> Result<String, String> {
        let Param::Buffer { dtype, .. } = &self.kernel.params[buffer] else {
            return Err("an access to a scalar parameter".into());
        };
        let dtype = *dtype;
        let index = self.expression(index)?;
        let index = self.convert(index, DType::I64)?;
        let address = self.fresh();
        self.line(&format!(
            "{address} = llvm.getelementptr %arg{buffer}[{}] : (!llvm.ptr, i64) -> !llvm.ptr, {}",
            index.name,
            memory_type(dtype)
        ));
        Ok(address)
    }

    /// An `index`-typed value of an i64 expression.
    fn index(&mut self, index: &Expr) -> Result<String, String> {
        let value = self.expression(index)?;
        let value = self.convert(value, DType::I64)?;
        let name = self.fresh();
        self.line(&format!("{name} = arith.index_cast {} : i64 to index", value.name));
        Ok(name)
    }

    /// A register value as a memory element of `dtype`.
    fn store_form(&mut self, value: Ssa, dtype: DType) -> Result<String, String> {
        Ok(match dtype {
            DType::Bool => {
                let bit = self.convert(value, DType::Bool)?;
                let name = self.fresh();
                self.line(&format!("{name} = arith.extui {} : i1 to i8", bit.name));
                name
            }
            DType::I8 | DType::U8 => {
                let wide = self.convert(value, DType::I64)?;
                let name = self.fresh();
                self.line(&format!("{name} = arith.trunci {} : i64 to i8", wide.name));
                name
            }
            DType::F8E4M3 => return Err("f8 stores have no lowering yet".into()),
            other => self.convert(value, other)?.name,
        })
    }

    /// Converts between register types as the simulator does.
    fn convert(&mut self, value: Ssa, to: DType) -> Result<Ssa, String> {
        if value.dtype == to {
            return Ok(value);
        }
        let name = self.fresh();
        let (from_type, to_type) = (register_type(value.dtype), register_type(to));
        let operation = match (value.dtype, to) {
            (DType::Bool, t) if t.is_float() => format!("arith.uitofp {} : i1 to {to_type}", value.name),
            (DType::Bool, _) => format!("arith.extui {} : i1 to {to_type}", value.name),
            (f, DType::Bool) if f.is_float() => {
                let zero = self.fresh();
                self.line(&format!("{zero} = arith.constant 0.0 : {from_type}"));
                format!("arith.cmpf une, {}, {zero} : {from_type}", value.name)
            }
            (_, DType::Bool) => {
                let zero = self.fresh();
                self.line(&format!("{zero} = arith.constant 0 : {from_type}"));
                format!("arith.cmpi ne, {}, {zero} : {from_type}", value.name)
            }
            (f, t) if f.is_float() && t.is_float() => {
                let wider = f.size_in_bytes() < t.size_in_bytes() || (f == DType::BF16 && t == DType::F16);
                if f == DType::BF16 && t == DType::F16 || f == DType::F16 && t == DType::BF16 {
                    let middle = self.convert(value, DType::F32)?;
                    return self.convert(middle, to);
                }
                format!("arith.{} {} : {from_type} to {to_type}", if wider { "extf" } else { "truncf" }, value.name)
            }
            (f, t) if f.is_float() => {
                let operation = if t.is_unsigned() { "fptoui" } else { "fptosi" };
                format!("arith.{operation} {} : {from_type} to {to_type}", value.name)
            }
            (f, t) if t.is_float() => {
                let operation = if f.is_unsigned() { "uitofp" } else { "sitofp" };
                format!("arith.{operation} {} : {from_type} to {to_type}", value.name)
            }
            // i32 and u32 (i64 and u64) are one MLIR type: the same bits.
            _ if from_type == to_type => return Ok(Ssa { name: value.name, dtype: to }),
            (f, t) if f.size_in_bytes() < t.size_in_bytes() => {
                let operation = if f.is_unsigned() { "extui" } else { "extsi" };
                format!("arith.{operation} {} : {from_type} to {to_type}", value.name)
            }
            _ => format!("arith.trunci {} : {from_type} to {to_type}", value.name),
        };
        self.line(&format!("{name} = {operation}"));
        Ok(Ssa { name, dtype: to })
    }

    fn expression(&mut self, expr: &Expr) -> Result<Ssa, String> {
        Ok(match expr {
            Expr::Literal(literal) => {
                let name = self.fresh();
                let (text, dtype) = match literal {
                    Literal::F32(v) => (float_literal(*v), DType::F32),
                    Literal::I64(v) => (v.to_string(), DType::I64),
                    Literal::I32(v) => (v.to_string(), DType::I32),
                    Literal::Bool(v) => (v.to_string(), DType::Bool),
                };
                if dtype == DType::Bool {
                    self.line(&format!("{name} = arith.constant {text}"));
                } else {
                    self.line(&format!("{name} = arith.constant {text} : {}", register_type(dtype)));
                }
                Ssa { name, dtype }
            }
            Expr::Var(var) => {
                let dtype = *self.variables.get(var).ok_or(format!("v{} has no let", var.0))?;
                let name = self.fresh();
                self.line(&format!("{name} = llvm.load %v{} : !llvm.ptr -> {}", var.0, register_type(dtype)));
                Ssa { name, dtype }
            }
            Expr::Param(index) => match &self.kernel.params[*index] {
                Param::Scalar { dtype, .. } => Ssa { name: format!("%arg{index}"), dtype: *dtype },
                Param::Buffer { .. } => return Err(format!("parameter {index} is a buffer, not a scalar")),
            },
            Expr::Special(Special::BlockThreads) => {
                // A constant per kernel variant (no device-library call on AMD).
                let name = self.fresh();
                self.line(&format!("{name} = arith.constant {} : i32", self.kernel.block_threads));
                Ssa { name, dtype: DType::I32 }
            }
            Expr::Special(special) => {
                let source = self.fresh();
                let operation = match special {
                    Special::ThreadIndex => "gpu.thread_id x",
                    Special::BlockIndex => "gpu.block_id x",
                    Special::BlockThreads => "gpu.block_dim x",
                    Special::GridBlocks => "gpu.grid_dim x",
                    Special::Lane => "gpu.lane_id",
                };
                self.line(&format!("{source} = {operation}"));
                let name = self.fresh();
                self.line(&format!("{name} = arith.index_cast {source} : index to i32"));
                Ssa { name, dtype: DType::I32 }
            }
            Expr::Unary(op, a) if self.vendor == Vendor::Amd && a_is_math(*op) => {
                let a = self.expression(a)?;
                let a = self.convert(a, DType::F32)?;
                self.amd_math(*op, a)?
            }
            Expr::Unary(op, a) => {
                let a = self.expression(a)?;
                let ty = register_type(a.dtype);
                let name = self.fresh();
                let float = a.dtype.is_float();
                let operation = match op {
                    UnaryOp::Neg if float => format!("arith.negf {} : {ty}", a.name),
                    UnaryOp::Neg => {
                        let zero = self.fresh();
                        self.line(&format!("{zero} = arith.constant 0 : {ty}"));
                        format!("arith.subi {zero}, {} : {ty}", a.name)
                    }
                    UnaryOp::Abs if float => format!("math.absf {} : {ty}", a.name),
                    UnaryOp::Abs if a.dtype.is_unsigned() => return Ok(a),
                    UnaryOp::BitNot => {
                        let ones = self.fresh();
                        self.line(&format!("{ones} = arith.constant -1 : {ty}"));
                        format!("arith.xori {}, {ones} : {ty}", a.name)
                    }
                    UnaryOp::Abs => format!("math.absi {} : {ty}", a.name),
                    UnaryOp::Sqrt => format!("math.sqrt {} : {ty}", a.name),
                    UnaryOp::Rsqrt => format!("math.rsqrt {} : {ty}", a.name),
                    UnaryOp::Exp => format!("math.exp {} : {ty}", a.name),
                    UnaryOp::Log => format!("math.log {} : {ty}", a.name),
                    UnaryOp::Tanh => format!("math.tanh {} : {ty}", a.name),
                    UnaryOp::Erf => format!("math.erf {} : {ty}", a.name),
                    UnaryOp::Sin => format!("math.sin {} : {ty}", a.name),
                    UnaryOp::Cos => format!("math.cos {} : {ty}", a.name),
                    UnaryOp::Not => {
                        let bit = self.convert(a, DType::Bool)?;
                        let one = self.fresh();
                        self.line(&format!("{one} = arith.constant true"));
                        self.line(&format!("{name} = arith.xori {}, {one} : i1", bit.name));
                        return Ok(Ssa { name, dtype: DType::Bool });
                    }
                };
                self.line(&format!("{name} = {operation}"));
                Ssa { name, dtype: a.dtype }
            }
            Expr::Binary(op, a, b_expr) => {
                let a = self.expression(a)?;
                let b = self.expression(b_expr)?;
                let b = self.convert(b, a.dtype)?;
                let ty = register_type(a.dtype);
                let float = a.dtype.is_float();
                let unsigned = a.dtype.is_unsigned();
                if op.is_bitwise() {
                    return self.bitwise(*op, a, b, b_expr);
                }
                let name = self.fresh();
                let (operation, dtype) = match (op, float) {
                    (BinaryOp::Div, false) if unsigned => ("arith.divui", a.dtype),
                    (BinaryOp::Rem, false) if unsigned => ("arith.remui", a.dtype),
                    (BinaryOp::Max, false) if unsigned => ("arith.maxui", a.dtype),
                    (BinaryOp::Min, false) if unsigned => ("arith.minui", a.dtype),
                    (BinaryOp::Lt, false) if unsigned => ("arith.cmpi ult,", DType::Bool),
                    (BinaryOp::Le, false) if unsigned => ("arith.cmpi ule,", DType::Bool),
                    (BinaryOp::Add, true) => ("arith.addf", a.dtype),
                    (BinaryOp::Sub, true) => ("arith.subf", a.dtype),
                    (BinaryOp::Mul, true) => ("arith.mulf", a.dtype),
                    (BinaryOp::Div, true) => ("arith.divf", a.dtype),
                    (BinaryOp::Rem, true) => ("arith.remf", a.dtype),
                    (BinaryOp::Pow, true) if self.vendor == Vendor::Amd => {
                        // x^y = 2^(y·log2 x) with the hardware's exp2 and log2.
                        let log = self.fresh();
                        self.line(&format!(
                            "{log} = llvm.call_intrinsic \"llvm.amdgcn.log\"({}) : (f32) -> f32",
                            a.name
                        ));
                        let product = self.fresh();
                        self.line(&format!("{product} = arith.mulf {}, {log} : f32", b.name));
                        self.line(&format!(
                            "{name} = llvm.call_intrinsic \"llvm.amdgcn.exp2\"({product}) : (f32) -> f32"
                        ));
                        return Ok(Ssa { name, dtype: DType::F32 });
                    }
                    (BinaryOp::Pow, true) => ("math.powf", a.dtype),
                    (BinaryOp::Max, true) => ("arith.maxnumf", a.dtype),
                    (BinaryOp::Min, true) => ("arith.minnumf", a.dtype),
                    (BinaryOp::Lt, true) => ("arith.cmpf olt,", DType::Bool),
                    (BinaryOp::Le, true) => ("arith.cmpf ole,", DType::Bool),
                    (BinaryOp::Eq, true) => ("arith.cmpf oeq,", DType::Bool),
                    (BinaryOp::Ne, true) => ("arith.cmpf une,", DType::Bool),
                    (BinaryOp::Add, false) => ("arith.addi", a.dtype),
                    (BinaryOp::Sub, false) => ("arith.subi", a.dtype),
                    (BinaryOp::Mul, false) => ("arith.muli", a.dtype),
                    (BinaryOp::Div, false) => ("arith.divsi", a.dtype),
                    (BinaryOp::Rem, false) => ("arith.remsi", a.dtype),
                    (BinaryOp::Max, false) => ("arith.maxsi", a.dtype),
                    (BinaryOp::Min, false) => ("arith.minsi", a.dtype),
                    (BinaryOp::Lt, false) => ("arith.cmpi slt,", DType::Bool),
                    (BinaryOp::Le, false) => ("arith.cmpi sle,", DType::Bool),
                    (BinaryOp::Eq, false) => ("arith.cmpi eq,", DType::Bool),
                    (BinaryOp::Ne, false) => ("arith.cmpi ne,", DType::Bool),
                    (BinaryOp::And, _) | (BinaryOp::Or, _) => {
                        let (x, y) = (self.convert(a, DType::Bool)?, self.convert(b, DType::Bool)?);
                        let operation = if *op == BinaryOp::And { "arith.andi" } else { "arith.ori" };
                        self.line(&format!("{name} = {operation} {}, {} : i1", x.name, y.name));
                        return Ok(Ssa { name, dtype: DType::Bool });
                    }
                    (BinaryOp::Pow, false) => return Err("integer power has no lowering".into()),
                    (_, _) => return Err(format!("{op:?} of {} has no lowering", a.dtype)),
                };
                self.line(&format!("{name} = {operation} {}, {} : {ty}", a.name, b.name));
                Ssa { name, dtype }
            }
            Expr::Select(c, a, b) => {
                let c = self.expression(c)?;
                let c = self.convert(c, DType::Bool)?;
                let a = self.expression(a)?;
                let b = self.expression(b)?;
                let b = self.convert(b, a.dtype)?;
                let name = self.fresh();
                self.line(&format!(
                    "{name} = arith.select {}, {}, {} : {}",
                    c.name,
                    a.name,
                    b.name,
                    register_type(a.dtype)
                ));
                Ssa { name, dtype: a.dtype }
            }
            Expr::Cast(dtype, a) => {
                let a = self.expression(a)?;
                self.convert(a, *dtype)?
            }
            Expr::Convert { dtype, rounding, value } => {
                let value = self.expression(value)?;
                self.rounding_convert(value, *dtype, *rounding)?
            }
            Expr::Bitcast(dtype, a) => {
                let a = self.expression(a)?;
                let (from, to) = (register_type(a.dtype), register_type(*dtype));
                if from == to {
                    Ssa { name: a.name, dtype: *dtype }
                } else {
                    let name = self.fresh();
                    self.line(&format!("{name} = arith.bitcast {} : {from} to {to}", a.name));
                    Ssa { name, dtype: *dtype }
                }
            }
            Expr::Fma(a, b, c) => {
                let (a, b, c) = (self.expression(a)?, self.expression(b)?, self.expression(c)?);
                let name = self.fresh();
                if self.vendor == Vendor::Amd {
                    // `math.fma` would call the ROCm device libraries; LLVM's intrinsic is `v_fma_f32`.
                    self.line(&format!(
                        "{name} = llvm.call_intrinsic \"llvm.fma.f32\"({}, {}, {}) : (f32, f32, f32) -> f32",
                        a.name, b.name, c.name
                    ));
                } else {
                    self.line(&format!("{name} = math.fma {}, {}, {} : f32", a.name, b.name, c.name));
                }
                Ssa { name, dtype: DType::F32 }
            }
            Expr::Load { buffer, index } => {
                let Param::Buffer { dtype, .. } = &self.kernel.params[*buffer] else {
                    return Err("a load from a scalar".into());
                };
                let dtype = *dtype;
                let address = self.address(*buffer, index)?;
                let name = self.fresh();
                self.line(&format!("{name} = llvm.load {address} : !llvm.ptr -> {}", memory_type(dtype)));
                self.register_form(name, dtype)?
            }
            Expr::SharedLoad { array, index } => {
                let dtype = self.kernel.shared[*array].dtype;
                let elements = self.kernel.shared[*array].elements;
                let index = self.index(index)?;
                let name = self.fresh();
                self.line(&format!(
                    "{name} = memref.load %shared{array}[{index}] : memref<{elements}x{}, #gpu.address_space<workgroup>>",
                    memory_type(dtype)
                ));
                self.register_form(name, dtype)?
            }
            Expr::ShuffleXor { value, mask } => {
                let value = self.expression(value)?;
                let (offset, width) = (self.fresh(), self.fresh());
                self.line(&format!("{offset} = arith.constant {mask} : i32"));
                self.line(&format!("{width} = arith.constant 32 : i32"));
                if matches!(value.dtype, DType::I64 | DType::U64) {
                    // 64-bit values shuffle as two 32-bit halves.
                    let (low, high_shifted, high, thirty_two) =
                        (self.fresh(), self.fresh(), self.fresh(), self.fresh());
                    self.line(&format!("{thirty_two} = arith.constant 32 : i64"));
                    self.line(&format!("{low} = arith.trunci {} : i64 to i32", value.name));
                    self.line(&format!("{high_shifted} = arith.shrui {}, {thirty_two} : i64", value.name));
                    self.line(&format!("{high} = arith.trunci {high_shifted} : i64 to i32"));
                    let (low_s, low_ok, high_s, high_ok) = (self.fresh(), self.fresh(), self.fresh(), self.fresh());
                    self.line(&format!("{low_s}, {low_ok} = gpu.shuffle xor {low}, {offset}, {width} : i32"));
                    self.line(&format!("{high_s}, {high_ok} = gpu.shuffle xor {high}, {offset}, {width} : i32"));
                    let (low_w, high_w, high_back, name) = (self.fresh(), self.fresh(), self.fresh(), self.fresh());
                    self.line(&format!("{low_w} = arith.extui {low_s} : i32 to i64"));
                    self.line(&format!("{high_w} = arith.extui {high_s} : i32 to i64"));
                    self.line(&format!("{high_back} = arith.shli {high_w}, {thirty_two} : i64"));
                    self.line(&format!("{name} = arith.ori {high_back}, {low_w} : i64"));
                    return Ok(Ssa { name, dtype: value.dtype });
                }
                let value = if matches!(value.dtype, DType::F32 | DType::I32 | DType::U32) {
                    value
                } else {
                    self.convert(value, DType::F32)?
                };
                let (name, valid) = (self.fresh(), self.fresh());
                self.line(&format!(
                    "{name}, {valid} = gpu.shuffle xor {}, {offset}, {width} : {}",
                    value.name,
                    register_type(value.dtype)
                ));
                Ssa { name, dtype: value.dtype }
            }
        })
    }

    /// A shift or bitwise operation. A shift amount is taken modulo the
    /// width (kernel IR's rule); the mask is emitted unless the amount is a
    /// literal already in range (LLVM's shifts are poison past the width).
    fn bitwise(&mut self, op: BinaryOp, a: Ssa, b: Ssa, b_expr: &Expr) -> Result<Ssa, String> {
        let ty = register_type(a.dtype);
        let width = 8 * a.dtype.size_in_bytes() as i64;
        let operation = match op {
            BinaryOp::Shl => "arith.shli",
            BinaryOp::Shr if a.dtype.is_unsigned() => "arith.shrui",
            BinaryOp::Shr => "arith.shrsi",
            BinaryOp::BitAnd => "arith.andi",
            BinaryOp::BitOr => "arith.ori",
            _ => "arith.xori",
        };
        let mut amount = b.name;
        let in_range = literal_integer(b_expr).is_some_and(|v| (0..width).contains(&v));
        if matches!(op, BinaryOp::Shl | BinaryOp::Shr) && !in_range {
            let (mask, masked) = (self.fresh(), self.fresh());
            self.line(&format!("{mask} = arith.constant {} : {ty}", width - 1));
            self.line(&format!("{masked} = arith.andi {amount}, {mask} : {ty}"));
            amount = masked;
        }
        let name = self.fresh();
        self.line(&format!("{name} = {operation} {}, {amount} : {ty}", a.name));
        Ok(Ssa { name, dtype: a.dtype })
    }

    /// A conversion with a rounding mode, as one `cvt` on NVIDIA (the NVVM
    /// conversion intrinsics); AMD rounds floats to integers with
    /// `roundeven`/`trunc`/`floor`/`ceil` before the conversion and has only
    /// the to-nearest forms of the others.
    fn rounding_convert(&mut self, value: Ssa, to: DType, rounding: Rounding) -> Result<Ssa, String> {
        let mode = rounding.name();
        let from = value.dtype;
        if from.is_float() && !to.is_float() {
            let x = self.convert(value, DType::F32)?;
            let name = self.fresh();
            let to_type = register_type(to);
            if self.vendor == Vendor::Amd {
                let rounded = self.fresh();
                let function = match rounding {
                    Rounding::Nearest => "roundeven",
                    Rounding::Zero => "trunc",
                    Rounding::Down => "floor",
                    Rounding::Up => "ceil",
                };
                // LLVM's own intrinsics: the `math` forms would call the ROCm device libraries.
                self.line(&format!(
                    "{rounded} = llvm.call_intrinsic \"llvm.{function}.f32\"({}) : (f32) -> f32",
                    x.name
                ));
                let operation = if to.is_unsigned() { "fptoui" } else { "fptosi" };
                self.line(&format!("{name} = arith.{operation} {rounded} : f32 to {to_type}"));
            } else {
                let integer = nvvm_integer(to);
                self.line(&format!(
                    "{name} = llvm.call_intrinsic \"llvm.nvvm.f2{integer}.{mode}\"({}) : (f32) -> {to_type}",
                    x.name
                ));
            }
            return Ok(Ssa { name, dtype: to });
        }
        if rounding == Rounding::Nearest {
            return self.convert(value, to);
        }
        if self.vendor == Vendor::Amd {
            return Err(format!("a conversion from {from} to {to} rounding {mode} has no AMDGPU lowering"));
        }
        let from_type = register_type(from);
        let name = self.fresh();
        if !from.is_float() && to == DType::F32 {
            let integer = nvvm_integer(from);
            self.line(&format!(
                "{name} = llvm.call_intrinsic \"llvm.nvvm.{integer}2f.{mode}\"({}) : ({from_type}) -> f32",
                value.name
            ));
            return Ok(Ssa { name, dtype: to });
        }
        match (from, to, rounding) {
            (DType::F32, DType::BF16, Rounding::Zero) => {
                self.line(&format!(
                    "{name} = llvm.call_intrinsic \"llvm.nvvm.f2bf16.rz\"({}) : (f32) -> bf16",
                    value.name
                ));
            }
            (DType::F32, DType::F16, Rounding::Zero) => {
                // One `cvt.rz.f16x2.f32` of the value twice; its low half.
                let (pair, index) = (self.fresh(), self.fresh());
                self.line(&format!(
                    "{pair} = llvm.call_intrinsic \"llvm.nvvm.ff2f16x2.rz\"({0}, {0}) : (f32, f32) -> vector<2xf16>",
                    value.name
                ));
                self.line(&format!("{index} = llvm.mlir.constant(0 : i32) : i32"));
                self.line(&format!("{name} = llvm.extractelement {pair}[{index} : i32] : vector<2xf16>"));
            }
            _ => return Err(format!("a conversion from {from} to {to} rounding {mode} has no lowering")),
        }
        Ok(Ssa { name, dtype: to })
    }

    /// Math functions from AMDGPU's native instructions (`v_exp_f32`,
    /// `v_log_f32`, `v_sqrt_f32`, `v_sin_f32`, … through `llvm.amdgcn.*`
    /// intrinsics, which the ROCDL conversion leaves alone) and polynomials, since the
    /// ROCm device libraries are not linked: `exp(x) = 2^(x·log2 e)`,
    /// `tanh(x) = 1 − 2/(e^{2x} + 1)`, erf by Abramowitz–Stegun 7.1.26
    /// (|error| ≤ 1.5e-7).
    fn amd_math(&mut self, op: UnaryOp, a: Ssa) -> Result<Ssa, String> {
        let x = a.name;
        let result = match op {
            UnaryOp::Exp => self.amd_exp(&x),
            UnaryOp::Log => {
                let log2 = self.amd_intrinsic("log", &x);
                let ln2 = self.f32_constant(std::f32::consts::LN_2);
                self.f32_binary("mulf", &log2, &ln2)
            }
            UnaryOp::Sqrt => self.amd_intrinsic("sqrt", &x),
            UnaryOp::Rsqrt => {
                let root = self.amd_intrinsic("sqrt", &x);
                let one = self.f32_constant(1.0);
                self.f32_binary("divf", &one, &root)
            }
            UnaryOp::Sin | UnaryOp::Cos => {
                // The hardware's sine and cosine take revolutions.
                let per_turn = self.f32_constant(1.0 / std::f32::consts::TAU);
                let turns = self.f32_binary("mulf", &x, &per_turn);
                self.amd_intrinsic(if op == UnaryOp::Sin { "sin" } else { "cos" }, &turns)
            }
            UnaryOp::Tanh => {
                let two = self.f32_constant(2.0);
                let doubled = self.f32_binary("mulf", &x, &two);
                let e = self.amd_exp(&doubled);
                let one = self.f32_constant(1.0);
                let denominator = self.f32_binary("addf", &e, &one);
                let fraction = self.f32_binary("divf", &two, &denominator);
                self.f32_binary("subf", &one, &fraction)
            }
            UnaryOp::Erf => {
                let magnitude = self.f32_unary("math.absf", &x);
                let p = self.f32_constant(0.327_591_1);
                let one = self.f32_constant(1.0);
                let scaled = self.f32_binary("mulf", &magnitude, &p);
                let shifted = self.f32_binary("addf", &scaled, &one);
                let t = self.f32_binary("divf", &one, &shifted);
                // Horner: ((((a5 t + a4) t + a3) t + a2) t + a1) t
                let coefficients = [1.061_405_4f32, -1.453_152_1, 1.421_413_8, -0.284_496_74, 0.254_829_6];
                let mut polynomial = self.f32_constant(coefficients[0]);
                for &c in &coefficients[1..] {
                    let product = self.f32_binary("mulf", &polynomial, &t);
                    let next = self.f32_constant(c);
                    polynomial = self.f32_binary("addf", &product, &next);
                }
                let times_t = self.f32_binary("mulf", &polynomial, &t);
                let square = self.f32_binary("mulf", &x, &x);
                let negated = self.f32_unary("arith.negf", &square);
                let gaussian = self.amd_exp(&negated);
                let tail = self.f32_binary("mulf", &times_t, &gaussian);
                let positive = self.f32_binary("subf", &one, &tail);
                let result = self.fresh();
                self.line(&format!("{result} = math.copysign {positive}, {x} : f32"));
                result
            }
            other => return Err(format!("{other:?} is not a math function")),
        };
        Ok(Ssa { name: result, dtype: DType::F32 })
    }

    /// `exp(x) = 2^(x·log2 e)` through `v_exp_f32`.
    fn amd_exp(&mut self, x: &str) -> String {
        let log2e = self.f32_constant(std::f32::consts::LOG2_E);
        let scaled = self.f32_binary("mulf", x, &log2e);
        self.amd_intrinsic("exp2", &scaled)
    }

    /// `llvm.amdgcn.<name>(x)` on an f32.
    fn amd_intrinsic(&mut self, name: &str, x: &str) -> String {
        let result = self.fresh();
        self.line(&format!("{result} = llvm.call_intrinsic \"llvm.amdgcn.{name}\"({x}) : (f32) -> f32"));
        result
    }

    fn f32_constant(&mut self, value: f32) -> String {
        let name = self.fresh();
        self.line(&format!("{name} = arith.constant {} : f32", float_literal(value)));
        name
    }

    /// `arith.<op> a, b` on f32s.
    fn f32_binary(&mut self, op: &str, a: &str, b: &str) -> String {
        let result = self.fresh();
        self.line(&format!("{result} = arith.{op} {a}, {b} : f32"));
        result
    }

    /// `<op> x` (a full op name) on an f32.
    fn f32_unary(&mut self, op: &str, x: &str) -> String {
        let result = self.fresh();
        self.line(&format!("{result} = {op} {x} : f32"));
        result
    }

    /// A memory element of `dtype` as a register value.
    /// A loaded element of `dtype` in its register form: the type
    /// [`kiln_runtime::kernel::register_type`] gives (the one rule).
    fn register_form(&mut self, name: String, dtype: DType) -> Result<Ssa, String> {
        let form = self.widen(name, dtype)?;
        debug_assert_eq!(form.dtype, kiln_runtime::kernel::register_type(dtype), "the register-type rule");
        Ok(form)
    }

    fn widen(&mut self, name: String, dtype: DType) -> Result<Ssa, String> {
        Ok(match dtype {
            DType::Bool => {
                let zero = self.fresh();
                self.line(&format!("{zero} = arith.constant 0 : i8"));
                let bit = self.fresh();
                self.line(&format!("{bit} = arith.cmpi ne, {name}, {zero} : i8"));
                Ssa { name: bit, dtype: DType::Bool }
            }
            DType::U8 | DType::I8 => {
                let wide = self.fresh();
                let extend = if dtype == DType::U8 { "extui" } else { "extsi" };
                self.line(&format!("{wide} = arith.{extend} {name} : i8 to i64"));
                Ssa { name: wide, dtype: DType::I64 }
            }
            DType::I32 => {
                let wide = self.fresh();
                self.line(&format!("{wide} = arith.extsi {name} : i32 to i64"));
                Ssa { name: wide, dtype: DType::I64 }
            }
            DType::F16 | DType::BF16 => self.convert(Ssa { name, dtype }, DType::F32)?,
            DType::F8E4M3 => return Err("f8 loads have no lowering yet".into()),
            other => Ssa { name, dtype: other },
        })
    }
}

/// Whether a unary op is a math function that AMD targets expand.
fn a_is_math(op: UnaryOp) -> bool {
    matches!(
        op,
        UnaryOp::Exp
            | UnaryOp::Log
            | UnaryOp::Sqrt
            | UnaryOp::Rsqrt
            | UnaryOp::Sin
            | UnaryOp::Cos
            | UnaryOp::Tanh
            | UnaryOp::Erf
    )
}

/// How NVVM's conversion intrinsics name an integer type (`f2i`, `ull2f`, …).
fn nvvm_integer(dtype: DType) -> &'static str {
    match (dtype.size_in_bytes(), dtype.is_unsigned()) {
        (4, false) => "i",
        (4, true) => "ui",
        (_, false) => "ll",
        (_, true) => "ull",
    }
}

/// The value of an integer literal, also under casts (`u32(4)`).
fn literal_integer(expr: &Expr) -> Option<i64> {
    match expr {
        Expr::Literal(Literal::I64(v)) => Some(*v),
        Expr::Literal(Literal::I32(v)) => Some(*v as i64),
        Expr::Cast(_, inner) => literal_integer(inner),
        _ => None,
    }
}

/// An f32 literal MLIR parses exactly (hex for non-finite values).
fn float_literal(value: f32) -> String {
    if value.is_finite() {
        format!("{value:.8e}")
    } else {
        format!("0x{:08X}", value.to_bits())
    }
}
