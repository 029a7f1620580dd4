//! Which values are the same in every thread of a block.

use std::collections::HashSet;

use super::{Expr, Special, Stmt, Var};

/// Variables that may differ between the threads of a block (and so of a
/// warp): assigned a value that depends on the thread (`thread`, `lane`,
/// such variables, loads at such indices), or assigned under control flow
/// that does. The machine keeps the others in scalar registers; the
/// verifier requires barriers under control flow that depends on none.
/// A fixpoint, since a loop may make a variable divergent after its first use.
pub fn divergent_vars(body: &[Stmt]) -> HashSet<Var> {
    fn walk(body: &[Stmt], control: bool, divergent: &mut HashSet<Var>) -> bool {
        let mut changed = false;
        let mark = |var: Var, divergent: &mut HashSet<Var>| divergent.insert(var);
        for stmt in body {
            match stmt {
                Stmt::Let { var, value, .. } | Stmt::Assign { var, value } => {
                    if !(control && is_uniform(value, divergent)) {
                        changed |= mark(*var, divergent);
                    }
                }
                Stmt::VectorLoad { vars, index, .. } => {
                    if !(control && is_uniform(index, divergent)) {
                        for var in vars {
                            changed |= mark(*var, divergent);
                        }
                    }
                }
                Stmt::If { condition, then, otherwise } => {
                    let inner = control && is_uniform(condition, divergent);
                    changed |= walk(then, inner, divergent);
                    changed |= walk(otherwise, inner, divergent);
                }
                Stmt::For { var, start, end, body, .. } => {
                    let inner = control && is_uniform(start, divergent) && is_uniform(end, divergent);
                    if !inner {
                        changed |= mark(*var, divergent);
                    }
                    changed |= walk(body, inner, divergent);
                }
                // A warp collective's results differ between lanes by definition.
                Stmt::LoadMatrix { vars, .. } | Stmt::MatrixMultiplyAccumulate { acc: vars, .. } => {
                    for var in vars {
                        changed |= mark(*var, divergent);
                    }
                }
                Stmt::Store { .. }
                | Stmt::SharedStore { .. }
                | Stmt::AtomicAdd { .. }
                | Stmt::VectorStore { .. }
                | Stmt::AsyncCopy { .. }
                | Stmt::AsyncCommit
                | Stmt::AsyncWait { .. }
                | Stmt::Barrier => {}
            }
        }
        changed
    }
    let mut divergent = HashSet::new();
    while walk(body, true, &mut divergent) {}
    divergent
}

/// Whether `expr` is the same in every thread, given the divergent variables.
pub fn is_uniform(expr: &Expr, divergent: &HashSet<Var>) -> bool {
    match expr {
        Expr::Literal(_) | Expr::Param(_) => true,
        Expr::Special(special) => !matches!(special, Special::ThreadIndex | Special::Lane),
        Expr::Var(var) => !divergent.contains(var),
        Expr::Unary(_, a) | Expr::Cast(_, a) | Expr::Bitcast(_, a) => is_uniform(a, divergent),
        Expr::Convert { value, .. } => is_uniform(value, divergent),
        Expr::Binary(_, a, b) => is_uniform(a, divergent) && is_uniform(b, divergent),
        Expr::Select(c, a, b) | Expr::Fma(c, a, b) => {
            is_uniform(c, divergent) && is_uniform(a, divergent) && is_uniform(b, divergent)
        }
        Expr::Load { index, .. } | Expr::SharedLoad { index, .. } => is_uniform(index, divergent),
        Expr::ShuffleXor { value, .. } => is_uniform(value, divergent),
    }
}
