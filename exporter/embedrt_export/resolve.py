"""Catalogue names → source folders, and the check that a source is the model the catalogue describes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from embedrt import catalogue
from embedrt.paths import cache_dir

from .source import SourceError, SourceSpec, declared_similarity


def cache_models_dir() -> Path:
    """Where fetched source models live (``models/`` under :func:`embedrt.paths.cache_dir`)."""
    return cache_dir() / "models"


def resolve(name_or_path: str, models_dir: Path | None = None) -> tuple[Path, catalogue.Entry | None]:
    """A local folder as is (with its catalogue entry if its name is one); a catalogue name from
    ``models_dir`` (default: the fetch cache, :func:`cache_models_dir`) or, where the Hub is reachable,
    from the Hub."""
    path = Path(name_or_path)
    if path.is_dir():
        try:
            return path, catalogue.get(path.name)
        except catalogue.UnknownModelError:
            return path, None
    entry = catalogue.get(name_or_path)  # raises with close matches for unknown names
    cached = (models_dir or cache_models_dir()) / entry.name
    if cached.is_dir():
        return cached, entry
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(entry.hub_id)), entry
    except Exception as exc:  # offline, unknown repo, auth: all mean "not available here"
        raise SourceError(
            f"{entry.name}: no local copy in {cached} and the Hugging Face Hub gave no copy of {entry.hub_id} "
            f"({type(exc).__name__}: {exc}); pass a local sentence-transformers folder instead"
        ) from exc


def _activation(name: Any) -> str:
    short = str(name or "").rsplit(".", 1)[-1].lower()
    return {"tanh": "tanh", "identity": "identity"}.get(short, short)


def check_stack(entry: catalogue.Entry, source: SourceSpec, model: Any) -> None:
    """Raise :class:`SourceError` listing every way ``source`` differs from the catalogue entry."""
    problems: list[str] = []
    kinds = [m.kind for m in source.modules]
    if entry.family == "word-embeddings":
        expected_first = "WordEmbeddings"
    elif entry.family == "clip":
        expected_first = "CLIPModel"
    else:
        expected_first = "Transformer"
        model_type = getattr(getattr(model[0], "auto_model", None), "config", None)
        model_type = getattr(model_type, "model_type", None)
        if model_type != entry.family:
            problems.append(f"transformer is {model_type!r}, catalogue says {entry.family!r}")
        if int(model.max_seq_length) != entry.max_seq_length:
            problems.append(f"max_seq_length {model.max_seq_length}, catalogue says {entry.max_seq_length}")
        do_lower_case = bool(getattr(model[0], "do_lower_case", False))
        if do_lower_case != entry.do_lower_case:
            problems.append(f"do_lower_case {do_lower_case}, catalogue says {entry.do_lower_case}")
    declared = declared_similarity(source)
    if declared is not None and declared != entry.similarity:  # a folder that declares none takes the catalogue's
        problems.append(f"declares similarity {declared!r}, catalogue says {entry.similarity!r}")
    if kinds[0] != expected_first:
        problems.append(f"first module is {kinds[0]}, catalogue says {expected_first}")
    pooling = [m.describe().get("mode") for m in source.modules if m.kind == "Pooling"]
    if entry.pooling != "clip" and pooling != [entry.pooling]:
        problems.append(f"pooling {pooling}, catalogue says [{entry.pooling!r}]")
    dense = [(m.config.get("in_features"), m.config.get("out_features"), _activation(m.config.get(
        "activation_function")), bool(m.config.get("bias", True))) for m in source.modules if m.kind == "Dense"]
    want = [(d.in_features, d.out_features, d.activation, d.bias) for d in entry.dense]
    if dense != want:
        problems.append(f"Dense modules {dense}, catalogue says {want}")
    if ("LayerNorm" in kinds) != entry.layernorm:
        problems.append(f"LayerNorm {'present' if 'LayerNorm' in kinds else 'absent'}, catalogue says "
                        f"{'present' if entry.layernorm else 'absent'}")
    if source.normalized != entry.normalize:
        problems.append(f"Normalize {'present' if source.normalized else 'absent'}, catalogue says "
                        f"{'present' if entry.normalize else 'absent'}")
    if problems:
        raise SourceError(f"{source.path} does not match catalogue entry {entry.name}: " + "; ".join(problems))
