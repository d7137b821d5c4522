"""embedrt: torch-free ONNX runtime for the sentence-transformers catalogue.

``embedrt.SentenceTransformer(artifact_dir).encode(texts)`` is a drop-in for
``sentence_transformers.SentenceTransformer`` on artifacts written by ``embedrt export``. Below it,
the layers every front end stands on: ``load_tokenizer`` (texts → token ids) and ``load_engine``
(token ids → embeddings).
"""

from . import util
from .artifact import Artifact, open_artifact
from .engine import Engine, EngineInfo
from .loader import load_engine
from .manifest import ArtifactError
from .model import SentenceTransformer
from .providers import ProviderUnavailableError, share_cpu_threads
from .tokenizer import Tokenizer, load_tokenizer
from .types import Encoded

__version__ = "0.1.0"
__all__ = ["Artifact", "ArtifactError", "Encoded", "Engine", "EngineInfo", "ProviderUnavailableError",
           "SentenceTransformer", "Tokenizer", "__version__", "load_engine", "load_tokenizer", "open_artifact",
           "share_cpu_threads", "util"]
