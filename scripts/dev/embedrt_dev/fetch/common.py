"""What every fetch step shares: the error type, progress output, hashing, JSON files and subprocesses."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class FetchError(RuntimeError):
    """A fetch or build step failed; the message says which item, file or check."""


def log(msg: str) -> None:
    """Print a progress message immediately (fetching often runs under a pipe)."""
    print(msg, flush=True)


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: Path, obj: Any, *, indent: int | None = 2) -> None:
    """Write ``obj`` as UTF-8 JSON with a trailing newline, creating the parent folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
        f.write("\n")


def rmtree(path: Path) -> None:
    """Remove a file, a symlink or a folder tree; nothing if absent."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def human(n: float) -> str:
    """A byte count for people: ``123 B``, ``4.5 MB``."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


def run(cmd: Sequence[str], *, cwd: Path | None = None, what: str) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing output; raise FetchError with that output on failure."""
    try:
        proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise FetchError(f"{what}: command not found: {cmd[0]}") from e
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).strip()
        raise FetchError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{out[-3000:]}")
    return proc
