"""What a device runner adds to :class:`Runner`: an input buffer on the device and logits that stay there.

The explain loop (runtime/device_loop.py) writes each chunk of masked inputs with the CUDA kernels straight
into ``input_buffer``, runs ``run_logits`` and accumulates the scores on the device, all on the runner's one
stream: nothing comes back to the host until an image's weights are complete.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

import numpy as np

from camrt.kernels.gpu import CudaKernels


@runtime_checkable
class DeviceRunner(Protocol):
    """A runner whose masked-input passes read and write device memory (CuPy arrays) on one CUDA stream."""

    name: str
    kernels: CudaKernels  # bound to the runner's stream

    def features(self, images: np.ndarray) -> np.ndarray: ...

    def head(self, activations: np.ndarray) -> np.ndarray: ...

    def logits(self, images: np.ndarray) -> np.ndarray: ...

    def input_buffer(self, rows: int) -> Any:
        """The engine's input (rows, C, H, W) on the device (float32 or float16, NCHW or channels-last)."""
        ...

    def run_logits(self, n: int) -> Any:
        """Enqueue the model on input_buffer[:n]; logits (n, classes) float32 on the device, valid in stream order."""
        ...

    def stream_context(self) -> AbstractContextManager[Any]:
        """Makes the runner's stream current, so that array work in the loop is ordered with the engine's."""
        ...


def is_device_runner(runner: object) -> bool:
    """True for runners that take the device path of the explain loop."""
    return isinstance(runner, DeviceRunner)


def to_host(array: Any) -> np.ndarray:
    """A device (CuPy) array's values on the host; NumPy arrays pass through."""
    return np.asarray(array.get() if hasattr(array, "get") else array)
