"""Safe extraction from zip archives (wheels): members by name, whole folders, or bytes."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path, PurePosixPath

from .common import FetchError

# Files that some uploader's OS dropped into an archive; they are not part of any model.
_OS_JUNK = frozenset({"desktop.ini", "Thumbs.db", ".DS_Store"})


def _safe_relpath(name: str) -> PurePosixPath:
    """Reject archive member names that would escape the extraction directory."""
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise FetchError(f"refusing unsafe archive member name {name!r}")
    return p


def _extract_member(zf: zipfile.ZipFile, member: str, dest: Path) -> None:
    """Stream one archive member to ``dest`` (zipfile checks its CRC while reading)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(member) as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def extract_files(archive: Path, mapping: dict[str, str], dest: Path) -> None:
    """Extract archive members (keys) to paths relative to ``dest`` (values)."""
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        for member, rel in mapping.items():
            if member not in names:
                raise FetchError(f"{archive.name} has no member {member!r}")
            _extract_member(zf, member, dest / _safe_relpath(rel))


def extract_tree(archive: Path, prefix: str, dest: Path) -> list[str]:
    """Extract every file under ``prefix`` (a folder inside the archive) into ``dest``.

    Returns the extracted paths relative to ``dest``.  OS junk files are left out.  An empty
    ``prefix`` means the whole archive.
    """
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    out: list[str] = []
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if info.is_dir() or not info.filename.startswith(prefix):
                continue
            rel = _safe_relpath(info.filename[len(prefix) :])
            if rel.name in _OS_JUNK:
                continue
            _extract_member(zf, info.filename, dest / rel)
            out.append(rel.as_posix())
    if not out:
        raise FetchError(f"{archive.name} has nothing under {prefix!r}")
    return sorted(out)


def read_member(archive: Path, member: str) -> bytes:
    """Return the bytes of one archive member."""
    with zipfile.ZipFile(archive) as zf:
        try:
            return zf.read(member)
        except KeyError as e:
            raise FetchError(f"{archive.name} has no member {member!r}") from e

