"""embedrt: torch-free ONNX runtime for the sentence-transformers catalogue.

``embedrt.SentenceTransformer(artifact_dir).encode(texts)`` is a drop-in for
``sentence_transformers.SentenceTransformer`` on artifacts written by ``embedrt export``.
"""

from . import util
from .manifest import ArtifactError
from .model import SentenceTransformer
from .providers import ProviderUnavailableError, share_cpu_threads

__version__ = "0.1.0"
__all__ = ["ArtifactError", "ProviderUnavailableError", "SentenceTransformer", "__version__", "share_cpu_threads",
           "util"]
