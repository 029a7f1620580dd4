#!/usr/bin/env bash
# Sets up what is missing (scripts/setup.sh) and runs the whole test suite.
# Snapshots are checked, not rewritten (INSTA_UPDATE=no); to accept new ones
# run `INSTA_UPDATE=always cargo test` and review the diff.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export KILN_MINILM_DIR="$(scripts/minilm-dir.sh)"
# ptxas and libdevice from .venv; with KILN_REQUIRE_PTXAS a missing ptxas fails the tests.
# Absolute paths: test binaries run in their crate's directory.
export KILN_PTXAS="$(ls "$PWD"/.venv/lib/python*/site-packages/nvidia/cu*/bin/ptxas | head -n 1)"
export KILN_LIBDEVICE="$(ls "$PWD"/.venv/lib/python*/site-packages/nvidia/cu*/nvvm/libdevice/libdevice.10.bc | head -n 1)"
export KILN_NVDISASM="$(ls "$PWD"/.venv/lib/python*/site-packages/nvidia/cu*/bin/nvdisasm | head -n 1)"
export KILN_REQUIRE_PTXAS=1
export INSTA_UPDATE="${INSTA_UPDATE:-no}"
cargo test --workspace --locked "$@"
