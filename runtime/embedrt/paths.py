"""Where embedrt keeps things on disk: one rule for every module, tool and test."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "EMBEDRT_CACHE"


def cache_dir() -> Path:
    """The cache root: ``$EMBEDRT_CACHE`` if set, else ``~/.cache/embedrt``.

    Fetched models live under ``models/``, corpora under ``corpora/``, exported artifacts under
    ``artifacts/`` and TensorRT engines under ``trt/`` (unless ``$EMBEDRT_TRT_CACHE`` says otherwise).
    """
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "embedrt"
