//! Lane patterns: which lane-vector integers are affine in the lane,
//! `base + stride × lane` with a warp-uniform `base` and a constant
//! `stride`, and what integer arithmetic does to that form.
//!
//! The machine's compiler knows the warp size, so the thread index is
//! `warp_base + lane` with `warp_base` a multiple of it. Carried through
//! additions, multiplications by constants, and divisions and remainders by
//! constants that no warp straddles, the pattern turns `thread / 32` (one
//! value per warp of 32) into a uniform register and `thread % 32` into
//! `0 + lane`, so that a load at `row * K + thread % 32` is known to read
//! one contiguous run per warp ([`super::program::Inst::LoadAffine`]) with
//! no per-lane index to compute or inspect.
//!
//! Every rule is exact in two's-complement i64 arithmetic: additions and
//! multiplications hold modulo 2^64; divisions and remainders are applied
//! only to values known non-negative (`base ≥ 0`, `stride ≥ 0`, built from
//! non-negative constants, thread and block coordinates), where truncating
//! division is floor division. Index arithmetic that overflows i64 is
//! outside the contract (no memory is that large).

use crate::kernel::BinaryOp;

use super::program::Src;

/// What is known of a warp-uniform integer: a divisor of it (`0`: the value
/// is 0, which every integer divides) and whether it is non-negative.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Facts {
    pub(crate) align: i64,
    pub(crate) nonneg: bool,
}

impl Facts {
    /// Nothing known.
    pub(crate) const NONE: Facts = Facts { align: 1, nonneg: false };

    /// The facts of the constant `value`.
    pub(crate) fn of_constant(value: i64) -> Facts {
        Facts { align: value.checked_abs().unwrap_or(1), nonneg: value >= 0 }
    }
}

/// A lane vector whose lane `l` holds `base + stride × l`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Affine {
    /// Warp-uniform: a uniform register or a constant.
    pub(crate) base: Src,
    /// Never 0 for a recorded pattern (that value is uniform).
    pub(crate) stride: i64,
    /// What is known of `base`.
    pub(crate) base_facts: Facts,
}

impl Affine {
    /// A uniform value seen as a pattern of stride 0.
    pub(crate) fn uniform(base: Src, base_facts: Facts) -> Affine {
        Affine { base, stride: 0, base_facts }
    }

