"""``embedrt embed-corpus``: a corpus on any filesystem pyarrow reads → Parquet parts of embeddings, on Ray.

The corpus is cut into parts of ``rows_per_part`` rows (a Parquet file's row range, or a line range of
a text or JSON-lines file, found by one scan of its newlines). Each part is one task on an actor pool:
the actor reads its rows, embeds them (:class:`~embedrt.ray.embedder.Embedder`) and writes
``part-<hash of file and rows>.parquet`` under a temporary name, then moves it into place. So:

* every row has a stable id: the id column, or ``<file relative to the input>:<row>``;
* a part is in the output whole or not at all; an actor killed mid-part is restarted by Ray and the
  part redone; a job started again with the same arguments skips the parts already written (an
  anti-join on part names: Ray Data's own checkpointing is beta, must start at a Read, and deadlocks
  on a 2-CPU node while its filter actors wait for CPUs), so every id is written exactly once;
* the job's arguments are kept in ``_embedrt_job.json`` beside the parts: resuming with others is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from ..artifact import Artifact
from .embedder import Embedder

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
           ".txt": "text", ".text": "text"}
JOB_FILE = "_embedrt_job.json"
UNFINISHED = ".tmp-"  # in the name of a part's file while it is written


@dataclasses.dataclass(frozen=True)
class Part:
    """Rows ``[start, stop)`` of one input file (bytes ``[offset, end)`` for text and JSON lines)."""

    path: str
    rel: str
    format: str
    start: int
    stop: int
    offset: int = 0
    end: int = -1

    @property
    def name(self) -> str:
        """The output file's name: the same for the same file and rows, whatever the run."""
        digest = hashlib.sha256(f"{self.rel}\0{self.start}\0{self.stop}".encode()).hexdigest()[:24]
        return f"part-{digest}.parquet"


def _filesystem(uri: str) -> tuple[Any, str]:
    from pyarrow import fs

    if "://" not in uri:
        return fs.LocalFileSystem(), os.path.abspath(uri)
    return fs.FileSystem.from_uri(uri)


def list_inputs(uri: str) -> tuple[Any, list[tuple[str, str]]]:
    """The filesystem and ``(path, path relative to the input)`` of every file under ``uri``, sorted."""
    from pyarrow import fs

    filesystem, root = _filesystem(uri)
    info = filesystem.get_file_info(root)
    if info.type == fs.FileType.NotFound:
        raise FileNotFoundError(f"{uri}: no such file or folder")
    if info.type == fs.FileType.File:
        return filesystem, [(root, os.path.basename(root))]
    found = filesystem.get_file_info(fs.FileSelector(root, recursive=True))
    files = sorted(f.path for f in found if f.type == fs.FileType.File and not os.path.basename(f.path).startswith(
        ("_", ".")))
    if not files:
        raise FileNotFoundError(f"{uri}: the folder holds no input files")
    return filesystem, [(f, os.path.relpath(f, root)) for f in files]


def _format(path: str, forced: str | None) -> str:
    if forced:
        return forced
    kind = FORMATS.get(os.path.splitext(path)[1].lower())
    if kind is None:
        raise ValueError(f"{path}: cannot tell its format from its name; pass --format parquet, jsonl or text")
    return kind


def _line_parts(filesystem: Any, path: str, rel: str, kind: str, rows_per_part: int) -> list[Part]:
    parts, row, start_row, start_byte, position, last = [], 0, 0, 0, 0, b"\n"
    with filesystem.open_input_stream(path) as stream:
        while chunk := stream.read(8 << 20):
            cut = chunk.find(b"\n")
            while cut != -1:
                row += 1
                if row - start_row == rows_per_part:
                    parts.append(Part(path, rel, kind, start_row, row, start_byte, position + cut + 1))
                    start_row, start_byte = row, position + cut + 1
                cut = chunk.find(b"\n", cut + 1)
            position, last = position + len(chunk), chunk[-1:]
    if last != b"\n":
        row += 1  # a last line without a newline
    if row > start_row:
        parts.append(Part(path, rel, kind, start_row, row, start_byte, position))
    return parts


def plan_parts(filesystem: Any, files: Sequence[tuple[str, str]], rows_per_part: int,
               forced_format: str | None = None) -> list[Part]:
    """Every file cut into parts of at most ``rows_per_part`` rows."""
    import pyarrow.parquet as pq

    parts: list[Part] = []
    for path, rel in files:
        kind = _format(path, forced_format)
        if kind == "parquet":
            with filesystem.open_input_file(path) as handle:
                rows = pq.ParquetFile(handle).metadata.num_rows
            parts += [Part(path, rel, kind, s, min(s + rows_per_part, rows)) for s in range(0, rows, rows_per_part)]
        else:
            parts += _line_parts(filesystem, path, rel, kind, rows_per_part)
    return parts


