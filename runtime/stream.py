"""Explain a stream of images with masked inputs batched across images, so every engine batch is full.

``explain_stream`` keeps a small window of images in flight. Each engine batch takes the next jobs (image,
channel, sample) in order, from as many images as it needs: a layer with 16 channels fills a batch of 64 with
four images. Images leave the window, as results, when their last job is scored. Memory is bounded by the batch
size: at most ``batch_size + 1`` images are in the window, whatever the dataset's length.

Results equal ``Explainer.explain`` on the whole stack of images: the same jobs, the same arithmetic
(``MaskedPasses``), and SS-CAM's noise keyed by each image's ``index`` in the dataset, not by its place in a
batch. On a GPU runner the images go through ``Explainer.explain`` in groups that fill the batch instead.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from camrt.errors import CamrtError, InputError
from camrt.runtime.backends.device import is_device_runner
from camrt.runtime.combine import combine
from camrt.runtime.explainer import Explainer, _check_batch_size, _score_rows, _softmax, _weights
from camrt.runtime.masked_passes import MaskedPasses
from camrt.runtime.methods import get_convention
from camrt.runtime.methods.base import Convention
from camrt.runtime.noise import NoiseSource, RemappedNoise, SeededNoise
from camrt.runtime.plan import SKIP, ZERO, Plan, plan_jobs

OnBatch = Callable[[int], None]  # called with the number of masked inputs of each engine batch


@dataclass
class Image:
    """One preprocessed image to explain: its place in the dataset, the input (3, H, W), the class (None: predicted)."""

    index: int
    x: np.ndarray
    target: int | None = None


@dataclass
class Explained:
    """The explanation of one image, or why there is none (status ``error``)."""

    index: int
    status: str  # "ok" or "error"
    error: str | None = None
    saliency: np.ndarray | None = None  # (H, W) float32 in [0, 1]
    weights: np.ndarray | None = None  # (K,) float32
    target: int = -1
    predicted: int = -1
    logit: float = math.nan  # the target's clean logit
    prob: float = math.nan  # the target's clean softmax probability
    logits: np.ndarray | None = None  # (classes,) of the clean input
    passes_run: int = 0  # masked-input passes run for this image (the clean pass not counted)
    passes_saved: int = 0
    seconds: float = 0.0  # this image's share of the engine and host time
    x: np.ndarray | None = None  # the input, when asked for (per-image metrics need it)


def explain_stream(
    explainer: Explainer,
    images: Iterable[Image],
    method: str = "scorecam",
    convention: str = "paper",
    batch_size: int = 64,
    seed: int | None = 0,
    save_passes: bool = True,
    keep_inputs: bool = False,
    on_batch: OnBatch | None = None,
    **options: Any,
) -> Iterator[Explained]:
    """Explain ``images`` as they come; yields one ``Explained`` per image, roughly in order.

    A bad image (non-finite input or activations, a class out of range, non-finite logits on its masked
    inputs) gives a result with status ``error`` and the stream goes on.
    """
    conv = get_convention(method, convention, **options)
    batch_size = _check_batch_size(batch_size)
    source: NoiseSource | None = SeededNoise(seed) if conv.noisy else None
    if is_device_runner(explainer.runner):
        yield from _grouped(explainer, images, conv, method, convention, batch_size, source, save_passes,
                            keep_inputs, on_batch, options)
    else:
        yield from _Window(explainer, conv, batch_size, source, save_passes, keep_inputs, on_batch).run(images)


class _Window:
    """The images in flight, in fixed slots; slot arrays are what the masked-input kernel indexes."""

    def __init__(self, explainer: Explainer, conv: Convention, batch_size: int, source: NoiseSource | None,
                 save_passes: bool, keep_inputs: bool, on_batch: OnBatch | None) -> None:
        manifest = explainer.bundle.manifest
        self.runner, self.conv, self.batch_size = explainer.runner, conv, batch_size
        self.explainer = explainer
        self.save_passes, self.keep_inputs, self.on_batch = save_passes, keep_inputs, on_batch
        self.k, self.h, self.w = manifest.activation_shape
        self.shape: tuple[int, int, int] = tuple(manifest.input_shape)  # type: ignore[assignment]
        self.classes = manifest.num_classes
        self.capacity = batch_size + 1  # enough images for a full batch even at one job per image
        # slots grow on demand (by doubling), so a wide layer keeps a window of two or three images
        self.size = 0
        self.activations = np.empty((0, self.k, self.h, self.w), np.float32)
        self.x = np.empty((0, *self.shape), np.float32)
        self.ids = np.full(0, -1, np.int64)
        self.free: list[int] = []
        self.state: dict[int, _Slot] = {}
        self.noise = RemappedNoise(source, self.ids) if source is not None else None
        self.queue: deque[list[Any]] = deque()  # [slot, channels, sample, start]
        self.pending = 0  # jobs queued
        self.zero_logits: np.ndarray | None = None
        self.done: list[Explained] = []

    # ------------------------------------------------------------------ the loop
    def run(self, images: Iterable[Image]) -> Iterator[Explained]:
        source = iter(images)
        exhausted = False
        passes: MaskedPasses | None = None
        bi, ki, si = (np.empty(self.batch_size, np.int64) for _ in range(3))
        while True:
            while self.pending < self.batch_size and not exhausted:
                exhausted = not self._admit(source)
                yield from self._drain()
            if self.pending == 0:
                break
            passes = passes or MaskedPasses(self.runner, self.conv, self.batch_size, self.shape)
            n = self._fill(bi, ki, si)
            started = time.perf_counter()
            out = passes.logits(self.activations, self.x, bi[:n], ki[:n], si[:n], self.noise)
            self._score(bi[:n], ki[:n], out, time.perf_counter() - started)
            if self.on_batch is not None:
                self.on_batch(n)
            yield from self._drain()

    def _admit(self, source: Iterator[Image]) -> bool:
        """Take the next images, enough to fill the batch, and run their clean pass together; False at the end."""
        per_image = self.k * self.conv.samples  # at most; pass saving can only lower it
        want = max(1, math.ceil((self.batch_size - self.pending) / per_image))
        taken: list[Image] = []
        for image in source:
            x = np.asarray(image.x, dtype=np.float32)
            if x.shape != self.shape:
                self.done.append(_error(image.index, f"expected an input of shape {self.shape}, got {x.shape}"))
            elif not np.isfinite(x).all():
                self.done.append(_error(image.index, "the input contains NaN or infinite values"))
            elif image.target is not None and not 0 <= image.target < self.classes:
                self.done.append(_error(image.index, f"class index {image.target} out of range [0, {self.classes})"))
            else:
                taken.append(Image(image.index, x, image.target))
                if len(taken) >= min(want, max(self.capacity - len(self.state), 1)):
                    break
        if not taken:
            return False
        started = time.perf_counter()
        slots = [self._slot() for _ in taken]
        for slot, image in zip(slots, taken):
            self.x[slot] = image.x
            self.ids[slot] = image.index
        index = np.asarray(slots)
        activations = np.asarray(self.runner.features(self.x[index]))
        logits = np.asarray(self.runner.head(activations))
        plan = plan_jobs(activations, self.conv, self.save_passes)
        share = (time.perf_counter() - started) / len(taken)
        for j, (slot, image) in enumerate(zip(slots, taken)):
            self.activations[slot] = activations[j]
            self._start(slot, image, logits[j], plan, j, share)
        return True

    def _start(self, slot: int, image: Image, logits: np.ndarray, plan: Plan, j: int, seconds: float) -> None:
        """Queue one image's jobs (or fail it) after its clean pass."""
        if not np.isfinite(self.activations[slot]).all() or not np.isfinite(logits).all():
            self._release(slot)
            self.done.append(_error(image.index, "the model gives non-finite activations or logits for this input"))
            return
        target = int(logits.argmax()) if image.target is None else image.target
        state = _Slot(image.index, target, logits.astype(np.float32), plan.rep[j].copy(), seconds)
        state.sums = np.zeros(self.k, np.float64)
        channels = plan.unique[j]
        state.remaining = channels.size * self.conv.samples
        state.nominal = int((state.rep != SKIP).sum()) * self.conv.samples
        self.state[slot] = state
        if (state.rep == ZERO).any():
            state.sums[state.rep == ZERO] = self._zero_score(state) * self.conv.samples
        for s in range(self.conv.samples):
            if channels.size:
                self.queue.append([slot, channels, s, 0])
        self.pending += state.remaining
        if state.remaining == 0:
            self._finish(slot)

    def _zero_score(self, state: _Slot) -> float:
        """The target's score on the zero image (what every all-zero mask gives): one pass for the whole stream."""
        if self.zero_logits is None:
            started = time.perf_counter()
            self.zero_logits = np.asarray(self.runner.logits(np.zeros((1, *self.shape), np.float32)))
            state.seconds += time.perf_counter() - started
            state.extra_passes += 1
        base = np.array([state.logits[state.target]], np.float64)
        return float(_score_rows(self.conv.score, self.zero_logits, np.array([state.target]), base)[0])

    def _fill(self, bi: np.ndarray, ki: np.ndarray, si: np.ndarray) -> int:
        """The next jobs, up to a batch, in queue order (image, sample, channel); returns how many."""
        filled = 0
        while filled < bi.size and self.queue:
            entry = self.queue[0]
            slot, channels, sample, start = entry
            take = min(bi.size - filled, channels.size - start)
            bi[filled : filled + take] = slot
            ki[filled : filled + take] = channels[start : start + take]
            si[filled : filled + take] = sample
            filled += take
            entry[3] += take
            if entry[3] == channels.size:
                self.queue.popleft()
        self.pending -= filled
        return filled

    def _score(self, bi: np.ndarray, ki: np.ndarray, out: np.ndarray, seconds: float) -> None:
        """Add the batch's scores to its images; finish the images it completed."""
        finite = np.isfinite(out).all(axis=1)
        for slot in sorted(np.unique(bi).tolist(), key=lambda s: self.state[s].index):  # results in order
            rows = np.flatnonzero(bi == slot)
            state = self.state[slot]
            state.seconds += seconds * rows.size / bi.size
            state.remaining -= rows.size
            if not finite[rows].all():
                state.error = "the model gave non-finite logits for a masked input"
            elif state.error is None:
                base = np.full(rows.size, state.logits[state.target], np.float64)
                target = np.full(rows.size, state.target)
                np.add.at(state.sums, ki[rows], _score_rows(self.conv.score, out[rows], target, base))
            if state.remaining == 0:
                self._finish(slot)

    def _finish(self, slot: int) -> None:
        """Weights, map and result for an image whose jobs are all scored; frees its slot."""
        started = time.perf_counter()
        state = self.state.pop(slot)
        if state.error is not None:
            self.done.append(_error(state.index, state.error))
            self._release(slot)
            return
        rep, sums, k = state.rep, state.sums, self.k
        dup = np.flatnonzero((rep >= 0) & (rep != np.arange(k)))  # duplicates take their representative's scores
        sums[dup] = sums[rep[dup]]
        plan = Plan(rep=rep[None], unique=[np.flatnonzero(rep == np.arange(k))], samples=self.conv.samples)
        weights = _weights(self.conv, plan, (sums / self.conv.samples)[None])[0]
        saliency, _ = combine(self.conv, self.activations[slot], weights, self.shape[1:])
        run = plan.jobs + state.extra_passes
        prob = _softmax(state.logits.astype(np.float64))[state.target]
        self.done.append(Explained(
            index=state.index, status="ok", saliency=saliency.astype(np.float32),
            weights=weights.astype(np.float32), target=state.target, predicted=int(state.logits.argmax()),
            logit=float(state.logits[state.target]), prob=float(prob), logits=state.logits, passes_run=run,
            passes_saved=max(state.nominal - run, 0), seconds=state.seconds + time.perf_counter() - started,
            x=self.x[slot].copy() if self.keep_inputs else None,
        ))
        self._release(slot)

    def _drain(self) -> Iterator[Explained]:
        while self.done:
            yield self.done.pop(0)

    # ------------------------------------------------------------------ slots
    def _slot(self) -> int:
        if not self.free:
            self._grow()
        return self.free.pop(0)

    def _release(self, slot: int) -> None:
        self.ids[slot] = -1
        self.free.append(slot)
        self.free.sort()

    def _grow(self) -> None:
        """Double the slots (up to the capacity), keeping the images in flight where they are."""
        new = min(max(2 * self.size, 2), self.capacity)
        if new <= self.size:
            raise CamrtError("the stream's window is full")  # cannot happen: admission stops at the capacity
        activations = np.empty((new, self.k, self.h, self.w), np.float32)
        x = np.empty((new, *self.shape), np.float32)
        activations[: self.size], x[: self.size] = self.activations, self.x
        ids = np.full(new, -1, np.int64)
        ids[: self.size] = self.ids
        self.activations, self.x, self.ids = activations, x, ids
        if self.noise is not None:
            self.noise.ids = ids
        self.free.extend(range(self.size, new))
        self.size = new


