"""The JSON Schema of ``manifest.json`` and its validation (with ``jsonschema``, not hand-written checks).

One rule at every level: a record (an object with named fields) refuses keys it does not define, so a
misspelt or injected field is an error, never silently ignored; maps (``files``, ``prompts``,
``created_with``, a tower's ``variants``) have open keys whose names are themselves checked.
"""

from __future__ import annotations

from typing import Any

from .manifest import (
    CPU_ISAS,
    CUSTOM_OP_DOMAINS,
    DEVICES,
    INPUT_KINDS,
    MANIFEST_NAME,
    PARITY_KEYS,
    PRECISIONS,
    RESAMPLE_FILTERS,
    SCHEMA,
    SIMILARITY_FUNCTIONS,
    SIMILARITY_SOURCES,
    TOKENIZER_KINDS,
    TOWERS,
    VARIANTS,
    ArtifactError,
)

# Artifact-relative POSIX paths: no absolute paths, no backslashes (the folder check catches "..").
_PATH = {"type": "string", "minLength": 1, "maxLength": 512, "pattern": r"^[^/\\\x00][^\\\x00]*$"}
_NAME = {"type": "string", "minLength": 1, "maxLength": 256}
_INT_POS = {"type": "integer", "minimum": 1}
_INT_NONNEG = {"type": "integer", "minimum": 0}
# Token ids and sizes stay far inside int64 and what a vocabulary can hold.
_TOKEN_ID = {"type": "integer", "minimum": 0, "maximum": 2 ** 31 - 1}
_SEQ = {"type": "integer", "minimum": 1, "maximum": 1 << 20}
_NAMES = {"type": "array", "items": _NAME, "minItems": 1, "uniqueItems": True}
_TRIPLE = {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3}


def _record(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required or list(properties),
            "additionalProperties": False}


def _enum_list(values: tuple[str, ...], min_items: int = 0) -> dict[str, Any]:
    return {"type": "array", "items": {"enum": list(values)}, "uniqueItems": True, "minItems": min_items}


_VARIANT = _record({
    "file": _PATH,
    "opset": {"type": "integer", "minimum": 7, "maximum": 64},
    "inputs": _NAMES,
    "outputs": _NAMES,
    "precision": {"enum": list(PRECISIONS)},
    "devices": _enum_list(DEVICES, 1),
    "cpu_isa": {"oneOf": [{"type": "null"}, _enum_list(CPU_ISAS, 1)]},
    "custom_ops": _enum_list(CUSTOM_OP_DOMAINS),
    "packed_rows": {"type": "boolean"},
    "parity": {"type": "object", "propertyNames": {"enum": list(PARITY_KEYS)},
               "additionalProperties": {"type": "number"}},
    "external_data": {"oneOf": [{"type": "null"}, _PATH]},
}, required=["file", "opset", "inputs", "outputs", "precision", "devices", "cpu_isa", "custom_ops",
             "packed_rows", "parity"])

_MODULE = _record({
    "type": _NAME, "mode": _NAME, "in_features": {"type": ["integer", "null"]},
    "out_features": {"type": ["integer", "null"]}, "activation": {"type": "string"}, "bias": {"type": "boolean"},
    "max_seq_length": {"type": ["integer", "null"]}, "do_lower_case": {"type": "boolean"},
}, required=["type"])

MANIFEST_SCHEMA: dict[str, Any] = _record({
    "schema": {"const": SCHEMA},
    "name": _NAME,
    "embedding_dimension": {"type": "integer", "minimum": 1, "maximum": 1 << 16},
    "similarity_fn_name": {"enum": list(SIMILARITY_FUNCTIONS)},
    "similarity_source": {"enum": list(SIMILARITY_SOURCES)},
    "normalized": {"type": "boolean"},
    "tokenizer": _record({
        "kind": {"enum": list(TOKENIZER_KINDS)},
        "file": _PATH,
        "max_seq_length": _SEQ,
        "pad_token_id": _TOKEN_ID,
        "model_max_length": {"oneOf": [{"type": "null"}, _SEQ]},
    }),
    "towers": {"type": "object", "propertyNames": {"enum": list(TOWERS)}, "required": ["text"],
               "additionalProperties": _record({
                   "variants": {"type": "object", "propertyNames": {"enum": list(VARIANTS)}, "minProperties": 1,
                                "additionalProperties": _VARIANT},
                   "default_variant": {"enum": list(VARIANTS)},
               })},
    "files": {"type": "object", "minProperties": 1, "propertyNames": _PATH,
              "additionalProperties": _record({"sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                                               "size": _INT_NONNEG})},
    "source": _record({"path": {"type": "string"}, "modules": {"type": "array", "items": _MODULE}}),
    "created_with": {"type": "object", "additionalProperties": {"type": "string"}},
    "prompts": {"type": "object", "propertyNames": _NAME, "additionalProperties": {"type": "string"}},
    "default_prompt_name": {"oneOf": [{"type": "null"}, _NAME]},
    "image": {"oneOf": [{"type": "null"}, _record({
        "shortest_edge": _INT_POS, "crop_height": _INT_POS, "crop_width": _INT_POS,
        "resample": {"enum": list(RESAMPLE_FILTERS)}, "do_rescale": {"type": "boolean"},
        "rescale_factor": {"type": "number", "exclusiveMinimum": 0}, "do_normalize": {"type": "boolean"},
        "image_mean": _TRIPLE,
        "image_std": {**_TRIPLE, "items": {"type": "number", "exclusiveMinimum": 0}},
    })]},
    "input_kinds": _enum_list(INPUT_KINDS, 1),
}, required=["schema", "name", "embedding_dimension", "similarity_fn_name", "similarity_source", "normalized",
             "tokenizer", "towers", "files", "source", "created_with", "prompts", "default_prompt_name", "image",
             "input_kinds"])


def _validator() -> Any:
    try:
        import jsonschema
    except ImportError as exc:  # pragma: no cover - a base dependency
        raise ImportError("embedrt needs jsonschema to check manifests: pip install jsonschema") from exc
    cls = jsonschema.validators.validator_for(MANIFEST_SCHEMA)
    cls.check_schema(MANIFEST_SCHEMA)
    return cls(MANIFEST_SCHEMA)


_VALIDATOR: Any = None


def _where(error: Any) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def validate(data: Any) -> None:
    """Raise :class:`~embedrt.manifest.ArtifactError` naming the field of ``data`` that breaks the schema."""
    global _VALIDATOR
    if isinstance(data, dict) and data.get("schema") != SCHEMA:
        raise ArtifactError(f"{MANIFEST_NAME}: unsupported schema {data.get('schema')!r}; this embedrt reads "
                            f"{SCHEMA!r} (re-export the model with this embedrt's `embedrt export`)")
    if _VALIDATOR is None:
        _VALIDATOR = _validator()
    import jsonschema

    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(data))
    if error is not None:
        raise ArtifactError(f"{MANIFEST_NAME}: field {_where(error)}: {error.message}"[:400])
