"""Deletion and insertion curves and their AUC (RISE, Petsiuk et al., BMVC 2018; eclique/RISE evaluation.py).

Pixels are ranked by saliency (most salient first; ties: the earlier pixel in row-major order). Deletion replaces
them, all channels at once, with zeros step by step; insertion starts from a substrate (RISE: a Gaussian blur,
kernel 11, sigma 5) and copies original pixels in. The score is the probability of the class predicted on X.
Variants: ``rise`` (``step`` pixels per step, AUC = (sum s - s_0/2 - s_n/2) / n) and ``torchcam`` (0.5.0
DeletionInsertionMetric: 20 intervals, a zero baseline for both curves, trapezoid over the perturbed fraction).
Passes shared exactly: s_0 of deletion and s_n of insertion are the clean image's scores; the all-zero image is
one pass for every image and method; the blurred image is one pass per image for every method.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np

from camrt.errors import InputError
from camrt.runtime.backends.base import Runner
from camrt.runtime.metrics.base import MetricBatch, MetricCache, SummaryRows, Values, mean, summary_row
from camrt.runtime.metrics.scoring import Progress, class_scores, score_jobs

NAME = "causal"
CURVES = ("deletion", "insertion")

Substrate = Literal["blur", "zeros"]
Auc = Literal["rise", "trapezoid"]
RISE_STEPS_AT_224 = 28  # RISE's batch evaluation: 1792 pixels per step at 224 x 224


@dataclass(frozen=True)
class CausalVariant:
    """How the curves are sampled and integrated; see the module docstring."""

    name: str
    step: int | None = None  # pixels per step (RISE); None: H * W / 28, rounded up
    steps: int | None = None  # number of intervals (torchcam); step = ceil(H * W / steps)
    insertion_start: Substrate = "blur"
    auc: Auc = "rise"
    score: Literal["prob", "logit"] = "prob"
    blur_kernel: int = 11
    blur_sigma: float = 5.0

    def counts(self, pixels: int) -> np.ndarray:
        """Pixels perturbed at each point of the curve, from 0 to all of them."""
        if self.steps is not None:
            step = -(-pixels // self.steps)
            return np.array([*range(0, pixels, step), pixels], dtype=np.int64)
        step = self.step if self.step is not None else -(-pixels // RISE_STEPS_AT_224)
        n = -(-pixels // step)
        return np.minimum(np.arange(n + 1, dtype=np.int64) * step, pixels)

    def x_axis(self, pixels: int) -> np.ndarray:
        """The curve's abscissa: step i / n for RISE, the perturbed fraction for the trapezoid variant."""
        counts = self.counts(pixels)
        if self.auc == "rise":
            return np.arange(counts.size, dtype=np.float64) / (counts.size - 1)
        return counts / float(pixels)

    def area(self, curves: np.ndarray, pixels: int) -> np.ndarray:
        """AUC of curves (..., n + 1) in this variant's formula."""
        s = np.asarray(curves, dtype=np.float64)
        if self.auc == "rise":
            return rise_auc(s)
        return trapezoid_auc(s, self.x_axis(pixels))

    @property
    def description(self) -> str:
        """The variant in words, for the tables."""
        if self.steps is not None:
            sampling = f"{self.steps} intervals"
        else:
            sampling = f"{self.step} pixels per step" if self.step else "H·W/28 pixels per step (1792 at 224²)"
        start = "a Gaussian blur (k=11, σ=5)" if self.insertion_start == "blur" else "zeros"
        auc = "(Σs − s₀/2 − sₙ/2)/n" if self.auc == "rise" else "trapezoid over the perturbed fraction"
        return f"{self.score} of the predicted class, {sampling}, deletion to zeros, insertion from {start}, AUC {auc}"


def rise_variant(step: int | None = None) -> CausalVariant:
    """RISE's CausalMetric: ``step`` pixels per step (default H·W/28), deletion to zeros, insertion from a blur."""
    if step is not None and step < 1:
        raise InputError(f"step: must be a positive number of pixels, got {step}")
    return CausalVariant("rise", step=step)


