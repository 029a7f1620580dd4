#!/usr/bin/env bash
# The main job: import the real all-MiniLM-L6-v2 checkpoint and evaluate it on
# three tokenized ad queries/titles (testdata/minilm) with kiln's reference
# evaluator. Later issues grow this into compile + run on CUDA or the simulator.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p kiln-compiler --bin kiln
model="$(scripts/minilm-dir.sh)"
inputs=testdata/minilm/inputs
echo "== kiln inspect $model"
target/release/kiln inspect "$model"
echo "== kiln eval (sentences: $(tr -d '\n' < testdata/minilm/sentences.json))"
target/release/kiln eval "$model" --force \
  --input input_ids=$inputs/input_ids.npy \
  --input attention_mask=$inputs/attention_mask.npy \
  --input token_type_ids=$inputs/token_type_ids.npy \
  --output-dir out/minilm
