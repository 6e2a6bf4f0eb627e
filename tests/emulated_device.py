"""Device runners whose 'device' is the host: the engine loop's device scorers run on the buffers the emulated CUDA
kernels write (tests/test_cuda_emulation.py, tests/test_head_methods.py)."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import numpy as np

from tiny import SIZE


class EmulatedDeviceRunner:
    """ONNX Runtime (``runner``) on the masked-input buffer; NaN-filled so a row the kernels miss shows."""

    name = "emulated-device"

    def __init__(self, runner: Any, kernels: Any) -> None:
        self.inner, self.kernels, self._input = runner, kernels, None

    def features(self, x: np.ndarray) -> np.ndarray:
        return self.inner.features(x)

    def head(self, a: np.ndarray) -> np.ndarray:
        return self.inner.head(a)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.inner.logits(x)

    def input_buffer(self, rows: int) -> np.ndarray:
        self._input = np.full((rows, 3, SIZE, SIZE), np.nan, np.float32)
        return self._input

    def run_logits(self, n: int) -> np.ndarray:
        return self.inner.logits(self._input[:n])

    def stream_context(self) -> Any:
        return nullcontext()


class EmulatedDeviceHeadRunner(EmulatedDeviceRunner):
    """The same, with a head-input buffer: what a device head scorer needs."""

    def __init__(self, runner: Any, kernels: Any, activation_shape: tuple[int, int, int]) -> None:
        super().__init__(runner, kernels)
        self.activation_shape, self._head = activation_shape, None

    def head_input_buffer(self, rows: int) -> np.ndarray:
        self._head = np.full((rows, *self.activation_shape), np.nan, np.float32)
        return self._head

    def run_head(self, n: int) -> np.ndarray:
        return np.asarray(self.inner.head(self._head[:n]), np.float32)
