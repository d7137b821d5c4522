#!/usr/bin/env bash
# Create (or refresh) the virtualenv that runs the anchors of benchmarks/cpu.py:
# sentence-transformers' ONNX backend (optimum-onnx) and fastembed.
#
# It is separate from the project's venv because optimum-onnx pins transformers 4.57 and so
# sentence-transformers 5.7, while the exporter is pinned to transformers 5.x / sentence-transformers 6.x.
# Idempotent: re-running only installs what is missing. Location:
#   ${EMBEDRT_ANCHORS_VENV:-${EMBEDRT_CACHE:-~/.cache/embedrt}/venv-anchors}
set -euo pipefail
cache="${EMBEDRT_CACHE:-$HOME/.cache/embedrt}"
venv="${EMBEDRT_ANCHORS_VENV:-$cache/venv-anchors}"
python="${PYTHON:-python3}"

# The same onnxruntime as the project's venv where there is one, so that rows differ in the
# library under test and not in the ONNX Runtime build; otherwise the version these pins were tested with.
project_venv="${EMBEDRT_VENV:-$(cd "$(dirname "$0")/.." && pwd)/.venv}"
ort_version="1.31.1"
if [ -x "$project_venv/bin/python" ]; then
    ort_version="$("$project_venv/bin/python" -c 'import onnxruntime; print(onnxruntime.__version__)' 2>/dev/null \
                   || echo "$ort_version")"
fi

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
# torch first and pinned: unpinned, pip pulls a multi-GB CUDA build.
"$venv/bin/python" -m pip install -q "torch==2.13.0"
# Pinned to what pip resolved when this benchmark was written (and was verified to export and run
# offline); optimum-onnx 0.1.0 caps transformers below 4.58, which caps sentence-transformers at 5.7.
"$venv/bin/python" -m pip install -q \
    "optimum-onnx[onnxruntime]==0.1.0" "optimum==2.1.0" "transformers==4.57.6" \
    "sentence-transformers==5.7.0" "fastembed==0.9.1" "onnxruntime==$ort_version"
"$venv/bin/python" -m pip check
"$venv/bin/python" - <<'EOF'
from importlib.metadata import version
print("anchors venv ready:", ", ".join(f"{d} {version(d)}" for d in (
    "torch", "transformers", "sentence-transformers", "optimum", "optimum-onnx", "onnxruntime", "fastembed")))
EOF
