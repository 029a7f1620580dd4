#!/usr/bin/env python3
"""Writes the tensor-core filetests (`mma_*.kir`, `ldmatrix_misaligned.kir`)
with their inputs and expected outputs.

The expected values are Python's exact integer and fraction arithmetic on
the matrices (D = A·B + C, no kiln code); the kernels are written by hand
with the lane layouts of the PTX ISA (mma m16n8k16 / m16n8k8 fragments,
ldmatrix rows). Inputs are small multiples of 1/2 (tf32: of 1/4), so every
product and sum is exact and the result does not depend on how hardware
accumulates.

Run: python3 testdata/kernels/tensor_core.py
"""
import random
from fractions import Fraction
from pathlib import Path

HERE = Path(__file__).resolve().parent
random.seed(14)


def matrix(rows, columns, choices):
    return [[random.choice(choices) for _ in range(columns)] for _ in range(rows)]


def flat(m):
    return [x for row in m for x in row]


def numbers(values):
    return ", ".join(format_number(v) for v in values)


def format_number(value):
    value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    return repr(float(value))  # exact: every value here is a binary fraction of at most 53 bits


def product(a, b_kn, c, k_valid=None):
    """D[m][n] = sum_k A[m][k] B[k][n] + C[m][n] over the first k_valid k."""
    k = len(b_kn) if k_valid is None else k_valid
    return [
        [sum(Fraction(a[m][kk]) * Fraction(b_kn[kk][n]) for kk in range(k)) + Fraction(c[m][n]) for n in range(8)]
        for m in range(16)
    ]


def nearest_f32(x):
    """The f32 nearest `x` (a Fraction), ties to even (normal range)."""
    x = Fraction(x)
    if x == 0:
        return Fraction(0)
    sign, m = (-1 if x < 0 else 1), abs(x)
    e = m.numerator.bit_length() - m.denominator.bit_length()
    if Fraction(2) ** e > m:
        e -= 1
    scale = Fraction(2) ** (23 - e)
    q = m * scale
    n, r = q.numerator // q.denominator, q - q.numerator // q.denominator
    if r > Fraction(1, 2) or (r == Fraction(1, 2) and n % 2 == 1):
        n += 1
    return sign * Fraction(n) / scale


def transpose(m):
    return [list(row) for row in zip(*m)]


HALVES = [Fraction(x, 2) for x in range(-6, 7)]
QUARTERS = [Fraction(x, 4) for x in range(-8, 9)]

# The accumulator fragment's stores: lane (g, t) holds D(g, 2t), D(g, 2t+1), D(g+8, 2t), D(g+8, 2t+1).
ACCUMULATE = """  let v20: i64 = (v0 / 4)
  let v21: i64 = ((v0 % 4) * 2)
  let v11: f32 = c[((v20 * 8) + v21)]
  let v12: f32 = c[(((v20 * 8) + v21) + 1)]
  let v13: f32 = c[(((v20 + 8) * 8) + v21)]
  let v14: f32 = c[((((v20 + 8) * 8) + v21) + 1)]
"""
STORE = """  d[((v20 * 8) + v21)] = v11
  d[(((v20 * 8) + v21) + 1)] = v12
  d[(((v20 + 8) * 8) + v21)] = v13
  d[((((v20 + 8) * 8) + v21) + 1)] = v14
"""
# A (16×16, row-major) in shared: x4 ldmatrix, matrix i = lanes 8i..8i+7 giving rows
# (i % 2) * 8 + lane % 8 at column (i / 2) * 8: a0..a3 as the m16n8k16 fragment wants.
LOAD_A = """  let v3: i64 = ((((((v0 / 8) % 2) * 8) + (v0 % 8)) * 16) + ((v0 / 16) * 8))
  let v4, v5, v6, v7: u32 = ldmatrix sa[v3]
"""


