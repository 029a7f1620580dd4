#!/usr/bin/env bash
# The main job: import the real all-MiniLM-L6-v2 checkpoint, compile it to one
# kernel per fusion group (PTX for sm_80/sm_90, AMDGPU assembly for gfx942,
# with ptxas's register report), and evaluate it on three tokenized ad
# queries/titles (testdata/minilm) with kiln's reference evaluator. Later
# issues grow this into compile → artifact → run on CUDA or the simulator.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p kiln-compiler --bin kiln
model="$(scripts/minilm-dir.sh)"
inputs=testdata/minilm/inputs
echo "== kiln inspect $model"
target/release/kiln inspect "$model"
echo "== kiln compile $model --target sm_80,sm_90,gfx942 --emit-dir out/minilm-kernels"
target/release/kiln compile "$model" --target sm_80,sm_90,gfx942 --emit-dir out/minilm-kernels
echo "== kiln eval (sentences: $(tr -d '\n' < testdata/minilm/sentences.json))"
target/release/kiln eval "$model" --force \
  --input input_ids=$inputs/input_ids.npy \
  --input attention_mask=$inputs/attention_mask.npy \
  --input token_type_ids=$inputs/token_type_ids.npy \
  --output-dir out/minilm
