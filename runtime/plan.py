"""Which masked inputs must really be run: exact pass saving (work that cannot change a result is not done).

Per image and channel: skip (constant channel where the convention skips it), zero (the mask is all zeros,
so the masked input is the zero image for every image, channel and sample: one pass serves them all), or a
representative channel (bit-identical activations give identical masks and scores: one pass per group).

Head-only methods (Ablation-CAM, Recipro-CAM) plan their jobs here too: a channel ablated to the value it already
holds everywhere (an all-zero channel set to 0) leaves the activations as they are, so its score is the clean
score (CLEAN: no pass); a position whose channel vector is all zero gives the all-zero activations for every image
(ZERO: the head on zeros, one pass per run).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from camrt.kernels.activations import ablation_fills
from camrt.runtime.methods.base import Convention

SKIP, ZERO, CLEAN = -1, -2, -3


@dataclass
class Plan:
    """Which channels of each image must be run, and how their scores map back to all channels.

    The engine loop (runtime/engine/window.py) queues the jobs (image, sample, channel) of these channels a batch at
    a time, never listing them whole: memory stays O(N x K).
    """

    rep: np.ndarray  # (N, J) representative job (channel, or position for Recipro-CAM), or SKIP / ZERO / CLEAN
    unique: list[np.ndarray]  # per image: the channels that need passes
    samples: int

    @property
    def jobs(self) -> int:
        return sum(u.size for u in self.unique) * self.samples

    @property
    def needs_zero_pass(self) -> bool:
        return bool((self.rep == ZERO).any())

    @property
    def nominal_passes(self) -> int:
        """Masked-input passes the reference implementation runs (it runs none for the channels it skips)."""
        return int((self.rep != SKIP).sum()) * self.samples


def plan_jobs(activations: np.ndarray, conv: Convention, save_passes: bool = True) -> Plan:
    """Decide, for activations (N, K, h, w) under ``conv``, which channels need passes.

    save_passes=False runs every pass the reference runs (for benchmarks); the convention's own skipping of
    constant channels stays, since the reference does not run those either.
    """
    if conv.head is not None:
        return _plan_head(activations, conv, save_passes)
    n, k = activations.shape[:2]
    flat = np.ascontiguousarray(activations.reshape(n, k, -1))
    rep = np.empty((n, k), dtype=np.int64)
    unique = []
    for b in range(n):
        rows = flat[b]
        constant = rows.max(axis=1) == rows.min(axis=1)
        rep[b] = np.arange(k)
        if conv.skip_constant:
            rep[b, constant] = SKIP
        elif save_passes and not conv.noisy:
            if conv.mask.normalize == "minmax":
                rep[b, constant] = ZERO  # min-max maps any constant channel to the zero mask
            elif conv.zero_mask_skippable:
                rep[b, constant & (rows[:, 0] == 0)] = ZERO  # gate(0) == 0
        live = np.flatnonzero(rep[b] >= 0)
        if save_passes and not conv.noisy and live.size > 1:
            keys = rows[live].view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
            _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
            rep[b, live] = live[first[inverse.ravel()]]
        unique.append(np.flatnonzero(rep[b] == np.arange(k)))
    return Plan(rep=rep, unique=unique, samples=conv.samples)


def _plan_head(activations: np.ndarray, conv: Convention, save_passes: bool) -> Plan:
    """Jobs of a head-only method: channels (ablation) or positions (Recipro-CAM), less those whose perturbed
    activations are known without a pass (CLEAN, ZERO) when ``save_passes``."""
    assert conv.head is not None
    n = activations.shape[0]
    jobs = conv.jobs(activations.shape[1:])
    rep = np.tile(np.arange(jobs, dtype=np.int64), (n, 1))
    if save_passes:
        for b in range(n):
            a = activations[b]
            if conv.head.op == "ablate":
                fills = ablation_fills(conv.head, a)
                fill = fills[np.arange(jobs) % fills.size]
                rep[b, (a == fill[:, None, None]).all(axis=(1, 2))] = CLEAN
            else:
                rep[b, ~a.reshape(a.shape[0], -1).any(axis=0)] = ZERO
    unique = [np.flatnonzero(rep[b] == np.arange(jobs)) for b in range(n)]
    return Plan(rep=rep, unique=unique, samples=conv.samples)
