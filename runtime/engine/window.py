"""The one engine loop: a window of images in flight, whose jobs fill every engine batch, scored by one scorer.

Images enter the window as the loop needs jobs: a clean pass (features and head) for the images entering together,
then the planner (runtime/plan.py) decides which (channel, sample) jobs each needs (for the head-only methods,
Ablation-CAM and Recipro-CAM, a job's index is a channel or a position and its pass runs the head graph alone:
runtime/engine/head_scorer.py). Each engine batch takes the next jobs in order (image, sample, channel) from as
many images as it needs, so a layer with 16 channels fills a batch of 64 with four images. An image leaves, as an
:class:`Explained`, when its last job is scored: its sums become weights (runtime/engine/finish.py) and its map.
At most ``batch_size + 1`` images are in flight, so memory is bounded by the batch size, whatever the number of
images.

``Explainer.explain`` drains this loop over one call's images (they arrive :class:`Prepared`: clean pass and plan
done for the whole call); ``explain_stream`` and every command feed it images as they are decoded. SS-CAM's noise
is keyed by each image's ``index``, never by its slot or batch, so both give the same numbers.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from camrt.errors import InputError
from camrt.runtime.backends.base import Runner
from camrt.runtime.backends.device import is_device_runner
from camrt.runtime.combine import head_weights
from camrt.runtime.engine.device_head_scorer import DeviceHeadScorer, is_device_head_runner
from camrt.runtime.engine.device_scorer import DeviceScorer
from camrt.runtime.engine.finish import channel_weights
from camrt.runtime.engine.head_scorer import HeadScorer
from camrt.runtime.engine.host_threads import one_blas_thread
from camrt.runtime.engine.scorer import HostScorer, Scorer
from camrt.runtime.engine.scoring import finite_rows, non_finite, score_rows, softmax
from camrt.runtime.methods.base import Convention
from camrt.runtime.noise import NoiseSource, RemappedNoise
from camrt.runtime.plan import CLEAN, SKIP, ZERO, plan_jobs

OnBatch = Callable[[int], None]  # called with the number of masked inputs of each engine batch
NON_FINITE_CLEAN = "the model gives non-finite activations or logits for this input"
ZERO_CLEAN_SCORE = "the target's clean logit is 0, so Ablation-CAM's weights (y - y_k) / y are undefined"


@dataclass
class Prepared:
    """An image's clean pass and plan row, where the caller has them already (``Explainer.explain``)."""

    activations: np.ndarray  # (K, h, w)
    logits: np.ndarray  # (classes,)
    rep: np.ndarray  # (J,) the plan row: representative channel (or position), SKIP, ZERO or CLEAN
    channels: np.ndarray  # the channels that need passes


@dataclass
class Image:
    """One preprocessed image to explain: its place in the dataset, the input (3, H, W), the class (None: predicted)."""

    index: int
    x: np.ndarray
    target: int | None = None
    prepared: Prepared | None = None


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
    native: np.ndarray | None = None  # (h, w) the map at the convention's own resolution, where it has one


MAX_BATCH = 4096  # inputs per engine batch at most: larger batches run no faster and only risk memory


def check_batch_size(batch_size: Any) -> int:
    """``batch_size`` as an int in [1, MAX_BATCH], or a one-line InputError."""
    if (not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool)
            or not 1 <= batch_size <= MAX_BATCH):
        raise InputError(f"batch_size: must be an integer in [1, {MAX_BATCH}], got {batch_size!r}")
    return int(batch_size)


