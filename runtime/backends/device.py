"""What a device runner adds to :class:`Runner`: an input buffer on the device and logits that stay there.

The engine loop's device scorer (runtime/engine/device_scorer.py) writes each batch of masked inputs with the
CUDA kernels straight into ``input_buffer``, runs ``run_logits`` and accumulates the scores on the device, all on
the runner's one stream: nothing comes back to the host until an image's weights are complete.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol, runtime_checkable

import numpy as np

from camrt.errors import CamrtError
from camrt.kernels.gpu import CudaKernels
from camrt.runtime.backends.base import Closing, device_id
from camrt.runtime.bundle import ACTIVATIONS, IMAGE, LOGITS


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


class EngineBuffers(Closing):
    """Device buffers and host entry points shared by the GPU engine runners (ONNX Runtime GPU, TensorRT).

    One float32 buffer per tensor (image, activations, logits) sized for the largest batch seen, on the
    runner's stream; subclasses say how one graph runs on them (:meth:`_enqueue`).
    """

    cupy: Any
    stream: Any
    device_id: int = 0  # the GPU the stream and buffers belong to
    max_batch: int | None = None  # an engine's profile limit, where it has one

    def _init_buffers(self, bundle: Any) -> None:
        m = bundle.manifest
        self._shapes = {IMAGE: tuple(m.input_shape), ACTIVATIONS: tuple(m.activation_shape), LOGITS: (m.num_classes,)}
        self._buffers: dict[str, Any] = {}
        self._rows = 0

    @classmethod
    def create(cls, bundle: Any, device: str = "cuda", **options: Any) -> Any:
        """The registry's factory: the runner on 'cuda' or 'cuda:N'."""
        return cls(bundle, device_id=device_id(device), **options)  # type: ignore[call-arg]

    def _release(self) -> None:
        """Wait for queued work, then drop the engines, the device buffers (back to CuPy's pool) and the stream."""
        stream = getattr(self, "stream", None)
        if stream is not None:
            stream.synchronize()
        self._drop_engines()
        self._buffers = {}
        self._rows = 0
        self.stream = None

    def _drop_engines(self) -> None:
        """Drop the engines or sessions (after the stream is idle, before the buffers they were bound to)."""

    def _enqueue(self, graph: str, src: str, dst: str, n: int, for_host: bool) -> None:
        """Run ``graph`` on buffers[src][:n] into buffers[dst][:n], in stream order (for_host: the clean pass)."""
        raise NotImplementedError

    def input_buffer(self, rows: int) -> Any:
        self._check_open()
        if self.max_batch is not None and rows > self.max_batch:
            raise CamrtError(f"batch size {rows} exceeds the TensorRT engine's profile maximum {self.max_batch}; "
                             f"use --batch-size {self.max_batch} or less (native TensorRT: or export its engines "
                             "with a larger --max-batch)")
        if rows > self._rows:
            with self.stream_context():
                self._buffers = {name: self.cupy.empty((rows, *shape), dtype=self.cupy.float32)
                                 for name, shape in self._shapes.items()}
            self._rows = rows
        return self._buffers[IMAGE][:rows]

    def run_logits(self, n: int) -> Any:
        self._check_open()
        self._enqueue("features", IMAGE, ACTIVATIONS, n, for_host=False)
        self._enqueue("head", ACTIVATIONS, LOGITS, n, for_host=False)
        return self._buffers[LOGITS][:n]

    @contextmanager
    def stream_context(self) -> Iterator[Any]:
        """The runner's GPU current for CuPy (cuda:N), then its stream."""
        with self.cupy.cuda.Device(self.device_id), self.stream:
            yield self.stream

    def _host(self, graph: str, src: str, dst: str, array: np.ndarray) -> np.ndarray:
        """One graph on host input: copy in, run, copy out, wait (the clean pass, not the masked inputs)."""
        n = array.shape[0]
        self.input_buffer(n)
        with self.stream_context():
            self._buffers[src][:n].set(np.ascontiguousarray(array, dtype=np.float32), stream=self.stream)
            self._enqueue(graph, src, dst, n, for_host=True)
            out = self._buffers[dst][:n].get(stream=self.stream)
        self.stream.synchronize()
        return np.asarray(out)

    def features(self, images: np.ndarray) -> np.ndarray:
        return self._host("features", IMAGE, ACTIVATIONS, images)

    def head(self, activations: np.ndarray) -> np.ndarray:
        return self._host("head", ACTIVATIONS, LOGITS, activations)

    def logits(self, images: np.ndarray) -> np.ndarray:
        return self.head(self.features(images))
