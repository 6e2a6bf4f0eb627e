"""Scorers: make a batch of masked inputs in the engine's input buffer, run the engine, add up the scores.

The window (runtime/engine/window.py) keeps images in numbered slots and hands a scorer batches of jobs
(slot, channel, sample); for the head-only methods the index is a channel or a position and
:class:`~camrt.runtime.engine.head_scorer.HeadScorer` runs the head graph on perturbed activations.
:class:`HostScorer` makes the masked inputs with the NumPy op (kernels/masks.py);
:class:`DeviceScorer` (runtime/engine/device_scorer.py) with the CUDA kernels, straight into a GPU runner's input.
Both hold each slot's image, activations, target and score sums, so the window never touches engine memory.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

import numpy as np

from camrt.kernels.masks import add_range_scaled_noise, masked_inputs
from camrt.runtime.backends.base import Runner
from camrt.runtime.combine import combine
from camrt.runtime.engine.host_threads import one_blas_thread
from camrt.runtime.engine.noise import draw, noise_buffer
from camrt.runtime.engine.scoring import finite_rows, score_rows
from camrt.runtime.methods.base import Convention
from camrt.runtime.noise import NoiseSource


class Scorer(Protocol):
    """What the window needs of a scorer; ``slots`` grows by :meth:`reserve` and never shrinks."""

    def reserve(self, slots: int) -> None:
        """Room for ``slots`` images, keeping the ones loaded."""
        ...

    def load(self, slot: int, x: np.ndarray, activations: np.ndarray, target: int, base: float) -> None:
        """Put one image (C, H, W), its activations (K, h, w), its target class and clean score into ``slot``."""
        ...

    def run(self, bi: np.ndarray, ki: np.ndarray, si: np.ndarray, noise: NoiseSource | None) -> None:
        """Score jobs (slot, channel, sample) in one engine batch; their scores add to their slots' sums."""
        ...

    def take(self, slot: int) -> tuple[np.ndarray, bool]:
        """(score sums (K,) float64, True if every logit was finite) of ``slot``, which is then cleared."""
        ...

    def combine(self, slot: int, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(saliency (H, W), native map or None) of ``slot``'s activations under ``weights``."""
        ...


class Slots:
    """Each slot's image, activations, target class, clean score, score sums and non-finite flag, as arrays of
    one array module (numpy, or cupy on a GPU) made current by :meth:`context`."""

    def __init__(self, xp: Any, shape: tuple[int, int, int], activation_shape: tuple[int, int, int],
                 jobs: int | None = None) -> None:
        self.xp = xp
        with self.context():
            self.x = xp.empty((0, *shape), xp.float32)
            self.activations = xp.empty((0, *activation_shape), xp.float32)
            self.target = xp.empty(0, xp.int32)
            self.base = xp.empty(0, xp.float64)
            self.sums = xp.empty((0, activation_shape[0] if jobs is None else jobs), xp.float64)  # per job index
            self.bad = xp.zeros(0, xp.int32)

    def context(self) -> AbstractContextManager[Any]:
        """Where the slot arrays' work is ordered (a GPU runner's stream); nothing on the host."""
        return nullcontext()

    def reserve(self, slots: int) -> None:
        with self.context():
            arrays = (self.x, self.activations, self.target, self.base, self.sums, self.bad)
            self.x, self.activations, self.target, self.base, self.sums, self.bad = (
                grown(self.xp, a, slots) for a in arrays)

    def load(self, slot: int, x: np.ndarray, activations: np.ndarray, target: int, base: float) -> None:
        xp = self.xp
        with self.context():
            self.x[slot], self.activations[slot] = xp.asarray(x), xp.asarray(activations)
            self.target[slot], self.base[slot], self.sums[slot], self.bad[slot] = target, base, 0.0, 0


class HostScorer(Slots):
    """Masked inputs made by NumPy into one reused input buffer, run on any runner."""

    def __init__(self, runner: Runner, conv: Convention, batch_size: int, shape: tuple[int, int, int],
                 activation_shape: tuple[int, int, int]) -> None:
        super().__init__(np, shape, activation_shape)
        self.runner, self.conv, self.shape = runner, conv, shape
        self.buffer = np.empty((batch_size, *shape), dtype=np.float32)
        self.mask_buffer = np.empty((batch_size, *shape[1:]), dtype=np.float32)
        self.noise = noise_buffer(conv, batch_size, shape)
        self.coefficients = np.asarray(conv.coefficients, np.float32) if conv.coefficients else None

    def run(self, bi: np.ndarray, ki: np.ndarray, si: np.ndarray, noise: NoiseSource | None) -> None:
        conv = self.conv
        drawn = None if self.noise is None else draw(noise, conv, bi, ki, si, self.noise)
        with one_blas_thread():
            view = masked_inputs(
                self.activations, self.x, bi, ki, conv.mask, self.buffer,
                scale=None if self.coefficients is None else self.coefficients[si],
                mask_noise=drawn if conv.noise == "mask" else None, mask_buffer=self.mask_buffer,
            )
            if conv.noise == "input-range" and drawn is not None:
                add_range_scaled_noise(view, drawn, conv.noise_std)
        out = np.asarray(self.runner.logits(view))
        finite = finite_rows(out)
        self.bad[bi[~finite]] = 1
        ok = np.flatnonzero(finite)
        scores = score_rows(conv.score, out[ok], self.target[bi[ok]], self.base[bi[ok]])
        np.add.at(self.sums, (bi[ok], ki[ok]), scores)

    def take(self, slot: int) -> tuple[np.ndarray, bool]:
        return self.sums[slot].copy(), not self.bad[slot]

    def combine(self, slot: int, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return combine(self.conv, self.activations[slot], weights, self.shape[1:])  # type: ignore[arg-type]


def grown(xp: Any, array: Any, rows: int) -> Any:
    """``array`` with at least ``rows`` rows, its first ones kept; ``xp`` is numpy or cupy, as ``array`` is."""
    if array.shape[0] >= rows:
        return array
    out = xp.empty((rows, *array.shape[1:]), dtype=array.dtype)
    out[: array.shape[0]] = array
    return out
