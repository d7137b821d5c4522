"""embedrt_export: offline exporter from sentence-transformers folders to embedrt artifacts.

Needs the ``export`` extra (torch, transformers, sentence-transformers, onnx); the runtime
(`embedrt`) never imports this package.
"""

from .export import ExportError, export
from .source import SourceError, read_source

__all__ = ["ExportError", "SourceError", "export", "read_source"]
