"""embedrt on Ray: ``embedrt embed-corpus`` and ``embedrt.ray.embed`` on a real local cluster, real MiniLM.

Every cluster here is started by the test (``embed-corpus`` without ``--address`` starts its own, in a
process group the test kills by its pid if anything is left), and bounded to this machine's two cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import embedrt
import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("ray")

ROWS = 2000  # fortunes in the corpus; 4 more lines follow them (two bad rows, a megabyte, a line not JSON)


@pytest.fixture(scope="module")
def corpus(fortunes, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """2,000 English fortunes as JSON lines with ids, plus rows that cannot be embedded and a 1 MB text."""
    texts = [r["text"] for r in fortunes if r["lang"] == "en"][:ROWS]
    rows = {f"f{i}": t for i, t in enumerate(texts)}
    path = tmp_path_factory.mktemp("corpus") / "fortunes.jsonl"
    with open(path, "w", encoding="utf-8") as out:
        for key, text in rows.items():
            out.write(json.dumps({"id": key, "text": text}) + "\n")
        out.write(json.dumps({"id": "null", "text": None}) + "\n")
        out.write(json.dumps({"id": "number", "text": 42}) + "\n")
        out.write(json.dumps({"id": "megabyte", "text": "word " * 200_000}) + "\n")
        out.write("this line is not JSON\n")
    rows["megabyte"] = "word " * 200_000
    return path, rows


def _run(args: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "embedrt.cli", "embed-corpus", *args, "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            **kwargs)


def _stop(process: subprocess.Popen) -> None:
    """The command and the local Ray cluster it started, by the command's pid: its whole session, since the
    raylet puts each worker in a process group of its own (a worker left alive writes parts after the kill)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(60)  # reaped first: pkill counts a zombie driver as alive
    deadline = time.monotonic() + 30
    while subprocess.run(["pkill", "-9", "-s", str(process.pid)], check=False).returncode == 0:
        assert time.monotonic() < deadline, f"processes of session {process.pid} outlived SIGKILL"
        time.sleep(0.1)


def _wait_for_parts(out: Path, count: int, process: subprocess.Popen) -> None:
    """Until ``count`` parts are written; fails with the command's output if it ends or Ray starts too slowly."""
    deadline = time.monotonic() + 300  # generous: a loaded CI machine starts Ray slowly
    while len(list(out.glob("part-*.parquet"))) < count:
        assert time.monotonic() < deadline and process.poll() is None, process.stdout.read()
        time.sleep(0.05)


def _finish(process: subprocess.Popen, timeout: float = 480) -> str:
    try:
        out, _ = process.communicate(timeout=timeout)
    finally:
        _stop(process)
    assert process.returncode == 0, out[-3000:]
    return out


def _output(folder: Path) -> dict[str, tuple[list[float] | None, str | None]]:
    table = pq.read_table(folder)
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids)), "an id was written twice"
    return dict(zip(ids, zip(table.column("embedding").to_pylist(), table.column("error").to_pylist())))


def _check_against_encode(output, rows, artifact, variant="fp32", sample=1000):
    model = embedrt.SentenceTransformer(artifact, variant=variant)
    keys = [k for k in rows if k.startswith("f")][:sample] + ["megabyte"]
    got = np.array([output[k][0] for k in keys], dtype=np.float32)
    assert np.array_equal(got, model.encode([rows[k] for k in keys]))


def test_corpus_on_two_one_cpu_actors_equals_encode_bit_for_bit(corpus, minilm_artifact, tmp_path):
    path, rows = corpus
    out = tmp_path / "out"
    log = _finish(_run([str(path), str(out), "--model", str(minilm_artifact), "--id-column", "id", "--variant",
                        "fp32", "--actors", "2", "--cpus-per-actor", "1", "--rows-per-part", "200"]))
    assert f"computing 11 ({ROWS + 4} rows)" in log
    output = _output(out)
    assert len(output) == ROWS + 4 and set(rows) <= set(output)
    errors = {k: e for k, (_, e) in output.items() if e}
    assert set(errors) == {"null", "number", f"fortunes.jsonl:{ROWS + 3}"}, errors
    assert errors["number"] == "'text' is not a string: 42" and errors["null"] == "null text"
    assert all(output[k][0] is None for k in errors)
    _check_against_encode(output, rows, minilm_artifact)
    schema = pq.read_schema(next(out.glob("part-*.parquet")))
    assert schema.field("embedding").type == pa.list_(pa.float32(), 384)
    meta = {k.decode(): v.decode() for k, v in schema.metadata.items()}
    assert meta["embedrt.model"] == "all-MiniLM-L6-v2" and meta["embedrt.variant"] == "fp32"
    assert meta["embedrt.dimension"] == "384" and meta["embedrt.similarity"] == "cosine"


