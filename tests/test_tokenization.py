"""Tokenization: long texts tokenized from their head give exactly the ids of the whole text."""

from __future__ import annotations

import json
import random

import pytest
from embedrt.tokenization import HEAD_CHARS_PER_TOKEN, HFTokenizer
from tokenizers import Tokenizer, models, pre_tokenizers, processors


def _tokenizer_jsons(model_path, twin_assets) -> dict[str, str]:
    """Real tokenizers of each pre-tokenizer kind the head cut allows."""
    out = {name: (model_path(name) / "tokenizer.json").read_text(encoding="utf-8")
           for name in ("all-MiniLM-L6-v2", "all-mpnet-base-v2")}  # WordPiece, BertPreTokenizer
    out["xlm-r"] = twin_assets.xlmr_tokenizer.read_text(encoding="utf-8")  # Unigram, Metaspace
    vocab = json.loads(twin_assets.gpt2_encoder.read_text(encoding="utf-8"))
    merges = [tuple(line.split(" ")) for line in twin_assets.gpt2_merges.read_text(encoding="utf-8").splitlines()
              if line.strip() and not line.startswith("#version")]
    gpt2 = Tokenizer(models.BPE(vocab, merges))  # byte-level BPE, as RoBERTa-family models use
    gpt2.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    gpt2.post_processor = processors.ByteLevel(trim_offsets=True)
    out["byte-level"] = gpt2.to_str()
    return out


def _long_texts(fortunes: list[dict], max_seq_length: int) -> list[str]:
    rng = random.Random(0)
    words = [r["text"] for r in fortunes]  # every language of the corpus
    limit = HEAD_CHARS_PER_TOKEN * max_seq_length
    texts = []
    for _ in range(40):  # documents of real text, several times the head limit
        doc = ""
        while len(doc) < 3 * limit:
            doc += rng.choice(words) + rng.choice([" ", "  ", "\n", " \t ", "   "])
        texts.append(doc)
    texts += [
        "word " + " " * (2 * limit) + "tail words here",  # the head falls short: redone whole
        "x" * (2 * limit) + " end",  # no space inside the head limit
        "汉字" * (2 * limit),  # no spaces at all
        "a" * (limit - 3) + "   " + "b" * 50 + " c",  # the cut lands in a space run
        ("short " * (limit // 6 + 5)).strip(),  # just over the limit
    ]
    return texts


@pytest.mark.parametrize("max_seq_length", [16, 128])
def test_long_texts_give_the_whole_texts_ids(model_path, twin_assets, fortunes, max_seq_length):
    texts = _long_texts(fortunes, max_seq_length)
    for name, spec in _tokenizer_jsons(model_path, twin_assets).items():
        ours = HFTokenizer(spec, max_seq_length, pad_token_id=0)
        assert ours._splits_on_spaces, name
        whole = Tokenizer.from_str(spec)
        whole.no_padding()
        whole.enable_truncation(max_length=max_seq_length, strategy="longest_first")
        expected = [e.ids for e in whole.encode_batch(texts)]
        got = ours.encode(texts)
        for i, (a, b) in enumerate(zip(got.ids, expected)):
            assert a.tolist() == b, f"{name}: text {i} ({texts[i][:40]!r}...)"


def test_head_cut_only_where_spaces_split(model_path):
    spec = json.loads((model_path("all-MiniLM-L6-v2") / "tokenizer.json").read_text(encoding="utf-8"))
    spec["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": "\\w+"}, "behavior": "Isolated", "invert": False}
    assert not HFTokenizer(json.dumps(spec), 128, pad_token_id=0)._splits_on_spaces


def test_head_cut_not_where_the_normalizer_joins_words(model_path, twin_assets):
    """A Replace that matches a space with something else can join two words across the cut."""
    spec = json.loads(twin_assets.xlmr_tokenizer.read_text(encoding="utf-8"))  # Metaspace: words split at spaces
    normalizers = spec["normalizer"]["normalizers"]
    assert HFTokenizer(json.dumps(spec), 16, pad_token_id=1)._splits_on_spaces  # its " {2,}" collapse is safe
    normalizers.append({"type": "Replace", "pattern": {"String": " ,"}, "content": ","})
    assert not HFTokenizer(json.dumps(spec), 16, pad_token_id=1)._splits_on_spaces
    normalizers[-1] = {"type": "Replace", "pattern": {"Regex": "\\s*,"}, "content": ","}
    assert not HFTokenizer(json.dumps(spec), 16, pad_token_id=1)._splits_on_spaces
