"""The state a GPU check run carries (options, log, deadline, gates, record) and how it runs its children
within the budget."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
GPU_SIZES = {"texts": 128, "batch_sizes": (1, 8, 32, 128), "repeats": 3}
DRY_SIZES = {"texts": 4, "batch_sizes": (1, 4), "repeats": 1}
DRY = "DRY RUN: CPU provider standing in for CUDA and TensorRT; these are not GPU numbers"


class BudgetExceeded(Exception):
    """The hard time bound (``--budget-s``) was reached."""


@dataclass
class Gate:
    """One pass/fail check of the run."""

    model: str
    check: str
    value: str
    threshold: str
    result: str  # PASS, FAIL, SKIPPED, N/A (DRY RUN), NOT RUN
    detail: str = ""


@dataclass
class Run:
    """State shared by the steps: options, log, deadline and everything recorded."""

    args: argparse.Namespace
    out: Path
    deadline: float
    log_file: Any
    gates: list[Gate] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    # TensorRT engines and exported graphs are hundreds of MB: they live here, out of RESULTS_DIR (which
    # travels back), fresh each run so the first process really builds, and are removed at the end.
    scratch: Path = Path()

    def log(self, message: str) -> None:
        """Print and append to ``gpu_check.log``."""
        print(message, flush=True)
        self.log_file.write(message + "\n")
        self.log_file.flush()

    def remaining(self) -> float:
        """Seconds left of the budget, keeping a few to write the reports."""
        return self.deadline - time.monotonic() - 5.0

    @property
    def dry(self) -> bool:
        """Whether this is the CPU dry run."""
        return self.args.allow_cpu_dry_run


def _text(output: str | bytes | None) -> str:
    # TimeoutExpired carries bytes even when the process was started with text=True
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def spawn(run: Run, name: str, command: list[str], limit: float | None = None) -> tuple[int | None, str]:
    """Run a subprocess within the budget (and ``limit`` seconds), its output saved under ``logs/``:
    (exit status, or None when it was stopped for time; stdout)."""
    timeout = min(run.remaining(), limit or float("inf"))
    if timeout <= 1:
        raise BudgetExceeded(f"no time left for {name}")
    log_path = run.out / "logs" / f"{name}.log"
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=run.env, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        log_path.write_text(f"$ {' '.join(command)}\nTIMED OUT after {timeout:.0f}s\n--- stdout\n{_text(exc.stdout)}\n"
                            f"--- stderr\n{_text(exc.stderr)}", encoding="utf-8")
        run.log(f"  {name}: timed out after {timeout:.0f}s (budget), log {log_path}")
        return None, ""
    log_path.write_text(f"$ {' '.join(command)}\nexit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n"
                        f"{proc.stderr}", encoding="utf-8")
    return proc.returncode, proc.stdout


def run_worker(run: Run, name: str, spec: dict[str, Any], module: str = "worker",
               limit: float | None = None) -> dict[str, Any] | None:
    """Run ``benchmarks.gpu_check.<module>`` (default :mod:`.worker`) in a fresh process on ``spec``; its
    result, or None when it ran out of time."""
    spec_path = run.out / "work" / f"{name}.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    started = time.perf_counter()
    code, stdout = spawn(run, name, [sys.executable, "-m", f"benchmarks.gpu_check.{module}", str(spec_path)], limit)
    if code is None:
        return None
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    result = json.loads(lines[-1][len("RESULT "):]) if lines else {
        "ok": False, "error_type": "crash", "error": f"exit {code} without a result; see logs/{name}.log"}
    result["process_s"] = time.perf_counter() - started
    return result


