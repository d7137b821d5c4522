"""The body of one Ray actor: an engine loaded once, rows of a block in, an Arrow table of embeddings out.

It stands on the facade's layers (:func:`embedrt.load_tokenizer`, :func:`embedrt.load_engine`), with
ONNX Runtime's threads set to the CPUs Ray gave the actor: ONNX Runtime ignores ``OMP_NUM_THREADS`` and
would size its pool to the whole host, so several actors per node would fight for every core. Inside a
block, texts are length-sorted and batched under the engine's token budget, as in ``encode``.

A row whose input is unusable (null, not a string, not valid Unicode, an unreadable image) gets its
reason in the ``error`` column and a null embedding; the rest of the block is embedded. Texts past
``max_seq_length`` are truncated, as ``encode`` does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import images
from ..artifact import open_artifact
from ..loader import load_engine
from ..tokenizer import load_tokenizer

ID, EMBEDDING, ERROR = "id", "embedding", "error"


def assigned_cpus(default: int = 1) -> int:
    """The CPUs Ray assigned to the calling actor or task (``default`` outside Ray)."""
    try:
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:  # not in a Ray worker
        cpus = None
    return max(1, int(cpus)) if cpus else default


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:60]


class Embedder:
    """Loads ``model`` once and embeds blocks of rows (Arrow tables) into ``id``, ``embedding``, ``error``.

    Args:
        model: an artifact folder reachable from every node (shared storage), or a name in each node's
            ``$EMBEDRT_CACHE/artifacts``.
        text_column: the text column; a (title, text) pair of columns for pair models.
        image_column: CLIP images as bytes (an image file's contents) or paths, instead of text.
        id_column: carried into the output (``None``: no id column).
        keep_columns: other input columns carried into the output.
        threads: ONNX Runtime threads (default: the CPUs Ray assigned this actor).
        expected_digest: the artifact every actor must load (the driver pins the one it saw).
        normalize: L2-normalize the embeddings.
    """

    def __init__(self, model: str, *, text_column: str | Sequence[str] = "text", image_column: str | None = None,
                 id_column: str | None = ID, keep_columns: Sequence[str] = (), variant: str | None = None,
                 threads: int | None = None, expected_digest: str | None = None, normalize: bool = False) -> None:
        artifact = open_artifact(model, expected_digest)
        self.manifest = artifact.manifest
        self.threads = threads or assigned_cpus()
        self.text_columns = (text_column,) if isinstance(text_column, str) else tuple(text_column)
        self.image_column = image_column
        self.id_column = id_column
        self.keep_columns = tuple(keep_columns)
        self.normalize = normalize
        self.tokenizer = load_tokenizer(artifact)
        tower = "vision" if image_column else "text"
        self.engine = load_engine(artifact, tower=tower, variant=variant, threads=self.threads, workers=1)
        if image_column is None:
            self.engine.warmup(4, min(64, self.tokenizer.max_seq_length))
        self.pid = os.getpid()

    @property
    def intra_op_threads(self) -> int:
        """ONNX Runtime's intra-op threads, read back from the session."""
        return int(self.engine.session.get_session_options().intra_op_num_threads)

    def metadata(self) -> dict[bytes, bytes]:
        """What the output schema says about the embeddings."""
        info = self.engine.info
        return {b"embedrt.model": self.manifest.name.encode(), b"embedrt.variant": info.variant.encode(),
                b"embedrt.dimension": str(info.dimension).encode(),
                b"embedrt.similarity": self.manifest.similarity_fn_name.encode(),
                b"embedrt.normalized": str(self.normalize or self.manifest.normalized).lower().encode(),
                b"embedrt.digest": info.digest.encode()}

    # -- inputs ----------------------------------------------------------------------------------------
    def _texts(self, columns: list[list[Any]], errors: list[str | None]) -> tuple[list[int], list[Any]]:
        rows, items = [], []
        for i, values in enumerate(zip(*columns)):
            if errors[i] is not None:
                continue
            bad = next((v for v in values if not isinstance(v, str)), "ok")
            if bad != "ok":
                errors[i] = "null text" if bad is None else f"not a string: {_describe(bad)}"
                continue
            item = values[0] if len(values) == 1 else tuple(values)
            try:
                items.extend(self.tokenizer.check([item], start=i, name="row"))
            except (TypeError, ValueError) as exc:
                errors[i] = str(exc)
                continue
            rows.append(i)
        return rows, items

    def _images(self, values: list[Any], errors: list[str | None]) -> tuple[list[int], np.ndarray]:
        rows, pixels = [], []
        for i, value in enumerate(values):
            if errors[i] is not None:
                continue
            label = f"row[{i}]"
            try:
                if isinstance(value, (bytes, bytearray)):
                    image = images.load_image_bytes(bytes(value), label)
                elif isinstance(value, str):
                    image = images.load_image(value, label)
                else:
                    raise TypeError(f"{label}: an image must be bytes or a path, got {_describe(value)}")
                pixels.append(images.preprocess_one(image, self.engine.spec))
            except (TypeError, ValueError, OSError) as exc:
                errors[i] = str(exc)
                continue
            rows.append(i)
        return rows, np.stack(pixels) if pixels else np.zeros((0,), dtype=np.float32)

    def vectors(self, table: Any, errors: list[str | None] | None = None) -> tuple[np.ndarray, list[str | None]]:
        """``(embeddings, errors)`` of ``table``'s rows: float32 (rows, dim), a zero row where the error is set
        (rows whose ``errors`` are already set are not embedded)."""
        n = table.num_rows
        errors = list(errors) if errors is not None else [None] * n
        out = np.zeros((n, self.engine.info.dimension), dtype=np.float32)
        if self.image_column:
            rows, pixels = self._images(table.column(self.image_column).to_pylist(), errors)
            if rows:
                out[rows] = self.engine.run_batch(pixels)
        else:
            rows, items = self._texts([table.column(c).to_pylist() for c in self.text_columns], errors)
            if rows:
                out[rows] = self.engine.run(self.tokenizer.encode_checked(items), batch_size=64).sentence_embedding
        if self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out = np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)
        return out, errors

    def table(self, table: Any, ids: Any = None, errors: list[str | None] | None = None) -> Any:
        """The output table of ``table``'s rows: ``id`` (``ids``, else ``id_column``), ``embedding``
        (``fixed_size_list<float32>[dim]``, null on error), ``error``, the kept columns; metadata in the schema.
        ``errors``: rows already known to be unusable."""
        import pyarrow as pa

        vectors, errors = self.vectors(table, errors)
        dim = vectors.shape[1]
        failed = pa.array([e is not None for e in errors], type=pa.bool_())
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), dim,
                                                      mask=failed)
        columns: dict[str, Any] = {}
        if ids is not None:
            columns[ID] = ids
        elif self.id_column is not None:
            columns[ID] = table.column(self.id_column)
        columns[EMBEDDING] = embedding
        columns[ERROR] = pa.array(errors, type=pa.string())
        for name in self.keep_columns:
            columns[name] = table.column(name)
        out = pa.table(columns)
        return out.replace_schema_metadata(self.metadata())

    def __call__(self, batch: Any) -> Any:
        """Ray Data's entry: a block (``batch_format="pyarrow"``) in, its embeddings out."""
        return self.table(batch)
