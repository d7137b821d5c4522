"""How the scripts in this folder run a tool of this checkout, whether or not its packages are installed.

``run_module("embedrt_dev.fetch", needs=("embedrt", "embedrt_dev"))`` runs the module as ``python -m``
would: in this process when every package in ``needs`` can be imported, otherwise in a child
interpreter whose ``PYTHONPATH`` starts with the checkout folders of the missing ones (nothing is
loaded by file path, and this process's ``sys.path`` is left alone). The child keeps the caller's
working directory, so relative paths on the command line mean what they meant.
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Top-level package -> the checkout folder that holds it.
FOLDERS = {"embedrt": ROOT / "runtime", "embedrt_export": ROOT / "exporter", "embedrt_dev": ROOT / "scripts" / "dev",
           "benchmarks": ROOT}


def run_module(module: str, needs: Sequence[str]) -> None:
    """Run ``module`` (a module or a package with ``__main__``) with this script's arguments; exits with its status."""
    missing = [str(FOLDERS[name]) for name in needs if importlib.util.find_spec(name) is None]
    if not missing:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return
    path = os.pathsep.join([*dict.fromkeys(missing), *filter(None, [os.environ.get("PYTHONPATH")])])
    sys.exit(subprocess.call([sys.executable, "-m", module, *sys.argv[1:]], env={**os.environ, "PYTHONPATH": path}))
