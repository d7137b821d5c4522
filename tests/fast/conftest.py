"""Fixtures of the fast tier: a tiny real artifact (tests/fast/tiny.py), no torch, no fetched models."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import tiny


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory) -> Path:
    """The tiny artifact, built once per session; tests that change it copy it first (``tiny_copy``)."""
    return tiny.build(tmp_path_factory.mktemp("tiny") / "tiny", prompts={"query": "query: "})


@pytest.fixture()
def tiny_copy(tiny_artifact, tmp_path) -> Path:
    """A private copy of the tiny artifact, free to damage."""
    return Path(shutil.copytree(tiny_artifact, tmp_path / "tiny"))
