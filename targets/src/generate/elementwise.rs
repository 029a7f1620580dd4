//! Elementwise and gather groups: one thread per output element.

use kiln_ir::Dim;
use kiln_runtime::kernel::{build, Expr, Stmt};

use super::context::{linear_index, unravel, KernelContext};

pub const THREADS: u32 = 256;

pub fn generate(context: &mut KernelContext) -> Result<Vec<Stmt>, String> {
    let outputs = context.contract.outputs.clone();
    let mut largest = Dim::constant(1);
    for output in &outputs {
        largest = largest.maximum(&context.graph.value_type(*output).element_count());
    }
    context.block_threads = THREADS;
    context.grid_blocks = (&largest + &Dim::constant(THREADS as i64 - 1)).floor_div(THREADS as i64).expect("positive");
    let mut body = Vec::new();
    let index = context
        .bind(&mut body, super::context::Value { expr: build::global_thread_index(), dtype: kiln_ir::DType::I64 });
    for output in outputs {
        let dims = context.dims(output)?;
        let count = context.dim(&context.graph.value_type(output).element_count())?;
        let mut then = Vec::new();
        let coords: Vec<Expr> = unravel(index.expr.clone(), &dims)
            .into_iter()
            .map(|c| context.bind(&mut then, super::context::Value { expr: c, dtype: kiln_ir::DType::I64 }).expr)
            .collect();
        let value = context.value_at(&mut then, output, &coords)?;
        then.push(Stmt::Store {
            buffer: context.buffer(output)?,
            index: linear_index(&coords, &dims),
            value: value.expr,
        });
        body.push(Stmt::If { condition: build::lt(index.expr.clone(), count), then, otherwise: Vec::new() });
    }
    Ok(body)
}
