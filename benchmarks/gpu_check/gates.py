"""Gates (a) and (b) of the GPU check for one model: CUDA and TensorRT parity against CPU fp32 on real
texts, and the TensorRT engine cache across two processes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from embedrt_dev import corpora

from .run import DRY_SIZES, GPU_SIZES, Gate, Run, run_worker

PARITY_MAX = 1e-3
SECOND_START_MAX_RATIO = 0.5


def anchor_texts(corpus: Path, n: int) -> list[str]:
    """``n`` texts past 128 tokens (8 consecutive fortunes joined): what (e) fills sequence 128 with."""
    return corpora.sample_records(corpora.read_records(corpus), n, n_long=n, join=8)


def parity_texts(corpus: Path, n: int) -> list[str]:
    """``n`` real fortunes: an even spread over every language, plus a tenth far past any max_seq_length
    (20 consecutive fortunes joined), so truncation and every bucket are exercised."""
    return corpora.sample_records(corpora.read_records(corpus), n, n_long=max(1, n // 10), join=20)


def engines(listing: dict[str, Any]) -> dict[str, Any]:
    """The TensorRT engine files of a cache listing."""
    return {k: v for k, v in listing.items() if k.endswith(".engine")}


def check_model(run: Run, model: str, artifact: Path, trt_skip: str | None) -> None:
    """Gates (a) and (b) for one model."""
    import embedrt
    import numpy as np
    from embedrt.engine import default_buckets
    from embedrt_export.fidelity import one_minus_cos

    args = run.args
    variants = _variants(artifact)
    texts = parity_texts(args.corpus, args.parity_texts)
    texts_path = run.out / "work" / f"{model}-texts.json"
    texts_path.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    rec = run.record.setdefault("models", {}).setdefault(model, {"artifact": str(artifact), "variants": variants})
    max_batch = max(DRY_SIZES["batch_sizes"] if run.dry else GPU_SIZES["batch_sizes"])

    start = time.perf_counter()
    reference = embedrt.SentenceTransformer(artifact, device="cpu", variant="fp32", strict=True).encode(
        texts, batch_size=64)
    rec["cpu_reference_s"] = time.perf_counter() - start
    run.log(f"[{model}] CPU fp32 reference: {len(texts)} texts in {rec['cpu_reference_s']:.1f}s")

    cuda_variant = "fp16" if "fp16" in variants and not run.dry else "fp32"
    label = "CUDA fp16" if cuda_variant == "fp16" else "CUDA fp32 (artifact has no fp16 variant)"
    if run.dry:
        label = "CUDA stand-in: CPU fp32 (DRY RUN)"

    def parity(name: str, result: dict[str, Any], what: str) -> None:
        npy = run.out / "work" / f"{name}.npy"
        got = np.load(npy)
        npy.unlink()  # the number is the result; 500 embeddings per process are not worth carrying back
        worst = float(one_minus_cos(reference, got).max())
        result["max_one_minus_cos"] = worst
        run.gates.append(Gate(model, f"(a) {what} vs CPU fp32, {len(texts)} texts", f"max 1−cos {worst:.2e}",
                              f"≤ {PARITY_MAX:.0e}", "PASS" if worst <= PARITY_MAX else "FAIL"))
        run.log(f"[{model}] {what}: max 1−cos {worst:.2e}")

    def spec(name: str, device: str, variant: str, cache: Path | None) -> dict[str, Any]:
        return {"artifact": str(artifact), "device": device, "variant": variant, "max_batch_size": max_batch,
                "trt_cache_dir": str(cache) if cache else None, "texts": str(texts_path),
                "embeddings": str(run.out / "work" / f"{name}.npy")}

    name = f"{model}-cuda"
    result = run_worker(run, name, spec(name, "cpu" if run.dry else "cuda", cuda_variant, None))
    rec["cuda"] = result
    if result is None:
        run.gates.append(Gate(model, f"(a) {label} parity", "–", f"≤ {PARITY_MAX:.0e}", "NOT RUN", "time budget"))
    elif not result["ok"]:
        run.gates.append(Gate(model, f"(a) {label} parity", f"{result['error_type']}", f"≤ {PARITY_MAX:.0e}",
                              "FAIL", f"{result['error']} (logs/{name}.log)"))
        run.log(f"[{model}] {label} FAILED: {result['error_type']}: {result['error']}")
    else:
        parity(name, result, label)

    trt_label = "TensorRT stand-in: CPU fp32 (DRY RUN)" if run.dry else "TensorRT fp16 (engine from the fp32 graph)"
    if trt_skip:
        run.gates.append(Gate(model, f"(a)+(b) {trt_label}", "–", "–",
                              "FAIL" if args.require_tensorrt else "SKIPPED", trt_skip))
        return
    cache = run.scratch / "trt" / model
    cache.mkdir(parents=True)
    device = "cpu" if run.dry else "tensorrt"
    first = run_worker(run, f"{model}-trt-first", spec(f"{model}-trt-first", device, "fp32", cache))
    rec["trt_first"] = first
    if first is None:
        run.gates.append(Gate(model, f"(a)+(b) {trt_label}", "–", "–", "NOT RUN", "time budget"))
        return
    if not first["ok"]:
        unavailable = first["error_type"] == "ProviderUnavailableError"
        result_s = "SKIPPED" if unavailable and not args.require_tensorrt else "FAIL"
        run.gates.append(Gate(model, f"(a)+(b) {trt_label}", first["error_type"], "–", result_s,
                              f"{first['error']} (logs/{model}-trt-first.log: TensorRT libraries missing?)"))
        run.log(f"[{model}] TensorRT {result_s}: {first['error_type']}: {first['error']}")
        return
    parity(f"{model}-trt-first", first, trt_label)
    na = "N/A (DRY RUN)" if run.dry else None
    buckets = len(default_buckets(_max_seq(artifact)))
    built = engines(first["listings"]["end"])
    run.gates.append(Gate(model, "(b) engine files built by the first process", f"{len(built)} ({buckets} buckets)",
                          f"1 … {buckets}", na or ("PASS" if 1 <= len(built) <= buckets else "FAIL"),
                          ", ".join(built)))
    rebuilt = engines(first["listings"]["all_buckets"]) != engines(first["listings"]["first_encode"])
    run.gates.append(Gate(model, "(b) no engine built or rewritten while going through every bucket",
                          "engines changed" if rebuilt else "unchanged", "unchanged",
                          na or ("FAIL" if rebuilt else "PASS")))

    second = run_worker(run, f"{model}-trt-second", spec(f"{model}-trt-second", device, "fp32", cache))
    rec["trt_second"] = second
    if second is None or not second["ok"]:
        why = "time budget" if second is None else f"{second['error_type']}: {second['error']}"
        run.gates.append(Gate(model, "(b) second process on the warm cache", "–", "–",
                              "NOT RUN" if second is None else "FAIL", why))
        return
    parity(f"{model}-trt-second", second, f"{trt_label}, second process" + ("" if run.dry else " (cached engine)"))
    before, after = second["listings"]["start"], second["listings"]["end"]
    new = sorted(set(after) - set(before))
    changed = sorted(k for k in engines(before) if after.get(k) != before[k])
    other = sorted(k for k in before if k in after and after[k] != before[k] and k not in changed)
    run.gates.append(Gate(model, "(b) files created / engines modified by the second process",
                          f"{len(new)} / {len(changed)}", "0 / 0",
                          na or ("PASS" if not new and not changed else "FAIL"),
                          "; ".join(filter(None, [f"new: {', '.join(new)}" if new else "",
                                                  f"modified: {', '.join(changed)}" if changed else "",
                                                  f"other files rewritten: {', '.join(other)}" if other else ""]))))
    ratio = second["first_call_s"] / first["first_call_s"]
    run.gates.append(Gate(model, "(b) second process: time to first embedding",
                          f"{second['first_call_s']:.1f}s vs {first['first_call_s']:.1f}s ({ratio:.2f}×)",
                          f"≤ {SECOND_START_MAX_RATIO}×",
                          na or ("PASS" if ratio <= SECOND_START_MAX_RATIO else "FAIL")))
    run.log(f"[{model}] TensorRT first call {first['first_call_s']:.1f}s (engines: {len(built)}), second process "
            f"{second['first_call_s']:.1f}s")


def _variants(artifact: Path) -> list[str]:
    from embedrt.artifact import Artifact

    return sorted(Artifact(artifact).manifest.towers["text"].variants)


def _max_seq(artifact: Path) -> int:
    from embedrt.artifact import Artifact

    return Artifact(artifact).manifest.tokenizer.max_seq_length
