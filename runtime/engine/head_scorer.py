"""The scorer of the head-only methods (Ablation-CAM, Recipro-CAM): perturbed activations, the head graph alone.

Jobs are (slot, index, sample) as for the Score-CAM family, the index being a channel (ablation) or a position
(Recipro-CAM). Each batch's perturbed activations are made by the NumPy op (kernels/activations.py) into one
reused head-input buffer (batch_size, K, h, w), so memory is bounded by the batch size, never K or h·w copies;
the head runs on it and the target's scores add to each slot's sums, as :class:`HostScorer` does for images.
"""

from __future__ import annotations

import numpy as np

from camrt.kernels.activations import GRADCAM_BATCH, ablation_fills, masked_activations
from camrt.runtime.backends.base import Runner
from camrt.runtime.combine import combine
from camrt.runtime.engine.scorer import Slots, grown
from camrt.runtime.engine.scoring import finite_rows, score_rows
from camrt.runtime.methods.base import Convention
from camrt.runtime.noise import NoiseSource


class HeadScorer(Slots):
    """A :class:`~camrt.runtime.engine.scorer.Scorer` whose passes run ``runner.head`` on perturbed activations."""

    def __init__(self, runner: Runner, conv: Convention, batch_size: int, shape: tuple[int, int, int],
                 activation_shape: tuple[int, int, int]) -> None:
        if conv.head is None:
            raise ValueError(f"{conv.method} runs the whole network, not the head alone")
        super().__init__(np, shape, activation_shape, conv.jobs(activation_shape))
        self.runner, self.conv, self.spec, self.shape = runner, conv, conv.head, shape
        self.activation_shape = activation_shape
        self.buffer = np.empty((batch_size, *activation_shape), dtype=np.float32)
        self.fills = np.zeros((0, GRADCAM_BATCH), np.float32)  # each slot's ablation fills (ablation_fills)
        self.period = np.ones(0, np.int64)  # channel k takes fills[slot, k % period[slot]]

    def reserve(self, slots: int) -> None:
        super().reserve(slots)
        self.fills, self.period = grown(np, self.fills, slots), grown(np, self.period, slots)

    def load(self, slot: int, x: np.ndarray, activations: np.ndarray, target: int, base: float) -> None:
        super().load(slot, x, activations, target, base)
        if self.spec.op == "ablate":
            fills = ablation_fills(self.spec, activations)
            self.fills[slot, : fills.size], self.period[slot] = fills, fills.size

    def run(self, bi: np.ndarray, ki: np.ndarray, si: np.ndarray, noise: NoiseSource | None) -> None:
        fill = self.fills[bi, ki % self.period[bi]] if self.spec.op == "ablate" else None
        view = masked_activations(self.activations, bi, ki, self.spec, self.buffer, fill)
        out = np.asarray(self.runner.head(view))
        finite = finite_rows(out)
        self.bad[bi[~finite]] = 1
        ok = np.flatnonzero(finite)
        scores = score_rows(self.conv.score, out[ok], self.target[bi[ok]], self.base[bi[ok]])
        np.add.at(self.sums, (bi[ok], ki[ok]), scores)

    def take(self, slot: int) -> tuple[np.ndarray, bool]:
        return self.sums[slot].copy(), not self.bad[slot]

    def combine(self, slot: int, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Ablation: the channel weights combined as the convention says; Recipro-CAM: ``weights`` is its h·w
        score map, combined as one channel of weight 1."""
        size = self.shape[1:]
        if self.spec.op == "keep":
            scores = np.asarray(weights, np.float64).reshape(1, *self.activation_shape[1:])
            return combine(self.conv, scores, np.ones(1), size)  # type: ignore[arg-type]
        return combine(self.conv, self.activations[slot], weights, size)  # type: ignore[arg-type]
