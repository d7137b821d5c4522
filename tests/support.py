"""What test modules import from each other (never ``conftest``: tests/ and tests/fast/ each have one)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child_env() -> dict[str, str]:
    """The environment for a child interpreter in which this checkout's benchmarks and dev tools import as
    they do here (pytest's ``pythonpath``), whether or not embedrt-dev is installed."""
    paths = [str(ROOT), str(ROOT / "scripts" / "dev"), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