def torchcam_variant(steps: int = 20) -> CausalVariant:
    """torchcam 0.5.0 DeletionInsertionMetric's defaults: 20 intervals, zero baseline, trapezoid."""
    if steps < 1:
        raise InputError(f"steps: must be positive, got {steps}")
    return CausalVariant("torchcam", steps=steps, insertion_start="zeros", auc="trapezoid")


def get_variant(name: str, step: int | None = None) -> CausalVariant:
    """``rise`` or ``torchcam`` by name (``step`` applies to rise)."""
    if name == "rise":
        return rise_variant(step)
    if name == "torchcam":
        return torchcam_variant()
    raise InputError(f"causal variant: expected rise or torchcam, got {name!r}")


def rise_auc(scores: np.ndarray) -> np.ndarray:
    """RISE's normalised area: (sum - first/2 - last/2) / (n - 1) over the last axis."""
    s = np.asarray(scores, dtype=np.float64)
    return (s.sum(axis=-1) - s[..., 0] / 2 - s[..., -1] / 2) / (s.shape[-1] - 1)


def trapezoid_auc(scores: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The trapezoid rule over the last axis against abscissae x (torch.trapezoid)."""
    s = np.asarray(scores, dtype=np.float64)
    dx = np.diff(np.asarray(x, dtype=np.float64))
    return ((s[..., 1:] + s[..., :-1]) * dx).sum(axis=-1) / 2


def gaussian_kernel_1d(size: int = 11, sigma: float = 5.0, truncate: float = 4.0) -> np.ndarray:
    """RISE's gkern, one axis: scipy.ndimage.gaussian_filter of a centred delta (mode 'reflect', truncate 4)."""
    radius = int(truncate * sigma + 0.5)
    taps = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (taps / sigma) ** 2)
    weights /= weights.sum()
    period = 2 * size
    kernel = np.zeros(size, dtype=np.float64)
    for i in range(size):
        index = np.mod(i + taps.astype(np.int64), period)
        index = np.where(index >= size, period - 1 - index, index)  # reflect: d c b a | a b c d | d c b a
        kernel[i] = weights[index == size // 2].sum()
    return kernel


def blur(images: np.ndarray, size: int = 11, sigma: float = 5.0) -> np.ndarray:
    """RISE's substrate: each channel convolved with its gkern(size, sigma), zero padding, same size (float32)."""
    k = gaussian_kernel_1d(size, sigma)
    pad = size // 2
    x = np.asarray(images, dtype=np.float64)
    height, width = x.shape[-2:]
    padded = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(pad, pad), (pad, pad)])
    rows = sum(k[t] * padded[..., t:t + height, :] for t in range(size))
    out = sum(k[t] * rows[..., :, t:t + width] for t in range(size))
    return np.asarray(out, dtype=np.float32)


def saliency_ranks(saliency: np.ndarray) -> np.ndarray:
    """Rank of every pixel (0: the most salient) of maps (..., H, W), flattened to (..., H * W) int32."""
    flat = np.asarray(saliency, dtype=np.float64).reshape(*np.shape(saliency)[:-2], -1)
    order = np.argsort(-flat, axis=-1, kind="stable")
    ranks = np.empty(order.shape, dtype=np.int32)
    positions = np.broadcast_to(np.arange(flat.shape[-1], dtype=np.int32), order.shape)
    np.put_along_axis(ranks, order, positions, axis=-1)
    return ranks


class Blurred(NamedTuple):
    """RISE's substrate of N images, (N, C, H, W), and the (logit, probability) of each one's class on it."""

    images: np.ndarray
    scores: tuple[np.ndarray, np.ndarray]


