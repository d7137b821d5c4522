"""(e) embedrt fp16 against sentence-transformers with torch fp16 on the same GPU, same texts, batch 128.

    python -m benchmarks.gpu_check.st_anchor SPEC.json     # the child process; prints one ``RESULT {json}`` line

Both at ``max_seq_length`` 128 on texts long enough to fill it: end to end (``encode``: tokenization, copies,
pooling) and without tokenization (embedrt's engine on token ids already made; sentence-transformers'
``forward`` on features already on the device, synchronized). The targets (the GPU issue's): end to end at
least 85% of the rate without tokenization; the anchor model (mpnet-base) at 2M tokens/s without
tokenization; end to end at least 1.5x sentence-transformers'. A dry run (no GPU) runs both on the CPU in
fp32 with tiny sizes, to exercise the code.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from .run import Gate, Run, run_worker

SEQ, BATCH = 128, 128
TARGETS = {"end_to_end_share": 0.85, "anchor_tokens_per_s": 2.0e6, "vs_st": 1.5}


def _rate(fn: Any, tokens: int, repeats: int, sync: Any = None) -> float:
    fn()  # warm
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        best = min(best, time.perf_counter() - began)
    return tokens / best


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Both libraries' rates on ``spec``'s texts (see the module docstring)."""
    import embedrt
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    texts = json.loads(Path(spec["texts"]).read_text(encoding="utf-8"))
    device, dry = spec["device"], spec["dry"]
    ours = embedrt.SentenceTransformer(spec["artifact"], device=device, variant=spec["variant"], strict=not dry)
    ours.max_seq_length = SEQ
    encoded = ours.tokenizer.encode(texts)
    tokens = int(encoded.lengths().sum())
    result: dict[str, Any] = {"texts": len(texts), "tokens": tokens, "variant": ours.variant}
    result["embedrt_end_to_end"] = _rate(lambda: ours.encode(texts, batch_size=BATCH), tokens, spec["repeats"])
    result["embedrt_engine"] = _rate(lambda: ours.engine.run(encoded, batch_size=BATCH), tokens, spec["repeats"])
    reference = SentenceTransformer(spec["st_folder"], device=device)
    if not dry:
        reference.half()
    reference.max_seq_length = SEQ
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    result["st_end_to_end"] = _rate(lambda: reference.encode(texts, batch_size=BATCH), tokens, spec["repeats"], sync)
    batches = [reference.tokenize(texts[i:i + BATCH]) for i in range(0, len(texts), BATCH)]
    batches = [{k: v.to(reference.device) if hasattr(v, "to") else v for k, v in b.items()} for b in batches]

    def forward() -> None:
        with torch.inference_mode():
            for features in batches:
                reference.forward(dict(features))

    result["st_forward"] = _rate(forward, tokens, spec["repeats"], sync)
    a = ours.encode(texts[:64])
    b = reference.encode(texts[:64], convert_to_numpy=True).astype(np.float32)
    result["max_one_minus_cos_vs_st"] = float(1 - ((a * b).sum(1) / np.linalg.norm(a, axis=1) /
                                                  np.linalg.norm(b, axis=1)).min())
    return result


def st_anchor(run: Run, model: str, artifact: Path, texts_file: Path) -> None:
    """Run :func:`measure` in a child and turn it into the report's rows and the targets' gates."""
    folder = Path(run.args.st_folders or "") / model
    if not (folder / "modules.json").is_file():
        run.gates.append(Gate(model, "(e) vs sentence-transformers torch fp16", "–", "–", "SKIPPED",
                              f"no sentence-transformers folder at {folder} (--st-folders DIR)"))
        return
    spec = {"artifact": str(artifact), "st_folder": str(folder), "texts": str(texts_file), "repeats": 2 if run.dry
            else 5, "device": "cpu" if run.dry else "cuda", "variant": "fp32" if run.dry else "fp16", "dry": run.dry}
    result = run_worker(run, f"st-anchor-{model}", spec, module="st_anchor", limit=120 if not run.dry else 300)
    if result is None or not result.get("ok"):
        detail = "time budget" if result is None else f"{result.get('error_type')}: {result.get('error')}"
        run.gates.append(Gate(model, "(e) vs sentence-transformers torch fp16", "–", "–", "NOT RUN", detail))
        return
    run.record.setdefault("st_anchor", {})[model] = result
    share = result["embedrt_end_to_end"] / result["embedrt_engine"]
    versus = result["embedrt_end_to_end"] / result["st_end_to_end"]

    def verdict(ok: bool) -> str:
        return "N/A (DRY RUN)" if run.dry else "PASS" if ok else "FAIL"

    run.gates.append(Gate(model, "(e) end to end / without tokenization, batch 128", f"{share:.2f}",
                          f"≥ {TARGETS['end_to_end_share']}", verdict(share >= TARGETS["end_to_end_share"]), ""))
    run.gates.append(Gate(model, "(e) end to end vs sentence-transformers torch fp16", f"{versus:.2f}×",
                          f"≥ {TARGETS['vs_st']}×", verdict(versus >= TARGETS["vs_st"]),
                          f"max 1−cos vs ST {result['max_one_minus_cos_vs_st']:.1e}"))
    if model == run.args.anchor_model:
        rate = result["embedrt_engine"]
        run.gates.append(Gate(model, "(e) tokens/s without tokenization, seq 128", f"{rate:,.0f}",
                              f"≥ {TARGETS['anchor_tokens_per_s']:,.0f}",
                              verdict(rate >= TARGETS["anchor_tokens_per_s"]), ""))


if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    try:
        out = {"ok": True, **measure(spec)}
    except Exception as exc:  # reported to the parent
        out = {"ok": False, "error_type": type(exc).__name__, "error": str(exc)}
    print("RESULT " + json.dumps(out), flush=True)
    sys.exit(0 if out["ok"] else 1)
