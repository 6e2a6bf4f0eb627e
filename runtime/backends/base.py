"""The small interface every backend implements (after Polygraphy's runners): features, head, logits.

Runners also close (release their sessions and device memory) and work as context managers (:class:`Closing`).
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from camrt.errors import CamrtError

_C = TypeVar("_C", bound="Closing")


@runtime_checkable
class Runner(Protocol):
    """Runs a bundle's two graphs on host arrays; GPU runners add device-buffer entry points."""

    name: str

    def features(self, images: np.ndarray) -> np.ndarray:
        """Target-layer activations (n, K, h, w) for normalised images (n, 3, H, W)."""
        ...

    def head(self, activations: np.ndarray) -> np.ndarray:
        """Logits (n, classes) for activations (n, K, h, w)."""
        ...

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Logits (n, classes) of the whole model: the call every masked input goes through."""
        ...


def close_runner(runner: Any) -> None:
    """Close ``runner`` when it can be closed; runners without ``close`` (test fakes, user objects) are left as is."""
    close = getattr(runner, "close", None)
    if callable(close):
        close()


def device_id(device: str) -> int:
    """The CUDA device index of 'cuda' or 'cuda:N'; a one-line error for anything else."""
    name, _, index = device.partition(":")
    if name != "cuda" or (index and not index.isdigit()):
        raise CamrtError(f"device: expected cpu, cuda or cuda:N, got {device!r}")
    return int(index or 0)


class Closing:
    """close() (idempotent) and ``with runner:`` for the runners; subclasses free their resources in _release()."""

    name: str
    _closed = False

    def close(self) -> None:
        """Release the sessions, engines and device memory; later calls do nothing, later runs raise."""
        if not self._closed:
            self._closed = True
            self._release()

    def _release(self) -> None:
        """Drop what the runner holds (called once, by close)."""

    def _check_open(self) -> None:
        if self._closed:
            raise CamrtError(f"backend {self.name!r}: this runner is closed; make a new one")

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def require(module: str, missing: str) -> Any:
    """``import module`` for a backend, or a one-line CamrtError ``missing`` that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise CamrtError(missing) from None
