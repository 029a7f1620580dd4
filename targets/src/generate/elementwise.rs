//! Elementwise and gather groups: each thread computes one output element,
//! or — when every output has the same element count and a constant
//! innermost dim that a 16-byte vector divides — one 16-byte vector of
//! consecutive elements per output, written with one aligned vector store;
//! inputs of the output's shape read at the same elements (no view between)
//! come in with one vector load each.

use kiln_ir::{DType, Dim};
use kiln_runtime::kernel::{build, Expr, Memory, Stmt};

use super::context::{linear_index, unravel, KernelContext, Value, VectorLanes};

pub const THREADS: u32 = 256;

/// Elements per thread: the widest vector (≤ 16 bytes) that every output's
/// innermost dim is a multiple of, when all outputs have one element count;
/// else 1.
fn vector_width(context: &KernelContext) -> usize {
    let outputs = &context.contract.outputs;
    let Some(first) = outputs.first() else { return 1 };
    let count = context.graph.value_type(*first).element_count();
    let mut width = 16;
    for output in outputs {
        let ty = context.graph.value_type(*output);
        if ty.element_count() != count {
            return 1;
        }
        width = width.min(16 / ty.dtype.size_in_bytes().max(1));
        let innermost = ty.shape.last().and_then(Dim::as_constant).unwrap_or(1);
        while width > 1 && innermost % width as i64 != 0 {
            width /= 2;
        }
    }
    // A width of at least 2 is a power of two of at most 16 bytes by construction.
    width
}

pub fn generate(context: &mut KernelContext) -> Result<Vec<Stmt>, String> {
    let outputs = context.contract.outputs.clone();
    let mut largest = Dim::constant(1);
    for output in &outputs {
        largest = largest.maximum(&context.graph.value_type(*output).element_count());
    }
    let width = vector_width(context);
    context.block_threads = THREADS;
    let per_block = THREADS as i64 * width as i64;
    context.grid_blocks = (&largest + &Dim::constant(per_block - 1)).floor_div(per_block).expect("positive");
    let mut body = Vec::new();
    let first = build::mul(build::global_thread_index(), build::i64(width as i64));
    let index = context.bind(&mut body, Value { expr: first, dtype: DType::I64 });
    for output in outputs {
        let dims = context.dims(output)?;
        let count = context.dim(&context.graph.value_type(output).element_count())?;
        let mut then = Vec::new();
        let coords: Vec<Expr> = unravel(index.expr.clone(), &dims)
            .into_iter()
            .map(|c| context.bind(&mut then, Value { expr: c, dtype: DType::I64 }).expr)
            .collect();
        let buffer = context.buffer(output)?;
        if width == 1 {
            let value = context.value_at(&mut then, output, &coords)?;
            then.push(Stmt::Store { buffer, index: linear_index(&coords, &dims), value: value.expr });
        } else {
            // The innermost dim is a multiple of the width and the first index
            // is too, so the vector's elements differ only in the last coordinate.
            let lanes: Vec<Vec<Expr>> = (0..width)
                .map(|offset| {
                    let mut shifted = coords.clone();
                    let last = shifted.len() - 1;
                    shifted[last] = build::add(shifted[last].clone(), build::i64(offset as i64));
                    shifted
                })
                .collect();
            let shape = context.graph.value_type(output).shape.clone();
            context.vector = Some(VectorLanes::new(shape, lanes.clone(), index.expr.clone()));
            let mut values = Vec::with_capacity(width);
            for lane in &lanes {
                values.push(context.value_at(&mut then, output, lane)?.expr);
            }
            context.vector = None;
            then.push(Stmt::VectorStore { memory: Memory::Buffer(buffer), index: index.expr.clone(), values });
        }
        body.push(Stmt::If { condition: build::lt(index.expr.clone(), count), then, otherwise: Vec::new() });
    }
    Ok(body)
}
