"""The finishing step: one image's score sums become channel weights (the map is then the scorer's combine)."""

from __future__ import annotations

import numpy as np

from camrt.runtime.engine.scoring import softmax
from camrt.runtime.methods.base import Convention
from camrt.runtime.plan import SKIP


def channel_weights(conv: Convention, rep: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """Weights (K,) float64 from one image's score sums over samples (K,) and its plan row ``rep`` (K,).

    Duplicate channels take their representative's scores; the mean over samples is softmaxed over channels
    where the convention says so; channels the convention skips weigh 0.
    """
    k = rep.shape[0]
    scores = np.array(sums, dtype=np.float64)
    dup = np.flatnonzero((rep >= 0) & (rep != np.arange(k)))
    scores[dup] = scores[rep[dup]]
    scores /= conv.samples
    weights = softmax(scores) if conv.softmax_weights else scores
    weights[rep == SKIP] = 0.0
    return weights
