#!/usr/bin/env python3
"""Fetch real models, tokenizers and corpora into embedrt's cache (the ``embedrt_dev.fetch`` package).

    python scripts/fetch_models.py [--cache DIR] [--force] [ITEM ...]   # no ITEM: all items
    python scripts/fetch_models.py --list

Same as ``python -m embedrt_dev.fetch``; works whether or not embedrt-dev is installed
(``pip install -e scripts/dev``, which ``scripts/setup_env.sh`` does with the ``dev`` extra).
"""

from checkout import run_module

if __name__ == "__main__":
    run_module("embedrt_dev.fetch", needs=("embedrt", "embedrt_dev"))
