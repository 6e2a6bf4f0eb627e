"""The metric interface: what a metric family module provides, and the per-run cache all families share.

A family (``confidence``, ``causal``) parses its variants, measures a batch of maps on the engine, names its
per-image columns and summarises them; ``registry`` lists the families (README "Evaluating the maps").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from camrt.runtime.backends.base import Runner
from camrt.runtime.engine import checked_logits

T = TypeVar("T")
Values = Callable[[str], np.ndarray]  # a column or curve name -> (M, N) or (M, N, P) values of the images
SummaryRows = tuple[list[dict[str, Any]], dict[str, Any]]  # table rows, and extra summary entries


@dataclass(eq=False)
class MetricBatch:
    """N images and the maps of M methods on them: what one measure call scores."""

    x: np.ndarray  # (N, C, H, W) float32, preprocessed
    saliency: np.ndarray  # (M, N, H, W)
    targets: np.ndarray  # (N,) the classes explained (scored by the confidence metrics)
    logits: np.ndarray  # (N, classes) of the clean images


class MetricCache:
    """What the metrics of one run share: the engine and batch size, values computed once per run (the all-zero
    image's logits) or once per batch (the blurred images), and the passes and seconds spent, by metric."""

    def __init__(self, runner: Runner, batch_size: int) -> None:
        self.runner, self.batch_size = runner, batch_size
        self._run: dict[Hashable, Any] = {}
        self._batch: MetricBatch | None = None
        self._per_batch: dict[Hashable, Any] = {}
        self.passes: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    def once_per_run(self, key: Hashable, compute: Callable[[], T]) -> T:
        """``compute()`` the first time ``key`` is asked for in this run, the stored value after that."""
        if key not in self._run:
            self._run[key] = compute()
        return self._run[key]  # type: ignore[no-any-return]

    def once_per_batch(self, batch: MetricBatch, key: Hashable, compute: Callable[[], T]) -> T:
        """``compute()`` the first time ``key`` is asked for on ``batch``; a new batch forgets the old values."""
        if batch is not self._batch:
            self._batch, self._per_batch = batch, {}
        if key not in self._per_batch:
            self._per_batch[key] = compute()
        return self._per_batch[key]  # type: ignore[no-any-return]

    def zero_logits(self, image_shape: tuple[int, ...]) -> np.ndarray:
        """The all-zero image's logits (classes,): the same for every image and method, so one pass per run."""

        def compute() -> np.ndarray:
            self.count("zero image", 1)
            return checked_logits(self.runner, np.zeros((1, *image_shape), np.float32), "the all-zero image")[0]

        return self.once_per_run(("zero image", tuple(image_shape)), compute)

    def count(self, key: str, passes: int) -> None:
        """Add ``passes`` engine passes to metric ``key``."""
        self.passes[key] = self.passes.get(key, 0) + passes

    @contextmanager
    def timed(self, key: str) -> Iterator[None]:
        """Add the seconds spent in the block to metric ``key``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - started

    def take(self) -> tuple[dict[str, int], dict[str, float]]:
        """The passes and seconds counted since the last call, by metric; the counters start again at zero."""
        passes, seconds = self.passes, self.seconds
        self.passes, self.seconds = {}, {}
        return passes, seconds


class Family(Protocol):
    """A metric family module (see ``confidence`` and ``causal``): the functions ``registry`` calls."""

    NAME: str

    def variants(self, names: Sequence[str], step: int | None = None) -> list[Any]:
        """The variants named (each with ``name`` and ``description``), once each; a one-line error on a bad name."""

    def measure(self, cache: MetricCache, batch: MetricBatch, variants: Sequence[Any]) -> dict[str, Any]:
        """Per variant name, the family's result for every (method, image) of ``batch``."""

    def columns(self, results: dict[str, Any]) -> dict[str, np.ndarray]:
        """The per-image values of ``measure``'s results, (M, N) each, by column name."""

    def curves(self, results: dict[str, Any]) -> dict[str, np.ndarray]:
        """Per-image curves (M, N, P) by name ({} for a family without curves)."""

    def summarize(self, variants: Sequence[Any], values: Values, labels: Sequence[str], pixels: int) -> SummaryRows:
        """The summary table's rows for these variants from the per-image values, and extra summary entries."""


def mean(values: np.ndarray) -> float | None:
    """The mean of the finite values (None when there is none): images without a value are left out."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


def summary_row(metric: str, variant: str, description: str, better: str, labels: Sequence[str],
                values: Sequence[float | None], skipped: Sequence[int] | None = None) -> dict[str, Any]:
    """One row of the summary table: a metric in one variant, one value per method."""
    row = {"metric": metric, "variant": variant, "description": description, "better": better,
           "values": dict(zip(labels, values, strict=True))}
    if skipped and any(skipped):
        row["images_without_value"] = dict(zip(labels, skipped, strict=True))
    return row
