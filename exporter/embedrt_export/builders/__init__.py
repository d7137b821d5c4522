"""Builders: one per kind of first module, each turning a loaded sentence-transformers model into
graph files and manifest parts (:class:`~.base.Built`).

- :mod:`.base`: :class:`~.base.Built`, the artifact's file names, the opset, the reference loader and
  the Hugging Face tokenizer writer: what the builders share, and all that the export reads from them.
- :mod:`.transformer`: ``Transformer`` models, traced (:mod:`.trace`) to one text graph.
- :mod:`.wordembed`: ``WordEmbeddings`` models (GloVe & co.), a graph written by hand.
- :mod:`.clip`: ``CLIPModel``, traced to a text and a vision graph.

:data:`BUILDERS` maps a source's first module kind to its builder; no builder imports
:mod:`embedrt_export.export`, which calls them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..source import SourceSpec
from . import clip, transformer, wordembed
from .base import Built

BUILDERS: dict[str, Callable[[Any, SourceSpec], Built]] = {
    "Transformer": transformer.build,
    "WordEmbeddings": wordembed.build,
    "CLIPModel": clip.build,
}

__all__ = ["BUILDERS", "Built"]
