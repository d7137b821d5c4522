"""The artifact manifest: the one contract between the exporter and the runtime.

An artifact is a folder holding ONNX graphs, a tokenizer and ``manifest.json``. The manifest says what
the graphs compute (pooling, Dense, LayerNorm, Normalize are all inside them), how text must be
tokenized, what each graph variant needs to run (precision, devices, CPU instruction sets, embedrt's
kernels) and the sha256 of every file. This module owns every name the two sides share; its JSON
Schema (:mod:`embedrt.schema`) is checked whole at load, so a malformed manifest is refused by field.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

SCHEMA = "embedrt.artifact/2"
MANIFEST_NAME = "manifest.json"
SIMILARITY_FUNCTIONS = ("cosine", "dot", "euclidean", "manhattan")
# Where ``similarity_fn_name`` came from: the model folder's config_sentence_transformers.json, the
# catalogue (the model's documented use, for folders that declare none), or sentence-transformers' default.
SIMILARITY_SOURCES = ("declared", "catalogue", "default")

# Graph variants, by name.
FP32 = "fp32"
FP32_FUSED = "fp32_fused"
OPTIMIZED = "optimized"
FP16 = "fp16"
INT8_BLOCKWISE = "int8_blockwise"
INT8_ROWWISE = "int8_rowwise"
INT8_ROWWISE_FUSED = "int8_rowwise_fused"
# The dynamic int8 graphs, one per integer-dot-product ISA (sentence-transformers' recipe), best ISA first.
INT8_DYNAMIC = ("int8_avx512_vnni", "int8_avx512", "int8_avx2", "int8_arm64")
VARIANTS = (FP32, FP32_FUSED, OPTIMIZED, FP16, INT8_BLOCKWISE, INT8_ROWWISE, INT8_ROWWISE_FUSED, *INT8_DYNAMIC)

# What a variant needs and is (recorded per variant by the exporter, read by embedrt.selection).
PRECISIONS = ("fp32", "fp16", "int8")
DEVICES = ("cpu", "cuda", "tensorrt")
CPU_ISAS = ("avx2", "avx512", "avx512_vnni", "arm64")
# The op domain of embedrt's own ONNX Runtime kernels (runtime/kernels, loaded by embedrt.kernels).
KERNELS_DOMAIN = "ai.embedrt"
CUSTOM_OP_DOMAINS = (KERNELS_DOMAIN,)
# Fidelity figures a variant may carry, measured against sentence-transformers at export.
PARITY_KEYS = ("max_one_minus_cos", "token_max_abs", "spearman", "top10_overlap", "batch_one_minus_cos", "n_texts",
               "n_images", "pixel_max_abs")

TOKENIZER_KINDS = ("hf", "whitespace")  # tokenizers' tokenizer.json; sentence-transformers' WhitespaceTokenizer
INPUT_KINDS = ("text", "pair", "image")  # pair: [title, text]; image: CLIP images
TOWERS = ("text", "vision")
RESAMPLE_FILTERS = ("nearest", "lanczos", "bilinear", "bicubic", "box", "hamming")


class ArtifactError(ValueError):
    """An artifact folder is missing, malformed or damaged."""


@dataclass(frozen=True)
class FileEntry:
    """A file of the artifact with the digest it must have."""

    sha256: str
    size: int


@dataclass(frozen=True)
class GraphVariant:
    """One ONNX graph of a tower, and what it needs to run.

    ``devices``: the providers it is built for; ``cpu_isa``: on CPU, the instruction sets whose int8
    arithmetic it was built for (``None``: any CPU); ``custom_ops``: op domains beyond ONNX Runtime's
    (``ai.embedrt``: embedrt's kernel library); ``packed_rows``: its layers skip a batch's padding, so
    padding costs no compute; ``external_data``: initializers stored beside the graph (a GloVe matrix
    past protobuf's 2 GiB), verified like the graph.
    """

    file: str
    opset: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    precision: str = "fp32"
    devices: tuple[str, ...] = DEVICES
    cpu_isa: tuple[str, ...] | None = None
    custom_ops: tuple[str, ...] = ()
    packed_rows: bool = False
    parity: dict[str, float] = field(default_factory=dict)
    external_data: str | None = None


@dataclass(frozen=True)
class Tower:
    """A model input branch (``text``; CLIP adds ``vision``) and its graph variants."""

    variants: dict[str, GraphVariant]
    default_variant: str = FP32


@dataclass(frozen=True)
class TokenizerSpec:
    """How text becomes token ids; padding and truncation are set by the runtime, not the file."""

    kind: str
    file: str
    max_seq_length: int
    pad_token_id: int
    model_max_length: int | None = None


@dataclass(frozen=True)
class ImageSpec:
    """CLIP image preprocessing, as transformers' ``CLIPImageProcessor`` does it (see :mod:`embedrt.images`).

    RGB conversion, resizing (shortest edge) and centre cropping are always applied: the vision graph's
    input has a fixed ``[3, crop_height, crop_width]`` shape, and a crop no larger than the shortest
    edge never pads.
    """

    shortest_edge: int
    crop_height: int
    crop_width: int
    resample: str
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if max(self.crop_height, self.crop_width) > self.shortest_edge:
            raise ArtifactError(f"{MANIFEST_NAME}: image.crop {self.crop_height}x{self.crop_width} is larger than "
                                f"image.shortest_edge {self.shortest_edge}; such a crop would pad, which embedrt "
                                "does not reproduce")


@dataclass(frozen=True)
class Manifest:
    """Everything the runtime needs to know about an artifact."""

    schema: str
    name: str
    embedding_dimension: int
    similarity_fn_name: str
    normalized: bool
    tokenizer: TokenizerSpec
    towers: dict[str, Tower]
    files: dict[str, FileEntry]
    similarity_source: str = "declared"
    source: dict[str, Any] = field(default_factory=dict)
    created_with: dict[str, str] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    image: ImageSpec | None = None
    input_kinds: tuple[str, ...] = ("text",)

    def to_dict(self) -> dict[str, Any]:
        """The manifest as plain JSON data."""
        return asdict(self)

    def to_json(self) -> str:
        """Serialize as the ``manifest.json`` text (stable key order, so diffs stay readable)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """Build a manifest from parsed JSON; :class:`ArtifactError` names the first field that breaks the
        schema (:mod:`embedrt.schema`) or a rule between fields."""
        from .schema import validate

        validate(data)
        manifest = cls(
            **{f.name: data[f.name] for f in fields(cls) if f.name in data and f.name not in _NESTED},
            tokenizer=TokenizerSpec(**data["tokenizer"]),
            towers={name: Tower(variants={key: _variant(v) for key, v in t["variants"].items()},
                                default_variant=t["default_variant"]) for name, t in data["towers"].items()},
            files={k: FileEntry(**v) for k, v in data["files"].items()},
            image=ImageSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["image"].items()})
            if data.get("image") is not None else None,
            input_kinds=tuple(data.get("input_kinds", ("text",))),
        )
        manifest._check_consistency()
        return manifest

    def _check_consistency(self) -> None:
        def fail(what: str) -> None:
            raise ArtifactError(f"{MANIFEST_NAME}: {what}")

        spec = self.tokenizer
        if spec.model_max_length is not None and spec.max_seq_length > spec.model_max_length:
            fail(f"tokenizer.max_seq_length {spec.max_seq_length} exceeds tokenizer.model_max_length "
                 f"{spec.model_max_length}, the model's position limit")
        if ("vision" in self.towers) != (self.image is not None) or ("vision" in self.towers) != (
                "image" in self.input_kinds):
            fail("a 'vision' tower, an 'image' spec and the 'image' input kind go together")
        if self.default_prompt_name is not None and self.default_prompt_name not in self.prompts:
            fail(f"default_prompt_name {self.default_prompt_name!r} is not one of prompts {sorted(self.prompts)}")
        referenced = [("tokenizer.file", spec.file)]
        for tower_name, tower in self.towers.items():
            where = f"towers.{tower_name}"
            if tower.default_variant not in tower.variants:
                fail(f"{where}.default_variant {tower.default_variant!r} is not one of its variants")
            for key, v in tower.variants.items():
                at = f"{where}.variants.{key}"
                if key in NEEDS_KERNELS and KERNELS_DOMAIN not in v.custom_ops:
                    fail(f"{at}.custom_ops must list {KERNELS_DOMAIN!r}: the {key} graph runs on embedrt's kernels")
                referenced.append((f"{at}.file", v.file))
                if v.external_data is not None:
                    if v.external_data.rpartition("/")[0] != v.file.rpartition("/")[0]:
                        fail(f"{at}.external_data {v.external_data!r} must sit beside its graph {v.file!r}")
                    referenced.append((f"{at}.external_data", v.external_data))
        for where, rel in referenced:
            if rel not in self.files:
                fail(f"{where} {rel!r} is used but has no sha256 entry under 'files'")


# Variants whose graphs use embedrt's kernels whatever else is recorded.
NEEDS_KERNELS = (FP32_FUSED, INT8_ROWWISE_FUSED)
_NESTED = ("tokenizer", "towers", "files", "image", "input_kinds")


def _variant(data: dict[str, Any]) -> GraphVariant:
    out = dict(data)
    for key in ("inputs", "outputs", "devices", "custom_ops"):
        out[key] = tuple(out.get(key, ()))
    if out.get("cpu_isa") is not None:
        out["cpu_isa"] = tuple(out["cpu_isa"])
    return GraphVariant(**out)
