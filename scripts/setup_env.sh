#!/usr/bin/env bash
# Create (or refresh) the project virtualenv at $EMBEDRT_VENV (default: ./.venv) with the given extras.
# torch is installed first and pinned: letting pip pick it pulls a multi-GB CUDA build.
# With the `dev` extra, the development tools (scripts/dev: embedrt-dev, never shipped) are installed too.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-cpu,export}"
venv="${EMBEDRT_VENV:-.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "torch==2.13.0"
"$venv/bin/python" -m pip install -q -e ".[${extras}]"
case ",${extras}," in
    *,dev,*) "$venv/bin/python" -m pip install -q -e scripts/dev ;;
esac
echo "environment ready: $venv (extras: $extras)"
