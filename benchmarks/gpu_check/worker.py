"""The GPU check's child process: load a model, time its first embedding, go through every bucket, embed
the parity texts, and record the TensorRT cache directory after each stage.

    python -m benchmarks.gpu_check.worker SPEC.json     # prints one ``RESULT {json}`` line
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from ..providers_measure import file_listing


def worker(spec_path: str) -> int:
    """Run the spec at ``spec_path`` (see the module docstring); prints one ``RESULT {json}`` line."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    import embedrt
    import numpy as np

    cache = spec["trt_cache_dir"]
    texts = json.loads(Path(spec["texts"]).read_text(encoding="utf-8"))
    result: dict[str, Any] = {"ok": False, "listings": {"start": file_listing(cache)}}
    try:
        start = time.perf_counter()
        model = embedrt.SentenceTransformer(spec["artifact"], device=spec["device"], variant=spec["variant"],
                                            strict=True, max_batch_size=spec["max_batch_size"], trt_cache_dir=cache)
        result["construct_s"] = time.perf_counter() - start
        result["active_providers"] = model.providers["active"]
        model.encode(texts[:1], batch_size=1)
        result["first_call_s"] = time.perf_counter() - start
        result["listings"]["first_encode"] = file_listing(cache)
        step = time.perf_counter()
        model.warmup(spec["max_batch_size"])
        result["all_buckets_s"] = time.perf_counter() - step
        result["listings"]["all_buckets"] = file_listing(cache)
        step = time.perf_counter()
        embeddings = model.encode(texts, batch_size=spec["max_batch_size"])
        result["encode_s"] = time.perf_counter() - step
        result["listings"]["end"] = file_listing(cache)
        np.save(spec["embeddings"], embeddings)
        result["ok"] = True
    except Exception as exc:  # reported to the parent, which decides whether it is a failure or a skip
        result.update(error_type=type(exc).__name__, error=str(exc))
    print("RESULT " + json.dumps(result), flush=True)
    return 0 if result["ok"] else 1



if __name__ == "__main__":
    sys.exit(worker(sys.argv[1]))
