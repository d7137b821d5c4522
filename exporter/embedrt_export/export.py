"""``export(src, out)``: sentence-transformers folder → verified embedrt artifact folder."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import replace
from importlib import metadata
from pathlib import Path

from embedrt.manifest import (
    MANIFEST_NAME,
    SCHEMA,
    FileEntry,
    GraphVariant,
    Manifest,
    TokenizerSpec,
    Tower,
    sha256_bytes,
)

from . import graph, verify
from .source import SourceSpec, read_source

TEXT_GRAPH = "text/model.onnx"
TOKENIZER = "tokenizer.json"


class ExportError(RuntimeError):
    """The export ran but its result is not acceptable (e.g. parity missed)."""


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("embedrt", "torch", "transformers", "sentence-transformers", "onnx", "onnxruntime", "tokenizers"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def _similarity_fn_name(source: SourceSpec) -> str:
    config_file = source.path / "config_sentence_transformers.json"
    if config_file.is_file():
        name = json.loads(config_file.read_text(encoding="utf-8")).get("similarity_fn_name")
        if name:
            return str(name)
    return "cosine"  # sentence-transformers' default when the model does not say


def _write(folder: Path, rel: str, data: bytes) -> FileEntry:
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return FileEntry(sha256=sha256_bytes(data), size=len(data))


def export(src: str | Path, out: str | Path, *, name: str | None = None, overwrite: bool = False,
           max_one_minus_cos: float = verify.FP32_MAX_ONE_MINUS_COS) -> Manifest:
    """Export ``src`` to the artifact folder ``out`` and verify it against sentence-transformers.

    Raises :class:`ExportError` (and leaves nothing at ``out``) when the runtime's output misses
    ``max_one_minus_cos`` on the probe set.
    """
    import embedrt

    source = read_source(src)
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    model = graph.load_sentence_transformer(str(source.path))
    text_graph = graph.export_text_graph(model)
    tokenizer_text, pad_id = graph.tokenizer_json(model)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        files = {
            TEXT_GRAPH: _write(staging, TEXT_GRAPH, text_graph.onnx_bytes),
            TOKENIZER: _write(staging, TOKENIZER, tokenizer_text.encode("utf-8")),
        }
        manifest = Manifest(
            schema=SCHEMA,
            name=name or source.path.name,
            embedding_dimension=int(model.get_embedding_dimension()),
            similarity_fn_name=_similarity_fn_name(source),
            normalized=source.normalized,
            tokenizer=TokenizerSpec(kind="hf", file=TOKENIZER, max_seq_length=int(model.max_seq_length),
                                    pad_token_id=pad_id, model_max_length=graph.position_limit(model)),
            towers={"text": Tower(variants={"fp32": GraphVariant(
                file=TEXT_GRAPH, opset=text_graph.opset, inputs=text_graph.inputs, outputs=text_graph.outputs)})},
            files=files,
            source={"path": str(source.path.resolve()), "modules": [m.describe() for m in source.modules]},
            created_with=_versions(),
            prompts=dict(getattr(model, "prompts", {}) or {}),
            default_prompt_name=getattr(model, "default_prompt_name", None),
        )
        (staging / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")

        runtime_model = embedrt.SentenceTransformer(staging)
        parity = verify.measure(model, runtime_model, verify.probe_texts(manifest.tokenizer.max_seq_length))
        if parity.max_one_minus_cos > max_one_minus_cos:
            raise ExportError(
                f"{source.path}: fp32 graph misses parity with sentence-transformers: max 1-cos "
                f"{parity.max_one_minus_cos:.3g} > {max_one_minus_cos:.3g} on {parity.n_texts} probe texts"
            )
        variant = replace(manifest.towers["text"].variants["fp32"], parity=parity.as_dict())
        manifest = replace(manifest, towers={"text": Tower(variants={"fp32": variant})})
        (staging / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest
