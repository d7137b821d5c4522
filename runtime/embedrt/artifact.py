"""An artifact folder on disk: its manifest, its files checked against their sha256, and its digest.

The per-file hashes in the manifest catch a damaged or swapped file; they cannot catch a manifest
rewritten together with the files it lists. For that, pin the artifact: :attr:`Artifact.digest` is the
sha256 of ``manifest.json`` (which lists every file's sha256), printed by ``embedrt export`` and
``embedrt info``; ``expected_digest=`` refuses any artifact but that one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from .hub import resolve_artifact
from .manifest import MANIFEST_NAME, ArtifactError, FileEntry, GraphVariant, Manifest


def _stamp(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of a byte string."""
    return hashlib.sha256(data).hexdigest()


class Artifact:
    """A loaded, validated artifact folder.

    Small files are read through :meth:`read_verified`, which returns the bytes only if their sha256
    matches the manifest: the bytes that were checked are the bytes that get used. Graphs (and their
    external data) go through :meth:`verified_graph` / :meth:`verified_file`, which check a file the
    same way without holding it in memory, hand out its path, and refuse it if it changed while it
    was being loaded.
    """

    def __init__(self, root: str | Path, expected_digest: str | None = None) -> None:
        root = Path(root)
        if not root.is_dir():
            raise ArtifactError(f"artifact folder not found: {root}")
        manifest_path = root / MANIFEST_NAME
        if not manifest_path.is_file():
            raise ArtifactError(f"{manifest_path}: missing; not an embedrt artifact folder")
        try:
            raw = manifest_path.read_bytes()
        except OSError as exc:
            raise ArtifactError(f"{manifest_path}: unreadable ({exc.strerror or exc})") from exc
        self.digest = sha256_bytes(raw)
        if expected_digest is not None and expected_digest.lower() != self.digest:
            raise ArtifactError(f"{manifest_path}: artifact digest {self.digest} is not the expected "
                                f"{expected_digest}; refusing an artifact other than the pinned one")
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ArtifactError(f"{manifest_path}: not valid JSON ({exc})") from exc
        self.root = root.resolve()
        self.manifest = Manifest.from_dict(data)
        for rel in self.manifest.files:
            self.path(rel)  # rejects paths escaping the folder before anything is read

    def path(self, rel: str) -> Path:
        """Absolute path of an artifact file; refuses names that leave the folder."""
        candidate = (self.root / rel).resolve()
        if candidate != self.root and self.root not in candidate.parents:
            raise ArtifactError(f"{MANIFEST_NAME}: file {rel!r} points outside the artifact folder")
        return candidate

    def _entry_path(self, rel: str) -> tuple[FileEntry, Path]:
        entry = self.manifest.files.get(rel)
        if entry is None:
            raise ArtifactError(f"{rel}: not listed in {MANIFEST_NAME}")
        path = self.path(rel)
        if not path.is_file():
            raise ArtifactError(f"{path}: missing (expected sha256 {entry.sha256})")
        return entry, path

    @staticmethod
    def _check(path: Path, entry: FileEntry, size: int, actual: str) -> None:
        if size != entry.size:
            raise ArtifactError(
                f"{path}: size {size} != {entry.size} in {MANIFEST_NAME} "
                f"(truncated or replaced; expected sha256 {entry.sha256})"
            )
        if actual != entry.sha256:
            raise ArtifactError(f"{path}: sha256 {actual} does not match expected sha256 {entry.sha256}")

    def read_verified(self, rel: str) -> bytes:
        """Read an artifact file and check its size and sha256 against the manifest."""
        entry, path = self._entry_path(rel)
        data = path.read_bytes()
        self._check(path, entry, len(data), sha256_bytes(data))
        return data

    @contextmanager
    def verified_file(self, rel: str) -> Iterator[Path]:
        """Check an artifact file's size and sha256 in 1 MiB reads and yield its path.

        For graphs: handed the bytes, ONNX Runtime would copy them once more and hold the graph twice at
        its peak. The file's inode, size and mtime are taken before hashing and compared when the block
        ends, so a file replaced or rewritten while the caller loaded it is refused by name instead of used.
        """
        entry, path = self._entry_path(rel)
        before = _stamp(path)
        digest, size = hashlib.sha256(), 0
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
        self._check(path, entry, size, digest.hexdigest())
        yield path
        if _stamp(path) != before:
            raise ArtifactError(f"{path}: changed while it was being loaded; refusing it")

    @contextmanager
    def verified_graph(self, variant: GraphVariant) -> Iterator[Path]:
        """:meth:`verified_file` for a graph and, when it has one, its external data file."""
        with ExitStack() as stack:
            if variant.external_data is not None:
                stack.enter_context(self.verified_file(variant.external_data))
            yield stack.enter_context(self.verified_file(variant.file))

    def verify_all(self) -> None:
        """Check every listed file; raises on the first damaged one."""
        for rel in self.manifest.files:
            with self.verified_file(rel):
                pass


def open_artifact(source: str | os.PathLike[str] | Artifact, expected_digest: str | None = None) -> Artifact:
    """An :class:`Artifact` from a folder, a name under ``$EMBEDRT_CACHE/artifacts`` or a Hub repo id
    (:func:`embedrt.hub.resolve_artifact`); an :class:`Artifact` is returned as it is, its digest checked."""
    if isinstance(source, Artifact):
        if expected_digest is not None and expected_digest.lower() != source.digest:
            raise ArtifactError(f"{source.root / MANIFEST_NAME}: artifact digest {source.digest} is not the "
                                f"expected {expected_digest}")
        return source
    return Artifact(resolve_artifact(source), expected_digest)
