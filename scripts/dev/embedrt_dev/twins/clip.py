"""The CLIP twin: sentence-transformers' ``clip-ViT-B-32`` shape with tiny random towers on CLIP's real BPE."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from embedrt.paths import cache_dir

from .recipe import TWIN_RECIPE_FILE, fingerprint, reusable
from .transformer import scramble

if TYPE_CHECKING:
    import torch

CLIP_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
_CLIP_RECIPE_VERSION = 1
_CLIP_SPECIALS = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
                  "unk_token": "<|endoftext|>"}
# openai/CLIP's simple_tokenizer keeps the first 49152 - 256 - 2 merges of the file, so that the 256
# byte symbols, their 256 end-of-word forms, the merges and the two specials make 49,408 ids.
_CLIP_N_MERGES = 49152 - 256 - 2


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable-character table (openai/CLIP ``simple_tokenizer``)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def clip_bpe_vocab(bpe_gz: str | os.PathLike[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary and merges from ``bpe_simple_vocab_16e6.txt.gz``, built as openai/CLIP does.

    Returns ``(token -> id, merges)``: the same 49,408 ids as the Hub's ``vocab.json`` /
    ``merges.txt`` of ``openai/clip-vit-base-patch32``.
    """
    import gzip

    lines = gzip.decompress(Path(bpe_gz).read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:_CLIP_N_MERGES + 1]]  # line 0 is the "#version" header
    if len(merges) != _CLIP_N_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"{bpe_gz}: not CLIP's BPE merges file ({len(merges)} merges read)")
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += [_CLIP_SPECIALS["bos_token"], _CLIP_SPECIALS["eos_token"]]
    return {tok: i for i, tok in enumerate(tokens)}, merges  # type: ignore[return-value]


def build_clip_twin(
    out_dir: str | os.PathLike[str],
    assets_clip_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    projection_dim: int = 24,
    legacy_layout: bool = True,
    reuse: bool = False,
    overwrite: bool = False,
) -> Path:
    """Build a tiny random-weight sentence-transformers CLIP folder (``clip-ViT-B-32`` shape) and return it.

    The transformers ``CLIPModel`` has ``hidden``-wide text and vision towers of ``layers`` layers
    (quick-GELU, 77 text positions, 224-pixel images in 32-pixel patches, legacy ``eos_token_id=2``
    so the text pooling takes the arg-max token like the real checkpoint) and scrambled weights (see
    :func:`.transformer.scramble`). The tokenizer is the real CLIP BPE (49,408 ids) and the image processor has the
    real CLIP settings (shortest edge 224 bicubic, centre crop 224, OpenAI mean/std).

    Args:
        out_dir: target folder; same ``reuse``/``overwrite`` rules as :func:`build_twin`.
        assets_clip_dir: folder holding ``bpe_simple_vocab_16e6.txt.gz`` (default
            ``<embedrt.paths.cache_dir()>/assets/clip``).
        seed: weights are a pure function of the arguments and seed.
        hidden, layers, heads: size of both towers; ``projection_dim`` is the joint embedding width.
        legacy_layout: write the folder as the Hub's ``clip-ViT-B-32`` is laid out (``modules.json`` type
            ``sentence_transformers.models.CLIPModel``, files under ``0_CLIPModel/`` with ``vocab.json``,
            ``merges.txt`` and ``preprocessor_config.json``); ``False`` saves the model with
            sentence-transformers 6 itself (files in the root, ``tokenizer.json``, ``processor_config.json``).
        reuse: return ``out_dir`` untouched if it holds a twin built from the same recipe.
        overwrite: delete a non-empty ``out_dir`` first.

    Returns:
        ``Path(out_dir)``, loadable with ``SentenceTransformer(str(path))``.
    """
    assets_dir = Path(assets_clip_dir) if assets_clip_dir is not None else cache_dir() / "assets" / "clip"
    bpe = assets_dir / CLIP_BPE_FILE
    if not bpe.is_file():
        raise FileNotFoundError(f"cannot build the CLIP twin: {bpe} does not exist")
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
    out = Path(out_dir)
    recipe = {"recipe_version": _CLIP_RECIPE_VERSION, "family": "clip", "bpe": fingerprint(bpe), "seed": seed,
              "hidden": hidden, "layers": layers, "heads": heads, "projection_dim": projection_dim,
              "legacy_layout": legacy_layout}
    if reusable(out, recipe, reuse, overwrite):
        return out

    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.utils import logging as hf_logging

    vocab, merges = clip_bpe_vocab(bpe)
    tower = {"hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": layers,
             "num_attention_heads": heads, "hidden_act": "quick_gelu", "attention_dropout": 0.0}
    config = CLIPConfig(
        text_config={**tower, "vocab_size": len(vocab), "max_position_embeddings": 77,
                     "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1},
        vision_config={**tower, "image_size": 224, "patch_size": 32, "num_channels": 3},
        projection_dim=projection_dim,
    )
    # The PIL backend is what sentence-transformers runs where torchvision is absent, and what embedrt
    # reproduces; it saves itself under the plain CLIPImageProcessor name.
    image_processor = CLIPImageProcessorPil()
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = CLIPModel(config)
        _scramble_clip(model, torch.Generator().manual_seed(seed))
        model.eval()
        if legacy_layout:
            hf_dir = out / "0_CLIPModel"
            model.save_pretrained(str(hf_dir))
            image_processor.save_pretrained(str(hf_dir))
            (hf_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
            (hf_dir / "merges.txt").write_text(
                "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
            (hf_dir / "tokenizer_config.json").write_text(json.dumps(
                {**_CLIP_SPECIALS, "model_max_length": 77, "tokenizer_class": "CLIPTokenizer"}, indent=2),
                encoding="utf-8")
            (out / "modules.json").write_text(json.dumps(
                [{"idx": 0, "name": "0", "path": "0_CLIPModel", "type": "sentence_transformers.models.CLIPModel"}],
                indent=2), encoding="utf-8")
        else:
            from sentence_transformers import SentenceTransformer
            from sentence_transformers.sentence_transformer.modules import CLIPModel as STCLIPModel

            tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77, **_CLIP_SPECIALS)
            with tempfile.TemporaryDirectory(prefix="embedrt-clip-twin-") as tmp:
                model.save_pretrained(tmp)
                CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(tmp)
                st_model = SentenceTransformer(modules=[STCLIPModel(tmp, _from_auto_load=True)], device="cpu")
                st_model.save(str(out), create_model_card=False)
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    (out / TWIN_RECIPE_FILE).write_text(json.dumps(recipe, indent=2, sort_keys=True), encoding="utf-8")
    return out


def _scramble_clip(model: torch.nn.Module, gen: torch.Generator) -> None:
    """:func:`.transformer.scramble`, then give CLIP's own embedding parameters scales that make them matter.

    ``scramble`` leaves the patch convolution and the class embedding at N(0, 0.1): with a
    3×32×32 fan-in the patches would then dwarf the position embeddings, and a one-pixel shift of
    the crop would barely move the output. Unit-gain patches and unit-scale tokens keep content,
    position and crop all visible in the embeddings.
    """
    import torch

    scramble(model, gen)
    with torch.no_grad():
        patch = model.vision_model.embeddings.patch_embedding.weight
        patch.normal_(0.0, 1.25 / math.sqrt(patch[0].numel()), generator=gen)
        model.vision_model.embeddings.class_embedding.normal_(0.0, 1.0, generator=gen)
        model.text_model.embeddings.token_embedding.weight.normal_(0.0, 1.0, generator=gen)