    /// Every lane's value is non-negative (absent overflow).
    fn nonneg(&self) -> bool {
        self.base_facts.nonneg && self.stride >= 0
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    let (mut a, mut b) = (a.unsigned_abs(), b.unsigned_abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    i64::try_from(a).unwrap_or(1)
}

/// The constant a uniform operand holds, if it is one.
fn constant(pattern: &Affine) -> Option<i64> {
    match (pattern.stride, pattern.base) {
        (0, Src::K(bits)) => Some(bits as i64),
        _ => None,
    }
}

/// The pattern of the i64 operation `a op b`, where each operand is a
/// pattern (a uniform one has stride 0) and at least one is not uniform;
/// `None` when the result is not affine in the lane (or not known to be).
/// A result of stride 0 is uniform: its base is the whole value. `uniform`
/// computes a warp-uniform `x op y` (emitting it or folding constants).
pub(crate) fn binary(
    op: BinaryOp,
    a: Affine,
    b: Affine,
    warp_size: usize,
    uniform: &mut dyn FnMut(BinaryOp, Src, Src) -> Src,
) -> Option<Affine> {
    let lanes_beyond_first = warp_size as i64 - 1;
    match op {
        BinaryOp::Add => {
            let stride = a.stride.checked_add(b.stride)?;
            let base_facts = Facts {
                align: gcd(a.base_facts.align, b.base_facts.align),
                nonneg: a.base_facts.nonneg && b.base_facts.nonneg,
            };
            Some(Affine { base: uniform(BinaryOp::Add, a.base, b.base), stride, base_facts })
        }
        BinaryOp::Sub => {
            let stride = a.stride.checked_sub(b.stride)?;
            let nonneg = a.base_facts.nonneg && constant(&b).is_some_and(|c| c <= 0);
            let base_facts = Facts { align: gcd(a.base_facts.align, b.base_facts.align), nonneg };
            Some(Affine { base: uniform(BinaryOp::Sub, a.base, b.base), stride, base_facts })
        }
        BinaryOp::Mul => {
            let (pattern, k) = match (constant(&a), constant(&b)) {
                (_, Some(k)) => (a, k),
                (Some(k), _) => (b, k),
                _ => return None,
            };
            scale(pattern, k, uniform)
        }
        BinaryOp::Shl => {
            let shift = constant(&b)?;
            if !(0..62).contains(&shift) {
                return None;
            }
            scale(a, 1 << shift, uniform)
        }
        BinaryOp::Div | BinaryOp::Rem | BinaryOp::Shr | BinaryOp::BitAnd => {
            let k = match op {
                BinaryOp::Div | BinaryOp::Rem => constant(&b)?,
                BinaryOp::Shr => 1i64.checked_shl(u32::try_from(constant(&b)?).ok().filter(|&s| s < 62)?)?,
                // `x & (2^n - 1)` of a non-negative x is `x % 2^n`.
                _ => constant(&b)?.checked_add(1).filter(|m| *m > 0 && (m & (m - 1)) == 0)?,
            };
            if k <= 0 || !a.nonneg() || a.stride == 0 {
                return None;
            }
            let divides_base = |k: i64| a.base_facts.align % k == 0;
            let quotient = matches!(op, BinaryOp::Div | BinaryOp::Shr);
            let known = gcd(a.base_facts.align, k);
            // No warp straddles a multiple of k: base mod k is a multiple of
            // `known`, at most k - known, and the lanes add less than `known`.
            if a.stride.checked_mul(lanes_beyond_first)? < known {
                let base_facts = if quotient {
                    Facts { align: if divides_base(k) { a.base_facts.align / k } else { 1 }, nonneg: true }
                } else {
                    Facts { align: if a.base_facts.align == 0 { 0 } else { known }, nonneg: true }
                };
                let (op, base) = if quotient { (BinaryOp::Div, a.base) } else { (BinaryOp::Rem, a.base) };
                // k divides the base: its remainder is 0 (`thread % 32` is the lane).
                let base = if !quotient && known == k { Src::K(0) } else { uniform(op, base, Src::K(k as u64)) };
                let stride = if quotient { 0 } else { a.stride };
                return Some(Affine { base, stride, base_facts });
            }
            // k divides every lane's value: the quotient is affine, the remainder 0.
            if a.stride % k == 0 && divides_base(k) {
                if !quotient {
                    return Some(Affine::uniform(Src::K(0), Facts::of_constant(0)));
                }
                let base = uniform(BinaryOp::Div, a.base, Src::K(k as u64));
                let base_facts = Facts { align: a.base_facts.align / k, nonneg: true };
                return Some(Affine { base, stride: a.stride / k, base_facts });
            }
            None
        }
        BinaryOp::Lt | BinaryOp::Le => {
            // Constant lanes against a constant bound: the same answer in every lane?
            let (Src::K(first), Some(bound)) = (a.base, constant(&b)) else { return None };
            let first = first as i64;
            let last = first.checked_add(a.stride.checked_mul(lanes_beyond_first)?)?;
            let holds = |x: i64| if op == BinaryOp::Lt { x < bound } else { x <= bound };
            match (holds(first), holds(last)) {
                (true, true) | (false, false) if a.stride != 0 => {
                    Some(Affine::uniform(Src::K(holds(first) as u64), Facts::of_constant(holds(first) as i64)))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// `pattern × k`.
fn scale(pattern: Affine, k: i64, uniform: &mut dyn FnMut(BinaryOp, Src, Src) -> Src) -> Option<Affine> {
    let stride = pattern.stride.checked_mul(k)?;
    let align = pattern.base_facts.align.checked_mul(k).map_or(1, i64::abs);
    let nonneg = pattern.nonneg() && k >= 0;
    let base = uniform(BinaryOp::Mul, pattern.base, Src::K(k as u64));
    Some(Affine { base, stride, base_facts: Facts { align, nonneg } })
}

/// What is known of the uniform i64 `a op b` (`constant`: `b`, when it is one).
pub(crate) fn uniform_facts(op: BinaryOp, a: Facts, b: Facts, constant: Option<i64>) -> Facts {
    let positive = constant.filter(|&k| k > 0);
    match op {
        BinaryOp::Add => Facts { align: gcd(a.align, b.align), nonneg: a.nonneg && b.nonneg },
        BinaryOp::Sub => Facts { align: gcd(a.align, b.align), nonneg: false },
        BinaryOp::Mul => {
            Facts { align: a.align.checked_mul(b.align).map_or(1, i64::abs), nonneg: a.nonneg && b.nonneg }
        }
        BinaryOp::Div if a.nonneg && positive.is_some() => {
            let k = positive.unwrap_or(1);
            Facts { align: if a.align % k == 0 { a.align / k } else { 1 }, nonneg: true }
        }
        BinaryOp::Rem if a.nonneg && positive.is_some() => {
            Facts { align: if a.align == 0 { 0 } else { gcd(a.align, positive.unwrap_or(1)) }, nonneg: true }
        }
        // A non-negative dividend over a non-negative divisor (0 gives 0).
        BinaryOp::Div | BinaryOp::Rem | BinaryOp::Min | BinaryOp::Max if a.nonneg && b.nonneg => {
            Facts { align: 1, nonneg: true }
        }
        _ => Facts::NONE,
    }
}
