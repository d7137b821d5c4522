"""What the provider benchmark measures: texts grouped by sequence length, and the provider × variant rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from embedrt.engine import default_buckets

from .machine import cpu_flags, isa_note

EXACT_SEQ = 128
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
DISPLAY = {"cpu": "CPU", "cuda": "CUDA", "tensorrt": "TensorRT"}


@dataclass
class Group:
    """Texts whose token count lies in ``(lo, hi]``, measured with truncation at ``max_seq_length``."""

    name: str
    lo: int
    hi: int
    max_seq_length: int
    texts: list[str] = field(default_factory=list)
    tokens: int = 0
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        """Summary without the texts themselves."""
        return {"name": self.name, "lo": self.lo, "hi": self.hi, "max_seq_length": self.max_seq_length,
                "texts": len(self.texts), "tokens": self.tokens,
                "mean_tokens": self.tokens / len(self.texts) if self.texts else 0.0, "note": self.note}


def build_groups(texts: list[str], tokenizer: Any, n: int, seed: int = 0, chunk: int = 2048) -> list[Group]:
    """Fill each sequence-length group with ``n`` real texts, taken in a seeded random order.

    Only as much of the corpus is tokenized as the rarest group needs (tokenizing all of fortunes
    takes seconds on a small machine). A group the corpus cannot fill keeps what it found and says so.
    """
    max_seq = tokenizer.max_seq_length
    bounds = default_buckets(max_seq)
    groups = [Group(f"≤{hi}", lo, hi, max_seq) for lo, hi in zip((0, *bounds[:-1]), bounds)]
    groups[-1].note = f"texts over {groups[-1].lo} tokens, longer ones truncated to {max_seq}"
    exact = None
    if max_seq >= EXACT_SEQ:
        exact = Group(f"={EXACT_SEQ}", EXACT_SEQ - 1, max_seq, EXACT_SEQ,
                      note=f"texts of ≥{EXACT_SEQ} tokens truncated to exactly {EXACT_SEQ}")
    wanted = groups + ([exact] if exact else [])
    order = np.random.default_rng(seed).permutation(len(texts))
    for start in range(0, len(order), chunk):
        if all(len(g.texts) >= n for g in wanted):
            break
        batch = [texts[i] for i in order[start:start + chunk]]
        for text, length in zip(batch, tokenizer.encode(batch).lengths()):
            length = int(length)
            for g in wanted:
                if g.lo < length <= g.hi and len(g.texts) < n:
                    g.texts.append(text)
                    g.tokens += min(length, g.max_seq_length)
    for g in wanted:
        if len(g.texts) < n:
            g.note = (g.note + "; " if g.note else "") + f"corpus has only {len(g.texts)} such texts"
    return [g for g in wanted if g.texts]


# -- configurations -------------------------------------------------------------------------------

@dataclass
class Config:
    """One provider × variant row: what will run, or why it will not."""

    device: str
    variant: str
    label: str
    status: str = "pending"
    reason: str = ""
    notes: list[str] = field(default_factory=list)

def plan_configs(variants: Sequence[str], available: Sequence[str], devices: Sequence[str]) -> list[Config]:
    """Every provider × variant row, each either runnable (``pending``) or with its reason not to run."""
    flags = cpu_flags()
    present = set(variants)
    int8 = sorted(v for v in variants if v.startswith("int8"))
    optimized = sorted(v for v in variants if v.startswith("optimized"))
    fp16 = sorted(v for v in variants if v.startswith("fp16"))
    wanted: list[tuple[str, str, str]] = [("cpu", "fp32", "fp32")]
    wanted += [("cpu", v, v) for v in optimized] or [("cpu", "optimized", "optimized")]
    wanted += [("cpu", v, v) for v in int8] or [("cpu", "int8*", "int8*")]
    wanted += [("cuda", "fp32", "fp32")]
    wanted += [("cuda", v, v) for v in fp16] or [("cuda", "fp16", "fp16")]
    # TensorRT makes its own fp16 engine from the fp32 graph (trt_fp16_enable), see providers.tensorrt_options.
    wanted += [("tensorrt", "fp32", "fp16 engine from fp32")]

    configs = []
    for device, variant, label in wanted:
        cfg = Config(device, variant, label)
        reasons = []
        if PROVIDERS[device] not in available:
            reasons.append(f"{PROVIDERS[device]} not in this onnxruntime build (available: {', '.join(available)})")
        if variant not in present:
            reasons.append(f"artifact has no {variant} variant (variants: {', '.join(sorted(present))})")
        if reasons:
            cfg.status, cfg.reason = "absent", "; ".join(reasons)
        elif device not in devices:
            cfg.status, cfg.reason = "not selected", f"--devices {','.join(devices)}"
        if device == "cpu" and variant in present and variant.startswith("int8") and (note := isa_note(variant, flags)):
            cfg.notes.append(note)
        configs.append(cfg)
    claimed = {c.variant for c in configs}
    for variant in sorted(present - claimed):
        configs.append(Config("-", variant, variant, "not benchmarked",
                              "no provider in this benchmark's matrix runs this kind of variant"))
    return configs


