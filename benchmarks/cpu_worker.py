#!/usr/bin/env python3
"""The per-process side of ``python -m benchmarks.cpu``: one fresh process per measurement.

It runs under the project's interpreter (sentence-transformers torch, embedrt) and under the
anchors venv's (sentence-transformers' ONNX backend, fastembed), which has no embedrt, so it
imports nothing but the standard library, numpy and the one library under test. Modes::

    cpu_worker.py encode SPEC.json T0        load a model, embed one text (cold start), warm up, time one pass
    cpu_worker.py gemm SPEC.json             fp32 GEMM rate of numpy's BLAS at the spec's shapes
    cpu_worker.py export-st-onnx SRC DEST    sentence-transformers' ONNX, O3 and qint8 (avx512_vnni) files
    cpu_worker.py versions                   installed versions of the libraries involved

Each mode writes one JSON object (to SPEC's ``result`` path, or to stdout).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

DISTRIBUTIONS = ("embedrt", "torch", "transformers", "sentence-transformers", "optimum", "optimum-onnx",
                 "onnxruntime", "fastembed", "tokenizers", "numpy")
# The names sentence-transformers' export helpers give their files.
ST_ONNX_FILES = {"onnx": "onnx/model.onnx", "O3": "onnx/model_O3.onnx",
                 "qint8": "onnx/model_qint8_avx512_vnni.onnx"}


def versions() -> dict[str, str]:
    """Versions of the libraries this benchmark cares about that this interpreter has."""
    out = {}
    for dist in DISTRIBUTIONS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


# -- encoders: each returns (embed(texts) -> array, facts about the loaded model) -------------------

Encoder = Callable[[list[str]], np.ndarray]


def load_st(spec: dict[str, Any]) -> tuple[Encoder, dict[str, Any]]:
    """sentence-transformers, torch or its ONNX backend (``spec["file_name"]`` picks the ONNX file)."""
    from sentence_transformers import SentenceTransformer

    if spec.get("file_name"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = spec["threads"]
        model = SentenceTransformer(spec["model_dir"], device="cpu", backend="onnx", model_kwargs={
            "file_name": spec["file_name"], "provider": "CPUExecutionProvider", "session_options": options})
    else:
        import torch

        torch.set_num_threads(spec["threads"])
        model = SentenceTransformer(spec["model_dir"], device="cpu")
    batch_size = spec["batch_size"]
    return (lambda texts: model.encode(texts, batch_size=batch_size),
            {"max_seq_length": model.max_seq_length, "batch_size": batch_size})


def load_fastembed(spec: dict[str, Any]) -> tuple[Encoder, dict[str, Any]]:
    """fastembed on a local ONNX file, registered as a custom model, with fastembed's own batching."""
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    name = f"local/{Path(spec['model_dir']).name}"
    # fastembed cannot download here: the registry entry only names the files, and
    # specific_model_path makes it read them from the folder sentence-transformers' export wrote.
    TextEmbedding.add_custom_model(model=name, pooling=PoolingType[spec["pooling"].upper()],
                                   normalization=spec["normalize"], sources=ModelSource(hf=name),
                                   dim=spec["dim"], model_file=spec["file_name"])
    model = TextEmbedding(name, specific_model_path=spec["model_dir"], threads=spec["threads"],
                          cache_dir=spec["scratch"], local_files_only=True)
    truncation = model.model.tokenizer.truncation or {}
    return (lambda texts: np.stack(list(model.embed(texts))),
            {"max_seq_length": truncation.get("max_length"), "batch_size": "256 (fastembed default)"})


def load_embedrt(spec: dict[str, Any]) -> tuple[Encoder, dict[str, Any]]:
    """embedrt's SentenceTransformer facade on an artifact variant (``None``: the runtime's default)."""
    import embedrt

    model = embedrt.SentenceTransformer(spec["model_dir"], variant=spec.get("variant"), threads=spec["threads"],
                                       workers=spec.get("workers"))
    batch_size = spec["batch_size"]
    return (lambda texts: model.encode(texts, batch_size=batch_size),
            {"max_seq_length": model.max_seq_length, "batch_size": batch_size, "variant": model.variant,
             "workers": model.engine.workers,
             "intra_op_threads": model.engine.session.get_session_options().intra_op_num_threads})


LOADERS: dict[str, Callable[[dict[str, Any]], tuple[Encoder, dict[str, Any]]]] = {
    "st": load_st, "fastembed": load_fastembed, "embedrt": load_embedrt}


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def run_encode(spec: dict[str, Any], t0: float) -> dict[str, Any]:
    """Cold start, then one untimed warm-up and one timed pass over every text.

    ``t0`` is the parent's ``time.monotonic()`` just before it spawned this process (the clock is
    system-wide), so the cold start includes interpreter start-up and imports.
    """
    with open(spec["texts"], encoding="utf-8") as fh:
        texts = json.load(fh)
    start = time.monotonic()
    encode, facts = LOADERS[spec["kind"]](spec)
    loaded = time.monotonic()
    encode(texts[:1])
    first = time.monotonic()
    encode([texts[i] for i in spec["warmup"]])
    begin = time.perf_counter()
    embeddings = encode(texts)
    seconds = time.perf_counter() - begin
    if spec.get("embeddings"):
        np.save(spec["embeddings"], np.asarray(embeddings, dtype=np.float32))
    return {"cold_start_s": first - t0, "imports_and_load_s": loaded - t0,
            "own_start_s": start - t0, "encode_s": seconds, "texts": len(texts),
            "peak_rss_mb": peak_rss_mb(), "facts": facts, "versions": versions()}


