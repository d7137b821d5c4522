#!/usr/bin/env python3
"""One row per catalogue model with its twin's measured parity (the ``embedrt_dev.catalogue_report`` module).

    python scripts/catalogue_report.py [--only NAME ...] [--workdir DIR] [--markdown FILE]

Same as ``python -m embedrt_dev.catalogue_report``; works whether or not embedrt-dev is installed.
"""

from checkout import run_module

if __name__ == "__main__":
    run_module("embedrt_dev.catalogue_report", needs=("embedrt", "embedrt_export", "embedrt_dev"))