def clean_outputs(runner: Runner, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Activations (n, K, h, w), logits (n, classes) and a finite flag (n,) of images x (n, C, H, W) in one batch."""
    activations = np.asarray(runner.features(x), dtype=np.float32)
    logits = np.asarray(runner.head(activations), dtype=np.float32)
    return activations, logits, finite_rows(activations) & finite_rows(logits)


def make_scorer(runner: Runner, conv: Convention, batch_size: int, shape: tuple[int, int, int],
                activation_shape: tuple[int, int, int]) -> Scorer:
    """The device scorer for runners with device buffers, else the host scorer; the head scorers for the head-only
    methods (on the device where the runner has a head-input buffer, else on the host through ``runner.head``)."""
    kind: type
    if conv.graph == "head":
        kind = DeviceHeadScorer if is_device_head_runner(runner) else HeadScorer
    else:
        kind = DeviceScorer if is_device_runner(runner) else HostScorer
    return kind(runner, conv, batch_size, shape, activation_shape)  # type: ignore[arg-type]


@dataclass
class _Slot:
    """An image in flight: what it needs to be finished, and what is left to run."""

    index: int
    target: int
    logits: np.ndarray
    rep: np.ndarray
    seconds: float
    x: np.ndarray | None
    remaining: int = 0
    nominal: int = 0
    extra_passes: int = 0


class Window:
    """The images in flight, in numbered slots (what the scorer indexes); :meth:`run` is the loop."""

    def __init__(self, runner: Runner, conv: Convention, batch_size: int, shape: tuple[int, int, int],
                 activation_shape: tuple[int, int, int], classes: int, noise: NoiseSource | None = None,
                 save_passes: bool = True, keep_inputs: bool = False, on_batch: OnBatch | None = None) -> None:
        self.runner, self.conv, self.batch_size = runner, conv, check_batch_size(batch_size)
        self.shape, self.k, self.classes = shape, activation_shape[0], classes
        self.activation_shape, self.jobs = activation_shape, conv.jobs(activation_shape)  # jobs per image and sample
        self.save_passes, self.keep_inputs, self.on_batch = save_passes, keep_inputs, on_batch
        self.scorer = make_scorer(runner, conv, self.batch_size, shape, activation_shape)
        self.capacity = self.batch_size + 1  # enough images for a full batch even at one job per image
        self.size = 0  # slots grow on demand (by doubling), so a wide layer keeps a window of two or three images
        self.ids = np.full(0, -1, np.int64)  # each slot's image index, for the noise
        self.free: list[int] = []
        self.state: dict[int, _Slot] = {}
        self.noise = RemappedNoise(noise, self.ids) if noise is not None else None
        self.queue: deque[list[Any]] = deque()  # [slot, channels, sample, start]
        self.pending = 0  # jobs queued
        self.zero_logits: np.ndarray | None = None
        self.done: deque[Explained] = deque()

    # ------------------------------------------------------------------ the loop
    def run(self, images: Iterable[Image]) -> Iterator[Explained]:
        """Explain ``images`` as they come; one Explained per image, roughly in order."""
        source = iter(images)
        exhausted = False
        bi, ki, si = (np.empty(self.batch_size, np.int64) for _ in range(3))
        while True:
            while self.pending < self.batch_size and not exhausted:
                exhausted = not self._admit(source)
                yield from self._drain()
            if self.pending == 0:
                break
            n = self._fill(bi, ki, si)
            started = time.perf_counter()
            self.scorer.run(bi[:n], ki[:n], si[:n], self.noise)
            self._scored(bi[:n], time.perf_counter() - started)
            if self.on_batch is not None:
                self.on_batch(n)
            yield from self._drain()

    def _admit(self, source: Iterator[Image]) -> bool:
        """Take the next images, enough to fill the batch, and start them together; False at the end."""
        per_image = self.jobs * self.conv.samples  # at most; pass saving can only lower it
        want = min(max(1, math.ceil((self.batch_size - self.pending) / per_image)),
                   max(self.capacity - len(self.state), 1))
        taken: list[Image] = []
        for image in source:
            problem = self._problem(image)
            if problem is not None:
                self.done.append(_error(image.index, problem))
                continue
            taken.append(image)
            if len(taken) >= want:
                break
        if not taken:
            return False
        started = time.perf_counter()
        prepared: list[Prepared | None] = [image.prepared for image in taken]
        fresh = [i for i, image in enumerate(taken) if image.prepared is None]
        if fresh:
            x = np.stack([np.asarray(taken[i].x, dtype=np.float32) for i in fresh])
            activations, logits, finite = clean_outputs(self.runner, x)
            plan = plan_jobs(activations, self.conv, self.save_passes)
            for j, i in enumerate(fresh):  # None: the model gave non-finite outputs for it
                made = Prepared(activations[j], logits[j], plan.rep[j], plan.unique[j])
                prepared[i] = made if finite[j] else None
        share = (time.perf_counter() - started) / len(taken)
        for image, ready in zip(taken, prepared):
            if ready is not None:
                self._start(image, ready, share)
            else:
                self.done.append(_error(image.index, NON_FINITE_CLEAN))
        return True

    def _problem(self, image: Image) -> str | None:
        """Why ``image`` cannot be explained before any pass, or None."""
        x = np.asarray(image.x)
        if x.shape != self.shape:
            return f"expected an input of shape {self.shape}, got {x.shape}"
        if not np.isfinite(x).all():
            return "the input contains NaN or infinite values"
        if image.target is not None and not 0 <= image.target < self.classes:
            return f"class index {image.target} out of range [0, {self.classes})"
        return None

    def _start(self, image: Image, prepared: Prepared, seconds: float) -> None:
        """Load one image into a slot and queue its jobs."""
        slot = self._slot()
        target = int(prepared.logits.argmax()) if image.target is None else int(image.target)
        logits = np.asarray(prepared.logits, np.float32)
        state = _Slot(image.index, target, logits, prepared.rep, seconds,
                      np.asarray(image.x, np.float32).copy() if self.keep_inputs else None)
        self.ids[slot] = image.index
        self.scorer.load(slot, np.asarray(image.x, np.float32), prepared.activations, target, float(logits[target]))
        channels, samples = prepared.channels, self.conv.samples
        state.remaining = channels.size * samples
        state.nominal = int((state.rep != SKIP).sum()) * samples
        self.state[slot] = state
        if channels.size:
            self.queue.extend([slot, channels, s, 0] for s in range(samples))
        self.pending += state.remaining
        if state.remaining == 0:
            self._finish(slot)

    def _zero_score(self, state: _Slot) -> float:
        """The target's score on the zero image (what every all-zero mask gives), or for a head-only method on the
        all-zero activations (what a Recipro-CAM copy of an all-zero position is): one pass for the whole run."""
        if self.zero_logits is None:
            started = time.perf_counter()
            if self.conv.graph == "head":
                self.zero_logits = np.asarray(self.runner.head(np.zeros((1, *self.activation_shape), np.float32)))
            else:
                self.zero_logits = np.asarray(self.runner.logits(np.zeros((1, *self.shape), np.float32)))
            state.seconds += time.perf_counter() - started
            state.extra_passes += 1
        base = np.array([state.logits[state.target]], np.float64)
        return float(score_rows(self.conv.score, self.zero_logits, np.array([state.target]), base)[0])

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

    def _scored(self, bi: np.ndarray, seconds: float) -> None:
        """Charge the batch's time to its images; finish the images it completed, in index order."""
        slots, counts = np.unique(bi, return_counts=True)
        for slot, count in sorted(zip(slots.tolist(), counts.tolist()), key=lambda sc: self.state[sc[0]].index):
            state = self.state[slot]
            state.seconds += seconds * count / bi.size
            state.remaining -= count
            if state.remaining == 0:
                self._finish(slot)

    def _finish(self, slot: int) -> None:
        """Weights, map and result for an image whose jobs are all scored; frees its slot."""
        started = time.perf_counter()
        state = self.state.pop(slot)
        sums, finite = self.scorer.take(slot)
        if not finite:
            self.done.append(_error(state.index, non_finite("a masked input")))
            self._release(slot)
            return
        samples = self.conv.samples
        if (state.rep == ZERO).any():
            sums[state.rep == ZERO] = self._zero_score(state) * samples
        if self.conv.graph == "head":
            clean = float(score_rows(self.conv.score, state.logits[None], np.array([state.target]),
                                     np.array([state.logits[state.target]], np.float64))[0])
            sums[state.rep == CLEAN] = clean * samples  # activations left as they were: the clean score
            weights = head_weights(self.conv, sums, clean)
            if not np.isfinite(weights).all():
                self.done.append(_error(state.index, ZERO_CLEAN_SCORE))
                self._release(slot)
                return
        else:
            weights = channel_weights(self.conv, state.rep, sums)
        with one_blas_thread():
            saliency, native = self.scorer.combine(slot, weights)
        if self.conv.head is not None and self.conv.head.op == "keep":  # its position scores are the map, not weights
            weights = np.zeros(self.k)
        run = int((state.rep == np.arange(self.jobs)).sum()) * samples + state.extra_passes
        self.done.append(Explained(
            index=state.index, status="ok", saliency=np.asarray(saliency, np.float32),
            weights=weights.astype(np.float32), target=state.target, predicted=int(state.logits.argmax()),
            logit=float(state.logits[state.target]), prob=float(softmax(state.logits)[state.target]),
            logits=state.logits, passes_run=run, passes_saved=max(state.nominal - run, 0),
            seconds=state.seconds + time.perf_counter() - started, x=state.x, native=native,
        ))
        self._release(slot)

    def cancel(self, index: int) -> bool:
        """Drop image ``index`` (a client gone): its queued jobs are never run and it yields nothing. Call it
        between engine batches (from the thread that runs :meth:`run`); False when it is not in flight."""
        slot = next((s for s, state in self.state.items() if state.index == index), None)
        if slot is None:
            return False
        kept: deque[list[Any]] = deque()
        for entry in self.queue:
            if entry[0] == slot:
                self.pending -= entry[1].size - entry[3]
            else:
                kept.append(entry)
        self.queue = kept
        del self.state[slot]
        self.scorer.take(slot)  # clears the slot's sums
        self._release(slot)
        return True

    def _drain(self) -> Iterator[Explained]:
        while self.done:
            yield self.done.popleft()

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
        assert new > self.size, "admission stops at the capacity"
        self.scorer.reserve(new)
        ids = np.full(new, -1, np.int64)
        ids[: self.size] = self.ids
        self.ids = ids
        if self.noise is not None:
            self.noise.ids = ids
        self.free.extend(range(self.size, new))
        self.size = new


def _error(index: int, message: str) -> Explained:
    return Explained(index=index, status="error", error=message)
