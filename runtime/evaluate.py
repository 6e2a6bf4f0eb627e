"""``Evaluator``: explain images with several methods, then score every map with the metrics, all batched.

One record per image holds everything the reports need (scores, per-method metric values, curves, passes), so
a long run can be resumed from the records already written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from camrt.errors import InputError
from camrt.runtime.engine.window import check_batch_size
from camrt.runtime.explainer import Explainer, Explanation, Progress
from camrt.runtime.methods import METHODS, get_convention, option_names
from camrt.runtime.metrics.causal import CausalCurves, CausalVariant
from camrt.runtime.metrics.confidence import DEFAULT_VARIANTS, ConfidenceValues, ConfidenceVariant
from camrt.runtime.metrics.registry import Measured, Metrics
from camrt.runtime.records import ClassName, cost_fields, ok_record


@dataclass(frozen=True)
class MethodSpec:
    """A method, the convention it follows and its options: one column of the evaluation."""

    method: str
    convention: str = "paper"
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        """``iscam``, ``scorecam:torchcam``, ``sscam[num_samples=5]``: unique, and what the tables show."""
        text = self.method if self.convention == "paper" else f"{self.method}:{self.convention}"
        return text + (f"[{','.join(f'{k}={v}' for k, v in self.options)}]" if self.options else "")

    def check(self) -> None:
        """Fail now, with a one-line error, on an unknown method, convention or option."""
        get_convention(self.method, self.convention, **dict(self.options))


def parse_methods(text: str | Sequence[str], options: dict[str, Any] | None = None) -> list[MethodSpec]:
    """``scorecam,iscam:torchcam,scorecam++`` as MethodSpecs; ``options`` keys are ``key`` (every method that
    takes it) or ``method.key`` (that method only)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [item.strip() for item in items if item.strip()]
    if not names:
        raise InputError("--methods: name at least one method")
    options = dict(options or {})
    scoped: dict[str, dict[str, Any]] = {}
    shared: dict[str, Any] = {}
    for key, value in options.items():
        method, dot, name = key.rpartition(".")
        if dot and method not in METHODS:
            raise InputError(f"--option {key}: unknown method {method!r}; choose one of {', '.join(METHODS)}")
        (scoped.setdefault(method, {}) if dot else shared)[name] = value
    specs: list[MethodSpec] = []
    used: set[str] = set()
    for name in names:
        method, _, convention = name.partition(":")
        if method not in METHODS:
            raise InputError(f"--methods: unknown method {method!r}; choose one of {', '.join(METHODS)}")
        accepted = set(option_names(method))
        chosen = {k: v for k, v in shared.items() if k in accepted}
        used.update(chosen)
        chosen.update(scoped.get(method, {}))
        spec = MethodSpec(method, convention or "paper", tuple(sorted(chosen.items())))
        spec.check()
        specs.append(spec)
    unused = sorted(set(shared) - used)
    if unused:
        raise InputError(f"--option {unused[0]}: no method in --methods takes it")
    labels = [s.label for s in specs]
    twice = [label for i, label in enumerate(labels) if label in labels[:i]]
    if twice:
        raise InputError(f"--methods: {twice[0]!r} is listed twice")
    return specs


