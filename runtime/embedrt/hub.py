"""Resolve a model name or repo id to a local artifact folder."""

from __future__ import annotations

import os
from pathlib import Path

from .manifest import MANIFEST_NAME, ArtifactError
from .paths import cache_dir


def artifacts_dir() -> Path:
    """Local artifact store: ``$EMBEDRT_CACHE/artifacts`` (default ``~/.cache/embedrt/artifacts``)."""
    return cache_dir() / "artifacts"


def resolve_artifact(name_or_path: str | os.PathLike[str]) -> Path:
    """A folder path as is; else ``artifacts_dir()/<name>``; else a Hugging Face Hub snapshot of the repo
    ``name_or_path`` (which must hold an embedrt artifact). The error lists every place looked at."""
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path):
        raise TypeError(f"model_name_or_path must be a non-empty str or path, got {type(name_or_path).__name__} "
                        f"{name_or_path!r}"[:200])
    path = Path(name_or_path)
    if path.is_dir():
        return path
    name = str(name_or_path)
    local = artifacts_dir() / name.rsplit("/", 1)[-1]
    if (local / MANIFEST_NAME).is_file():
        return local
    try:
        from huggingface_hub import snapshot_download

        snapshot = Path(snapshot_download(name))
    except Exception as exc:  # offline, unknown repo, bad id: all mean "no artifact there"
        raise ArtifactError(
            f"no embedrt artifact for {name!r}: not a folder, not in {local.parent}, and the Hugging Face Hub "
            f"gave none ({type(exc).__name__}: {str(exc)[:160]}). Export one with `embedrt export {name} -o DIR`."
        ) from exc
    if not (snapshot / MANIFEST_NAME).is_file():
        raise ArtifactError(f"Hub repo {name!r} has no {MANIFEST_NAME}: it is not an embedrt artifact; "
                            f"export it with `embedrt export {name} -o DIR`")
    return snapshot
