"""Average Drop and Increase in Confidence (Grad-CAM++, arXiv 1710.11063) in the variants the papers disagree on.

Y is the target's score on the image X, O its score on the explanation map E = L ⊙ X. Variants name the score
(softmax probability or logit) and how much of the saliency L is kept in E (the whole map, or only its top p %
of pixels as the Score-CAM paper does, 50 %). Per image: drop = max(0, Y - O) / Y, increase = 1[Y < O].
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from camrt.errors import InputError
from camrt.runtime.backends.base import Runner
from camrt.runtime.metrics.scoring import Progress, score_jobs

ScoreKind = Literal["prob", "logit"]
_NAME = re.compile(r"^(prob|logit)-(full|top(\d+(?:\.\d+)?))$")


@dataclass(frozen=True)
class ConfidenceVariant:
    """score: the target's softmax probability or logit; keep: fraction of top saliency pixels kept (None: all)."""

    score: ScoreKind = "prob"
    keep: float | None = None

    @property
    def name(self) -> str:
        """``prob-full``, ``prob-top50``, ``logit-full``, ...: the spelling the CLI and the tables use."""
        return f"{self.score}-" + ("full" if self.keep is None else f"top{_percent(self.keep)}")

    @property
    def description(self) -> str:
        """The variant in words, for the tables."""
        score = "softmax probability" if self.score == "prob" else "logit"
        kept = "E = L ⊙ X" if self.keep is None else f"E = (L on its top {_percent(self.keep)} % of pixels, else 0) ⊙ X"
        return f"{score}, {kept}"


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g}"


# The variants the papers and peers use: Grad-CAM++ / torchcam's eval script, the Score-CAM paper, ScoreCAM++'s code.
DEFAULT_VARIANTS = ("prob-full", "prob-top50", "logit-full")


def parse_variant(text: str) -> ConfidenceVariant:
    """``prob-full`` / ``logit-top50`` / ... as a ConfidenceVariant; a one-line error names the bad spelling."""
    match = _NAME.match(text.strip().lower())
    if not match:
        raise InputError(f"confidence variant: expected prob-full, prob-topP, logit-full or logit-topP, got {text!r}")
    keep = None if match.group(2) == "full" else float(match.group(3)) / 100
    if keep is not None and not 0 < keep <= 1:
        raise InputError(f"confidence variant: top P must be in (0, 100], got {text!r}")
    return ConfidenceVariant(match.group(1), keep)  # type: ignore[arg-type]


def top_mask(saliency: np.ndarray, keep: float) -> np.ndarray:
    """Boolean (H, W): the ceil(keep * H * W) most salient pixels (ties: the earlier pixel in row-major order)."""
    flat = np.asarray(saliency).reshape(-1)
    count = min(flat.size, math.ceil(keep * flat.size - 1e-9))
    order = np.argsort(-flat.astype(np.float64), kind="stable")
    mask = np.zeros(flat.size, dtype=bool)
    mask[order[:count]] = True
    return mask.reshape(np.shape(saliency))


def explanation_map(image: np.ndarray, saliency: np.ndarray, keep: float | None = None,
                    out: np.ndarray | None = None) -> np.ndarray:
    """E = L ⊙ X for one image (C, H, W) and its saliency (H, W); with keep, L is zeroed outside its top pixels."""
    weights = np.asarray(saliency, dtype=np.float32)
    if keep is not None:
        weights = np.where(top_mask(weights, keep), weights, np.float32(0))
    return np.multiply(image, weights[None], out=out)


def average_drop(y: np.ndarray, o: np.ndarray, eps: float = 0.0) -> np.ndarray:
    """Per-image drop in percent, 100 * max(0, Y - O) / (Y + eps); torchcam divides by Y + 1e-7.

    NaN where Y + eps <= 0 (a negative logit): the drop relative to it has no meaning, and the means skip it.
    """
    y, o = np.asarray(y, np.float64), np.asarray(o, np.float64)
    denominator = y + eps
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, 100.0 * np.maximum(y - o, 0.0) / denominator, np.nan)


def increase_in_confidence(y: np.ndarray, o: np.ndarray) -> np.ndarray:
    """Per-image increase in percent, 100 * 1[Y < O] (strict, as torchcam and pytorch-grad-cam)."""
    return 100.0 * (np.asarray(y, np.float64) < np.asarray(o, np.float64))


def drop_in_confidence(y: np.ndarray, o: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's DropInConfidence: max(0, Y - O), not divided by Y."""
    return np.maximum(np.asarray(y, np.float64) - np.asarray(o, np.float64), 0.0)


def explanation_scores(
    runner: Runner,
    x: np.ndarray,
    saliency: np.ndarray,
    classes: np.ndarray,
    keeps: Sequence[float | None] = (None,),
    batch_size: int = 64,
    progress: Progress | None = None,
) -> dict[float | None, tuple[np.ndarray, np.ndarray]]:
    """O for every map: {keep: (logit, probability)}, each (M, N), of classes[n] on E(x[n], saliency[m, n], keep).

    x (N, C, H, W) preprocessed images; saliency (M, N, H, W), M methods. One pass per (method, image, keep).
    """
    m, n = saliency.shape[:2]
    keeps = list(dict.fromkeys(keeps))
    per_keep = m * n

    def fill(buffer: np.ndarray, start: int, stop: int) -> None:
        for j, job in enumerate(range(start, stop)):
            k, rest = divmod(job, per_keep)
            mi, b = divmod(rest, n)
            explanation_map(x[b], saliency[mi, b], keeps[k], out=buffer[j])

    job_classes = np.tile(np.asarray(classes), m * len(keeps))
    logit, prob = score_jobs(runner, per_keep * len(keeps), fill, x.shape[1:], job_classes, batch_size, progress)
    return {keep: (logit[i * per_keep:(i + 1) * per_keep].reshape(m, n), prob[i * per_keep:(i + 1) * per_keep]
                   .reshape(m, n)) for i, keep in enumerate(keeps)}
