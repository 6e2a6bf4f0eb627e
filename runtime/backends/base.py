"""The small interface every backend implements (after Polygraphy's runners): features, head, logits."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


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
