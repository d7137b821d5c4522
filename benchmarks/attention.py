"""embedrt's ``ai.embedrt.Attention`` kernel against ONNX Runtime's own ops, op alone, by sequence length.

For each length L, a batch of ``min(32, 1024 // L)`` texts (the engine's CPU token budget) of
(L, heads × head_size) q, k and v rows with a padding mask (the last ``--pad`` keys of every text
masked) runs through one session per kernel library given (``--library``, repeatable: e.g. the
installed build and one compiled from an older commit) and through the traced attention as ONNX
Runtime runs it (Reshape/Transpose, MatMul, scale, mask Add, Softmax, MatMul, merge). Rounds are
interleaved; each cell is the median time, its GFLOP/s (4·B·H·L²·d) and the ratio to the first
column, and every output is checked against the ONNX Runtime ops. All sessions share one global
ONNX Runtime thread pool: with a pool per session, the idle sessions' spinning workers take the
cores from the one being timed (benchmarks/README.md, "Several sessions in one process on the same cores").

    python -m benchmarks.attention --lengths 12,20,33,48,128 --threads 2
    python -m benchmarks.attention --library old.so --library runtime/embedrt/_kernels*.so
    python -m benchmarks.attention --operands fp32,bf16 --lengths 64,128,256

``--operands``: the kernel's ``operands`` attribute, a column each; bf16 columns' outputs differ from the
ONNX Runtime ops by bf16 rounding and are reported apart from the fp32 columns'.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from embedrt import kernels
from onnx import TensorProto, helper, numpy_helper

TOKEN_BUDGET = 1024  # embedrt.model.CPU_MAX_BATCH_TOKENS


def graphs(heads: int, head_size: int, operands: str = "fp32") -> dict[str, bytes]:
    """The kernel's one-node graph (its ``operands`` attribute as given) and the traced attention, both on
    (batch, length, hidden) q, k, v."""
    hidden = heads * head_size
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("q", "k", "v", "mask")]
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    consts = [numpy_helper.from_array(np.array(1 / np.sqrt(head_size), np.float32), "scale"),
              numpy_helper.from_array(np.array(head_size, np.int64), "head_size"),
              numpy_helper.from_array(np.zeros(3 * hidden, np.float32), "qkv_bias"),
              numpy_helper.from_array(np.array([0, 0, heads, head_size], np.int64), "split"),
              numpy_helper.from_array(np.array([0, 0, hidden], np.int64), "merge")]
    make = helper.make_node
    fused = [make("Attention", ["q", "k", "v", "qkv_bias", "scale", "head_size", "mask"], ["y"],
                  domain=kernels.DOMAIN, operands=operands)]
    traced = [make("Reshape", ["q", "split"], ["q4"]), make("Transpose", ["q4"], ["qt"], perm=[0, 2, 1, 3]),
              make("Reshape", ["k", "split"], ["k4"]), make("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1]),
              make("Reshape", ["v", "split"], ["v4"]), make("Transpose", ["v4"], ["vt"], perm=[0, 2, 1, 3]),
              make("MatMul", ["qt", "kt"], ["s"]), make("Mul", ["s", "scale"], ["s1"]),
              make("Add", ["s1", "mask"], ["s2"]), make("Softmax", ["s2"], ["p"], axis=-1),
              make("MatMul", ["p", "vt"], ["c"]), make("Transpose", ["c"], ["ct"], perm=[0, 2, 1, 3]),
              make("Reshape", ["ct", "merge"], ["y"])]
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(kernels.DOMAIN, 1)]
    return {name: helper.make_model(helper.make_graph(nodes, name, io, out, consts), ir_version=9,
                                    opset_imports=opsets).SerializeToString()
            for name, nodes in (("kernel", fused), ("onnxruntime ops", traced))}


def session(model: bytes, library: Path | None) -> ort.InferenceSession:
    """A session on the process' global thread pool (see the module docstring)."""
    options = ort.SessionOptions()
    options.use_per_session_threads = False
    options.log_severity_level = 3
    if library is not None:
        options.register_custom_ops_library(str(library))
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", default="12,20,33,48,64,128,256")
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-size", type=int, default=32)
    parser.add_argument("--pad", type=int, default=3, help="masked keys at the end of every text")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-s", type=float, default=0.05, help="least time per timed sample")
    parser.add_argument("--library", type=Path, action="append",
                        help="a kernel library to time (default: this install's)")
    parser.add_argument("--operands", default="fp32",
                        help="the kernel's operand precisions to time: fp32, bf16 or both")
    args = parser.parse_args(argv)
    operands = args.operands.split(",")
    if not operands or set(operands) - {"fp32", "bf16"}:
        raise SystemExit(f"--operands {args.operands!r}: expected fp32, bf16 or fp32,bf16")
    libraries = args.library or [kernels.library_path()]
    if None in libraries:
        raise SystemExit("this embedrt install has no kernel library; pass --library PATH")
    models = {precision: graphs(args.heads, args.head_size, precision) for precision in operands}
    ort.set_global_thread_pool_sizes(args.threads, 1)  # before the sessions that use it
    names = [f"{lib.name} ({i})" for i, lib in enumerate(libraries)] if len(libraries) > 1 else ["embedrt kernel"]
    columns = {f"{name}{'' if precision == 'fp32' else ' ' + precision}": session(models[precision]["kernel"], lib)
               for name, lib in zip(names, libraries) for precision in operands}
    columns["onnxruntime ops"] = session(models[operands[0]]["onnxruntime ops"], None)
    bf16 = [name for name in columns if name.endswith(" bf16")]
    print(f"heads {args.heads}, head size {args.head_size}, {args.threads} threads, last {args.pad} keys masked; "
          f"median ms (GFLOP/s, × first column)\n")
    differences = ["bf16 max abs difference"] if bf16 else []
    print("| L | batch | " + " | ".join([*columns, *differences]) + " | max abs difference from onnxruntime ops |")
    print("|---|---|" + "---|" * (len(columns) + len(differences) + 1))
    rng = np.random.default_rng(0)
    for length in (int(x) for x in args.lengths.split(",")):
        batch = max(1, min(32, TOKEN_BUDGET // length))
        feed = {n: rng.standard_normal((batch, length, args.heads * args.head_size), dtype=np.float32) for n in "qkv"}
        mask = np.zeros((batch, 1, 1, length), np.float32)
        mask[..., max(1, length - args.pad):] = np.finfo(np.float32).min
        feed["mask"] = mask
        samples: dict[str, list[float]] = {name: [] for name in columns}
        for _ in range(args.rounds):
            for name, sess in columns.items():
                sess.run(None, feed)
                runs, start = 0, time.perf_counter()
                while (elapsed := time.perf_counter() - start) < args.min_s or runs < 3:
                    sess.run(None, feed)
                    runs += 1
                samples[name].append(elapsed / runs)
        flop = 4 * batch * args.heads * length * length * args.head_size
        first = statistics.median(next(iter(samples.values())))
        cells = [f"{1e3 * m:.3f} ({flop / m / 1e9:.0f}, {first / m:.2f}×)"
                 for m in (statistics.median(v) for v in samples.values())]
        reference = columns["onnxruntime ops"].run(None, feed)[0]
        diff = {name: float(np.abs(s.run(None, feed)[0] - reference).max()) for name, s in columns.items()}
        if bf16:
            cells.append(f"{max(diff[name] for name in bf16):.1e}")
        worst = max(v for n, v in diff.items() if n not in bf16)
        print(f"| {length} | {batch} | " + " | ".join(cells) + f" | {worst:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
