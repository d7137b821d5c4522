"""The recipe file written into every twin folder, so that ``reuse=True`` never hands back a stale twin."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .spec import HeadSpec

# Written into every twin folder; sentence-transformers ignores unknown files.
TWIN_RECIPE_FILE = "embedrt_twin.json"


def head_to_json(head: HeadSpec) -> dict[str, Any]:
    """The head as it goes into the recipe (lists, every field)."""
    data = asdict(head)
    data["pooling"] = list(head.pooling_modes)
    data["dense"] = [list(layer) for layer in head.dense]
    data["prompts"] = [list(p) for p in head.prompts]
    return data


def fingerprint(path: Path | None) -> str | None:
    """``path:size:mtime`` of an asset file, so a changed tokenizer file makes a new recipe."""
    if path is None:
        return None
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}"


def reusable(out: Path, recipe: dict[str, Any], reuse: bool, overwrite: bool) -> bool:
    """True when ``out`` already holds a twin built from ``recipe`` and ``reuse`` allows it; otherwise
    clear a non-empty ``out`` (only with ``overwrite`` or ``reuse``) and return False."""
    if out.exists() and any(out.iterdir()):
        if reuse and read_recipe(out) == recipe:
            return True
        if not (overwrite or reuse):
            raise FileExistsError(f"{out} is not empty (pass overwrite=True or reuse=True)")
        shutil.rmtree(out)
    return False


def read_recipe(out: Path) -> dict[str, Any] | None:
    """The recipe a twin folder was built from, or None."""
    try:
        return json.loads((out / TWIN_RECIPE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