def read_part(filesystem: Any, part: Part, texts: Sequence[str], id_column: str | None) -> tuple[Any, Any, list[Any]]:
    """``(table of the text columns, ids, error per row)`` of the part's rows. Ids are the id column's
    values, else ``<file>:<row>``; a row the file cannot give (bad JSON, a text that is not a string) has
    its reason as error and nulls."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = part.stop - part.start
    derived = pa.array([f"{part.rel}:{row}" for row in range(part.start, part.stop)], type=pa.string())
    if part.format == "parquet":
        columns = [*texts, *([id_column] if id_column else [])]
        with filesystem.open_input_file(part.path) as handle:
            reader = pq.ParquetFile(handle)
            meta, first, groups = reader.metadata, 0, []
            for g in range(meta.num_row_groups):
                rows = meta.row_group(g).num_rows
                if first < part.stop and first + rows > part.start:
                    groups.append((g, first))
                first += rows
            table = reader.read_row_groups([g for g, _ in groups], columns=columns).slice(part.start - groups[0][1], n)
        ids = _fill(table.column(id_column).combine_chunks(), derived) if id_column else derived
        return table.select(list(texts)), ids, [None] * n
    with filesystem.open_input_file(part.path) as handle:
        handle.seek(part.offset)
        lines = handle.read(part.end - part.offset).decode("utf-8", errors="replace").splitlines()[:n]
    if part.format == "text":
        return pa.table({texts[0]: pa.array(lines, type=pa.string())}), derived, [None] * n
    values: dict[str, list[Any]] = {c: [] for c in texts}
    ids: list[Any] = []
    errors: list[str | None] = []
    for number, line in enumerate(lines, start=part.start + 1):
        error = None
        try:
            record = json.loads(line)
        except ValueError as exc:
            record, error = {}, f"line {number}: not JSON ({exc})"[:200]
        if not isinstance(record, dict):
            record, error = {}, error or f"line {number}: a JSON {type(record).__name__}, not an object"
        for c in texts:
            value = record.get(c)
            if value is not None and not isinstance(value, str):
                error, value = error or f"{c!r} is not a string: {json.dumps(value)[:60]}", None
            values[c].append(value)
        ids.append(record.get(id_column) if id_column else None)
        errors.append(error)
    return (pa.table({c: pa.array(v, type=pa.string()) for c, v in values.items()}),
            _fill(_ids(ids), derived) if id_column else derived, errors)


def _ids(values: list[Any]) -> Any:
    """Id values as one Arrow column: their own type where they share one, else their JSON text."""
    import pyarrow as pa

    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([v if v is None or isinstance(v, str) else json.dumps(v) for v in values], type=pa.string())


def _fill(ids: Any, derived: Any) -> Any:
    """``ids`` where a row has none (a line that is not JSON, a null) taking its derived ``<file>:<row>``:
    every row keeps an id. Mixed with those, ids become strings."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not ids.null_count:
        return ids
    if not pa.types.is_string(ids.type):
        ids = pc.cast(ids, pa.string())
    return pc.if_else(pc.is_null(ids), derived, ids)


class PartWriter(Embedder):
    """The actor of ``embed-corpus``: a part's rows in, its Parquet file written whole, a summary row out."""

    def __init__(self, model: str, *, output: str, text_column: str | Sequence[str], id_column: str | None,
                 variant: str | None, expected_digest: str | None, normalize: bool, input_uri: str) -> None:
        super().__init__(model, text_column=text_column, id_column=None, variant=variant,
                         expected_digest=expected_digest, normalize=normalize)
        self.out_fs, self.out_dir = _filesystem(output)
        self.in_fs, _ = _filesystem(input_uri)
        self.ids = id_column

    def write(self, part: Part) -> dict[str, Any]:
        """Embed ``part`` and move its file into place; the summary says what happened, where and how."""
        import pyarrow.parquet as pq

        began_at = time.time()
        texts, ids, errors = read_part(self.in_fs, part, self.text_columns, self.ids)
        table = self.table(texts, ids=ids, errors=errors)
        final = f"{self.out_dir}/{part.name}"
        # a leading dot hides an unfinished file from dataset readers (pyarrow, Spark) should its writer be killed
        temporary = f"{self.out_dir}/.{part.name}{UNFINISHED}{uuid.uuid4().hex}"
        with self.out_fs.open_output_stream(temporary) as stream:
            pq.write_table(table, stream)
        self.out_fs.move(temporary, final)  # whole or not at all: readers never see a half-written part
        return {"part": part.name, "rows": table.num_rows, "errors": table.num_rows - table.column("error").null_count,
                "began_at": began_at, "ended_at": time.time(),
                "pid": self.pid, "threads": self.intra_op_threads,
                "variant": self.engine.info.variant}

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        rows = [self.write(Part(**row)) for row in batch.to_pylist()]
        return pa.Table.from_pylist(rows)


