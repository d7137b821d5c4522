"""IO binding for GPU sessions: inputs copied to the device once, outputs into preallocated buffers."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from .providers import import_onnxruntime


class IOBindingRunner:
    """Runs with IO binding: inputs copied to the device once, outputs written into preallocated
    device buffers (one per shape, per thread, since concurrent calls must not share them)."""

    def __init__(self, session: Any, device_type: str, device_id: int) -> None:
        self.session = session
        self.device_type = device_type
        self.device_id = device_id
        self.output_shapes = {o.name: o.shape for o in session.get_outputs()}
        self._local = threading.local()

    def _buffer(self, name: str, shape: tuple[int, ...]) -> Any:
        cache = self._local.__dict__.setdefault("buffers", {})
        key = (name, shape)
        if key not in cache:
            cache[key] = import_onnxruntime().OrtValue.ortvalue_from_shape_and_type(
                list(shape), np.float32, self.device_type, self.device_id)
        return cache[key]

    def _shape(self, name: str, batch: int, width: int) -> tuple[int, ...] | None:
        dims = self.output_shapes[name]
        concrete = [batch, width, *dims[2:]] if len(dims) == 3 else [batch, *dims[1:]]
        return tuple(concrete) if all(isinstance(d, int) for d in concrete) else None

    def run(self, outputs: Sequence[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        batch, width = feeds["input_ids"].shape
        for name in outputs:
            shape = self._shape(name, batch, width)
            if shape is None:
                binding.bind_output(name, self.device_type, self.device_id)
            else:
                binding.bind_ortvalue_output(name, self._buffer(name, shape))
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()
