"""embedrt's ONNX Runtime kernel library: the ``ai.embedrt`` ops some graph variants use.

The library (C++ in ``runtime/kernels``) is built when embedrt is installed and loaded by ONNX Runtime
from its path, as a custom-op library. A graph variant lists the op domains it needs in the manifest
(``GraphVariant.custom_ops``); :func:`register` adds them to a session's options or says why it cannot.
Without the library, the runtime picks another variant and says so (``embedrt.model``).

The kernels run on the best instruction set the CPU has (AVX-512, AVX2 + FMA, or portable C++);
the environment variable ``EMBEDRT_KERNELS_ISA`` (one of :data:`ISAS`) caps it, for tests and for
ruling out a suspect path. :func:`isa` says which one runs.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .manifest import KERNELS_DOMAIN as DOMAIN

_LIBRARY_STEM = "_kernels"
ISA_ENV = "EMBEDRT_KERNELS_ISA"
ISAS = ("avx512", "avx2", "generic")


class KernelLibraryError(RuntimeError):
    """A graph needs embedrt's kernel library and this install has none."""


def library_path() -> Path | None:
    """The built kernel library inside the installed package, or ``None`` if it was not built."""
    here = Path(__file__).resolve().parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = here / f"{_LIBRARY_STEM}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def available() -> bool:
    """Whether this install can run graphs that use ``ai.embedrt`` ops."""
    return library_path() is not None


def isa() -> str:
    """The instruction set the kernels run on in this process: one of :data:`ISAS`.

    Raises :class:`KernelLibraryError` when the library was not built.
    """
    _check_isa_cap()
    path = library_path()
    if path is None:
        raise KernelLibraryError("this embedrt install has no kernel library")
    query = ctypes.CDLL(str(path)).EmbedrtKernelIsa
    query.restype = ctypes.c_char_p
    return query().decode()


def _check_isa_cap() -> None:
    cap = os.environ.get(ISA_ENV, "")
    if cap and cap not in ISAS:
        raise ValueError(f"environment variable {ISA_ENV}={cap!r}: expected one of {', '.join(ISAS)}")


def register(options: Any, domains: Iterable[str]) -> None:
    """Register the kernel library with ONNX Runtime ``options`` for a graph needing ``domains``.

    Raises ``ValueError`` for a domain embedrt does not provide or a bad ``EMBEDRT_KERNELS_ISA``, and
    :class:`KernelLibraryError` when the library was not built.
    """
    domains = set(domains)
    if not domains:
        return
    _check_isa_cap()
    unknown = sorted(domains - {DOMAIN})
    if unknown:
        raise ValueError(f"the graph needs custom op domain(s) {unknown}; embedrt provides only {DOMAIN!r}")
    path = library_path()
    if path is None:
        raise KernelLibraryError(
            f"this graph uses embedrt's kernels ({DOMAIN}), but this embedrt install has no kernel library: it "
            "is compiled at install time and needs a C++17 compiler (e.g. `apt install g++`, then "
            "`pip install --force-reinstall --no-deps --no-binary embedrt embedrt`, or `pip install -e .` in a "
            "checkout); or load the portable graph with variant='int8_rowwise'")
    options.register_custom_ops_library(str(path))
