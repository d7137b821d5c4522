"""``export(src, out)``: sentence-transformers folder → verified embedrt artifact folder.

The orchestration only: the first module of the source picks the builder
(:data:`embedrt_export.builders.BUILDERS`: transformer, word-embedding, CLIP), which returns the graph
files; everything after building — staging, hashing, the manifest, verification through the runtime,
the requested graph variants (:mod:`embedrt_export.variants`), the atomic rename — is here and shared.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

from embedrt.artifact import sha256_bytes
from embedrt.catalogue import Entry
from embedrt.manifest import MANIFEST_NAME, SCHEMA, FileEntry, Manifest

from . import verify
from .builders import BUILDERS
from .builders.base import load_sentence_transformer
from .builders.transformer import calibration_feeds
from .resolve import check_stack
from .source import SourceSpec, declared_similarity, read_source


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


def _similarity(source: SourceSpec, expect: Entry | None) -> tuple[str, str]:
    """``(similarity_fn_name, where it came from)``: the folder's declaration; else the catalogue's (the
    model's documented use: a dot-product model saved before sentence-transformers 3 declares nothing, and
    sentence-transformers then reports cosine); else sentence-transformers' default, cosine."""
    declared = declared_similarity(source)
    if declared is not None:
        return declared, "declared"
    if expect is not None:
        return expect.similarity, "catalogue"
    return "cosine", "default"


def bundled_texts() -> list[str]:
    """The real texts that ship with the exporter (``data/fidelity_texts.jsonl``, licences in
    ``data/README.md``): calibration and gates when the caller gives none."""
    from importlib import resources

    data = resources.files("embedrt_export").joinpath("data", "fidelity_texts.jsonl").read_text(encoding="utf-8")
    return [json.loads(line)["text"] for line in data.splitlines() if line.strip()]


def _measure_text(reference: Any, ours: Any) -> dict[str, dict[str, float]]:
    probes: list[Any] = list(verify.probe_texts(ours.max_seq_length))
    if "pair" in ours.manifest.input_kinds:
        probes += verify.probe_pairs(ours.max_seq_length)
    return {"text": verify.measure(reference, ours, probes).as_dict()}


def _add_variants(manifest: Manifest, staging: Path, model: Any, names: Sequence[str],
                  texts: Sequence[str], log: Callable[[str], None]) -> Manifest:
    """Build, write and measure each requested text-graph variant; keep those that pass their gate."""
    import embedrt

    from . import variants as v
    from .variants.optimize import ArchFacts

    if not texts:
        raise ValueError("graph variants need real fidelity texts (fidelity_texts=, CLI --texts FILE)")
    reference = model.encode(list(texts), batch_size=32, convert_to_numpy=True)
    facts = ArchFacts.from_config(model[0].auto_model.config)
    fp32 = (staging / manifest.towers["text"].variants["fp32"].file).read_bytes()
    calibrated = {v.INT8_ROWWISE, v.INT8_ROWWISE_FUSED} & set(names)
    feeds = calibration_feeds(model, texts) if calibrated else []
    for candidate in v.build_text_variants(fp32, facts, names, feeds):
        if candidate.note:
            log(f"variant {candidate.name}: {candidate.note}")
        (staging / candidate.file).write_bytes(candidate.onnx_bytes)
        trial = v.with_variant(manifest, candidate)
        (staging / MANIFEST_NAME).write_text(trial.to_json(), encoding="utf-8")
        figures = v.measure(reference, embedrt.SentenceTransformer(staging, variant=candidate.name), texts)
        failures = candidate.gate.failures(figures)
        if failures:
            log(f"variant {candidate.name} not written: misses its gate ({'; '.join(failures)})")
            if candidate.file not in {x.file for x in manifest.towers["text"].variants.values()}:
                (staging / candidate.file).unlink()
            continue
        manifest = v.with_variant(manifest, candidate, figures)
        log(f"variant {candidate.name}: " + ", ".join(f"{k} {x:.4g}" for k, x in figures.items()))
    return manifest