def _actor_pids() -> list[int]:
    import psutil

    return [p.pid for p in psutil.process_iter(["cmdline"])
            if any("PartWriter" in part for part in (p.info["cmdline"] or []))]


def test_a_killed_actor_is_restarted_and_nothing_is_lost_or_doubled(corpus, minilm_artifact, tmp_path):
    path, rows = corpus
    out = tmp_path / "out"
    process = _run([str(path), str(out), "--model", str(minilm_artifact), "--id-column", "id", "--variant", "fp32",
                    "--actors", "2", "--rows-per-part", "100"])
    try:
        _wait_for_parts(out, 2, process)  # blocks are in flight
        victims = _actor_pids()
        assert victims
        os.kill(victims[0], signal.SIGKILL)
        # what a writer killed mid-write leaves, whether or not the kill above landed in one
        unfinished = out / f".{next(out.glob('part-*.parquet')).name}.tmp-0123456789abcdef"
        unfinished.write_bytes(b"PAR1 half a file")
    except BaseException:
        _stop(process)
        raise
    _finish(process)
    assert not unfinished.exists()
    output = _output(out)
    assert len(output) == ROWS + 4 and set(rows) <= set(output)
    _check_against_encode(output, rows, minilm_artifact, sample=300)


def test_a_killed_job_resumes_without_recomputing_what_it_wrote(corpus, minilm_artifact, tmp_path):
    path, rows = corpus
    out = tmp_path / "out"
    args = [str(path), str(out), "--model", str(minilm_artifact), "--id-column", "id", "--variant", "fp32",
            "--actors", "2", "--rows-per-part", "100"]
    first = _run(args)
    try:
        _wait_for_parts(out, 6, first)
    finally:
        _stop(first)  # the driver and its cluster, mid-job
    written = len(list(out.glob("part-*.parquet")))
    assert 6 <= written < 21
    log = _finish(_run(args))
    skipped = int(log.split("; ", 1)[1].split(" parts", 1)[0])
    assert skipped == written and f"computing {21 - written} (" in log  # only the rest was computed
    assert not list(out.glob("*.tmp-*")) and not list(out.glob(".*.tmp-*"))
    output = _output(out)
    assert len(output) == ROWS + 4 and set(rows) <= set(output)
    changed = [str(path), str(out), "--model", str(minilm_artifact), "--id-column", "id", "--variant", "fp32",
               "--rows-per-part", "40"]
    refused = subprocess.run([sys.executable, "-m", "embedrt.cli", "embed-corpus", *changed, "-q"],
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "other arguments (rows_per_part)" in refused.stderr


def test_embed_a_dataset_on_one_thread_per_one_cpu_actor(minilm_artifact, tmp_path):
    """embedrt.ray.embed on a Ray Dataset, in this process: ids kept, a bad row in `error`, and each actor
    given 1 CPU runs ONNX Runtime on 1 intra-op thread (read back from its session)."""
    import ray
    from embedrt.ray import connect, embed
    from embedrt.ray.corpus import embed_corpus

    texts = ["A man is eating food.", "Ein Mann isst.", None, "x" * 10_000, 7, "The cat sits."]
    with connect():
        table = pa.table({"id": list(range(len(texts))),
                          "text": pa.array([t if isinstance(t, str) else None for t in texts])})
        rows = embed(ray.data.from_arrow(table), str(minilm_artifact), actors=1, variant="fp32").take_all()
        got = {r["id"]: r for r in rows}
        model = embedrt.SentenceTransformer(minilm_artifact, variant="fp32")
        good = [0, 1, 3, 5]
        assert np.array_equal(np.array([got[i]["embedding"] for i in good], dtype=np.float32),
                              model.encode([texts[i] for i in good]))
        assert got[2]["error"] == "null text" and got[2]["embedding"] is None
        src = tmp_path / "in.txt"
        src.write_text("\n".join(["one", "two", "three"]) + "\n", encoding="utf-8")
        summary = embed_corpus(str(src), str(tmp_path / "out"), str(minilm_artifact), actors=1, progress=False,
                               log=lambda _: None)
    assert summary["intra_op_threads"] == [1] and summary["rows_computed"] == 3
    ids = pq.read_table(tmp_path / "out").column("id").to_pylist()
    assert sorted(ids) == ["in.txt:0", "in.txt:1", "in.txt:2"]
