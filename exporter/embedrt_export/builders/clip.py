"""CLIP (sentence-transformers ``CLIPModel``, e.g. ``clip-ViT-B-32``) → a text graph and a vision graph.

sentence-transformers 6 loads a ``CLIPModel`` folder (modules.json type
``sentence_transformers.models.CLIPModel``, upstream under ``0_CLIPModel/``) as a ``Transformer``
whose modality config sends text to ``CLIPModel.get_text_features`` and images to
``get_image_features``; both return the *projected* ``pooler_output`` as ``sentence_embedding``, so
the two towers share one joint space. There are no token embeddings: the module writes only
``sentence_embedding`` (``encode(output_value="token_embeddings")`` raises ``KeyError`` in
sentence-transformers), so neither graph has that output.

Each graph is traced through the whole sentence-transformers model with a ``modality`` feature, so
any module after ``CLIPModel`` (e.g. ``Normalize``) is inside both graphs, computed by the reference's
own code. Image preprocessing is not in a graph: the runtime reproduces it with Pillow + numpy
(:mod:`embedrt.images`) from the manifest's ``image`` field, and parity is measured through that code.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from embedrt import images
from embedrt.loader import load_engine
from embedrt.manifest import GraphVariant, ImageSpec, TokenizerSpec, Tower

from .. import fidelity, verify
from ..source import SourceError, SourceSpec
from .base import OPSET, TEXT_GRAPH, TOKENIZER, Built, tokenizer_json
from .trace import trace

logger = logging.getLogger(__name__)

VISION_GRAPH = "vision/model.onnx"
TEXT_INPUTS = ("input_ids", "attention_mask")
VISION_INPUT = "pixel_values"
OUTPUTS = ("sentence_embedding",)


def reference_image_processor(model: Any, source: SourceSpec) -> Any:
    """The reference's image processor, on transformers' PIL backend.

    Where torchvision is installed, transformers 5 picks its torchvision backend, whose antialiased
    tensor resize is a different kernel from PIL's resize. embedrt reproduces the PIL
    pipeline, which is also openai/CLIP's own, so the reference is switched to it (with a warning)
    instead of failing parity for a difference in the resize kernel, not in the export.
    """
    processor = model[0].processor
    current = getattr(processor, "image_processor", None)
    if current is None:
        raise SourceError(f"{source.path}: the CLIP processor has no image processor, so images cannot be embedded")
    if getattr(current, "backend", "pil") == "pil":
        return current
    from transformers import AutoImageProcessor

    pil = AutoImageProcessor.from_pretrained(str(source.path / source.modules[0].path), backend="pil")
    logger.warning("%s: sentence-transformers loaded the %s image processor; measuring vision parity against its "
                   "PIL backend, which embedrt reproduces (openai/CLIP's own preprocessing)",
                   source.path, current.backend)
    processor.image_processor = pil
    return pil


def image_spec(image_processor: Any, where: object) -> ImageSpec:
    """The manifest ``image`` spec of a CLIP image processor; refuses settings the runtime does not reproduce."""
    from PIL import Image

    cfg = image_processor.to_dict()
    unsupported = [f"{key}={cfg.get(key)!r}" for key in ("do_resize", "do_center_crop", "do_convert_rgb")
                   if cfg.get(key) is not True]
    unsupported += [f"{key}={cfg[key]!r}" for key in ("do_pad", "do_reduce_labels") if cfg.get(key)]
    size = {k: v for k, v in (cfg.get("size") or {}).items() if v is not None}
    crop = {k: v for k, v in (cfg.get("crop_size") or {}).items() if v is not None}
    if set(size) != {"shortest_edge"}:
        unsupported.append(f"size={size!r} (only {{'shortest_edge': n}})")
    if set(crop) != {"height", "width"}:
        unsupported.append(f"crop_size={crop!r} (only {{'height': h, 'width': w}})")
    if unsupported:
        raise SourceError(f"{where}: image preprocessing embedrt cannot reproduce: {', '.join(unsupported)}")
    try:
        return ImageSpec(
            shortest_edge=int(size["shortest_edge"]), crop_height=int(crop["height"]), crop_width=int(crop["width"]),
            resample=Image.Resampling(int(cfg["resample"])).name.lower(),
            do_rescale=bool(cfg.get("do_rescale")), rescale_factor=float(cfg.get("rescale_factor", 1 / 255)),
            do_normalize=bool(cfg.get("do_normalize")),
            image_mean=tuple(float(x) for x in cfg["image_mean"]),  # type: ignore[arg-type]
            image_std=tuple(float(x) for x in cfg["image_std"]))  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError) as exc:
        raise SourceError(f"{where}: image preprocessing embedrt cannot reproduce ({exc})") from exc


def probe_images() -> list[Any]:
    """Fixed probe images: every PIL mode sentence-transformers converts, odd sizes, tiny and huge aspect ratios.

    Smooth gradients plus noise, so that resampling, crop offsets and channel order all show in
    the embeddings. 640×227 resizes to 631×224, an odd crop margin where torchvision's rounded
    offset and transformers' floored one differ.
    """
    from PIL import Image

    rng = np.random.default_rng(1234)

    def picture(width: int, height: int) -> np.ndarray:
        yy, xx = np.mgrid[0:height, 0:width]
        base = np.stack([xx * 255 / max(width - 1, 1), yy * 255 / max(height - 1, 1),
                         (xx + yy) * 255 / max(width + height - 2, 1), 255 - yy * 200 / max(height - 1, 1)], -1)
        return np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)

    rgba = [Image.fromarray(picture(w, h), "RGBA") for w, h in
            ((300, 200), (150, 401), (224, 224), (97, 513), (17, 9), (640, 227), (333, 229), (120, 90))]
    palette = rgba[7].convert("RGB").convert("P")
    palette.info["transparency"] = 3  # a palette entry marked transparent: composited onto white
    return [rgba[0].convert("RGB"), rgba[1], rgba[2].convert("L"), rgba[3].convert("CMYK"),
            rgba[4].convert("RGB"), rgba[5].convert("RGB").convert("P"), rgba[6].convert("LA"), palette]


def _export(module: Any, args: tuple[Any, ...], input_names: tuple[str, ...], dynamic: dict[str, dict[int, str]]
            ) -> bytes:
    # The tracer the transformer builder uses too (:func:`.trace.trace`): same exporter, opset and passes.
    return trace(module, args, input_names, OUTPUTS, {**dynamic, OUTPUTS[0]: {0: "batch"}})


def export_towers(model: Any, spec: ImageSpec) -> tuple[bytes, bytes]:
    """Trace the text and vision paths of a sentence-transformers CLIP model: ``(text_onnx, vision_onnx)``."""
    import torch

    class _Tower(torch.nn.Module):
        def __init__(self, st_model: Any, modality: str, names: tuple[str, ...]) -> None:
            super().__init__()
            self.st_model, self.modality, self.names = st_model, modality, names

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            features = {**dict(zip(self.names, tensors)), "modality": self.modality}
            return self.st_model(features)["sentence_embedding"]

    # Two texts of different lengths and two images, so neither the sequence axis, the padding mask
    # nor the batch axis is traced as a constant.
    features = model.preprocess(["embedrt traces this sentence to ONNX", "short"])
    text = _export(_Tower(model, "text", TEXT_INPUTS), tuple(features[n] for n in TEXT_INPUTS), TEXT_INPUTS,
                   {n: {0: "batch", 1: "sequence"} for n in TEXT_INPUTS})
    pixels = torch.from_numpy(images.preprocess(probe_images()[:2], spec))
    vision = _export(_Tower(model, "image", (VISION_INPUT,)), (pixels,), (VISION_INPUT,),
                     {VISION_INPUT: {0: "batch"}})
    return text, vision


def measure(reference: Any, ours: Any) -> dict[str, dict[str, float]]:
    """Parity of both towers against sentence-transformers: text through ``ours.encode`` on the probe
    texts, vision through the vision tower's engine on :func:`probe_images`.

    ``pixel_max_abs`` compares embedrt's preprocessing with the reference processor's ``pixel_values``.
    """
    texts = verify.probe_texts(ours.max_seq_length)
    text_cos = fidelity.one_minus_cos(reference.encode(texts, convert_to_numpy=True), ours.encode(texts))
    probes = probe_images()
    encoder = load_engine(ours.artifact, tower="vision")
    vision_cos = fidelity.one_minus_cos(reference.encode(probes, convert_to_numpy=True), encoder.encode(probes))
    reference_pixels = reference.preprocess(probes)[VISION_INPUT].numpy()
    pixel_max_abs = float(np.abs(images.preprocess(probes, encoder.spec) - reference_pixels).max())
    return {
        "text": {"max_one_minus_cos": float(text_cos.max()), "n_texts": float(len(texts))},
        "vision": {"max_one_minus_cos": float(vision_cos.max()), "pixel_max_abs": pixel_max_abs,
                   "n_images": float(len(probes))},
    }


def build(model: Any, source: SourceSpec) -> Built:
    """Builder for ``CLIPModel`` sources: ``text/model.onnx``, ``vision/model.onnx``, tokenizer, image spec."""
    spec = image_spec(reference_image_processor(model, source), source.path / source.modules[0].path)
    text_onnx, vision_onnx = export_towers(model, spec)
    tokenizer_text, pad_id = tokenizer_json(model)
    text_config = model[0].model.config.text_config
    return Built(
        files={TEXT_GRAPH: text_onnx, VISION_GRAPH: vision_onnx, TOKENIZER: tokenizer_text.encode("utf-8")},
        towers={
            "text": Tower(variants={"fp32": GraphVariant(file=TEXT_GRAPH, opset=OPSET, inputs=TEXT_INPUTS,
                                                         outputs=OUTPUTS)}),
            "vision": Tower(variants={"fp32": GraphVariant(file=VISION_GRAPH, opset=OPSET,
                                                           inputs=(VISION_INPUT,), outputs=OUTPUTS)}),
        },
        tokenizer=TokenizerSpec(kind="hf", file=TOKENIZER, max_seq_length=int(model.max_seq_length),
                                pad_token_id=pad_id, model_max_length=int(text_config.max_position_embeddings)),
        embedding_dimension=int(model.get_embedding_dimension()),
        extra={"image": spec, "input_kinds": ("text", "image")},
        measure=measure,
    )
