"""CLIP image input: loading, preprocessing and the vision graph, with Pillow + numpy only.

The preprocessing reproduces transformers' ``CLIPImageProcessor`` PIL backend, which is what
sentence-transformers runs for CLIP models (and, up to rounding, what openai/CLIP's torchvision
pipeline does), step by step and in the same dtypes:

1. to RGB: images with an alpha band or a ``transparency`` entry are composited onto white,
   everything else goes through ``Image.convert("RGB")``;
2. resize so the shortest edge is ``size["shortest_edge"]``, the long edge ``int(edge * long / short)``
   (truncated, as torchvision and transformers do), with PIL's resampling filter on the uint8 image;
3. centre crop to ``crop_size``, the offsets rounded down;
4. ``uint8 → float64 × rescale_factor → float32``, then ``(x − mean) / std`` in float32.

Inputs, per item (errors name the item's index):

* ``PIL.Image.Image`` — used as given (no EXIF rotation: sentence-transformers does not apply it to
  PIL inputs either);
* an image file path (``str`` or ``os.PathLike``) — opened, EXIF-rotated and converted to RGB, as
  transformers' ``load_image`` does for paths; a ``data:image/...;base64,`` URI is decoded the same way;
* a ``uint8`` numpy array of shape ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` — treated
  exactly like ``PIL.Image.fromarray(array)`` (grey, RGB, RGBA). Float arrays are refused: a
  float array could be [0, 1] pixels, [0, 255] pixels or already-normalised ``pixel_values``, and
  guessing wrong would silently produce wrong embeddings; already-preprocessed ``[N, 3, H, W]``
  batches go to :meth:`ImageEngine.run_batch` instead.

Pillow is imported only when an image is actually loaded, so text-only deployments need not install
it (``pip install 'embedrt[image]'``).
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import urlparse

import numpy as np

from .checks import check_positive_int
from .manifest import ImageSpec
from .types import SENTENCE

# Strings sentence-transformers treats as image paths/URLs (``base.modality.is_image_url_or_path``).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tiff", ".webp")

_INSTALL_HINT = "image input needs Pillow: pip install 'embedrt[image]' (or pip install Pillow)"


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return Image


def _is_pil_image(item: Any) -> bool:
    # Without importing Pillow: if PIL.Image was never imported, ``item`` cannot be one of its images.
    module = sys.modules.get("PIL.Image")
    return module is not None and isinstance(item, module.Image)


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://")) and " " not in text


def is_image_input(item: Any) -> bool:
    """Whether ``encode`` should send ``item`` to the vision tower rather than the text tower.

    Strings follow sentence-transformers' rule exactly: a ``data:image/`` URI, an http(s) URL whose
    path ends in an image extension, or an existing file whose name ends in one of
    :data:`IMAGE_EXTENSIONS`; every other string is text, even ``"photo.jpg"`` when no such file exists.
    PIL images, ``os.PathLike`` paths and numpy arrays are images (a non-uint8 array is then refused
    with an explanation by :func:`load_image`, rather than reported as "not a string").
    """
    if isinstance(item, str):
        if item.startswith("data:image/"):
            return True
        if _is_url(item):
            try:
                return urlparse(item).path.lower().endswith(IMAGE_EXTENSIONS)
            except ValueError:  # malformed URL, e.g. "https://[x": sentence-transformers calls it text
                return False
        return item.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(item)
    return isinstance(item, (np.ndarray, os.PathLike)) or _is_pil_image(item)


def _open(data: Any, label: str) -> Any:
    """Open a file path or bytes buffer like transformers' ``load_image``: EXIF-rotated, RGB."""
    Image = _pil()
    from PIL import ImageOps

    try:
        with Image.open(data) as image:
            return ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{label}: not a readable image ({type(exc).__name__}: {exc})") from exc


def _from_array(array: np.ndarray, label: str) -> Any:
    if array.dtype != np.uint8:
        raise TypeError(f"{label}: numpy images must be uint8 (H, W[, C]) pixels, got dtype {array.dtype}; "
                        "pass preprocessed float pixel_values to ImageEngine.run_batch instead")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))) or 0 in array.shape:
        raise ValueError(f"{label}: numpy images must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), "
                         f"got {array.shape}")
    return _pil().fromarray(np.ascontiguousarray(array))


def load_image_bytes(data: bytes, label: str = "image") -> Any:
    """An image file's contents (PNG, JPEG, ...) as a PIL image, EXIF-rotated, RGB, like a path."""
    return _open(io.BytesIO(data), label)


def load_image(item: Any, label: str = "image") -> Any:
    """Turn one input (see the module docstring) into a PIL image; ``label`` names it in errors."""
    if _is_pil_image(item):
        return item
    if isinstance(item, np.ndarray):
        return _from_array(item, label)
    if isinstance(item, str) and item.startswith("data:image/"):
        try:
            payload = base64.b64decode(item.split(",", 1)[1])
        except (IndexError, binascii.Error) as exc:
            raise ValueError(f"{label}: malformed base64 data URI ({exc})") from exc
        return _open(io.BytesIO(payload), label)
    if isinstance(item, str) and _is_url(item):
        raise ValueError(f"{label}: {item!r} is a URL; embedrt does not download images, pass the downloaded "
                         "file's path or a PIL image")
    if isinstance(item, (str, os.PathLike)):
        path = os.fspath(item)
        if not os.path.isfile(path):
            raise ValueError(f"{label}: no such image file: {path!r}")
        return _open(path, label)
    raise TypeError(f"{label} must be a PIL image, an image file path or a uint8 numpy array, "
                    f"got {type(item).__name__} {item!r}"[:200])


