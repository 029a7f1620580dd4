#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, its driver, PyTorch and JAX (no Rust
# needed): runs every artifact that scripts/gpu/prepare.sh built on CUDA
# against the PyTorch/ONNX Runtime references, then benchmarks kiln against
# PyTorch eager, torch.compile (default, max-autotune) and JAX in bf16 and
# prints one table (also written to out/gpu/results.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
test -x out/gpu/bin/kiln-run || { echo "run scripts/gpu/prepare.sh first (on a machine with Rust)"; exit 1; }
python3 scripts/gpu/run.py "$@"
