#!/usr/bin/env bash
# Create (or refresh) the virtualenv that runs infinity-emb, the anchor of benchmarks/serve.py.
#
# Separate from the project's and the anchors' venvs: infinity-emb 0.0.78 pins transformers 4.x,
# sentence-transformers 3.x and numpy < 2. PyPI's torchvision does not load beside the CPU torch wheel
# ("operator torchvision::nms does not exist") and infinity's text path does not need it, so it is removed.
# Idempotent. Location: ${EMBEDRT_INFINITY_VENV:-${EMBEDRT_CACHE:-~/.cache/embedrt}/venv-infinity}
set -euo pipefail
cache="${EMBEDRT_CACHE:-$HOME/.cache/embedrt}"
venv="${EMBEDRT_INFINITY_VENV:-$cache/venv-infinity}"
python="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
# torch first and pinned, and held there: unpinned, pip pulls a multi-GB CUDA build (infinity-emb[all]'s
# image extras ask for an older torch, so only the server, optimum and torch extras are taken).
"$venv/bin/python" -m pip install -q "torch==2.13.0"
echo "torch==2.13.0" > "$venv/constraints.txt"
"$venv/bin/python" -m pip install -q -c "$venv/constraints.txt" "infinity-emb[server,optimum,torch]==0.0.78"
"$venv/bin/python" -m pip uninstall -q -y torchvision || true
"$venv/bin/python" - <<'PY'
from importlib.metadata import version
print("infinity venv ready:", ", ".join(f"{d} {version(d)}" for d in (
    "infinity-emb", "torch", "transformers", "sentence-transformers", "optimum", "onnxruntime")))
PY