def _to_rgb(image: Any) -> Any:
    # transformers' convert_to_rgb: transparency is composited onto white, not dropped.
    Image = _pil()
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def preprocess_one(image: Any, spec: ImageSpec) -> np.ndarray:
    """One PIL image → float32 ``[3, crop_height, crop_width]`` pixel values."""
    Image = _pil()
    rgb = _to_rgb(image)
    width, height = rgb.size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(spec.shortest_edge * long / short)
    size = (spec.shortest_edge, new_long) if width <= height else (new_long, spec.shortest_edge)
    resized = np.asarray(rgb.resize(size, resample=Image.Resampling[spec.resample.upper()]))
    top = (resized.shape[0] - spec.crop_height) // 2
    left = (resized.shape[1] - spec.crop_width) // 2
    pixels: np.ndarray = resized[top:top + spec.crop_height, left:left + spec.crop_width]
    # float64 first, then float32: the order (and so the rounding) transformers uses.
    pixels = (pixels.astype(np.float64) * spec.rescale_factor).astype(np.float32) if spec.do_rescale \
        else pixels.astype(np.float32)
    if spec.do_normalize:
        pixels = (pixels - np.asarray(spec.image_mean, dtype=np.float32)) / np.asarray(spec.image_std,
                                                                                        dtype=np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def preprocess(items: Sequence[Any], spec: ImageSpec, *, positions: Sequence[int] | None = None,
               name: str = "images") -> np.ndarray:
    """Load and preprocess images into float32 ``[N, 3, crop_height, crop_width]``.

    Errors name the offending item as ``f"{name}[{positions[i]}]"`` (default ``images[i]``), so a
    caller that routed items out of a mixed list can report the caller's own index.
    """
    if positions is not None and len(positions) != len(items):
        raise ValueError(f"positions has {len(positions)} entries for {len(items)} images")
    labels = [f"{name}[{i}]" for i in (positions if positions is not None else range(len(items)))]
    out = np.empty((len(items), 3, spec.crop_height, spec.crop_width), dtype=np.float32)
    for row, (item, label) in enumerate(zip(items, labels)):
        image = load_image(item, label)
        try:
            out[row] = preprocess_one(image, spec)
        except (OSError, ValueError) as exc:  # a lazily opened PIL image of a damaged file fails only here
            raise ValueError(f"{label}: not a readable image ({type(exc).__name__}: {exc})") from exc
    return out


class ImageEngine:
    """Runs an artifact's vision graph on preprocessed pixels (build one with
    ``embedrt.load_engine(artifact, tower="vision")``); thread-safe like :class:`~embedrt.engine.Engine`."""

    def __init__(self, session: Any, spec: ImageSpec, info: Any) -> None:
        self.session = session
        self.spec = spec
        self.info = info
        inputs = [i.name for i in session.get_inputs()]
        if len(inputs) != 1:
            raise ValueError(f"a vision graph takes exactly one input (pixel values), this one takes {inputs}")
        self.input_name = inputs[0]
        shapes = {o.name: o.shape for o in session.get_outputs()}
        if SENTENCE not in shapes or not isinstance(shapes[SENTENCE][-1], int):
            raise ValueError(f"vision graph needs a {SENTENCE!r} output of static width, has {shapes}")
        self.dimension: int = shapes[SENTENCE][-1]
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="embedrt-vision")

    def run_batch(self, pixel_values: np.ndarray) -> np.ndarray:
        """Embed already-preprocessed float32 ``[N, 3, crop_height, crop_width]`` pixels as one batch."""
        want = (3, self.spec.crop_height, self.spec.crop_width)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != want:
            raise ValueError(f"pixel_values must have shape [N, {', '.join(map(str, want))}], "
                             f"got {list(pixel_values.shape)}")
        return self.session.run([SENTENCE], {self.input_name: pixel_values.astype(np.float32, copy=False)})[0]

    def submit(self, pixel_values: np.ndarray) -> Future[np.ndarray]:
        """:meth:`run_batch` on the engine's thread; the future holds its result (for a batcher)."""
        return self._pool.submit(self.run_batch, pixel_values)

    def encode(self, items: Sequence[Any], *, batch_size: int = 32, positions: Sequence[int] | None = None,
               name: str = "images", on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Load, preprocess and embed images (see the module docstring) into float32 ``[N, dim]``.

        Images are loaded ``batch_size`` at a time, so a long list of paths never sits in memory
        decoded; ``positions``/``name`` label errors as in :func:`preprocess`; ``on_batch(n)`` is
        called after each batch.
        """
        batch_size = check_positive_int("batch_size", batch_size)
        positions = list(positions) if positions is not None else list(range(len(items)))
        if len(positions) != len(items):
            raise ValueError(f"positions has {len(positions)} entries for {len(items)} images")
        chunks = [np.zeros((0, self.dimension), dtype=np.float32)]
        for start in range(0, len(items), batch_size):
            stop = start + batch_size
            chunks.append(self.run_batch(preprocess(items[start:stop], self.spec, positions=positions[start:stop],
                                                    name=name)))
            if on_batch is not None:
                on_batch(len(chunks[-1]))
        return np.concatenate(chunks)
