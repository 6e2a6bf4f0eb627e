"""``Explainer``: loads a bundle, runs a Score-CAM-family method batched on a backend, returns an Explanation."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from camrt.errors import CamrtError, InputError
from camrt.runtime.backends import close_runner, make_runner
from camrt.runtime.backends.base import Runner
from camrt.runtime.bundle import Bundle
from camrt.runtime.classes import class_index
from camrt.runtime.engine.scoring import softmax
from camrt.runtime.engine.window import (
    NON_FINITE_CLEAN,
    Explained,
    Image,
    Prepared,
    Window,
    check_batch_size,
    clean_outputs,
)
from camrt.runtime.methods import get_convention
from camrt.runtime.noise import NoiseSource, SeededNoise
from camrt.runtime.plan import plan_jobs

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
        return softmax(self.logits).astype(np.float32)


class Explainer:
    """Score-CAM, SS-CAM, IS-CAM and ScoreCAM++ on a bundle, on ONNX Runtime (default) or another backend."""

    def __init__(self, bundle: str | Path | Bundle, backend: str | Runner = "onnxruntime", **backend_options: Any):
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        self.runner: Runner = (
            backend if not isinstance(backend, str) else make_runner(backend, self.bundle, **backend_options)
        )
        self._owns_runner = isinstance(backend, str)  # made here from a name: close() releases it

    def close(self) -> None:
        """Release the runner's sessions and device memory when this Explainer made it; idempotent."""
        if self._owns_runner:
            close_runner(self.runner)

    def __enter__(self) -> Explainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ public API
    def explain(
        self,
        x: np.ndarray,
        method: str = "scorecam",
        convention: str = "paper",
        targets: int | str | Sequence[int | str] | np.ndarray | None = None,
        batch_size: int = 64,
        seed: int | None = None,
        noise: NoiseSource | None = None,
        progress: Progress | None = None,
        save_passes: bool = True,
        clean: tuple[np.ndarray, np.ndarray] | None = None,
        **options: Any,
    ) -> Explanation:
        """Explain preprocessed images x (N, 3, H, W) float32 for ``targets`` (None: the predicted classes; class
        indices or names).

        seed (or noise) fixes SS-CAM's draws; save_passes=False runs every pass the reference runs; clean is
        :meth:`clean_pass` of the same x, to explain it with several methods for one clean pass.
        """
        started = time.perf_counter()
        conv = get_convention(method, convention, **options)
        x = self._check_images(x)
        batch_size = check_batch_size(batch_size)
        activations, logits = self._clean(x, batch_size) if clean is None else self._check_clean(clean, x)
        target = self._resolve_targets(targets, logits)
        source = noise if noise is not None else (SeededNoise(seed) if conv.noisy else None)
        plan = plan_jobs(activations, conv, save_passes)  # the fixed plan of this call, shared with the window
        total, done = plan.jobs + int(plan.needs_zero_pass), [int(plan.needs_zero_pass)]

        def on_batch(n: int) -> None:
            done[0] += n
            if progress is not None:
                progress(done[0], total)

        images = (Image(b, x[b], int(target[b]), Prepared(activations[b], logits[b], plan.rep[b], plan.unique[b]))
                  for b in range(x.shape[0]))
        window = self._window(conv, batch_size, source, save_passes, False, on_batch)
        results = sorted(window.run(images), key=lambda r: r.index)
        failed = next((r for r in results if r.status != "ok"), None)
        if failed is not None:
            raise CamrtError(str(failed.error))
        natives = [r.native for r in results if r.native is not None]
        return Explanation(
            saliency=np.stack([r.saliency for r in results]),  # type: ignore[misc]
            weights=np.stack([r.weights for r in results]),  # type: ignore[misc]
            targets=target,
            logits=logits,
            native=np.stack(natives) if natives else None,
            passes_run=sum(r.passes_run for r in results),
            passes_saved=sum(r.passes_saved for r in results),
            method=conv.method,
            convention=conv.name,
            seconds=time.perf_counter() - started,
            seed=getattr(source, "seed", None),
        )

    def stream(
        self,
        images: Iterable[Image],
        method: str = "scorecam",
        convention: str = "paper",
        batch_size: int = 64,
        seed: int | None = 0,
        save_passes: bool = True,
        keep_inputs: bool = False,
        on_batch: Callable[[int], None] | None = None,
        **options: Any,
    ) -> Iterator[Explained]:
        """Explain ``images`` as they come, batched across images; one ``Explained`` per image, roughly in order.

        A bad image (non-finite input or activations, a class out of range, non-finite logits on its masked
        inputs) gives a result with status ``error`` and the stream goes on. SS-CAM's noise is keyed by each
        image's ``index``, so results equal :meth:`explain` on the stacked images.
        """
        conv = get_convention(method, convention, **options)
        source = SeededNoise(seed) if conv.noisy else None
        return self._window(conv, check_batch_size(batch_size), source, save_passes, keep_inputs, on_batch).run(images)

    def _window(self, conv: Any, batch_size: int, noise: NoiseSource | None, save_passes: bool, keep_inputs: bool,
                on_batch: Callable[[int], None] | None) -> Window:
        m = self.bundle.manifest
        return Window(self.runner, conv, batch_size, tuple(m.input_shape), tuple(m.activation_shape),  # type: ignore[arg-type]
                      m.num_classes, noise, save_passes, keep_inputs, on_batch)

    def preprocess(self, images: Sequence[Any], background: Any = None) -> np.ndarray:
        """Photos (paths or PIL images) as the (N, 3, H, W) float32 batch :meth:`explain` takes
        (``camrt.load_images`` with this bundle; background None: white)."""
        from camrt.runtime.preprocess import load_images

        return load_images(images, self.bundle, background)

    def explain_images(self, images: Sequence[Any], **kwargs: Any) -> Explanation:
        """Explain photos (paths or PIL images): :meth:`preprocess` first, then :meth:`explain`."""
        return self.explain(self.preprocess(images), **kwargs)

    def clean_pass(self, x: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Activations (N, K, h, w) and logits (N, classes) of images x, for explain(..., clean=) of each method."""
        return self._clean(self._check_images(x), check_batch_size(batch_size))

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

    def _clean(self, x: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Activations (N, K, h, w) and logits (N, classes) of the clean images, batch_size images at a time."""
        k, h, w = self.bundle.manifest.activation_shape
        activations = np.empty((x.shape[0], k, h, w), dtype=np.float32)
        logits = np.empty((x.shape[0], self.bundle.manifest.num_classes), dtype=np.float32)
        for start in range(0, x.shape[0], batch_size):
            chunk = slice(start, start + batch_size)
            activations[chunk], logits[chunk], finite = clean_outputs(self.runner, x[chunk])
            if not finite.all():
                raise InputError(f"x: {NON_FINITE_CLEAN}")
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
        listed = [targets] if isinstance(targets, str) else targets if isinstance(targets, (list, tuple)) else []
        if any(isinstance(t, str) for t in listed):  # class names (or synonyms) as indices
            targets = [class_index(t, self.bundle.manifest.class_names, classes, "targets") for t in listed]
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
