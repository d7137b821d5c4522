"""Where an int8 graph's time goes, and how close it runs to the machine's int8 GEMM ceiling.

    python -m benchmarks.int8_profile ARTIFACT [--variant int8_rowwise_fused] [--texts 1000] [--corpus long]

The texts are encoded as ``encode`` does (tokenizer, length-sorted batches under the engine's budget), on
a session with ONNX Runtime's profiler on. Kernel time is summed by op kind (GEMMs; GEMMs with their
epilogue in one op, embedrt's QMatMul*; quantize/rescale; attention; LayerNorm/GELU; packing; the rest)
and set against the wall time, whose remainder is everything outside ``session.run`` (tokenization,
batching, Python).

The ceiling: the linear layers' multiply-adds of the corpus's batches at the machine's u8 x s8 GEMM rate
(ONNX Runtime's MLAS MatMulInteger at the model's layer shapes), plus attention's at the bf16 GEMM rate
where the machine has one (int8_rowwise_fused attends in bf16; else the fp32 rate); for the real tokens
alone, since the ``_fused`` graphs skip padding.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.cpu_ceiling import corpus_flops, st_modules
from benchmarks.machine import cpu_model, gemm_rates

KINDS = {
    "GEMMs": {"MatMulIntegerToFloat", "MatMulInteger", "MatMul", "Gemm", "FusedMatMul", "DynamicQuantizeMatMul",
              "QGemm", "MatMulNBits"},
    "GEMMs + rescale/LayerNorm/GELU/quantize": {"QMatMulRowDequantize", "QMatMulRowDequantizeAddLayerNorm",
                                                "QMatMulRowDequantizeGeluQuantize",
                                                "QMatMulRowDequantizeAddLayerNormQuantize"},
    "quantize/rescale": {"RowQuantize", "RowDequantize", "DynamicQuantizeLinear", "QuantizeLinear",
                         "DequantizeLinear"},
    "attention": {"Attention", "PackedAttention", "Softmax", "MultiHeadAttention"},
    "LayerNorm/GELU": {"RowDequantizeAddLayerNorm", "RowDequantizeGeluQuantize", "BiasAddLayerNorm", "BiasGelu",
                       "LayerNormalization", "SkipLayerNormalization", "Gelu", "FastGelu", "Erf"},
    "packing": {"PackRows", "UnpackRows", "SumRows"},
}


def kind(op: str) -> str:
    """The breakdown row of an op type."""
    return next((k for k, ops in KINDS.items() if op in ops), "other ops")


class _Timed:
    """A session whose ``run`` calls are timed."""

    def __init__(self, session: Any) -> None:
        self.session, self.seconds = session, 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return self.session.run(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - began


def profile(artifact: str, variant: str, texts: list[str], threads: int, scratch: Path) -> dict[str, Any]:
    """Encode ``texts`` on a profiled session; seconds by op kind, in ``session.run`` and in all."""
    import embedrt
    import onnxruntime as ort
    from embedrt import kernels
    from embedrt.engine import Engine

    reference = embedrt.load_engine(artifact, variant=variant, threads=threads, workers=1)
    tokenizer = embedrt.load_tokenizer(artifact)
    graph = embedrt.Artifact(artifact).manifest.towers["text"].variants[variant]
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.enable_mem_pattern = False
    options.enable_profiling, options.profile_file_prefix = True, str(scratch / "profile")
    kernels.register(options, graph.custom_ops)
    session = _Timed(ort.InferenceSession(str(Path(artifact) / graph.file), options, providers=["CPUExecutionProvider"],
                                          disabled_optimizers=["BiasGeluFusion", "SkipLayerNormFusion"]))
    engine = Engine(session, reference.info, tokenizer.pad_token_id)
    engine.run(tokenizer.encode(texts[:64]))  # warm-up, then count from zero
    session.seconds = 0.0
    began = time.perf_counter()
    engine.run(tokenizer.encode(texts), batch_size=32)
    wall = time.perf_counter() - began
    trace = json.loads(Path(session.end_profiling()).read_text())
    by_kind: dict[str, float] = defaultdict(float)
    runs = [e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"]
    first = runs[1]["ts"] if len(runs) > 1 else 0  # events after the warm-up run
    for event in trace:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time") and event["ts"] >= first:
            by_kind[kind(event["args"]["op_name"])] += event["dur"] / 1e6
    return {"wall_s": wall, "run_s": session.seconds, "kernels_s": dict(by_kind)}


def ceiling(folder: Path, lengths: np.ndarray, rates: dict[str, float], gemm_threads: int) -> dict[str, Any]:
    """The corpus's int8 ceiling, padded batches and real tokens alone."""
    shape = st_modules(folder)
    out = {}
    for label, flops in (("padded", corpus_flops(lengths, 32, shape)),
                         ("real tokens", corpus_flops(lengths, 1, shape))):
        seconds = flops["linear_flops"] / (rates["int8_gops"] * 1e9) + flops["attention_flops"] / (
            rates.get("bf16_gflops", rates["fp32_gflops"]) * 1e9)
        out[label] = {"seconds": seconds, **{k: flops[k] for k in ("linear_flops", "attention_flops")}}
    out["rates"], out["threads"], out["shape"] = rates, gemm_threads, shape
    return out


