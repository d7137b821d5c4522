"""Trace a torch module to an ONNX graph the way every traced builder does, clean-up passes included.

A module of its own, beside the builders rather than inside the transformer's, because two builders
trace: the transformer (:mod:`.transformer`, one text graph) and CLIP (:mod:`.clip`, a text and a
vision graph). Both must get the same exporter, opset and passes, so that what is proven about one
trace (exact parity, batch-invariant sums) holds for the other; the word-embedding builder writes its
graph by hand and never traces.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from typing import Any

from ..passes.invariance import batch_invariant
from ..passes.simplify import simplify
from .base import OPSET


def trace(module: Any, args: tuple[Any, ...], input_names: Sequence[str], output_names: Sequence[str],
          dynamic_axes: dict[str, dict[int, str]],
          within: contextlib.AbstractContextManager[Any] | None = None) -> bytes:
    """``module`` (in eval mode) traced on ``args`` to ONNX at :data:`OPSET`, then simplified
    (:func:`embedrt_export.passes.simplify.simplify`) and its pooling sums made batch-invariant
    (:func:`embedrt_export.passes.invariance.batch_invariant`). ``within``: a context the trace runs in
    (e.g. the transformer's eager attention)."""
    import torch

    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings(), within or contextlib.nullcontext():
        # The TorchScript exporter is deprecated but stable and exact for these graphs; its
        # tracer warnings are about shape-dependent Python branches that are constant here.
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, buffer, input_names=list(input_names),
                          output_names=list(output_names), dynamic_axes=dynamic_axes, opset_version=OPSET,
                          do_constant_folding=True, dynamo=False)
    onnx_bytes, _ = simplify(buffer.getvalue())
    return batch_invariant(onnx_bytes)
