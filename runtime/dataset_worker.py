"""What one dataset worker does: decoded images in, index rows with maps out (explain, then optional metrics).

The local engine runs one ``DatasetWorker`` fed by the decode threads; the Ray engine runs one per actor, fed by
Ray Data batches. Both write the rows the same way (``shards.ShardWriter``), so their outputs are the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from camrt.errors import InputError
from camrt.runtime.classes import did_you_mean
from camrt.runtime.dataset import label_index
from camrt.runtime.engine.window import check_batch_size
from camrt.runtime.explainer import Explainer
from camrt.runtime.methods import get_convention
from camrt.runtime.metrics.registry import Metrics, family
from camrt.runtime.prefetch import Decoded
from camrt.runtime.preprocess import BACKGROUND
from camrt.runtime.records import cost_fields, error_record, ok_record
from camrt.runtime.stream import Explained, Image, OnBatch, explain_stream

METRIC_GROUP = 4  # finished images scored together by the metrics: enough to fill their batches


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset run computes; plain values, so Ray can ship it to its actors. ``config()`` goes to run.json."""

    method: str = "scorecam"
    convention: str = "paper"
    options: tuple[tuple[str, Any], ...] = ()
    target: str | int = "predicted"  # "predicted", "label" (the folder or CSV label), or one class index
    batch_size: int = 64
    seed: int | None = 0
    save_passes: bool = True
    confidence: tuple[str, ...] = ()  # Average Drop / Increase in Confidence variants; () for none
    causal: tuple[str, ...] = ()  # deletion / insertion variants; () for none
    step: int | None = None  # RISE pixels per step
    background: tuple[int, int, int] = BACKGROUND  # what transparent pixels are composited on (decoding)

    def check(self) -> None:
        """Fail now, on one line, on an unknown method, option, target or metric variant."""
        get_convention(self.method, self.convention, **dict(self.options))
        if not (self.target in ("predicted", "label") or isinstance(self.target, int)):
            raise InputError(f"--target: expected predicted, label or a class index, got {self.target!r}")
        check_batch_size(self.batch_size)
        for name, names in self.metric_variants.items():
            family(name).variants(names, self.step)

    @property
    def metrics(self) -> bool:
        """Whether the run scores the maps."""
        return bool(self.confidence or self.causal)

    @property
    def metric_variants(self) -> dict[str, tuple[str, ...]]:
        """The variant names to measure, by metric family (``metrics.registry``)."""
        return {"confidence": self.confidence, "causal": self.causal}

    def config(self) -> dict[str, Any]:
        """The settings that make two runs' rows comparable (--resume refuses to mix others). The batch size and
        pass saving are left out: they change no result, so a run may resume on another machine with another batch."""
        values = asdict(self)
        values["options"] = dict(self.options)
        del values["batch_size"], values["save_passes"]
        return values


@dataclass
class Record:
    """One image's index row, and its map and weights when it was explained."""

    row: dict[str, Any]
    saliency: np.ndarray | None = None
    weights: np.ndarray | None = None


class DatasetWorker:
    """Explains decoded images with ``spec`` on ``explainer``; yields one Record per image, bad ones included."""

    def __init__(self, explainer: Explainer, spec: DatasetSpec) -> None:
        spec.check()
        self.explainer, self.spec = explainer, spec
        self.bundle = explainer.bundle
        self.metrics = Metrics(explainer.runner, spec.batch_size, spec.metric_variants, spec.step)  # one cache a run
        if isinstance(spec.target, int) and not 0 <= spec.target < self.bundle.manifest.num_classes:
            raise InputError(f"--target: class index {spec.target} out of range "
                             f"[0, {self.bundle.manifest.num_classes})")

    def process(self, decoded: Iterable[Decoded], on_batch: OnBatch | None = None) -> Iterator[Record]:
        """Records for ``decoded`` (in about the same order); masked inputs are batched across the images."""
        spec = self.spec
        waiting: list[Record] = []  # bad images met while the stream pulls: written as soon as it yields
        meta: dict[int, Decoded] = {}

        def images() -> Iterator[Image]:
            for item in decoded:
                if item.error is not None:
                    waiting.append(self._error(item, item.error))
                    continue
                target, problem = self._target(item)
                if problem is not None:
                    waiting.append(self._error(item, problem))
                    continue
                meta[item.index] = Decoded(item.index, item.path, item.label, None, decoding=item.decoding)
                yield Image(item.index, item.x, target)  # type: ignore[arg-type]

        scored: list[tuple[Decoded, Explained]] = []
        for result in explain_stream(
            self.explainer, images(), spec.method, spec.convention, spec.batch_size, spec.seed, spec.save_passes,
            keep_inputs=spec.metrics, on_batch=on_batch, **dict(spec.options),
        ):
            yield from _take(waiting)
            item = meta.pop(result.index)
            if result.status != "ok" or not spec.metrics:
                yield self._record(item, result)
                continue
            scored.append((item, result))
            if len(scored) >= METRIC_GROUP:
                yield from self._with_metrics(scored)
                scored = []
        yield from _take(waiting)
        if scored:
            yield from self._with_metrics(scored)

    # ------------------------------------------------------------------ rows
    def _target(self, item: Decoded) -> tuple[int | None, str | None]:
        """The class to explain for this item, or why it has none."""
        if self.spec.target == "predicted":
            return None, None
        if isinstance(self.spec.target, int):
            return self.spec.target, None
        if item.label is None:
            return None, f"{item.path}: no label (--target label needs a folder or CSV label)"
        index = label_index(item.label, self.bundle)
        if index is None:
            hint = did_you_mean(item.label, self.bundle.manifest.class_names or [])
            return None, f"{item.path}: label {item.label!r} is not a class of this bundle{hint}"
        return index, None

    def _error(self, item: Decoded, error: str) -> Record:
        """A bad image's index row: ``records.error_record`` with the dataset index and label."""
        return Record({"index": item.index, **error_record(item.path, error), "label": item.label})

    def _record(self, item: Decoded, result: Explained, metrics: dict[str, Any] | None = None) -> Record:
        """The index row: ``records.ok_record`` (or ``error_record``) with the dataset index and label."""
        if result.status != "ok":
            return self._error(item, f"{item.path}: {result.error}")
        costs = cost_fields(result.passes_run, result.passes_saved, result.seconds)
        decoding = item.decoding.fields() if item.decoding is not None else {}
        row = ok_record(item.path, result.target, result.logits, self.bundle.class_name,  # type: ignore[arg-type]
                        **costs, **decoding, **(metrics or {}))
        return Record({"index": item.index, **row, "label": item.label}, result.saliency, result.weights)

    def _with_metrics(self, scored: list[tuple[Decoded, Explained]]) -> Iterator[Record]:
        """The metric columns of finished images, measured together (the metric families of ``metrics.registry``)."""
        x = np.stack([r.x for _, r in scored])  # type: ignore[misc]
        saliency = np.stack([r.saliency for _, r in scored])[None]  # type: ignore[misc]
        measured = self.metrics.measure(x, saliency, np.array([r.target for _, r in scored]),
                                        np.stack([r.logits for _, r in scored]))  # type: ignore[misc]
        n = len(scored)
        passes, seconds = sum(measured.passes.values()) / n, sum(measured.seconds.values()) / n
        for b, (item, result) in enumerate(scored):
            columns = {**measured.row(0, b), "metric_passes": round(passes, 3), "metric_seconds": round(seconds, 4)}
            yield self._record(item, result, columns)


def _take(waiting: list[Record]) -> Iterator[Record]:
    while waiting:
        yield waiting.pop(0)
