"""The prepared check for a machine with one NVIDIA GPU: parity, TensorRT engine cache, benchmarks.

Usage (``scripts/gpu_check.py`` runs this package whether or not embedrt and its dev tools are
installed: the checkout's folders go on the child's ``PYTHONPATH``)::

    python scripts/gpu_check.py RESULTS_DIR [--models all-MiniLM-L6-v2,all-mpnet-base-v2] [--artifacts DIR]
                                [--corpus FILE] [--budget-s 420] [--parity-texts 500] [--require-tensorrt]
                                [--anchor-model all-mpnet-base-v2] [--allow-cpu-dry-run]

What it does, all bounded by ``--budget-s`` (default 420 s, so the whole run fits in 8 minutes):

0. Prerequisites (:mod:`.cli`), all listed at once with how to provide each: ``onnxruntime`` must be
   the GPU build with ``CUDAExecutionProvider`` (``TensorrtExecutionProvider`` too for the TensorRT
   part: without it the CUDA part runs and the TensorRT part is reported as SKIPPED with the reason);
   numpy, tokenizers, onnx (the shared fidelity measure lives in ``embedrt_export``) and embedrt
   importable; the fortunes corpus; an artifact per model.
1. (a) Parity (:mod:`.gates`) on ~500 real fortunes texts per model (every language, some past
   max_seq_length): CUDA fp16 (fp32 where the artifact has no fp16 variant) and TensorRT fp16 against
   CPU fp32, max 1−cos ≤ 1e-3.
   (b) TensorRT engine cache: a first process (:mod:`.worker`), on an empty cache, builds the engines
   (at most one per sequence bucket; with one explicit profile normally one per TensorRT subgraph) and
   must build none while going through every bucket; a second process on the same cache must create
   or modify no engine file and reach its first embedding in at most half the first process's time.
2. (c) ``python -m benchmarks.providers`` for each model (CUDA and TensorRT rows, CPU fp32 as the
   fidelity reference), with what is left of the budget (:mod:`.report`).
3. (e) embedrt fp16 against sentence-transformers with torch fp16 (``model.half()``) on the same GPU, same
   texts, batch 128 at sequence 128: end to end and without tokenization (:mod:`.st_anchor`; needs
   sentence-transformers and the models' folders, ``--st-folders``, else SKIPPED), with the GPU issue's
   targets as gates: end to end ≥ 85% of the rate without tokenization, ≥ 1.5× sentence-transformers, and
   the anchor model ≥ 2M tokens/s without tokenization. It runs before (c), which takes what budget is left.
4. (d) ``--anchor-model``'s (all-mpnet-base-v2) fp16 tokens/s at sequence 128, batch 128, next to
   NVIDIA's published figure for plugin-fused fp16 BERT-base on an A100 (:data:`.report.ANCHOR`;
   NVIDIA's figure excludes tokenization and host↔device copies, ours includes both).

Everything goes to RESULTS_DIR: ``gpu_check.md`` (summary), ``gpu_check.json`` (raw), ``gpu_check.log``,
``logs/`` (every subprocess's output), ``bench/<model>/providers.{md,json,png}``. TensorRT engines and
artifacts exported here go to a temporary folder (hundreds of MB) that is removed at the end.
Exit status: 0 every gate passed (TensorRT may be SKIPPED, said loudly); 1 a gate failed;
2 a prerequisite is missing (nothing measured); 3 the budget ran out before every gate was evaluated.

``--allow-cpu-dry-run`` runs the same flow with the CPU provider standing in for CUDA and TensorRT
and tiny sizes, so the logic can be exercised on a machine without a GPU. Its outputs say DRY RUN
everywhere; its numbers are CPU numbers and its TensorRT gates are N/A.

Getting the prerequisites onto a GPU machine that has no package registry and no Hub
------------------------------------------------------------------------------------
What worked on an H200 lent through the device tool (2026-11-27; Python 3.12, CUDA 13 libraries from
torch's nvidia-* wheels, onnxruntime 1.30 CPU build preinstalled): each call carries at most 64 MiB of
git-ignored paths, a carried path replaces its remote copy, and paths carried earlier stay for as long
as the machine stays warm. So everything goes as one tar stream cut into 62 MiB pieces, one call per
piece, joined and unpacked in the last call. Here, with the registry::

    mkdir -p build/stage build/carry build/artifacts
    cache=$(.venv/bin/python -c "from embedrt.paths import cache_dir; print(cache_dir())")
    .venv/bin/pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 onnxruntime-gpu==1.31.1 -d build/stage        # 255 MB, CUDA 13
    xz -c "$cache/corpora/fortunes.jsonl" > build/stage/fortunes.jsonl.xz             # 18 MB -> 4.4 MB
    for m in all-MiniLM-L6-v2 all-mpnet-base-v2; do
        .venv/bin/embedrt export "$cache/models/$m" -o build/artifacts/$m --variants fp16; done
    tar -C build -cf - stage artifacts | split -b 62M -a 2 - build/carry/s1.            # 17 pieces

(add the onnx wheel to ``build/stage`` where the machine's Python has no ``onnx``). Then one device
call per piece (``carry=["build/carry/s1.aa"]``, then ``["build/carry/s1.ab"]``, …) and finally, in
one call::

    cd build && cat carry/s1.* | tar -xf - && xz -dk stage/fortunes.jsonl.xz && python3 -m pip install -q \
        --no-index --no-deps --no-compile --target ortgpu stage/onnxruntime_gpu-*.whl && cd .. &&
    PYTHONPATH=build/ortgpu python3 scripts/gpu_check.py build/gc --artifacts build/artifacts \
        --corpus build/stage/fortunes.jsonl --budget-s 400

then copy at most 8 files from build/gc into ``$OUT`` (the tool returns 8 files, two folders deep).
``--target`` + ``PYTHONPATH`` shadows the preinstalled CPU onnxruntime without uninstalling it;
``--no-deps``: numpy and tokenizers are already there. The manifest's sha256 of every graph catches
a badly joined file. TensorRT: ``TensorrtExecutionProvider`` is in the onnxruntime-gpu wheel, but
TensorRT's own libraries (libnvinfer) are on no registry reachable here (PyPI's tensorrt-cu13-libs is
an sdist that downloads from pypi.nvidia.com), so that part is SKIPPED. If sentence-transformers and
the ST model folders are on the device instead, a model without ``--artifacts`` is exported there
(torch is available), but the weights weigh as much as the artifact.
"""
