#!/usr/bin/env bash
# Builds what scripts/gpu/run.sh needs on a GPU machine that has no Rust:
# out/gpu/bin/kiln-run, the tensor-core probe kernels (PTX and simulated bits), every testdata model as an f32 artifact (sm_90), and the two
# benchmark models (MiniLM-L6 at batch ≤ 256 × seq ≤ 64 and BERT-base at
# batch ≤ 32 × seq ≤ 128, pseudo-random weights from scripts/gpu/bert_weights.py)
# as bf16 artifacts, gzip-compressed so out/gpu stays small enough to carry.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/setup.sh
cargo build --release --locked -p kiln-compiler --bin kiln -p kiln-cli --bin kiln-run
out=out/gpu
rm -rf "$out"
mkdir -p "$out/bin" "$out/artifacts" "$out/work"
cp target/release/kiln-run "$out/bin/"
python3 - <<'PY' > "$out/work/models.txt"
import json
for m in json.load(open("testdata/models.json"))["models"]:
    print(m["name"], m["model"])
PY
while read -r name model; do
  # sm_90 alone (the lent GPU is an H200) and gzipped: the call's working tree must stay under 64 MiB.
  target/release/kiln compile "testdata/models/$name/$model" --target sm_90 \
    -o "$out/artifacts/$name.kiln" > /dev/null
  gzip -f "$out/artifacts/$name.kiln"
  echo "compiled $name"
done < "$out/work/models.txt"
for spec in "minilm-l6 1..256 1..64" "bert-base 1..32 1..128"; do
  read -r name batch seq <<< "$spec"
  python3 scripts/gpu/bert_weights.py "$name" "$out/work/$name"
  target/release/kiln compile "$out/work/$name" --precision bf16 --target sm_80,sm_90 \
    --bound "batch=$batch,seq=$seq" -o "$out/artifacts/$name.bf16.kiln" | grep -E "^(kernels|artifact)"
  gzip -f "$out/artifacts/$name.bf16.kiln"
done
# The tensor-core probes: each instruction variant's filetest, lowered for sm_90 and
# simulated (the bits the GPU must reproduce; run.py's first section).
for probe in mma_bf16 mma_bf16_rounding mma_f16_trans mma_tf32; do
  target/release/kiln kernel "testdata/kernels/$probe.kir" --target sm_90 -o "$out/probes" > /dev/null
done
rm -rf "$out/work"
du -sh "$out"
echo "carry out/gpu: it and the tracked files must stay under the device tool's 64 MiB"