def _job(args: dict[str, Any], out_fs: Any, out_dir: str) -> None:
    """Write the job's arguments beside its parts, or refuse to resume a job started with others."""
    from pyarrow import fs

    path = f"{out_dir}/{JOB_FILE}"
    if out_fs.get_file_info(path).type == fs.FileType.File:
        with out_fs.open_input_stream(path) as stream:
            before = json.loads(stream.read())
        changed = sorted(k for k in args if before.get(k) != args[k])
        if changed:
            raise ValueError(f"{path}: this output holds parts of a job run with other arguments ({', '.join(changed)}"
                             f"); write to another folder, or run it again with the same arguments")
        return
    with out_fs.open_output_stream(path) as stream:
        stream.write(json.dumps(args, indent=1, sort_keys=True).encode())


def _remove_unfinished(out_fs: Any, out_dir: str) -> list[Any]:
    """Delete the files of writers killed mid-write; returns what is left in ``out_dir``."""
    from pyarrow import fs

    present = out_fs.get_file_info(fs.FileSelector(out_dir))
    for leftover in (f for f in present if UNFINISHED in f.base_name):
        out_fs.delete_file(leftover.path)
    return [f for f in present if UNFINISHED not in f.base_name]


def embed_corpus(input_uri: str, output_uri: str, model: str, *, address: str | None = None,
                 text_column: str | Sequence[str] = "text", id_column: str | None = None,
                 input_format: str | None = None, rows_per_part: int = 8192, actors: int | None = None,
                 cpus_per_actor: float = 1, variant: str | None = None, normalize: bool = False,
                 progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Embed every row of ``input_uri`` into Parquet parts under ``output_uri`` (see the module docstring);
    returns what was skipped, computed and how fast."""
    import ray

    from . import actor_pool, connect

    if rows_per_part < 1:
        raise ValueError(f"rows_per_part must be a positive int, got {rows_per_part!r}")
    in_fs, files = list_inputs(input_uri)
    parts = plan_parts(in_fs, files, rows_per_part, input_format)
    out_fs, out_dir = _filesystem(output_uri)
    out_fs.create_dir(out_dir, recursive=True)
    local = os.path.isdir(model)
    digest = Artifact(model).digest if local else None
    texts = [text_column] if isinstance(text_column, str) else list(text_column)
    _job({"input": input_uri, "model": digest or model, "text_column": texts, "id_column": id_column,
          "rows_per_part": rows_per_part, "variant": variant, "normalize": normalize}, out_fs, out_dir)
    written = {f.base_name for f in _remove_unfinished(out_fs, out_dir)}
    todo = [p for p in parts if p.name not in written]
    total = sum(p.stop - p.start for p in parts)
    pending = sum(p.stop - p.start for p in todo)
    summary: dict[str, Any] = {"parts": len(parts), "parts_skipped": len(parts) - len(todo), "rows": total,
                               "rows_skipped": total - pending, "rows_computed": 0, "errors": 0, "seconds": 0.0}
    log(f"{len(parts)} parts of {total} rows; {summary['parts_skipped']} parts ({summary['rows_skipped']} rows) "
        f"already written; computing {len(todo)} ({pending} rows)")
    if not todo:
        return summary
    began = time.perf_counter()
    with connect(address):
        kwargs = {"output": output_uri, "text_column": tuple(texts), "id_column": id_column,
                  "variant": variant, "expected_digest": digest, "normalize": normalize, "input_uri": input_uri}
        results = ray.data.from_items([dataclasses.asdict(p) for p in todo], override_num_blocks=len(todo))
        results = results.map_batches(PartWriter, fn_constructor_kwargs={"model": os.path.abspath(model) if local
                                                                          else model, **kwargs},
                                      batch_size=1, batch_format="pyarrow", num_cpus=cpus_per_actor,
                                      **actor_pool(actors, cpus_per_actor))
        bar = _progress(pending, progress)
        threads, pids, spans = set(), set(), []
        for row in results.iter_rows():
            spans.append((row["began_at"], row["ended_at"]))
            summary["rows_computed"] += row["rows"]
            summary["errors"] += row["errors"]
            threads.add(row["threads"])
            pids.add(row["pid"])
            if bar is not None:
                bar.update(row["rows"])
        if bar is not None:
            bar.close()
    _remove_unfinished(out_fs, out_dir)  # an actor killed mid-write left its file; Ray wrote the part again
    summary.update(seconds=time.perf_counter() - began, intra_op_threads=sorted(threads), actor_pids=sorted(pids))
    summary["rows_per_s"] = summary["rows_computed"] / summary["seconds"]
    # the same rows from the first part begun to the last written: warmed actors, as encode is timed warmed
    summary["parts_seconds"] = max(e for _, e in spans) - min(b for b, _ in spans)
    summary["parts_rows_per_s"] = summary["rows_computed"] / summary["parts_seconds"]
    log(f"computed {summary['rows_computed']} rows in {summary['seconds']:.1f} s ({summary['rows_per_s']:.0f} rows/s), "
        f"{summary['errors']} with errors; output: {output_uri}")
    return summary


def _progress(total: int, show: bool) -> Any:
    if not show:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="row", desc="embedding", smoothing=0.1)
