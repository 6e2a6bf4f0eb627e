"""How close a configuration's explanations are to the reference's on the same images and targets: per image the
Pearson r of the maps, the IoU of their 20 % most salient pixels, the Spearman rank correlation of the channel
weights, and whether the predicted class is the same."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

TOP = 0.2  # the share of most salient pixels whose overlap is measured


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two arrays (float64); 1 for two equal constant arrays, NaN when only one is constant."""
    x = np.asarray(a, np.float64).ravel()
    y = np.asarray(b, np.float64).ravel()
    x, y = x - x.mean(), y - y.mean()
    scale = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    if scale == 0.0:
        return 1.0 if np.array_equal(np.asarray(a), np.asarray(b)) else math.nan
    return float(np.clip((x * y).sum() / scale, -1.0, 1.0))


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of ``values``, ties sharing their mean rank (what Spearman's correlation ranks)."""
    v = np.asarray(values).ravel()
    order = np.empty(v.size, np.float64)
    order[np.argsort(v, kind="stable")] = np.arange(v.size, dtype=np.float64)
    _, tie, counts = np.unique(v, return_inverse=True, return_counts=True)
    return (np.bincount(tie, weights=order) / counts)[tie]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson r of the ranks (ties averaged)."""
    return pearson(ranks(a), ranks(b))


def top_iou(a: np.ndarray, b: np.ndarray, share: float = TOP) -> float:
    """IoU of the ``share`` most salient pixels of two maps (ties broken by pixel order, the same way for both)."""
    k = max(1, int(round(share * a.size)))
    first = np.argsort(-np.asarray(a).ravel(), kind="stable")[:k]
    second = np.argsort(-np.asarray(b).ravel(), kind="stable")[:k]
    common = np.intersect1d(first, second, assume_unique=True).size
    return common / (2 * k - common)


def compare(reference: Any, other: Any) -> dict[str, np.ndarray]:
    """Per image (N,): map r, top-20 % IoU, weights' Spearman rho and class agreement of two Explanations."""
    n = reference.saliency.shape[0]
    return {
        "map_r": np.array([pearson(reference.saliency[i], other.saliency[i]) for i in range(n)]),
        "top20_iou": np.array([top_iou(reference.saliency[i], other.saliency[i]) for i in range(n)]),
        "weights_spearman": np.array([spearman(reference.weights[i], other.weights[i]) for i in range(n)]),
        "same_class": reference.logits.argmax(axis=1) == other.logits.argmax(axis=1),
    }


def summary(values: np.ndarray) -> dict[str, Any]:
    """Mean and min over the images with a value (None where none has one), and the per-image values."""
    finite = values[np.isfinite(values)]
    return {"mean": float(finite.mean()) if finite.size else None, "min": float(finite.min()) if finite.size else None,
            "per_image": [float(v) if math.isfinite(v) else None for v in values]}
