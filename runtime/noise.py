"""Noise for SS-CAM: standard normals keyed by (image, sample, channel), so results never depend on batching."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class NoiseSource(Protocol):
    """Gives the standard-normal draw z for one masked input; the method scales it."""

    def normal(self, image: int, sample: int, channel: int, shape: tuple[int, ...]) -> np.ndarray: ...


class SeededNoise:
    """Counter-based: z for (image, sample, channel) comes from its own PCG64 stream seeded by (seed, ...)."""

    def __init__(self, seed: int | None = None) -> None:
        self.seed = int(np.random.default_rng().integers(2**63)) if seed is None else int(seed)

    def normal(self, image: int, sample: int, channel: int, shape: tuple[int, ...]) -> np.ndarray:
        rng = np.random.default_rng([self.seed, image, sample, channel])
        return rng.standard_normal(shape, dtype=np.float32)


class ArrayNoise:
    """Replays given draws z[image, sample, channel] (arrays of the right shape): for parity with references."""

    def __init__(self, draws: np.ndarray) -> None:
        self.draws = draws

    def normal(self, image: int, sample: int, channel: int, shape: tuple[int, ...]) -> np.ndarray:
        return np.asarray(self.draws[image, sample, channel], dtype=np.float32).reshape(shape)


class RemappedNoise:
    """``source``'s draws under other image numbers: image b draws as ``ids[b]`` (read at each call, so the ids
    may change). A dataset stream keys SS-CAM's noise by each image's place in the dataset, not by its slot."""

    def __init__(self, source: NoiseSource, ids: np.ndarray) -> None:
        self.source, self.ids = source, ids
        self.seed = getattr(source, "seed", None)

    def normal(self, image: int, sample: int, channel: int, shape: tuple[int, ...]) -> np.ndarray:
        return self.source.normal(int(self.ids[image]), sample, channel, shape)
