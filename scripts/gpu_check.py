#!/usr/bin/env python3
"""The prepared check for a machine with one NVIDIA GPU (the ``benchmarks.gpu_check`` package).

    python scripts/gpu_check.py RESULTS_DIR [--models ...] [--artifacts DIR] [--corpus FILE] [--budget-s 420]
                                [--allow-cpu-dry-run] ...

Runs ``python -m benchmarks.gpu_check`` from any working directory, with this checkout's ``runtime``,
``exporter`` and ``scripts/dev`` on the child's ``PYTHONPATH`` where embedrt, its exporter or its dev
tools are not installed (as on a GPU machine that only has the checkout). The package docstring says
what it checks and how to carry the prerequisites to a machine without a registry.
"""

from checkout import run_module

if __name__ == "__main__":
    run_module("benchmarks.gpu_check", needs=("benchmarks", "embedrt", "embedrt_export", "embedrt_dev"))
