"""Read a sentence-transformers model folder into a spec, refusing what cannot be exported."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class SourceError(ValueError):
    """The source folder is not an exportable sentence-transformers model."""


# Module class names (last component of modules.json "type") this exporter knows how to put in a graph.
SUPPORTED_MODULES = ("Transformer", "WordEmbeddings", "CLIPModel", "Pooling", "Dense", "LayerNorm", "Normalize")
# Modules that turn raw input into embeddings; each has its own builder in ``builders.BUILDERS``.
INPUT_MODULES = ("Transformer", "WordEmbeddings", "CLIPModel")


@dataclass(frozen=True)
class ModuleSpec:
    """One entry of ``modules.json`` with its saved config."""

    kind: str
    path: str
    config: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """Short manifest description of the module."""
        out: dict[str, Any] = {"type": self.kind}
        if self.kind == "Pooling":
            out["mode"] = _pooling_mode(self.config)
        elif self.kind == "Dense":
            out.update(in_features=self.config.get("in_features"), out_features=self.config.get("out_features"),
                       activation=str(self.config.get("activation_function", "")).rsplit(".", 1)[-1],
                       bias=self.config.get("bias", True))
        elif self.kind == "Transformer":
            out.update({k: v for k, v in self.config.items() if k in ("max_seq_length", "do_lower_case")})
        return out


def _pooling_mode(config: dict[str, Any]) -> str:
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        return mode if isinstance(mode, str) else "+".join(mode)
    legacy = {
        "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max", "pooling_mode_mean_tokens": "mean",
        "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
        "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken",
    }
    return "+".join(v for k, v in legacy.items() if config.get(k)) or "mean"


@dataclass(frozen=True)
class SourceSpec:
    """A sentence-transformers folder as the exporter sees it."""

    path: Path
    modules: tuple[ModuleSpec, ...]

    @property
    def normalized(self) -> bool:
        """Whether the model's last module L2-normalizes sentence embeddings."""
        return bool(self.modules) and self.modules[-1].kind == "Normalize"


_CONFIG_FILES = {
    "Transformer": "sentence_bert_config.json",
    "Pooling": "config.json",
    "Dense": "config.json",
    "LayerNorm": "config.json",
}


def _plain_transformer(root: Path) -> SourceSpec:
    """A folder without ``modules.json``, as sentence-transformers loads it: a Hugging Face transformer
    (its ``config.json``) + mean pooling, at the tokenizer's ``model_max_length`` (it reads no
    ``sentence_bert_config.json`` then)."""
    try:
        config = json.loads((root / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        config = None
    if not isinstance(config, dict) or not config.get("model_type"):
        raise SourceError(f"{root} is not a sentence-transformers model folder: no modules.json, and no config.json "
                          "of a transformer (with a model_type) that sentence-transformers would load with mean "
                          "pooling")
    return SourceSpec(path=root, modules=(ModuleSpec(kind="Transformer", path=""),
                                          ModuleSpec(kind="Pooling", path="", config={"pooling_mode": "mean"})))


def read_source(path: str | Path) -> SourceSpec:
    """Parse ``modules.json`` and the module configs (a folder without it: :func:`_plain_transformer`); raise
    :class:`SourceError` naming what is wrong."""
    root = Path(path)
    if not root.is_dir():
        raise SourceError(f"source model folder not found: {root}")
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        return _plain_transformer(root)
    try:
        entries = json.loads(modules_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"{modules_file}: not valid JSON ({exc})") from exc
    if not isinstance(entries, list) or not entries:
        raise SourceError(f"{modules_file}: expected a non-empty list of modules")
    modules = []
    for i, entry in enumerate(sorted(entries, key=lambda e: int(e.get("idx", 0)))):
        type_name = str(entry.get("type", ""))
        kind = type_name.rsplit(".", 1)[-1]
        if kind not in SUPPORTED_MODULES:
            raise SourceError(
                f"{modules_file}: module {i} has type {type_name!r}, which embedrt cannot export "
                f"(supported: {', '.join(SUPPORTED_MODULES)})"
            )
        rel = str(entry.get("path", ""))
        config: dict[str, Any] = {}
        config_name = _CONFIG_FILES.get(kind)
        config_file = root / rel / config_name if config_name else None
        if config_file is not None and config_file.is_file():
            config = json.loads(config_file.read_text(encoding="utf-8"))
        modules.append(ModuleSpec(kind=kind, path=rel, config=config))
    if modules[0].kind not in INPUT_MODULES:
        raise SourceError(f"{modules_file}: the first module must be one of {INPUT_MODULES}, got {modules[0].kind}")
    for m in modules:
        if m.kind == "Pooling" and m.config.get("include_prompt") is False:
            # Excluding prompt tokens needs the prompt length inside the pooling step, which the
            # graph does not take as an input; exporting anyway would pool the prompt silently.
            raise SourceError(f"{root / m.path}: Pooling with include_prompt=false is not supported yet")
    if modules[0].kind != "CLIPModel" and not any(m.kind == "Pooling" for m in modules):
        raise SourceError(f"{modules_file}: no Pooling module, so there is no sentence embedding to export")
    return SourceSpec(path=root, modules=tuple(modules))


def declared_similarity(source: SourceSpec) -> str | None:
    """The ``similarity_fn_name`` the folder's ``config_sentence_transformers.json`` declares, or ``None``."""
    config_file = source.path / "config_sentence_transformers.json"
    if config_file.is_file():
        name = json.loads(config_file.read_text(encoding="utf-8")).get("similarity_fn_name")
        if name:
            return str(name)
    return None
