"""The metric families by name, and ``Metrics``: the one place that runs them on a batch and summarises them.

A new metric is one module with the functions of ``base.Family`` and one line in :data:`FAMILIES`; ``Evaluator``,
``DatasetWorker`` and the reports take every family from here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from camrt.errors import InputError
from camrt.runtime.backends.base import Runner
from camrt.runtime.metrics import causal, confidence
from camrt.runtime.metrics.base import Family, MetricBatch, MetricCache, Values

FAMILIES: dict[str, Family] = {
    confidence.NAME: confidence,  # Average Drop, Increase in Confidence, Win % (README "Evaluating the maps")
    causal.NAME: causal,  # deletion / insertion AUC
}


def family(name: str) -> Family:
    """The family module called ``name``, or a one-line error naming the known ones."""
    if name not in FAMILIES:
        raise InputError(f"metric family: expected one of {', '.join(FAMILIES)}, got {name!r}")
    return FAMILIES[name]


def plain(value: Any) -> float | None:
    """A per-image value as JSON and CSV take it: a float, or None where the image has no value (NaN)."""
    number = float(value)
    return number if math.isfinite(number) else None


@dataclass
class Measured:
    """What one ``Metrics.measure`` call gave, for M methods on N images."""

    results: dict[str, dict[str, Any]]  # family -> variant name -> the family's result
    columns: dict[str, np.ndarray]  # per-image values (M, N) by column name, every family's
    curves: dict[str, np.ndarray]  # per-image curves (M, N, P) by name
    passes: dict[str, int]  # engine passes of this call, by metric
    seconds: dict[str, float]

    def row(self, method: int, image: int) -> dict[str, float | None]:
        """One (method, image)'s metric columns: the values metrics.csv and index.csv write."""
        return {name: plain(values[method, image]) for name, values in self.columns.items()}

    def curve_lists(self, method: int, image: int) -> dict[str, list[float]]:
        """One (method, image)'s curves as lists (for records.jsonl)."""
        return {name: [float(v) for v in values[method, image]] for name, values in self.curves.items()}


class Metrics:
    """The variants a run measures, by family, and the cache they share for the whole run (one per run)."""

    def __init__(self, runner: Runner, batch_size: int, variants: Mapping[str, Sequence[str]],
                 step: int | None = None) -> None:
        self.variants: dict[str, list[Any]] = {name: family(name).variants(names, step)
                                               for name, names in variants.items()}
        self.cache = MetricCache(runner, batch_size)

    def measure(self, x: np.ndarray, saliency: np.ndarray, targets: np.ndarray, logits: np.ndarray) -> Measured:
        """Every variant on maps saliency (M, N, H, W) of images x (N, C, H, W) explaining ``targets`` (N,), whose
        clean logits are ``logits`` (N, classes)."""
        batch = MetricBatch(np.ascontiguousarray(x, dtype=np.float32), saliency, np.asarray(targets),
                            np.asarray(logits))
        results: dict[str, dict[str, Any]] = {}
        columns: dict[str, np.ndarray] = {}
        curves: dict[str, np.ndarray] = {}
        for name, chosen in self.variants.items():
            if not chosen:
                continue
            module = FAMILIES[name]
            results[name] = module.measure(self.cache, batch, chosen)
            columns.update(module.columns(results[name]))
            curves.update(module.curves(results[name]))
        passes, seconds = self.cache.take()
        return Measured(results, columns, curves, passes, seconds)


def summarize(variants: Mapping[str, Sequence[Any]], values: Values, labels: Sequence[str],
              pixels: int) -> dict[str, Any]:
    """Every family's summary rows (``metrics``), extra entries and variant descriptions (``variants``), from the
    per-image values by column or curve name of the variants chosen per family (``Metrics.variants``)."""
    summary: dict[str, Any] = {"metrics": [], "variants": {}}
    for name, chosen in variants.items():
        rows, extra = family(name).summarize(chosen, values, labels, pixels)
        summary["metrics"] += rows
        summary.update(extra)
        summary["variants"].update({v.name: v.description for v in chosen})
    return summary