def blurred_scores(runner: Runner, x: np.ndarray, classes: np.ndarray, size: int = 11, sigma: float = 5.0,
                   batch_size: int = 64) -> Blurred:
    """Blur every image and score ``classes`` on it: one pass per image, shared by every method and curve."""
    images = blur(x, size, sigma)

    def fill(buffer: np.ndarray, first: int, stop: int) -> None:
        buffer[...] = images[first:stop]

    return Blurred(images, score_jobs(runner, x.shape[0], fill, x.shape[1:], classes, batch_size))


@dataclass
class CausalCurves:
    """Deletion and insertion curves (M, N, n + 1) of M methods on N images, their AUCs (M, N), and passes run."""

    variant: CausalVariant
    x: np.ndarray  # (n + 1,) abscissa
    deletion: np.ndarray
    insertion: np.ndarray
    deletion_auc: np.ndarray
    insertion_auc: np.ndarray
    passes: int


def causal_curves(
    runner: Runner,
    x: np.ndarray,
    saliency: np.ndarray,
    clean_logits: np.ndarray,
    variant: CausalVariant | None = None,
    batch_size: int = 64,
    progress: Progress | None = None,
    zero_logits: np.ndarray | None = None,
    blurred: Blurred | None = None,
) -> CausalCurves:
    """Deletion and insertion curves of every map, all perturbed images batched across methods and images.

    x (N, C, H, W) preprocessed images; saliency (M, N, H, W); clean_logits (N, classes) of x, whose argmax is
    the class scored (the class predicted on the clean image, as RISE does). zero_logits (classes,) and blurred
    (:func:`blurred_scores` of x): what the caller has scored already; their passes are not counted here.
    """
    variant = variant or rise_variant()
    m, n = saliency.shape[:2]
    c, height, width = x.shape[1:]
    pixels = height * width
    counts = variant.counts(pixels)
    points = counts.size
    interior = points - 2
    classes = np.asarray(clean_logits).argmax(axis=1)
    pick = 0 if variant.score == "logit" else 1
    clean = class_scores(np.asarray(clean_logits), classes)[pick]
    passes = 0
    if zero_logits is None:
        zero_logits = np.asarray(runner.logits(np.zeros((1, c, height, width), np.float32)))[0]
        passes += 1
    zero = class_scores(np.repeat(np.asarray(zero_logits)[None], n, 0), classes)[pick]
    deletion = np.empty((m, n, points))
    insertion = np.empty((m, n, points))
    deletion[..., 0], deletion[..., -1], insertion[..., -1] = clean, zero, clean
    substrate = None
    start = zero
    if variant.insertion_start == "blur":  # the blurred image starts insertion for every method: one pass per image
        if blurred is None:
            blurred = blurred_scores(runner, x, classes, variant.blur_kernel, variant.blur_sigma, batch_size)
            passes += n
        substrate, start = blurred.images, blurred.scores[pick]
    insertion[..., 0] = start
    ranks = saliency_ranks(saliency)  # (M, N, H * W)
    per_map = 2 * interior
    flat_x = x.reshape(n, c, pixels)
    flat_sub = None if substrate is None else substrate.reshape(n, c, pixels)

    def fill(buffer: np.ndarray, start_job: int, stop_job: int) -> None:
        flat_buffer = buffer.reshape(buffer.shape[0], c, pixels)
        for j, job in enumerate(range(start_job, stop_job)):
            mb, r = divmod(job, per_map)
            mi, b = divmod(mb, n)
            curve, point = divmod(r, interior)
            changed = ranks[mi, b] < counts[point + 1]
            if curve == 0:  # deletion: the changed pixels are zeros
                np.multiply(flat_x[b], ~changed, out=flat_buffer[j])
            elif flat_sub is None:  # insertion from zeros: the changed pixels are the original ones
                np.multiply(flat_x[b], changed, out=flat_buffer[j])
            else:  # insertion from the blur: the changed pixels are the original ones
                np.copyto(flat_buffer[j], flat_sub[b])
                np.copyto(flat_buffer[j], flat_x[b], where=changed)

    if interior > 0:
        job_classes = np.tile(np.repeat(classes, per_map), m)
        scores = score_jobs(runner, m * n * per_map, fill, x.shape[1:], job_classes, batch_size, progress)[pick]
        scores = scores.reshape(m, n, 2, interior)
        deletion[..., 1:-1] = scores[:, :, 0]
        insertion[..., 1:-1] = scores[:, :, 1]
        passes += m * n * per_map
    return CausalCurves(
        variant=variant, x=variant.x_axis(pixels), deletion=deletion, insertion=insertion,
        deletion_auc=variant.area(deletion, pixels), insertion_auc=variant.area(insertion, pixels), passes=passes,
    )


