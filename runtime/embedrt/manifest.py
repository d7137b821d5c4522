"""The artifact manifest: the one contract between the exporter and the runtime.

An artifact is a folder holding ONNX graphs, a tokenizer and ``manifest.json``. The manifest
says what the graphs compute (pooling, Dense, LayerNorm, Normalize are all inside them), how
text must be tokenized, and the sha256 of every file, so a damaged artifact is refused
instead of producing wrong embeddings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = "embedrt.artifact/1"
MANIFEST_NAME = "manifest.json"
SIMILARITY_FUNCTIONS = ("cosine", "dot", "euclidean", "manhattan")


class ArtifactError(ValueError):
    """An artifact folder is missing, malformed or damaged."""


@dataclass(frozen=True)
class FileEntry:
    """A file of the artifact with the digest it must have."""

    sha256: str
    size: int


@dataclass(frozen=True)
class GraphVariant:
    """One ONNX graph of a tower (fp32, optimized, int8 for an ISA, fp16)."""

    file: str
    opset: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    parity: dict[str, float] = field(default_factory=dict)
    # The graph's initializers stored beside it (ONNX external data) when the graph would pass
    # protobuf's 2 GiB limit, e.g. glove.840B's 2.2M x 300 matrix; verified like the graph itself.
    external_data: str | None = None
    # Op domains beyond ONNX Runtime's own that the graph uses: ``ai.embedrt``, whose kernels are
    # embedrt's compiled library (``embedrt.kernels``); empty for a graph any ONNX Runtime can run.
    custom_ops: tuple[str, ...] = ()


@dataclass(frozen=True)
class Tower:
    """A model input branch (``text``; CLIP adds ``vision``) and its graph variants."""

    variants: dict[str, GraphVariant]
    default_variant: str = "fp32"


@dataclass(frozen=True)
class TokenizerSpec:
    """How text becomes token ids; padding and truncation are set by the runtime, not the file."""

    kind: str  # "hf": a tokenizers ``tokenizer.json``; "whitespace": sentence-transformers' WhitespaceTokenizer
    file: str
    max_seq_length: int
    pad_token_id: int
    model_max_length: int | None = None


@dataclass(frozen=True)
class Manifest:
    """Everything the runtime needs to know about an artifact."""

    schema: str
    name: str
    embedding_dimension: int
    similarity_fn_name: str
    normalized: bool
    tokenizer: TokenizerSpec
    towers: dict[str, Tower]
    files: dict[str, FileEntry]
    source: dict[str, Any] = field(default_factory=dict)
    created_with: dict[str, str] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    # CLIP image preprocessing (size, crop, mean, std, resample); None for text-only models.
    image: dict[str, Any] | None = None
    # What encode() accepts: "text"; "pair" = [title, text] pairs; "image" = CLIP images.
    input_kinds: list[str] = field(default_factory=lambda: ["text"])

    def to_json(self) -> str:
        """Serialize as the ``manifest.json`` text (stable key order, so diffs stay readable)."""
        return json.dumps(asdict(self), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Build a manifest from parsed JSON, raising :class:`ArtifactError` on any schema violation."""
        if not isinstance(data, dict):
            raise ArtifactError(f"{MANIFEST_NAME}: expected a JSON object, got {type(data).__name__}")
        if data.get("schema") != SCHEMA:
            raise ArtifactError(
                f"{MANIFEST_NAME}: unsupported schema {data.get('schema')!r}; this embedrt reads {SCHEMA!r}"
            )
        try:
            towers = {
                name: Tower(
                    variants={
                        key: GraphVariant(
                            file=v["file"],
                            opset=int(v["opset"]),
                            inputs=tuple(v["inputs"]),
                            outputs=tuple(v["outputs"]),
                            parity={k: float(x) for k, x in v.get("parity", {}).items()},
                            external_data=v.get("external_data"),
                            custom_ops=tuple(str(d) for d in v.get("custom_ops", ())),
                        )
                        for key, v in t["variants"].items()
                    },
                    default_variant=t.get("default_variant", "fp32"),
                )
                for name, t in data["towers"].items()
            }
            manifest = cls(
                schema=data["schema"],
                name=str(data["name"]),
                embedding_dimension=int(data["embedding_dimension"]),
                similarity_fn_name=str(data["similarity_fn_name"]),
                normalized=bool(data["normalized"]),
                tokenizer=TokenizerSpec(**data["tokenizer"]),
                towers=towers,
                files={k: FileEntry(**v) for k, v in data["files"].items()},
                source=dict(data.get("source", {})),
                created_with=dict(data.get("created_with", {})),
                prompts=dict(data.get("prompts", {})),
                default_prompt_name=data.get("default_prompt_name"),
                image=data.get("image"),
                input_kinds=list(data.get("input_kinds", ["text"])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{MANIFEST_NAME}: malformed ({type(exc).__name__}: {exc})") from exc
        manifest._check_consistency()
        return manifest

    def _check_consistency(self) -> None:
        if self.similarity_fn_name not in SIMILARITY_FUNCTIONS:
            raise ArtifactError(
                f"{MANIFEST_NAME}: similarity_fn_name {self.similarity_fn_name!r} not in {SIMILARITY_FUNCTIONS}"
            )
        if not self.towers:
            raise ArtifactError(f"{MANIFEST_NAME}: no towers")
        referenced = [self.tokenizer.file]
        for tower_name, tower in self.towers.items():
            if tower.default_variant not in tower.variants:
                raise ArtifactError(
                    f"{MANIFEST_NAME}: tower {tower_name!r} default variant {tower.default_variant!r} is not listed"
                )
            for v in tower.variants.values():
                referenced.append(v.file)
                if v.external_data is not None:
                    if Path(v.external_data).parent != Path(v.file).parent:
                        raise ArtifactError(f"{MANIFEST_NAME}: external data {v.external_data!r} must sit beside "
                                            f"its graph {v.file!r}")
                    referenced.append(v.external_data)
        for rel in referenced:
            if rel not in self.files:
                raise ArtifactError(f"{MANIFEST_NAME}: {rel!r} is used but has no sha256 entry under 'files'")


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

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        if not root.is_dir():
            raise ArtifactError(f"artifact folder not found: {root}")
        manifest_path = root / MANIFEST_NAME
        if not manifest_path.is_file():
            raise ArtifactError(f"{manifest_path}: missing; not an embedrt artifact folder")
        try:
            data = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
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

        For graphs, whose bytes ONNX Runtime would otherwise copy once more (mpnet-base fp32: peak RSS
        1.3 GB from bytes, 0.7 GB from the path). The file's inode, size and mtime are taken before
        hashing and compared when the block ends, so a file replaced or rewritten while the caller
        loaded it is refused by name instead of used.
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
