#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, its driver, PyTorch and (optionally) JAX, no
# Rust needed: one call that checks and times everything scripts/gpu/prepare.sh
# built, section by section, each under a time cap (see run.py's docstring),
# about eight minutes at most. Rows print as they finish; the whole table is
# also written to out/gpu/results.md and, when $OUT is set, $OUT/results.md.
#
# Usage: scripts/gpu/run.sh [--only device,correctness,timing-bert-base,timing-minilm-l6,max-autotune,kernels]
set -euo pipefail
cd "$(dirname "$0")/../.."
test -x out/gpu/bin/kiln-run || { echo "run scripts/gpu/prepare.sh first (on a machine with Rust)"; exit 1; }
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
python3 scripts/gpu/run.py "$@"
