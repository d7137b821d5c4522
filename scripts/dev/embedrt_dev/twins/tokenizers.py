"""The real tokenizer of each family, built once per process through transformers 5.

* RoBERTa twins remap the GPT-2 vocabulary instead of appending the special tokens. RoBERTa derives
  position ids from ``pad_token_id`` (``cumsum(mask) + padding_idx``), so a ``<pad>`` appended at id
  50258 would push positions far outside any sane position table. We therefore put ``<s>``, ``<pad>``,
  ``</s>``, ``<unk>`` at ids 0..3 (exactly like real RoBERTa), shift every GPT-2 id by 4 and append
  ``<mask>`` at the end; merges are untouched, so the tokenization is GPT-2's, only the ids move.
* Tokenizers go through ``from_pretrained``/``save_pretrained`` of the transformers 5 class so the
  saved ``tokenizer.json`` is a fixed point of what sentence-transformers reloads. (transformers 5
  rebuilds the normalizer/pre-tokenizer of classes with a custom ``__init__`` from code, e.g. XLM-R
  loses the original ``Replace(' {2,}', ' ')`` normalizer and gains a ``WhitespaceSplit``; a twin built
  from the raw Hub ``tokenizer.json`` would silently disagree with sentence-transformers on
  whitespace-heavy inputs.)
"""

from __future__ import annotations

import atexit
import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .recipe import fingerprint
from .spec import TwinAssets

# Tokenizer construction dominates build time for XLM-R (a 17 MB tokenizer.json), so each
# family's tokenizer is built once per process and its saved files are copied into every twin.
_TOKENIZER_CACHE: dict[tuple[str, tuple[str | None, ...]], dict[str, Any]] = {}
_CACHE_ROOT: list[Path] = []


def _cache_root() -> Path:
    if not _CACHE_ROOT:
        root = Path(tempfile.mkdtemp(prefix="embedrt-twin-tok-"))
        atexit.register(shutil.rmtree, root, True)
        _CACHE_ROOT.append(root)
    return _CACHE_ROOT[0]


def tokenizer_files(family: str, assets: TwinAssets) -> dict[str, Any]:
    """The saved tokenizer of ``family`` (built once per process): its folder, vocabulary size and special ids."""
    key = (family, tuple(fingerprint(p) for p in assets.required(family).values()))
    cached = _TOKENIZER_CACHE.get(key)
    if cached is not None and Path(cached["dir"]).is_dir():
        return cached

    tok = _load_tokenizer(family, assets)
    digest = hashlib.sha1(repr(key).encode()).hexdigest()[:12]
    target = _cache_root() / f"{family}-{digest}"
    if target.exists():
        shutil.rmtree(target)
    tok.save_pretrained(str(target))
    info = {
        "dir": target,
        "vocab_size": len(tok),
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id if tok.bos_token_id is not None else tok.cls_token_id,
        "eos_token_id": tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id,
    }
    _TOKENIZER_CACHE[key] = info
    return info


def _load_tokenizer(family: str, assets: TwinAssets) -> Any:
    if family in ("bert", "distilbert"):
        from transformers import BertTokenizerFast, DistilBertTokenizerFast

        cls = BertTokenizerFast if family == "bert" else DistilBertTokenizerFast
        # transformers 5 takes the path as ``vocab=``; ``vocab_file=`` is silently ignored there and
        # yields a 5-token vocabulary, so check the size instead of trusting either spelling.
        tok = cls(vocab=str(assets.bert_vocab), do_lower_case=True)
        if len(tok) < 1000:
            tok = cls(vocab_file=str(assets.bert_vocab), do_lower_case=True)
        return _checked(tok, family, min_vocab=1000)

    if family == "mpnet":
        from transformers import MPNetTokenizerFast

        return _checked(MPNetTokenizerFast.from_pretrained(str(assets.mpnet_tokenizer_dir)), family, 1000)

    if family == "xlm-roberta":
        from transformers import XLMRobertaTokenizerFast

        # Through from_pretrained (not tokenizer_file=) so the backend is rebuilt exactly the way it
        # is when sentence-transformers reloads the twin; see the module docstring.
        with tempfile.TemporaryDirectory(prefix="embedrt-xlmr-") as tmp:
            shutil.copy(assets.xlmr_tokenizer, Path(tmp) / "tokenizer.json")
            tok = XLMRobertaTokenizerFast.from_pretrained(tmp)
        return _checked(tok, family, min_vocab=200_000)

    from transformers import RobertaTokenizerFast

    encoder = json.loads(Path(assets.gpt2_encoder).read_text(encoding="utf-8"))
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(specials)}
    for token, idx in sorted(encoder.items(), key=lambda kv: kv[1]):
        vocab[token] = idx + len(specials)
    vocab["<mask>"] = len(vocab)
    merges = []
    for line in Path(assets.gpt2_merges).read_text(encoding="utf-8").splitlines():
        if line.startswith("#version") or not line.strip():
            continue
        a, b = line.split(" ")
        merges.append((a, b))
    tok = RobertaTokenizerFast(vocab=vocab, merges=merges)
    return _checked(tok, family, min_vocab=50_000)


def _checked(tok: Any, family: str, min_vocab: int) -> Any:
    if len(tok) < min_vocab or tok.pad_token_id is None:
        raise RuntimeError(
            f"{family} tokenizer looks wrong (vocab {len(tok)}, pad id {tok.pad_token_id}); "
            "the transformers tokenizer API may have changed"
        )
    return tok

def strip_leading_lowercase(tokenizer_json: Path) -> None:
    """Drop a leading ``Lowercase`` normalizer from a saved ``tokenizer.json`` (the pre-6 layout)."""
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    norm = data.get("normalizer")
    if isinstance(norm, dict) and norm.get("type") == "Lowercase":
        data["normalizer"] = None
    elif isinstance(norm, dict) and norm.get("type") == "Sequence":
        rest = list(norm.get("normalizers") or [])
        if rest and rest[0].get("type") == "Lowercase":
            rest = rest[1:]
        data["normalizer"] = None if not rest else rest[0] if len(rest) == 1 else {**norm, "normalizers": rest}
    else:
        return
    tokenizer_json.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")


