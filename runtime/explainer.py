"""``Explainer``: loads a bundle, runs a Score-CAM-family method batched on a backend, returns an Explanation."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from camrt.errors import CamrtError, InputError
from camrt.runtime.backends import make_runner
from camrt.runtime.backends.base import Runner
from camrt.runtime.backends.device import is_device_runner
from camrt.runtime.bundle import Bundle
from camrt.runtime.combine import combine
from camrt.runtime.masked_passes import MaskedPasses
from camrt.runtime.methods import get_convention
from camrt.runtime.methods.base import Convention
from camrt.runtime.noise import NoiseSource, SeededNoise
from camrt.runtime.plan import SKIP, ZERO, Plan, plan_jobs

Progress = Callable[[int, int], None]


@dataclass
class Explanation:
    """Maps and the numbers behind them for N images."""

    saliency: np.ndarray  # (N, H, W) float32 in [0, 1] at input resolution
    weights: np.ndarray  # (N, K) float32: the convention's alpha (0 for channels it skips)
    targets: np.ndarray  # (N,) int64
    logits: np.ndarray  # (N, classes) float32, of the clean input
    native: np.ndarray | None  # (N, h, w) the map at the convention's own resolution, where that is not H x W
    passes_run: int  # masked-input forward passes run (the clean pass not counted)
    passes_saved: int  # passes the reference runs that were not needed for the same result
    method: str
    convention: str
    seconds: float
    seed: int | None = None

    @property
    def probabilities(self) -> np.ndarray:
        """Softmax of the clean logits, (N, classes)."""
        return _softmax(self.logits.astype(np.float64)).astype(np.float32)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class Explainer:
    """Score-CAM, SS-CAM, IS-CAM and ScoreCAM++ on a bundle, on ONNX Runtime (default) or another backend."""

    def __init__(self, bundle: str | Path | Bundle, backend: str | Runner = "onnxruntime", **backend_options: Any):
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        self.runner: Runner = (
            backend if not isinstance(backend, str) else make_runner(backend, self.bundle, **backend_options)
        )

    # ------------------------------------------------------------------ public API
    def explain(
        self,
        x: np.ndarray,
        method: str = "scorecam",
        convention: str = "paper",
        targets: int | Sequence[int] | np.ndarray | None = None,
        batch_size: int = 64,
        seed: int | None = None,
        noise: NoiseSource | None = None,
        progress: Progress | None = None,
        save_passes: bool = True,
        clean: tuple[np.ndarray, np.ndarray] | None = None,
        **options: Any,
    ) -> Explanation:
        """Explain preprocessed images x (N, 3, H, W) float32 for ``targets`` (None: the predicted classes).

        seed (or noise) fixes SS-CAM's draws; save_passes=False runs every pass the reference runs; clean is
        :meth:`clean_pass` of the same x, to explain it with several methods for one clean pass.
        """
        started = time.perf_counter()
        conv = get_convention(method, convention, **options)
        x = self._check_images(x)
        batch_size = _check_batch_size(batch_size)
        activations, logits = self._clean(x, batch_size) if clean is None else self._check_clean(clean, x)
        target = self._resolve_targets(targets, logits)
        source = noise if noise is not None else (SeededNoise(seed) if conv.noisy else None)
        plan = plan_jobs(activations, conv, save_passes)
        if is_device_runner(self.runner):  # masked inputs made on the GPU, straight into the engine's input
            from camrt.runtime.device_loop import explain_on_device

            weights, saliency, native = explain_on_device(
                self.runner, conv, plan, activations, x, logits, target, batch_size, source, progress,  # type: ignore[arg-type]
                _score_rows, _weights,
            )
        else:
            weights, saliency, native = self._explain_on_host(
                conv, plan, activations, x, logits, target, batch_size, source, progress
            )
        return Explanation(
            saliency=saliency,
            weights=weights.astype(np.float32),
            targets=target,
            logits=logits,
            native=native,
            passes_run=plan.jobs + int(plan.needs_zero_pass),
            passes_saved=plan.nominal_passes - plan.jobs - int(plan.needs_zero_pass),
            method=conv.method,
            convention=conv.name,
            seconds=time.perf_counter() - started,
            seed=getattr(source, "seed", None),
        )

    def _explain_on_host(
        self, conv: Convention, plan: Plan, activations: np.ndarray, x: np.ndarray, logits: np.ndarray,
        target: np.ndarray, batch_size: int, source: NoiseSource | None, progress: Progress | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(weights, saliency, native maps or None): the NumPy masked inputs, scored chunk by chunk, then combined."""
        scores = self._score(conv, plan, activations, x, logits, target, batch_size, source, progress)
        weights = _weights(conv, plan, scores)
        size = (x.shape[2], x.shape[3])
        saliency = np.empty((x.shape[0], *size), dtype=np.float32)
        natives: list[np.ndarray] = []
        for b in range(x.shape[0]):
            saliency[b], native = combine(conv, activations[b], weights[b], size)
            if native is not None:
                natives.append(native)
        return weights, saliency, np.stack(natives) if natives else None

    def explain_images(self, images: Sequence[Any], **kwargs: Any) -> Explanation:
        """Explain photos (paths or PIL images): the bundle's preprocessing first, then :meth:`explain`."""
        from camrt.runtime.preprocess import load_batch

        return self.explain(load_batch(images, self.bundle.manifest.preprocessing), **kwargs)

    def clean_pass(self, x: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Activations (N, K, h, w) and logits (N, classes) of images x, for explain(..., clean=) of each method."""
        return self._clean(self._check_images(x), _check_batch_size(batch_size))

    def _clean(self, x: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        activations, logits = self._clean_pass(x, batch_size)
        if not np.isfinite(activations).all() or not np.isfinite(logits).all():
            raise InputError("x: the model gives non-finite activations or logits for this input")
        return activations, logits

    def _check_clean(self, clean: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """clean= as given by clean_pass for these images, or a one-line error."""
        n = x.shape[0]
        shapes = ((n, *self.bundle.manifest.activation_shape), (n, self.bundle.manifest.num_classes))
        try:
            activations, logits = (np.asarray(a, dtype=np.float32) for a in clean)
        except (TypeError, ValueError):
            raise InputError("clean: expected (activations, logits) from Explainer.clean_pass") from None
        if (activations.shape, logits.shape) != shapes:
            raise InputError(f"clean: expected (activations, logits) of shapes {shapes[0]} and {shapes[1]} for these "
                             f"images, got {activations.shape} and {logits.shape}")
        return activations, logits

    def _clean_pass(self, x: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Activations (N, K, h, w) and logits (N, classes) of the clean images, batch_size images at a time."""
        k, h, w = self.bundle.manifest.activation_shape
        activations = np.empty((x.shape[0], k, h, w), dtype=np.float32)
        logits = np.empty((x.shape[0], self.bundle.manifest.num_classes), dtype=np.float32)
        for start in range(0, x.shape[0], batch_size):
            chunk = slice(start, start + batch_size)
            activations[chunk] = self.runner.features(x[chunk])
            logits[chunk] = self.runner.head(activations[chunk])
        return activations, logits

    # ------------------------------------------------------------------ checks
    def _check_images(self, x: Any) -> np.ndarray:
        expected = tuple(self.bundle.manifest.input_shape)
        if not isinstance(x, np.ndarray):
            raise InputError(f"x: expected a numpy array (N, {', '.join(map(str, expected))}), got {type(x).__name__}")
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or tuple(x.shape[1:]) != expected or x.shape[0] == 0:
            raise InputError(f"x: expected shape (N, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        if not np.issubdtype(x.dtype, np.floating):
            raise InputError(f"x: expected float32 preprocessed images, got dtype {x.dtype}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise InputError("x: contains NaN or infinite values")
        return x

    def _resolve_targets(self, targets: Any, logits: np.ndarray) -> np.ndarray:
        n, classes = logits.shape
        if targets is None:
            return logits.argmax(axis=1).astype(np.int64)
        values = np.atleast_1d(np.asarray(targets))
        if values.dtype.kind not in "iu" and not (values.dtype.kind == "f" and np.all(values == np.round(values))):
            raise InputError(f"targets: expected class indices, got {targets!r}")
        values = values.astype(np.int64)
        if values.size == 1:
            values = np.repeat(values, n)
        if values.shape != (n,):
            raise InputError(f"targets: expected one class index or {n}, got {values.size}")
        bad = values[(values < 0) | (values >= classes)]
        if bad.size:
            raise InputError(f"targets: class index {int(bad[0])} out of range [0, {classes})")
        return values

    # ------------------------------------------------------------------ the batched loop
    def _score(
        self,
        conv: Convention,
        plan: Plan,
        activations: np.ndarray,
        x: np.ndarray,
        logits: np.ndarray,
        target: np.ndarray,
        batch_size: int,
        noise: NoiseSource | None,
        progress: Progress | None,
    ) -> np.ndarray:
        """Mean score over samples (N, K) float64 of every channel; chunks go through one reused input buffer."""
        n, k = activations.shape[:2]
        _, c, height, width = x.shape
        base = logits[np.arange(n), target].astype(np.float64)
        sums = np.zeros((n, k), dtype=np.float64)
        total = plan.jobs + int(plan.needs_zero_pass)
        done = 0
        if plan.needs_zero_pass:  # X * 0 is the zero image for every image: one pass for all of them
            zero_logits = np.asarray(self.runner.logits(np.zeros((1, c, height, width), np.float32)))
            zero_scores = _score_rows(conv.score, np.repeat(zero_logits, n, axis=0), target, base)
            for b in range(n):
                sums[b, plan.rep[b] == ZERO] = zero_scores[b] * conv.samples
            done += 1
        passes = MaskedPasses(self.runner, conv, min(batch_size, max(plan.jobs, 1)), (c, height, width))
        for bi, ki, si in plan.chunks(passes.buffer.shape[0]):
            out = passes.logits(activations, x, bi, ki, si, noise)
            if not np.isfinite(out).all():
                raise CamrtError("the model gave non-finite logits for a masked input")
            np.add.at(sums, (bi, ki), _score_rows(conv.score, out, target[bi], base[bi]))
            done += bi.size
            if progress is not None:
                progress(done, total)
        for b in range(n):  # duplicates take their representative's scores
            dup = np.flatnonzero((plan.rep[b] >= 0) & (plan.rep[b] != np.arange(k)))
            sums[b, dup] = sums[b, plan.rep[b, dup]]
        return sums / conv.samples


def _check_batch_size(batch_size: Any) -> int:
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch_size: must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def _score_rows(kind: str, logits: np.ndarray, target: np.ndarray, base: np.ndarray) -> np.ndarray:
    """The target class's score per row: softmax probability, logit, or logit minus the clean logit."""
    rows = np.arange(logits.shape[0])
    if kind == "prob":
        return _softmax(logits.astype(np.float64))[rows, target]
    picked = logits[rows, target].astype(np.float64)
    return picked - base if kind == "logit-delta" else picked


def _weights(conv: Convention, plan: Plan, scores: np.ndarray) -> np.ndarray:
    """Softmax over channels of the mean scores where the convention says so; skipped channels weigh 0."""
    weights = _softmax(scores) if conv.softmax_weights else scores.copy()
    weights[plan.rep == SKIP] = 0.0
    return weights
