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
from typing import Any, Literal, NamedTuple

import numpy as np

from camrt.errors import InputError
from camrt.runtime.backends.base import Runner
from camrt.runtime.metrics.base import MetricBatch, MetricCache, SummaryRows, Values, mean, summary_row
from camrt.runtime.metrics.scoring import Progress, class_scores, score_jobs
from camrt.runtime.metrics.win import win_multiway, win_pairwise

NAME = "confidence"

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


# ---------------------------------------------------------------------------------------------- the family
class ConfidenceValues(NamedTuple):
    """One variant on N images and M methods' maps: Y (N,) on the images, O (M, N) on the explanation maps."""

    variant: ConfidenceVariant
    y: np.ndarray
    o: np.ndarray


def variants(names: Sequence[str], step: int | None = None) -> list[ConfidenceVariant]:
    """The variants named, once each (``step`` belongs to the causal family and is ignored)."""
    return list({v.name: v for v in map(parse_variant, names)}.values())


def measure(cache: MetricCache, batch: MetricBatch,
            variants: Sequence[ConfidenceVariant]) -> dict[str, ConfidenceValues]:
    """Y and O of every variant; one pass per (method, image, distinct kept fraction)."""
    if not variants:
        return {}
    m, n = batch.saliency.shape[:2]
    with cache.timed(NAME):
        scores = explanation_scores(cache.runner, batch.x, batch.saliency, batch.targets, [v.keep for v in variants],
                                    cache.batch_size)
    cache.count(NAME, len(scores) * m * n)
    clean_logit, clean_prob = class_scores(batch.logits, batch.targets)
    out = {}
    for v in variants:
        o_logit, o_prob = scores[v.keep]
        out[v.name] = ConfidenceValues(v, clean_prob if v.score == "prob" else clean_logit,
                                       o_prob if v.score == "prob" else o_logit)
    return out


def columns(results: dict[str, ConfidenceValues]) -> dict[str, np.ndarray]:
    """Per variant: O, Average Drop %, Increase in Confidence % and pytorch-grad-cam's undivided change O - Y."""
    out = {}
    for name, (_, y, o) in results.items():
        out[f"o_{name}"] = o
        out[f"average_drop_{name}"] = average_drop(y[None], o)
        out[f"increase_{name}"] = increase_in_confidence(y[None], o)
        out[f"change_{name}"] = np.asarray(o, np.float64) - np.asarray(y, np.float64)[None]
    return out


def curves(results: dict[str, ConfidenceValues]) -> dict[str, np.ndarray]:
    """No curves in this family."""
    return {}


def summarize(variants: Sequence[ConfidenceVariant], values: Values, labels: Sequence[str], pixels: int) -> SummaryRows:
    """Average Drop, Increase in Confidence and multi-way Win % rows per variant; the pairwise Win % table."""
    rows: list[dict[str, Any]] = []
    pairwise: dict[str, dict[str, dict[str, float]]] = {}
    for v in variants:
        o, drop, increase = (values(f"{column}_{v.name}") for column in ("o", "average_drop", "increase"))
        if o.shape[1] == 0:
            continue
        rows += [
            summary_row("Average Drop %", v.name, v.description, "lower", labels, [mean(d) for d in drop],
                        skipped=[int(np.isnan(d).sum()) for d in drop]),
            summary_row("Increase in Confidence %", v.name, v.description, "higher", labels,
                        [mean(i) for i in increase]),
            summary_row("Win % (multi-way)", v.name, "each image to the method with the largest O (first wins ties)",
                        "higher", labels, [float(w) for w in win_multiway(o)]),
        ]
        table = win_pairwise(o)
        pairwise[v.name] = {a: {b: float(table[i, j]) for j, b in enumerate(labels) if j != i}
                            for i, a in enumerate(labels)}
    return rows, {"pairwise_win": pairwise}