# ---------------------------------------------------------------------------------------------- the family
def variants(names: Sequence[str], step: int | None = None) -> list[CausalVariant]:
    """The variants named, once each; ``step`` is RISE's pixels per step."""
    return [get_variant(name, step) for name in dict.fromkeys(names)]


def measure(cache: MetricCache, batch: MetricBatch, variants: Sequence[CausalVariant]) -> dict[str, CausalCurves]:
    """Every variant's curves; the zero image comes from the run's cache, the blurred images from the batch's."""
    out = {}
    n = batch.x.shape[0]
    classes = np.asarray(batch.logits).argmax(axis=1)
    for v in variants:
        key = f"{NAME}:{v.name}"
        with cache.timed(key):
            zero = cache.zero_logits(batch.x.shape[1:])
            blurred = None
            if v.insertion_start == "blur":
                def compute(size: int = v.blur_kernel, sigma: float = v.blur_sigma) -> Blurred:
                    cache.count("blurred image", n)
                    return blurred_scores(cache.runner, batch.x, classes, size, sigma, cache.batch_size)

                blurred = cache.once_per_batch(batch, ("blurred", v.blur_kernel, v.blur_sigma), compute)
            out[v.name] = causal_curves(cache.runner, batch.x, batch.saliency, batch.logits, v, cache.batch_size,
                                        zero_logits=zero, blurred=blurred)
        cache.count(key, out[v.name].passes)
    return out


def columns(results: dict[str, CausalCurves]) -> dict[str, np.ndarray]:
    """Per variant: the deletion and insertion AUC of every (method, image)."""
    return {f"{curve}_auc_{name}": getattr(c, f"{curve}_auc") for name, c in results.items() for curve in CURVES}


def curves(results: dict[str, CausalCurves]) -> dict[str, np.ndarray]:
    """Per variant: the deletion and insertion curves (M, N, n + 1)."""
    return {f"{curve}_{name}": getattr(c, curve) for name, c in results.items() for curve in CURVES}


def summarize(variants: Sequence[CausalVariant], values: Values, labels: Sequence[str], pixels: int) -> SummaryRows:
    """Mean deletion and insertion AUC rows per variant; the mean curves, for the plots."""
    rows: list[dict[str, Any]] = []
    means: dict[str, Any] = {}
    for c in variants:
        aucs = {curve: values(f"{curve}_auc_{c.name}") for curve in CURVES}
        if aucs["deletion"].shape[1] == 0:
            continue
        for curve, better in zip(CURVES, ("lower", "higher")):
            rows.append(summary_row(f"{curve.capitalize()} AUC", c.name, c.description, better, labels,
                                    [mean(a) for a in aucs[curve]]))
        means[c.name] = {"x": c.x_axis(pixels).tolist(), **{
            curve: dict(zip(labels, values(f"{curve}_{c.name}").mean(axis=1).tolist())) for curve in CURVES}}
    return rows, {"curves": means}


__all__ = [
    "CURVES", "NAME", "Blurred", "CausalCurves", "CausalVariant", "blur", "blurred_scores", "causal_curves", "columns",
    "curves", "gaussian_kernel_1d", "get_variant", "measure", "rise_auc", "rise_variant", "saliency_ranks",
    "summarize", "torchcam_variant", "trapezoid_auc", "variants",
]
