#!/usr/bin/env bash
# Sets up what is missing (scripts/setup.sh) and runs the whole test suite.
# Snapshots are checked, not rewritten (INSTA_UPDATE=no); to accept new ones
# run `INSTA_UPDATE=always cargo test` and review the diff.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export KILN_MINILM_DIR="$(scripts/minilm-dir.sh)"
export INSTA_UPDATE="${INSTA_UPDATE:-no}"
cargo test --workspace --locked "$@"