@dataclass
class _Slot:
    """An image in flight: its scores so far and what is left to run."""

    index: int
    target: int
    logits: np.ndarray
    rep: np.ndarray
    seconds: float
    sums: np.ndarray = field(default_factory=lambda: np.zeros(0))
    remaining: int = 0
    nominal: int = 0
    extra_passes: int = 0
    error: str | None = None


def _error(index: int, message: str) -> Explained:
    return Explained(index=index, status="error", error=message)


def _grouped(
    explainer: Explainer, images: Iterable[Image], conv: Convention, method: str, convention: str,
    batch_size: int, source: NoiseSource | None, save_passes: bool, keep_inputs: bool, on_batch: OnBatch | None,
    options: dict[str, Any],
) -> Iterator[Explained]:
    """GPU runners: ``Explainer.explain`` on groups of images big enough to fill the batch (its chunks cross images)."""
    k = explainer.bundle.manifest.activation_shape[0]
    group = max(1, min(batch_size, math.ceil(4 * batch_size / (k * conv.samples))))
    pending: list[Image] = []
    for image in images:
        pending.append(image)
        if len(pending) == group:
            yield from _explain_group(explainer, pending, method, convention, batch_size, source, save_passes,
                                      keep_inputs, on_batch, options)
            pending = []
    if pending:
        yield from _explain_group(explainer, pending, method, convention, batch_size, source, save_passes,
                                  keep_inputs, on_batch, options)


