"""embedrt_export: offline exporter from sentence-transformers folders to embedrt artifacts.

Needs the ``export`` extra (torch, transformers, sentence-transformers, onnx); the runtime
(`embedrt`) never imports this package, but the exporter uses the runtime: the manifest schema, and
every graph is verified by running it through ``embedrt``.

The package, in the order an export runs::

    source.py, resolve.py   modules.json -> SourceSpec; catalogue names -> folders, and the stack check
    export.py               the orchestration: build, stage, hash, write the manifest, verify parity,
                            add the requested variants, rename into place (cli.py: ``embedrt export``)
    builders/               one builder per first module, each -> Built (graph files + manifest parts)
        base.py             Built, file names, opset, the reference loader; BUILDERS in __init__.py
        transformer.py      Transformer models: the whole module chain traced to one text graph
        trace.py            the torch -> ONNX tracer the transformer and CLIP builders share
        wordembed.py        WordEmbeddings (GloVe & co.): a Gather + pooling graph written by hand
        clip.py             CLIPModel: a text and a vision graph
    passes/                 what every traced fp32 graph goes through (simplify: trace clean-up;
                            invariance: batch-invariant pooling sums)
    variants/               graph variants of the verified fp32 text graph and their fidelity gates
                            (__init__.py: gates, build_text_variants, measure; optimize, quantize,
                            rowwise, kernel_fusion, packing: one recipe each)
    onnx_edit.py            the ONNX graph-editing helpers every pass and variant uses
    verify.py, fidelity.py  parity of an artifact through the runtime; the measures gates, tests and
                            benchmarks share

Imports go one way: ``export`` → ``builders`` → ``passes`` → ``onnx_edit`` (and ``export`` →
``variants`` → ``onnx_edit``); no builder, pass or variant imports ``export``. The passes sit in their
own folder, not inside ``builders/``, because they are graph rewrites like the variants (on
``onnx_edit``), only applied to the fp32 graph itself.
"""

from .export import ExportError, export
from .source import SourceError, read_source

__all__ = ["ExportError", "SourceError", "export", "read_source"]
