#!/usr/bin/env python3
"""Independent expected values for native_ops.kir, from Python's exact
integers and fractions (no kiln code): prints the file's `// expect` lines.

Run: python3 testdata/kernels/native_ops.py
"""
import math
import struct
from fractions import Fraction

X = [0x12345678, 0xFFFFFFFF, 0x80000001, 7]
F = [1 + 2**-12, -2.5, 2.5, 3.7]


def f32(value):
    """Nearest f32 (ties to even) of a Python float."""
    return struct.unpack("<f", struct.pack("<f", value))[0]


def f32_bits(value):
    return struct.unpack("<I", struct.pack("<f", value))[0]


def round_significand(exact, bits, mode):
    """`exact` (a Fraction) rounded to `bits` significant bits: 'rn' or 'rz'."""
    if exact == 0:
        return Fraction(0)
    sign = -1 if exact < 0 else 1
    magnitude = abs(exact)
    exponent = math.floor(math.log2(magnitude))
    while Fraction(2) ** exponent > magnitude:
        exponent -= 1
    while Fraction(2) ** (exponent + 1) <= magnitude:
        exponent += 1
    ulp = Fraction(2) ** (exponent - bits + 1)
    units = magnitude / ulp
    low = math.floor(units)
    if mode == "rz":
        chosen = low
    else:
        remainder = units - low
        chosen = low + (1 if remainder > Fraction(1, 2) or (remainder == Fraction(1, 2) and low % 2) else 0)
    return sign * chosen * ulp


def to_int(value, mode):
    rounded = {
        "rn": round(value),  # Python rounds half to even
        "rz": math.trunc(value),
        "rm": math.floor(value),
        "rp": math.ceil(value),
    }[mode]
    return max(-(2**31), min(2**31 - 1, rounded))


def as_i32(bits):
    return bits - 2**32 if bits >= 2**31 else bits


y, z, h = [], [], []
for x, f in zip(X, (f32(v) for v in F)):
    mask = 0xFFFFFFFF
    y += [
        x >> 4,
        (x << 28) & mask,
        x & 0xFF,
        x | 0xFF00,
        x ^ 0xAAAAAAAA,
        ~x & mask,
        x >> (36 % 32),
        f32_bits(f),
    ]
    z += [as_i32(x) >> 4] + [to_int(f, mode) for mode in ("rn", "rz", "rm", "rp")] + [int(x < 2**31)]
    fused = f32(float(Fraction(f) * Fraction(f) - 1))  # exact product and sum, one rounding
    h += [
        fused,
        float(round_significand(Fraction(x), 24, "rz")),
        float(round_significand(Fraction(f), 8, "rz")),
        float(round_significand(Fraction(f), 11, "rz")),  # f16: 11 significant bits (normal range)
    ]

print("// expect y: " + ", ".join(str(v) for v in y))
print("// expect z: " + ", ".join(str(v) for v in z))
print("// expect h: " + ", ".join(repr(v) for v in h))
