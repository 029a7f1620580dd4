#!/usr/bin/env python3
"""Independent expected values for wide_ops.kir (u64 and i64 bit operations,
unsigned division, a rounding conversion to u64), from Python's exact
integers: prints the file's `// expect` lines.

Run: python3 testdata/kernels/wide_ops.py
"""
import math
import struct

X = [0xFEDCBA9876543210, 3, 0x8000000000000000, 12345678901234567]
F = [struct.unpack("<f", struct.pack("<f", v))[0] for v in (2.5, 1e19, -3.0, 7.25)]  # as f32
MASK = 2**64 - 1


def as_i64(bits):
    return bits - 2**64 if bits >= 2**63 else bits


out = []
for x, f in zip(X, F):
    signed = as_i64(x)
    out += [
        x >> 60,
        (x << 4) & MASK,
        x >> (68 % 64),
        (signed >> 60) & MASK,  # arithmetic shift, stored as its bits
        x // 7,
        x % 7,
        max(0, min(MASK, math.ceil(f))),  # cvt.rpi.u64.f32 saturates
    ]
# u64 elements beyond 2^53 are not exact in the filetest's f64 values, so the
# kernel stores each u64 as two u32 halves.
halves = []
for value in out:
    halves += [value & 0xFFFFFFFF, value >> 32]
print("// buffer x: " + ", ".join(str(h) for x in X for h in (x & 0xFFFFFFFF, x >> 32)))
print("// expect y: " + ", ".join(str(v) for v in halves))