def bf16_kernel(wait=True, misaligned=False, name="mma_bf16"):
    """cp.async (16 bytes, the last 4 of A's 16 columns zero-filled) + ldmatrix x4 / x1 + mma bf16."""
    wait_line = "  cp_async_wait 0\n" if wait else ""
    a_row = "v3" if not misaligned else "(v3 + 4)"
    load_a = LOAD_A.replace("ldmatrix sa[v3]", f"ldmatrix sa[{a_row}]")
    return f"""kernel {name}(in a: bf16*, in b: bf16*, in c: f32*, out d: f32*) threads 32 blocks 1 {{
  shared sa: bf16[256] align 128
  shared sb: bf16[128] align 128
  let v0: i64 = i64(lane)
  let v1: i64 = (v0 / 2)
  let v2: i64 = ((v0 % 2) * 8)
  cp_async(sa[((v1 * 16) + v2)], a[((v1 * 16) + v2)], 8, (12 - v2))
  if (v0 < 16) {{
    cp_async(sb[((v1 * 16) + v2)], b[((v1 * 16) + v2)], 8, 8)
  }}
  cp_async_commit
{wait_line}  barrier
{load_a}  let v8: i64 = ((v0 % 8) * 16)
  let v9: u32 = ldmatrix sb[v8]
  let v10: u32 = ldmatrix sb[(v8 + 8)]
{ACCUMULATE}  mma.m16n8k16.bf16 (v11, v12, v13, v14) += (v4, v5, v6, v7) * (v9, v10)
{STORE}}}
"""


F16_KERNEL = f"""kernel mma_f16_trans(in a: f16*, in b: f16*, in c: f32*, out d: f32*) threads 32 blocks 1 {{
  shared sa: f16[256] align 128
  shared sb: f16[128] align 128
  let v0: i64 = i64(lane)
  let v1: i64 = (v0 / 2)
  let v2: i64 = ((v0 % 2) * 8)
  cp_async(sa[((v1 * 16) + v2)], a[((v1 * 16) + v2)], 8, 8)
  cp_async(sb[(v0 * 4)], b[(v0 * 4)], 4, 4)
  cp_async_commit
  cp_async_wait 0
  barrier
{LOAD_A}  let v9, v10: u32 = ldmatrix_trans sb[((v0 % 16) * 8)]
{ACCUMULATE}  mma.m16n8k16.f16 (v11, v12, v13, v14) += (v4, v5, v6, v7) * (v9, v10)
{STORE}}}
"""

# tf32 m16n8k8: A (16×8 f32) through 4-byte cp.async into shared, then the
# fragment a0 = A(g, t), a1 = A(g+8, t), a2 = A(g, t+4), a3 = A(g+8, t+4);
# B in the weight layout [n, k]: b0 = B(k=t, n=g), b1 = B(k=t+4, n=g).
TF32_KERNEL = f"""kernel mma_tf32(in a: f32*, in b: f32*, in c: f32*, out d: f32*) threads 32 blocks 1 {{
  shared sa: f32[128] align 128
  let v0: i64 = i64(lane)
  for v1 in 0..4 by 1 {{
    cp_async(sa[((v1 * 32) + v0)], a[((v1 * 32) + v0)], 1, 1)
  }}
  cp_async_commit
  cp_async_wait 0
  barrier
{ACCUMULATE}  let v22: i64 = (v0 % 4)
  let v4: u32 = bitcast(u32, sa[((v20 * 8) + v22)])
  let v5: u32 = bitcast(u32, sa[(((v20 + 8) * 8) + v22)])
  let v6: u32 = bitcast(u32, sa[(((v20 * 8) + v22) + 4)])
  let v7: u32 = bitcast(u32, sa[((((v20 + 8) * 8) + v22) + 4)])
  let v9: u32 = bitcast(u32, b[((v20 * 8) + v22)])
  let v10: u32 = bitcast(u32, b[(((v20 * 8) + v22) + 4)])
  mma.m16n8k8.tf32 (v11, v12, v13, v14) += (v4, v5, v6, v7) * (v9, v10)
{STORE}}}
"""


def write(name, header, body):
    (HERE / f"{name}.kir").write_text("\n".join("// " + line if line else "//" for line in header) + "\n" + body)
    print(f"wrote {name}.kir")