@dataclass
class Evaluation:
    """Maps and metrics of M methods on N images; ``records()`` gives one JSON-ready record per image."""

    methods: list[MethodSpec]
    targets: np.ndarray  # (N,) the class explained and scored by Average Drop / Increase in Confidence
    predicted: np.ndarray  # (N,) the class predicted on the clean image (scored by deletion / insertion)
    logits: np.ndarray  # (N, classes) of the clean images
    explanations: list[Explanation]  # one per method
    confidence: dict[str, ConfidenceValues]  # name: (variant, Y (N,), O (M, N))
    causal: dict[str, CausalCurves]
    passes: dict[str, int] = field(default_factory=dict)  # metric passes run in this call, by metric
    seconds: dict[str, float] = field(default_factory=dict)
    measured: Measured | None = None  # every family's per-image values (the columns of the records)

    @property
    def saliency(self) -> np.ndarray:
        """(M, N, H, W)."""
        return np.stack([e.saliency for e in self.explanations])

    def records(self, class_name: ClassName | None = None,
                paths: Sequence[str | Path] | None = None) -> list[dict[str, Any]]:
        """Per image the record of README "Per-image records" (``paths`` give its ``path``); per method, under
        ``methods``, its passes, seconds, metric columns and curves."""
        n = self.targets.shape[0]
        out = []
        for b in range(n):
            methods = {}
            for mi, spec in enumerate(self.methods):
                e = self.explanations[mi]
                methods[spec.label] = {
                    "method": spec.method,
                    "convention": spec.convention,
                    "options": dict(spec.options),
                    # passes of a multi-image call are shared; per image they are the call's over n
                    **cost_fields(e.passes_run / n, e.passes_saved / n, e.seconds / n),
                    **(self.measured.row(mi, b) if self.measured else {}),
                    "curves": self.measured.curve_lists(mi, b) if self.measured else {},
                }
            out.append(ok_record(
                None if paths is None else paths[b], int(self.targets[b]), self.logits[b], class_name,
                methods=methods,
                metric_passes=sum(self.passes.values()) / n,
                metric_seconds=round(sum(self.seconds.values()) / n, 4),
                metric_passes_by_metric={k: v / n for k, v in self.passes.items()},
                metric_seconds_by_metric={k: v / n for k, v in self.seconds.items()},
            ))
        return out


class Evaluator:
    """Explain with several methods and measure the maps: Average Drop, Increase in Confidence, deletion/insertion.

    confidence: variant names (``prob-full``, ``prob-top50``, ``logit-full``, ...); causal: ``rise`` and/or
    ``torchcam``; step: RISE's pixels per step (default H·W/28). Win % is computed across images by the reports.
    """

    def __init__(
        self,
        explainer: Explainer,
        confidence: Sequence[str] = DEFAULT_VARIANTS,
        causal: Sequence[str] = ("rise",),
        step: int | None = None,
        batch_size: int = 64,
    ) -> None:
        self.explainer = explainer
        self.batch_size = batch_size = check_batch_size(batch_size)
        # one cache for every evaluate() call: the all-zero image is scored once per Evaluator
        self.metrics = Metrics(explainer.runner, batch_size, {"confidence": confidence, "causal": causal}, step)

    @property
    def confidence(self) -> list[ConfidenceVariant]:
        """The Average Drop / Increase in Confidence variants measured."""
        return self.metrics.variants["confidence"]

    @property
    def causal(self) -> list[CausalVariant]:
        """The deletion / insertion variants measured."""
        return self.metrics.variants["causal"]

    def evaluate(
        self,
        x: np.ndarray,
        methods: Sequence[MethodSpec],
        targets: int | Sequence[int] | np.ndarray | None = None,
        seed: int | None = 0,
        progress: Progress | None = None,
    ) -> Evaluation:
        """Explain x (N, 3, H, W) with every method, then run every metric's perturbed inputs through the engine."""
        if not methods:
            raise InputError("methods: name at least one method")
        explanations = []
        clean = self.explainer.clean_pass(x, self.batch_size)  # one clean pass serves every method
        for spec in methods:
            explanations.append(self.explainer.explain(
                x, spec.method, spec.convention, targets=targets, batch_size=self.batch_size, seed=seed,
                progress=progress, clean=clean, **dict(spec.options),
            ))
        first = explanations[0]
        x = x if x.ndim == 4 else x[None]
        measured = self.metrics.measure(x, np.stack([e.saliency for e in explanations]), first.targets, first.logits)
        return Evaluation(
            methods=list(methods), targets=first.targets, predicted=first.logits.argmax(axis=1),
            logits=first.logits, explanations=explanations, confidence=measured.results.get("confidence", {}),
            causal=measured.results.get("causal", {}), passes=measured.passes, seconds=measured.seconds,
            measured=measured,
        )