def _explain_group(
    explainer: Explainer, group: list[Image], method: str, convention: str, batch_size: int,
    source: NoiseSource | None, save_passes: bool, keep_inputs: bool, on_batch: OnBatch | None,
    options: dict[str, Any],
) -> Iterator[Explained]:
    good: list[Image] = []
    for image in group:  # per-image checks, so one bad image fails alone
        x = np.asarray(image.x, dtype=np.float32)
        classes = explainer.bundle.manifest.num_classes
        if not np.isfinite(x).all():
            yield _error(image.index, "the input contains NaN or infinite values")
        elif image.target is not None and not 0 <= image.target < classes:
            yield _error(image.index, f"class index {image.target} out of range [0, {classes})")
        else:
            good.append(Image(image.index, x, image.target))
    if not good:
        return
    x = np.stack([image.x for image in good])
    ids = np.array([image.index for image in good])
    try:
        clean = explainer.clean_pass(x, batch_size)
        targets = [int(clean[1][j].argmax()) if im.target is None else im.target for j, im in enumerate(good)]
        result = explainer.explain(
            x, method, convention, targets=targets, batch_size=batch_size, save_passes=save_passes, clean=clean,
            noise=RemappedNoise(source, ids) if source is not None else None, **options,
        )
    except (InputError, CamrtError) as exc:
        if len(good) == 1:
            yield _error(good[0].index, str(exc))
            return
        for image in good:  # find the bad one: explain the group's images one at a time
            yield from _explain_group(explainer, [image], method, convention, batch_size, source, save_passes,
                                      keep_inputs, on_batch, options)
        return
    if on_batch is not None:
        on_batch(result.passes_run)
    n = len(good)
    probs = result.probabilities
    for j, image in enumerate(good):
        target = int(result.targets[j])
        yield Explained(
            index=image.index, status="ok", saliency=result.saliency[j], weights=result.weights[j], target=target,
            predicted=int(result.logits[j].argmax()), logit=float(result.logits[j, target]),
            prob=float(probs[j, target]), logits=result.logits[j], passes_run=round(result.passes_run / n),
            passes_saved=round(result.passes_saved / n), seconds=result.seconds / n,
            x=image.x if keep_inputs else None,
        )
