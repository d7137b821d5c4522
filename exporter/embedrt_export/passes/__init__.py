"""Graph passes every traced fp32 graph goes through before it is verified (not variants: the fp32 graph
itself, whose output they leave unchanged for what the runtime feeds).

- :mod:`.simplify`: removes the trace's softmax NaN guards and duplicate mask ``Where`` ops.
- :mod:`.invariance`: turns sums over the sequence into sequential ones, so an embedding does not depend
  on the batch it was computed in.

Both run inside :func:`embedrt_export.builders.trace.trace` and edit graphs with :mod:`embedrt_export.onnx_edit`,
as the variant rewrites do.
"""