def export(src: str | Path, out: str | Path, *, name: str | None = None, overwrite: bool = False,
           max_one_minus_cos: float = verify.FP32_MAX_ONE_MINUS_COS, expect: Entry | None = None,
           variants: Sequence[str] | None = None, fidelity_texts: Sequence[str] | None = None,
           log: Callable[[str], None] = print) -> Manifest:
    """Export ``src`` to the artifact folder ``out`` and verify it against sentence-transformers.

    With ``expect`` (a catalogue entry) the source's module stack must be the catalogue's, the entry's
    input kinds (e.g. [title, text] pairs) go into the manifest, and a folder that declares no similarity
    function gets the catalogue's. Raises :class:`ExportError` (and leaves nothing at ``out``) when the
    runtime's output misses ``max_one_minus_cos`` on the probes.

    ``variants`` (e.g. ``optimized``, ``fp16``, ``int8_rowwise``, ``int8_avx512_vnni``; see
    ``embedrt_export.variants.GATES``) are derived from the verified fp32 graph of a transformer model,
    measured against sentence-transformers on ``fidelity_texts`` (real text, ≥ 32; default: the texts that
    ship with the exporter, :func:`bundled_texts`), and written only if they meet their gate; a variant that
    misses is left out and ``log`` says why. ``None``: the variants the runtime would pick on CPU and GPU
    (:func:`embedrt_export.variants.default_variants`); ``()``: the fp32 graph alone.
    """
    import embedrt

    source = read_source(src)
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    model = load_sentence_transformer(str(source.path))
    if expect is not None:
        check_stack(expect, source, model)
    built = BUILDERS[source.modules[0].kind](model, source)
    if expect is not None:
        built.extra["input_kinds"] = tuple(expect.inputs)
    transformer = source.modules[0].kind == "Transformer"
    if variants is None:
        from .variants import default_variants

        variants = default_variants() if transformer else ()
    elif variants and not transformer:
        raise ValueError(f"graph variants are built for transformer text graphs; {source.modules[0].kind} models "
                         "export their fp32 graph only")

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        similarity, similarity_source = _similarity(source, expect)
        if similarity_source == "catalogue" and similarity != "cosine":
            log(f"{source.path.name}: the folder declares no similarity function (sentence-transformers would "
                f"report cosine); exported with {similarity!r}, the catalogue's, as the model is meant to be used")
        files = {}
        for rel, data in built.files.items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).write_bytes(data)
            files[rel] = FileEntry(sha256=sha256_bytes(data), size=len(data))
        manifest = Manifest(
            schema=SCHEMA,
            name=name or source.path.name,
            embedding_dimension=built.embedding_dimension,
            similarity_fn_name=similarity, similarity_source=similarity_source,
            normalized=source.normalized,
            tokenizer=built.tokenizer,
            towers=built.towers,
            files=files,
            source={"path": str(source.path.resolve()), "modules": [m.describe() for m in source.modules]},
            created_with=_versions(),
            prompts={k: v for k, v in (getattr(model, "prompts", None) or {}).items()},
            default_prompt_name=getattr(model, "default_prompt_name", None),
            **built.extra,
        )
        (staging / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")

        parity = (built.measure or _measure_text)(model, embedrt.SentenceTransformer(staging))
        for tower_name, figures in parity.items():
            if figures["max_one_minus_cos"] > max_one_minus_cos:
                raise ExportError(
                    f"{source.path}: fp32 {tower_name} graph misses parity with sentence-transformers: max 1-cos "
                    f"{figures['max_one_minus_cos']:.3g} > {max_one_minus_cos:.3g}"
                )
        towers = {
            tower_name: replace(tower, variants={
                key: replace(v, parity=parity.get(tower_name, {})) if key == "fp32" else v
                for key, v in tower.variants.items()})
            for tower_name, tower in manifest.towers.items()
        }
        manifest = replace(manifest, towers=towers)
        if variants:
            manifest = _add_variants(manifest, staging, model, variants,
                                     fidelity_texts if fidelity_texts else bundled_texts(), log)
        (staging / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest
