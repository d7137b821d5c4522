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
  batches go to :meth:`ImageEncoder.embed_pixels` instead.

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
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import numpy as np

from .checks import check_positive_int
from .manifest import MANIFEST_NAME, Artifact, ArtifactError
from .providers import SessionPlan, create_session, plan_providers

SENTENCE = "sentence_embedding"
# Strings sentence-transformers treats as image paths/URLs (``base.modality.is_image_url_or_path``).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tiff", ".webp")
# PIL's resampling filters by the lower-case names of ``PIL.Image.Resampling``.
RESAMPLE_FILTERS = ("nearest", "lanczos", "bilinear", "bicubic", "box", "hamming")

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


@dataclass(frozen=True)
class ImageSpec:
    """The preprocessing an artifact's vision graph expects (the manifest's ``image`` field).

    Manifest form (keys and meanings as in transformers' ``CLIPImageProcessor``)::

        {"size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224},
         "resample": "bicubic", "do_rescale": true, "rescale_factor": 0.00392156862745098,
         "do_normalize": true, "image_mean": [0.48145466, 0.4578275, 0.40821073],
         "image_std": [0.26862954, 0.26130258, 0.27577711]}

    RGB conversion, resizing and centre cropping are always applied: the graph's input has a fixed
    ``[3, crop_height, crop_width]`` shape, and a crop no larger than the shortest edge never pads.
    """

    shortest_edge: int
    crop_height: int
    crop_width: int
    resample: str
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if self.resample not in RESAMPLE_FILTERS:
            raise ValueError(f"resample {self.resample!r} is not one of {RESAMPLE_FILTERS}")
        for name in ("shortest_edge", "crop_height", "crop_width"):
            check_positive_int(name, getattr(self, name))
        if max(self.crop_height, self.crop_width) > self.shortest_edge:
            raise ValueError(f"crop {self.crop_height}x{self.crop_width} is larger than the shortest edge "
                             f"{self.shortest_edge}; such a crop would pad, which embedrt does not reproduce")
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or not all(s > 0 for s in self.image_std):
            raise ValueError(f"image_mean/image_std must be 3 numbers (std > 0), got "
                             f"{self.image_mean!r} / {self.image_std!r}")

    @classmethod
    def from_manifest(cls, data: Any) -> ImageSpec:
        """Parse the manifest's ``image`` field, raising :class:`ArtifactError` on anything unexpected."""
        try:
            if set(data["size"]) != {"shortest_edge"} or set(data["crop_size"]) != {"height", "width"}:
                raise ValueError(f"size must be {{'shortest_edge'}} and crop_size {{'height', 'width'}}, got "
                                 f"{data['size']!r} and {data['crop_size']!r}")
            return cls(shortest_edge=data["size"]["shortest_edge"], crop_height=data["crop_size"]["height"],
                       crop_width=data["crop_size"]["width"], resample=data["resample"],
                       do_rescale=bool(data["do_rescale"]), rescale_factor=float(data["rescale_factor"]),
                       do_normalize=bool(data["do_normalize"]),
                       image_mean=tuple(float(x) for x in data["image_mean"]),  # type: ignore[arg-type]
                       image_std=tuple(float(x) for x in data["image_std"]))  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{MANIFEST_NAME}: malformed 'image' field ({type(exc).__name__}: {exc})") from exc

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's ``image`` field."""
        return {"size": {"shortest_edge": self.shortest_edge},
                "crop_size": {"height": self.crop_height, "width": self.crop_width},
                "resample": self.resample, "do_rescale": self.do_rescale, "rescale_factor": self.rescale_factor,
                "do_normalize": self.do_normalize, "image_mean": list(self.image_mean),
                "image_std": list(self.image_std)}


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
                        "pass preprocessed float pixel_values to ImageEncoder.embed_pixels instead")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))) or 0 in array.shape:
        raise ValueError(f"{label}: numpy images must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), "
                         f"got {array.shape}")
    return _pil().fromarray(np.ascontiguousarray(array))


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


class ImageEncoder:
    """Preprocesses images and runs an artifact's vision graph; thread-safe like :class:`~embedrt.engine.Engine`."""

    def __init__(self, session: Any, spec: ImageSpec) -> None:
        self.session = session
        self.spec = spec
        inputs = [i.name for i in session.get_inputs()]
        if len(inputs) != 1:
            raise ValueError(f"a vision graph takes exactly one input (pixel values), this one takes {inputs}")
        self.input_name = inputs[0]
        shapes = {o.name: o.shape for o in session.get_outputs()}
        if SENTENCE not in shapes or not isinstance(shapes[SENTENCE][-1], int):
            raise ValueError(f"vision graph needs a {SENTENCE!r} output of static width, has {shapes}")
        self.dimension: int = shapes[SENTENCE][-1]

    @classmethod
    def from_artifact(cls, artifact: Artifact, plan: SessionPlan | None = None, *, variant: str | None = None,
                      strict: bool = False) -> ImageEncoder:
        """The encoder for ``artifact``'s ``vision`` tower (``plan`` defaults to CPU, all cores)."""
        manifest = artifact.manifest
        tower = manifest.towers.get("vision")
        if tower is None or manifest.image is None:
            raise ValueError(f"artifact {manifest.name!r} has no vision tower; it embeds text only")
        key = variant or tower.default_variant
        if key not in tower.variants:
            raise ValueError(f"variant {key!r} not in the vision tower; available: {sorted(tower.variants)}")
        with artifact.verified_graph(tower.variants[key]) as graph:
            session = create_session(str(graph), plan or plan_providers(None, None, None), strict=strict,
                                     custom_ops=tower.variants[key].custom_ops)
        return cls(session, ImageSpec.from_manifest(manifest.image))

    def embed_pixels(self, pixel_values: np.ndarray) -> np.ndarray:
        """Run the graph on already-preprocessed float32 ``[N, 3, crop_height, crop_width]`` pixels."""
        want = (3, self.spec.crop_height, self.spec.crop_width)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != want:
            raise ValueError(f"pixel_values must have shape [N, {', '.join(map(str, want))}], "
                             f"got {list(pixel_values.shape)}")
        return self.session.run([SENTENCE], {self.input_name: pixel_values.astype(np.float32, copy=False)})[0]

    def encode(self, items: Sequence[Any], *, batch_size: int = 32, positions: Sequence[int] | None = None,
               name: str = "images", on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed images (see the module docstring for accepted inputs) into float32 ``[N, dim]``.

        Images are loaded ``batch_size`` at a time, so a long list of paths never sits in memory
        decoded; ``positions``/``name`` label errors as in :func:`preprocess`; ``on_batch(n)`` is
        called after each batch.
        """
        check_positive_int("batch_size", batch_size)
        positions = list(positions) if positions is not None else list(range(len(items)))
        if len(positions) != len(items):
            raise ValueError(f"positions has {len(positions)} entries for {len(items)} images")
        chunks = [np.zeros((0, self.dimension), dtype=np.float32)]
        for start in range(0, len(items), batch_size):
            stop = start + batch_size
            chunks.append(self.embed_pixels(preprocess(items[start:stop], self.spec,
                                                       positions=positions[start:stop], name=name)))
            if on_batch is not None:
                on_batch(len(chunks[-1]))
        return np.concatenate(chunks)
