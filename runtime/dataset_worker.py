"""What one dataset worker does: decoded images in, index rows with maps out (explain, then optional metrics).

The local engine runs one ``DatasetWorker`` fed by the decode threads; the Ray engine runs one per actor, fed by
Ray Data batches. Both write the rows the same way (``shards.ShardWriter``), so their outputs are the same.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from camrt.errors import InputError
from camrt.runtime.dataset import label_index
from camrt.runtime.explainer import Explainer
from camrt.runtime.methods import get_convention
from camrt.runtime.metrics.causal import causal_curves, get_variant
from camrt.runtime.metrics.confidence import average_drop, explanation_scores, increase_in_confidence, parse_variant
from camrt.runtime.prefetch import Decoded
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

    def check(self) -> None:
        """Fail now, on one line, on an unknown method, option, target or metric variant."""
        get_convention(self.method, self.convention, **dict(self.options))
        if not (self.target in ("predicted", "label") or isinstance(self.target, int)):
            raise InputError(f"--target: expected predicted, label or a class index, got {self.target!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InputError(f"batch_size: must be a positive integer, got {self.batch_size!r}")
        for name in self.confidence:
            parse_variant(name)
        for name in self.causal:
            get_variant(name, self.step)

    @property
    def metrics(self) -> bool:
        return bool(self.confidence or self.causal)

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
        self.confidence = [parse_variant(v) for v in spec.confidence]
        self.causal = [get_variant(c, spec.step) for c in spec.causal]
        self._zero_logits: np.ndarray | None = None
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
                    waiting.append(Record(self._base(item, "error", item.error)))
                    continue
                target, problem = self._target(item)
                if problem is not None:
                    waiting.append(Record(self._base(item, "error", problem)))
                    continue
                meta[item.index] = Decoded(item.index, item.path, item.label, None)
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
            return None, f"{item.path}: label {item.label!r} is not a class of this bundle"
        return index, None

    def _base(self, item: Decoded, status: str, error: str | None = None) -> dict[str, Any]:
        return {"index": item.index, "path": str(item.path), "label": item.label, "status": status, "error": error}

    def _record(self, item: Decoded, result: Explained, metrics: dict[str, Any] | None = None) -> Record:
        if result.status != "ok":
            return Record(self._base(item, "error", f"{item.path}: {result.error}"))
        names = self.bundle.manifest.class_names
        row = self._base(item, "ok")
        row.update({
            "target": result.target,
            "target_name": names[result.target] if names else None,
            "predicted": result.predicted,
            "score": round(result.prob, 8),
            "logit": round(result.logit, 6),
            "passes": result.passes_run,
            "passes_saved": result.passes_saved,
            "seconds": round(result.seconds, 4),
            **(metrics or {}),
        })
        return Record(row, result.saliency, result.weights)

    def _with_metrics(self, scored: list[tuple[Decoded, Explained]]) -> Iterator[Record]:
        """Average Drop / Increase in Confidence and deletion / insertion for finished images, batched together."""
        runner, batch = self.explainer.runner, self.spec.batch_size
        started = time.perf_counter()
        x = np.stack([r.x for _, r in scored])  # type: ignore[misc]
        saliency = np.stack([r.saliency for _, r in scored])[None]  # type: ignore[misc]
        targets = np.array([r.target for _, r in scored])
        logits = np.stack([r.logits for _, r in scored])  # type: ignore[misc]
        n = len(scored)
        columns: list[dict[str, Any]] = [{} for _ in scored]
        passes = 0
        if self.confidence:
            scores = explanation_scores(runner, x, saliency, targets, [v.keep for v in self.confidence], batch)
            passes += len(scores) * n
            clean = {"prob": np.array([r.prob for _, r in scored]), "logit": np.array([r.logit for _, r in scored])}
            for v in self.confidence:
                y, o = clean[v.score], scores[v.keep][0 if v.score == "logit" else 1][0]
                drop, increase = average_drop(y, o), increase_in_confidence(y, o)
                for b in range(n):
                    columns[b].update({f"o_{v.name}": float(o[b]), f"average_drop_{v.name}": float(drop[b]),
                                       f"increase_{v.name}": float(increase[b])})
        if self.causal and self._zero_logits is None:
            self._zero_logits = np.asarray(runner.logits(np.zeros((1, *x.shape[1:]), np.float32)))[0]
            passes += 1
        for variant in self.causal:
            curves = causal_curves(runner, x, saliency, logits, variant, batch, zero_logits=self._zero_logits)
            passes += curves.passes
            for b in range(n):
                columns[b].update({f"deletion_auc_{variant.name}": float(curves.deletion_auc[0, b]),
                                   f"insertion_auc_{variant.name}": float(curves.insertion_auc[0, b])})
        seconds = (time.perf_counter() - started) / n
        for b, (item, result) in enumerate(scored):
            columns[b].update({"metric_passes": round(passes / n, 3), "metric_seconds": round(seconds, 4)})
            yield self._record(item, result, columns[b])


def _take(waiting: list[Record]) -> Iterator[Record]:
    while waiting:
        yield waiting.pop(0)
