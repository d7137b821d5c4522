"""embedrt's benchmarks: a package of the source checkout, run from the repository root as modules.

    python -m benchmarks.cpu [MODEL_OR_ARTIFACT ...]   # CPU speed + fidelity vs sentence-transformers, fastembed
    python -m benchmarks.providers ARTIFACT            # every execution provider × graph variant
    python -m benchmarks.gpu_check RESULTS_DIR         # the prepared check for a one-GPU machine
    python -m benchmarks.workers ARTIFACT              # concurrent CPU batches against one at a time
    python -m benchmarks.attention                     # the attention kernel alone
    python -m benchmarks.variant_study                 # every graph variant, speed and fidelity

Each writes or prints its numbers; the recorded ones are in ``benchmarks/results/`` and
``benchmarks/README.md``. They need the dev tools (``embedrt_dev``: ``pip install -e scripts/dev``,
which ``scripts/setup_env.sh`` does with the ``dev`` extra) for the cache's models and corpora.
``cpu_worker.py`` is the one file run by path: the CPU benchmark's per-process side, which also runs
under the anchors venv, where neither embedrt nor this package is installed.
"""
