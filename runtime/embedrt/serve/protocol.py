"""Request bodies → typed requests, with errors that name the field and index at fault.

Two request shapes carry the same thing (inputs for one model): OpenAI's ``/v1/embeddings`` and
text-embeddings-inference's ``/embed``. An input is a text, a list of token ids, or (for CLIP) an image:
a ``data:image/...;base64,`` URI, an ``{"type": "image_url", "image_url": {"url": ...}}`` item, or any
string when the request says ``"modality": "image"`` (infinity's form).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import APIError, bad_request

ENCODING_FORMATS = ("float", "base64")


@dataclass(frozen=True)
class Item:
    """One input: exactly one of ``text``, ``ids`` (token ids, used as given) or ``image`` (a URI)."""

    text: str | None = None
    ids: tuple[int, ...] | None = None
    image: str | None = None


@dataclass(frozen=True)
class EmbedRequest:
    """What both embedding routes ask for."""

    model: str | None
    items: tuple[Item, ...]
    encoding_format: str = "float"
    dimensions: int | None = None
    normalize: bool = False
    truncate: bool = True
    prompt_name: str | None = None


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:60]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ids(values: list[Any], param: str) -> tuple[int, ...]:
    if not values:
        raise bad_request(f"'{param}' is an empty list of token ids", param)
    for j, v in enumerate(values):
        if not _is_int(v):
            raise bad_request(f"'{param}[{j}]' must be an integer token id, got {_describe(v)}", f"{param}[{j}]")
    return tuple(values)


def _image_item(value: dict[str, Any], param: str) -> Item:
    if value.get("type") == "text" and isinstance(value.get("text"), str):
        return Item(text=value["text"])
    url = value.get("image_url")
    url = url.get("url") if isinstance(url, dict) else url
    if value.get("type") != "image_url" or not isinstance(url, str):
        raise bad_request(f"'{param}' must be a string, token ids, or {{\"type\": \"image_url\", \"image_url\": "
                          f"{{\"url\": ...}}}}, got {_describe(value)}", param)
    return Item(image=url)


def _item(value: Any, param: str, images: bool) -> Item:
    if isinstance(value, str):
        return Item(image=value) if images or value.startswith("data:image/") else Item(text=value)
    if isinstance(value, list):
        return Item(ids=_ids(value, param))
    if isinstance(value, dict):
        return _image_item(value, param)
    raise bad_request(f"'{param}' must be a string or a list of token ids, got {_describe(value)}", param)


def parse_inputs(value: Any, field: str, *, max_inputs: int, images: bool = False) -> tuple[Item, ...]:
    """``value`` as inputs: a string, a list of strings/items, one list of token ids or a list of them."""
    if isinstance(value, str):
        return (_item(value, field, images),)
    if not isinstance(value, list):
        raise bad_request(f"'{field}' must be a string or a list, got {_describe(value)}", field)
    if not value:
        raise bad_request(f"'{field}' must not be empty", field)
    if len(value) > max_inputs:
        raise APIError(413, f"'{field}' has {len(value)} inputs; this server takes at most {max_inputs} per request "
                       "(split the request)", param=field, code="too_many_inputs")
    if all(_is_int(v) for v in value):  # one input given as token ids
        return (Item(ids=tuple(value)),)
    return tuple(_item(v, f"{field}[{i}]", images) for i, v in enumerate(value))


def _optional(body: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise bad_request(f"'{key}' must be {names}, got {_describe(value)}", key)
    return value


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def parse_openai(body: Any, *, max_inputs: int) -> EmbedRequest:
    """``POST /v1/embeddings``: ``input``, ``model``, ``encoding_format``, ``dimensions``, ``user``."""
    body = _object(body)
    if "input" not in body:
        raise bad_request("'input' is required", "input", code="missing_required_parameter")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request(f"'model' must be a model name (see GET /v1/models), got {_describe(model)}", "model",
                          code="missing_required_parameter" if model is None else "invalid_value")
    encoding = _optional(body, "encoding_format", str, "float")
    if encoding not in ENCODING_FORMATS:
        raise bad_request(f"'encoding_format' must be 'float' or 'base64', got {encoding!r}", "encoding_format")
    _optional(body, "user", str, None)
    modality = _optional(body, "modality", str, "text")
    if modality not in ("text", "image"):
        raise bad_request(f"'modality' must be 'text' or 'image', got {modality!r}", "modality")
    return EmbedRequest(model=model, items=parse_inputs(body["input"], "input", max_inputs=max_inputs,
                                                        images=modality == "image"),
                        encoding_format=encoding, dimensions=_optional(body, "dimensions", int, None))


def parse_tei(body: Any, *, max_inputs: int) -> EmbedRequest:
    """``POST /embed``: ``inputs``, ``normalize`` (default true), ``truncate`` (default true), ``prompt_name``,
    and ``model`` where the server holds several."""
    body = _object(body)
    if "inputs" not in body:
        raise bad_request("'inputs' is required", "inputs", code="missing_required_parameter")
    _optional(body, "truncation_direction", str, "right")
    if body.get("truncation_direction", "right") not in ("right", "Right"):
        raise bad_request("'truncation_direction' must be 'right': sentence-transformers keeps a text's head",
                          "truncation_direction")
    return EmbedRequest(model=_optional(body, "model", str, None),
                        items=parse_inputs(body["inputs"], "inputs", max_inputs=max_inputs),
                        normalize=_optional(body, "normalize", bool, True),
                        truncate=_optional(body, "truncate", bool, True),
                        prompt_name=_optional(body, "prompt_name", str, None))


def parse_texts(body: Any, field: str, *, max_inputs: int) -> list[str]:
    """A string or a list of strings at ``body[field]`` (``/tokenize``), as a list."""
    items = parse_inputs(_object(body).get(field), field, max_inputs=max_inputs)
    for i, item in enumerate(items):
        if item.text is None:
            raise bad_request(f"'{field}[{i}]' must be a string", f"{field}[{i}]")
    return [item.text for item in items]  # type: ignore[misc]


def parse_similarity(body: Any, *, max_inputs: int) -> tuple[str | None, str, list[str]]:
    """``POST /similarity``: ``{"inputs": {"source_sentence": str, "sentences": [str]}}`` (TEI's form)."""
    body = _object(body)
    inputs = body.get("inputs")
    if not isinstance(inputs, dict):
        raise bad_request("'inputs' must be {\"source_sentence\": ..., \"sentences\": [...]}", "inputs")
    source = inputs.get("source_sentence")
    if not isinstance(source, str):
        raise bad_request(f"'inputs.source_sentence' must be a string, got {_describe(source)}",
                          "inputs.source_sentence")
    sentences = parse_texts(inputs, "sentences", max_inputs=max_inputs)
    return _optional(body, "model", str, None), source, sentences
