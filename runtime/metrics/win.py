"""Win % across methods: ScoreCAM++'s multi-way rule and Grad-CAM++'s pairwise comparison, from O per image."""

from __future__ import annotations

import numpy as np


def win_multiway(o: np.ndarray) -> np.ndarray:
    """% of images each method wins: the largest O among those compared (strict >, the first method wins ties).

    o (M, N): score on each method's explanation map per image. The percentages sum to 100.
    """
    o = np.asarray(o, dtype=np.float64)
    if o.size == 0:
        return np.zeros(o.shape[0])
    winners = np.argmax(o, axis=0)  # argmax returns the first maximum: the first method listed wins a tie
    return 100.0 * np.bincount(winners, minlength=o.shape[0]) / o.shape[1]


def win_pairwise(o: np.ndarray) -> np.ndarray:
    """(M, M): % of images where method a's O is strictly larger than method b's (the diagonal is 0)."""
    o = np.asarray(o, dtype=np.float64)
    if o.shape[1] == 0:
        return np.zeros((o.shape[0], o.shape[0]))
    return 100.0 * (o[:, None, :] > o[None, :, :]).mean(axis=2)
