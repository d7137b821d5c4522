"""Argument checks shared by the runtime's entry points."""

from __future__ import annotations

import numbers


def check_positive_int(name: str, value: object) -> int:
    """``value`` as an int, or ``ValueError`` naming ``name`` unless it is an integer of at least 1.

    Numpy integers count (as in sentence-transformers); ``True`` is no count, and neither is ``1.0``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {type(value).__name__} {value!r}"[:200])
    return int(value)