def main():
    source = "Written by testdata/kernels/tensor_core.py (inputs and expected values from Python's fractions)."

    a = matrix(16, 16, HALVES)
    b_nk = matrix(8, 16, HALVES)  # the weight layout [n, k]
    c = matrix(16, 8, HALVES)
    d = product(a, transpose(b_nk), c, k_valid=12)
    data = [
        f"buffer a: {numbers(flat(a))}",
        f"buffer b: {numbers(flat(b_nk))}",
        f"buffer c: {numbers(flat(c))}",
        "buffer d: fill(128, 0)",
    ]
    write(
        "mma_bf16",
        [
            "bf16 m16n8k16 on one warp: A (16×16) and B in the weight layout [n, k] reach shared memory",
            "by 16-byte cp.async (A's last 4 columns zero-filled: only 12 source elements per row are",
            "read), A's fragment by one ldmatrix x4, B's by two x1; D = A[:, :12]·B[:12] + C.",
            source,
            *data,
            f"expect d: {numbers(flat(d))}",
            "expect ptx: cp.async.cg.shared.global, cp.async.commit_group, cp.async.wait_group",
            "expect ptx: ldmatrix.sync.aligned.m8n8.x4.shared.b16, ldmatrix.sync.aligned.m8n8.x1.shared.b16",
            "expect ptx: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32",
        ],
        bf16_kernel(),
    )
    write(
        "mma_missing_wait",
        [
            "mma_bf16 without its cp.async.wait_group: the ldmatrix reads shared memory the copies",
            "may not have written yet.",
            source,
            *data,
            "expect error: while a cp.async to it is in flight",
        ],
        bf16_kernel(wait=False, name="mma_missing_wait"),
    )
    write(
        "ldmatrix_misaligned",
        [
            "mma_bf16 with A's ldmatrix rows 4 elements off: a row must start on 16 bytes.",
            source,
            *data,
            "expect error: is not aligned to its size",
        ],
        bf16_kernel(misaligned=True, name="ldmatrix_misaligned"),
    )

    # bf16 values with 8 significant bits and an accumulator with bits far below them:
    # the exact sum needs rounding to f32, once (the simulators' model; the GPU probe
    # reports how hardware rounds it).
    eighths = [Fraction(m, 64) for m in range(-255, 256)]
    a = matrix(16, 16, eighths)
    b_nk = matrix(8, 16, eighths)
    c = matrix(16, 8, [Fraction(m, 2**20) + Fraction(m % 7) for m in range(-999, 1000, 37)])
    d = [[nearest_f32(x) for x in row] for row in product(a, transpose(b_nk), c, k_valid=12)]
    write(
        "mma_bf16_rounding",
        [
            "mma_bf16 on values whose exact sums need rounding to f32: the simulators round the",
            "exact sum of the products and the accumulator once, to nearest even.",
            source,
            f"buffer a: {numbers(flat(a))}",
            f"buffer b: {numbers(flat(b_nk))}",
            f"buffer c: {numbers(flat(c))}",
            "buffer d: fill(128, 0)",
            f"expect d: {numbers(flat(d))}",
        ],
        bf16_kernel(name="mma_bf16_rounding"),
    )

    a = matrix(16, 16, HALVES)
    b_kn = matrix(16, 8, HALVES)  # row-major K×N: ldmatrix .trans gives the fragment
    c = matrix(16, 8, HALVES)
    d = product(a, b_kn, c)
    write(
        "mma_f16_trans",
        [
            "f16 m16n8k16 with B row-major K×N [16, 8]: 8-byte cp.async, then ldmatrix x2 .trans",
            "gives B's fragment; A by ldmatrix x4. D = A·B + C.",
            source,
            f"buffer a: {numbers(flat(a))}",
            f"buffer b: {numbers(flat(b_kn))}",
            f"buffer c: {numbers(flat(c))}",
            "buffer d: fill(128, 0)",
            f"expect d: {numbers(flat(d))}",
            "expect ptx: cp.async.ca.shared.global, ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16",
            "expect ptx: mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32",
        ],
        F16_KERNEL,
    )

    a = matrix(16, 8, QUARTERS)
    b_nk = matrix(8, 8, QUARTERS)
    c = matrix(16, 8, QUARTERS)
    d = product(a, transpose(b_nk), c)
    write(
        "mma_tf32",
        [
            "tf32 m16n8k8: A by 4-byte cp.async into shared, fragments read per lane as the ISA lays",
            "them out, B in the weight layout [n, k] from global memory. D = A·B + C.",
            source,
            f"buffer a: {numbers(flat(a))}",
            f"buffer b: {numbers(flat(b_nk))}",
            f"buffer c: {numbers(flat(c))}",
            "buffer d: fill(128, 0)",
            f"expect d: {numbers(flat(d))}",
            "expect ptx: cp.async.ca.shared.global, mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32",
        ],
        TF32_KERNEL,
    )


if __name__ == "__main__":
    main()
