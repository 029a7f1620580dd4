#!/usr/bin/env bash
# The main job: compile the real all-MiniLM-L6-v2 checkpoint into one .kiln
# artifact (cubins and PTX for sm_80/sm_90, AMDGPU assembly for gfx942, the
# portable kernel IR, weights and memory plan; `kiln inspect out/minilm.kiln`
# describes it), then run it on the best device present
# — CUDA when a GPU and driver are there, else kiln's kernel simulator — on a
# few ad-style queries and ad titles: tokenized with the model's own
# tokenizer.json, mean-pooled and L2-normalized as its modules.json says,
# compared by cosine similarity. Prints a short compile summary, the
# similarity table and one line with the device and texts per second.
#
# Usage: scripts/demo.sh [--device auto|cuda|cuda:N|sim]
set -euo pipefail
cd "$(dirname "$0")/.."
device="auto"
if [[ "${1:-}" == "--device" && -n "${2:-}" ]]; then device="$2"; fi
scripts/setup.sh
cargo build --release --locked -p kiln-compiler --bin kiln -p kiln-cli --bin kiln-run
model="$(scripts/minilm-dir.sh)"
mkdir -p out
echo "== kiln compile $model -o out/minilm.kiln"
target/release/kiln compile "$model" --force -o out/minilm.kiln \
  --target sm_80,sm_90,gfx942 --bound batch=1..64,seq=1..128
echo "== kiln embed out/minilm.kiln --device $device"
target/release/kiln embed out/minilm.kiln --model-dir "$model" --device "$device" \
  --query "cheap flights to paris" \
  --query "running shoes for women" \
  --query "best pizza near me" \
  --document "Paris airfare deals from \$199, book now" \
  --document "Women's trail running shoes, free shipping" \
  --document "Order pizza online: hot delivery in 30 minutes"