# -- GEMM -------------------------------------------------------------------------------------------

def _time_shape(run: Callable[[], Any], m: int, k: int, n: int, min_s: float) -> dict[str, Any]:
    """Median time of ``run`` (one m×k×n GEMM) over at least ``min_s`` after one warm-up."""
    run()
    samples: list[float] = []
    deadline = time.perf_counter() + min_s
    while len(samples) < 3 or time.perf_counter() < deadline:
        begin = time.perf_counter()
        run()
        samples.append(time.perf_counter() - begin)
    return {"m": m, "k": k, "n": n, "median_s": statistics.median(samples),
            "gflops": 2 * m * k * n / statistics.median(samples) / 1e9, "samples": len(samples)}


def _ort_matmul(b: np.ndarray, threads: int) -> Any:
    """An ONNX Runtime session of one MatMul with ``b`` as a constant weight, as in an exported graph."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "gemm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["m", b.shape[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", b.shape[1]])],
                              [numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run_gemm(spec: dict[str, Any]) -> dict[str, Any]:
    """fp32 GFLOP/s of one GEMM backend at ``spec["shapes"]`` ([m, k, n] each) on ``spec["threads"]`` threads.

    ``spec["backend"]`` is ``numpy`` (its BLAS) or ``onnxruntime`` (MLAS, through a one-MatMul graph
    with a constant weight, the way the exported graphs run their linear layers). Each shape is timed
    for at least ``spec["min_s"]`` after one warm-up; its rate is the median of its samples. The
    overall rate weighs the shapes by their FLOPs (total FLOPs / total median time), as one
    transformer layer does.
    """
    from threadpoolctl import threadpool_info, threadpool_limits

    rng = np.random.default_rng(0)
    shapes = []
    on_ort = spec.get("backend", "numpy") == "onnxruntime"
    with threadpool_limits(limits=spec["threads"], user_api="blas"):
        if on_ort:
            import onnxruntime as ort

            blas = [{"internal_api": "onnxruntime MLAS", "version": ort.__version__,
                     "architecture": "MatMul, constant weight", "num_threads": spec["threads"]}]
        else:
            blas = [{k: info.get(k) for k in ("internal_api", "version", "architecture", "threading_layer",
                                               "num_threads", "filepath")}
                    for info in threadpool_info() if info.get("user_api") == "blas"]
        for m, k, n in spec["shapes"]:
            a = rng.standard_normal((m, k), dtype=np.float32)
            b = rng.standard_normal((k, n), dtype=np.float32)
            if on_ort:
                session = _ort_matmul(b, spec["threads"])
                shapes.append(_time_shape(lambda s=session, a=a: s.run(None, {"a": a}), m, k, n, spec["min_s"]))
            else:
                out = np.empty((m, n), dtype=np.float32)
                shapes.append(_time_shape(lambda a=a, b=b, out=out: np.matmul(a, b, out=out), m, k, n,
                                          spec["min_s"]))
    flops = sum(2 * s["m"] * s["k"] * s["n"] for s in shapes)
    return {"gflops": flops / sum(s["median_s"] for s in shapes) / 1e9, "shapes": shapes, "blas": blas,
            "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                                                    "OMP_NUM_THREADS")},
            "numpy": np.__version__}


# -- sentence-transformers' ONNX export -------------------------------------------------------------

def export_st_onnx(src: str, dest: str) -> dict[str, Any]:
    """Write sentence-transformers' own ONNX files for the model folder ``src`` into ``dest``.

    The way its docs say (efficiency page): load with ``backend="onnx"`` (exports on the fly),
    ``save_pretrained``, then ``export_optimized_onnx_model(…, "O3")`` and
    ``export_dynamic_quantized_onnx_model(…, "avx512_vnni")``, all local, nothing pushed. Written to
    a staging folder renamed at the end, so an interrupted export leaves nothing that looks finished.
    """
    from sentence_transformers import (
        SentenceTransformer,
        export_dynamic_quantized_onnx_model,
        export_optimized_onnx_model,
    )

    target = Path(dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model = SentenceTransformer(src, device="cpu", backend="onnx")
        model.save_pretrained(str(staging))
        export_optimized_onnx_model(model, "O3", str(staging))
        export_dynamic_quantized_onnx_model(model, "avx512_vnni", str(staging))
        missing = [f for f in ST_ONNX_FILES.values() if not (staging / f).is_file()]
        if missing:
            raise RuntimeError(f"sentence-transformers' export did not write {missing}")
        (staging / "embedrt-bench-export.json").write_text(json.dumps({"source": src, "versions": versions()}),
                                                           encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"dest": str(target), "files": sorted(ST_ONNX_FILES.values()), "versions": versions()}


def main(argv: Sequence[str]) -> int:
    """Dispatch on the mode; the result goes to the spec's ``result`` file or to stdout."""
    mode, *rest = argv
    if mode == "versions":
        print(json.dumps(versions()))
        return 0
    if mode == "export-st-onnx":
        print(json.dumps(export_st_onnx(*rest)))
        return 0
    spec = json.loads(Path(rest[0]).read_text(encoding="utf-8"))
    result = run_encode(spec, float(rest[1])) if mode == "encode" else run_gemm(spec)
    Path(spec["result"]).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