def main(argv: list[str] | None = None) -> int:
    """Profile, compare with the ceiling, print and write the breakdown."""
    import embedrt
    from embedrt.selection import available_cpus
    from embedrt_dev import corpora

    from benchmarks.serve import english_fortunes

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact")
    parser.add_argument("--variant", default="int8_rowwise_fused")
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--corpus", choices=["fortunes", "long"], default="fortunes")
    parser.add_argument("--threads", type=int, default=available_cpus())
    parser.add_argument("--out", help="write the JSON here")
    args = parser.parse_args(argv)
    texts = english_fortunes(args.texts) if args.corpus == "fortunes" else corpora.long_texts(args.texts)
    manifest = embedrt.Artifact(args.artifact).manifest
    lengths = embedrt.load_tokenizer(args.artifact).encode(texts).lengths()
    shape = st_modules(Path(manifest.source["path"]))
    rates = gemm_rates(args.threads, k=shape["hidden"], n=shape["intermediate"], bf16=True)
    bound = ceiling(Path(manifest.source["path"]), lengths, rates, args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        result = profile(args.artifact, args.variant, texts, args.threads, Path(scratch))
    wall = result["wall_s"]
    rows = sorted(result["kernels_s"].items(), key=lambda kv: -kv[1])
    outside = wall - result["run_s"]
    print(f"{manifest.name} {args.variant}, {len(texts)} {args.corpus} texts ({int(lengths.sum())} tokens), "
          f"{args.threads} threads on {cpu_model()}: {len(texts) / wall:.0f} texts/s")
    print(f"GEMM rates at {shape['hidden']}x{shape['intermediate']}: fp32 {rates['fp32_gflops']:.0f} GFLOP/s, "
          f"int8 {rates['int8_gops']:.0f} GOP/s"
          + (f", bf16 {rates['bf16_gflops']:.0f} GFLOP/s" if "bf16_gflops" in rates else ""))
    for label in ("padded", "real tokens"):
        print(f"int8 ceiling ({label}): {bound[label]['seconds']:.2f} s -> {bound[label]['seconds'] / wall:.1%} of it")
    for name, seconds in rows:
        print(f"  {name:<18} {seconds:7.2f} s  {seconds / wall:6.1%}")
    print(f"  {'session overhead':<18} {result['run_s'] - sum(result['kernels_s'].values()):7.2f} s  "
          f"{(result['run_s'] - sum(result['kernels_s'].values())) / wall:6.1%}")
    print(f"  {'outside run()':<18} {outside:7.2f} s  {outside / wall:6.1%}")
    if args.out:
        Path(args.out).write_text(json.dumps({"model": manifest.name, "variant": args.variant, "corpus": args.corpus,
                                              "texts": len(texts), "tokens": int(lengths.sum()), "profile": result,
                                              "ceiling": bound, "cpu": cpu_model()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
