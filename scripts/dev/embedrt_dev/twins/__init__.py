"""Tiny random-weight sentence-transformers "twins" built offline on real tokenizers.

A twin is a complete sentence-transformers model folder (``modules.json``, ``config.json``,
``model.safetensors``, ``tokenizer.json``, ``1_Pooling/``, optional ``2_Dense/`` ...) whose transformer
has a few dozen hidden units and random weights, but whose tokenizer is the real one of its family
(BERT uncased WordPiece, GPT-2/RoBERTa byte-level BPE, XLM-R SentencePiece-Unigram, MPNet WordPiece).
The parity tests export a twin with embedrt's exporter and compare against ``SentenceTransformer.encode``,
so every family and every head module gets exercised in seconds without the Hugging Face Hub.

Modules: :mod:`.spec` (families, :class:`HeadSpec`, :class:`TwinAssets`, :data:`TWIN_MATRIX`),
:mod:`.recipe` (the recipe file that makes ``reuse=True`` safe), :mod:`.tokenizers` (each family's real
tokenizer), :mod:`.transformer` (:func:`build_twin` and the weight scrambling), :mod:`.clip`
(:func:`build_clip_twin`) and :mod:`.catalogue` (one twin per catalogue entry and its export check;
import it explicitly, it needs the exporter).

Heavy imports (torch, transformers, sentence-transformers) happen inside the functions so that test
collection can read :data:`TWIN_MATRIX` without paying for them.
"""

from .clip import build_clip_twin, clip_bpe_vocab
from .recipe import TWIN_RECIPE_FILE
from .spec import ACTIVATIONS, FAMILIES, POOLING_MODES, TWIN_MATRIX, HeadSpec, TwinAssets, default_assets
from .transformer import build_twin

__all__ = ["ACTIVATIONS", "FAMILIES", "POOLING_MODES", "TWIN_MATRIX", "TWIN_RECIPE_FILE", "HeadSpec", "TwinAssets",
           "build_clip_twin", "build_twin", "clip_bpe_vocab", "default_assets"]
