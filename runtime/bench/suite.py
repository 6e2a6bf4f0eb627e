"""One bench run: every configuration on the same images, against the reference (FP32 ONNX Runtime) and its
targets: fidelity, the metrics of its maps, its speed and its peak memory, as one JSON-ready dict."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from camrt.errors import CamrtError
from camrt.runtime.backends import close_runner
from camrt.runtime.backends.base import Runner
from camrt.runtime.bench import fidelity, latency
from camrt.runtime.bench.configs import Config, open_runner
from camrt.runtime.bundle import Bundle
from camrt.runtime.explainer import Explainer, Explanation
from camrt.runtime.methods import get_convention
from camrt.runtime.metrics.base import mean
from camrt.runtime.metrics.registry import Metrics

Stage = Callable[[Config, str], None]  # told which configuration is at which stage (the progress bar)
SUMMARISED = ("average_drop_", "increase_", "deletion_auc_", "insertion_auc_")  # metric columns the bench reports


@dataclass(frozen=True)
class Settings:
    """What every configuration runs: the method and its options, batch sizes, repeats, metrics, engine options."""

    method: str = "scorecam"
    convention: str = "paper"
    options: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int = 64  # the explanations' batch
    batch_sizes: Sequence[int] = (1, 8, 64)  # the engine-alone timings'
    repeats: int = 3  # one-image explanations and engine calls timed per configuration
    seed: int = 0
    confidence: Sequence[str] = ("prob-top50",)
    causal: Sequence[str] = ("rise",)
    step: int | None = None
    device: str | None = None
    threads: int | None = None
    trust_pickles: bool = False


def run(bundle: Bundle, x: np.ndarray, configs: Sequence[Config], settings: Settings,
        targets: int | Sequence[int] | np.ndarray | None = None, stage: Stage | None = None) -> dict[str, Any]:
    """Bench ``configs`` (the reference first) on images x (N, 3, H, W) explaining ``targets`` (None: the
    reference's predicted classes); a configuration that cannot be made is a row with its reason."""
    get_convention(settings.method, settings.convention, **settings.options)  # a bad option fails before any work
    tell = stage or (lambda config, what: None)
    reference_config = configs[0]
    memory = latency.PeakMemory()
    reference = open_runner(reference_config, bundle, x[:1], settings.device, settings.threads)
    if isinstance(reference, str):
        raise CamrtError(f"the reference ({reference_config.label}) cannot run: {reference}")
    metrics = Metrics(reference, settings.batch_size, {"confidence": settings.confidence, "causal": settings.causal},
                      settings.step)
    rows: list[dict[str, Any]] = []
    ref_out: Explanation | None = None
    try:
        for config in configs:
            runner: Runner | str = reference
            if config is not reference_config:
                memory = latency.PeakMemory()
                tell(config, "making the engine")
                runner = open_runner(config, bundle, x[:1], settings.device, settings.threads, settings.trust_pickles)
            if isinstance(runner, str):
                rows.append({**_head(config), "status": "not offered" if not config.offered else "unavailable",
                             "reason": runner})
                continue
            try:
                row, out = _measure(config, runner, bundle, x, settings, targets if ref_out is None
                                    else ref_out.targets, tell)
                ref_out = ref_out or out
                tell(config, "metrics")
                row["fidelity"] = _fidelity(ref_out, out, metrics, x)
                row["memory"] = memory.fields()
                rows.append(row)
            finally:
                if runner is not reference:
                    close_runner(runner)
    finally:
        close_runner(reference)
    assert ref_out is not None
    return {"reference": reference_config.label, "images": int(x.shape[0]),
            "targets": [int(t) for t in ref_out.targets],
            "predicted": [int(c) for c in ref_out.logits.argmax(axis=1)],
            "settings": {"method": settings.method, "convention": settings.convention,
                         "options": dict(settings.options), "batch_size": settings.batch_size,
                         "batch_sizes": list(settings.batch_sizes), "repeats": settings.repeats, "seed": settings.seed,
                         "confidence": list(settings.confidence), "causal": list(settings.causal),
                         "device": settings.device or "cpu", "threads": settings.threads},
            "metrics_engine": f"{reference_config.label} (every configuration's maps scored on the reference)",
            "configurations": rows}


def _head(config: Config) -> dict[str, Any]:
    return {"configuration": config.label, "backend": config.backend, "precision": config.precision,
            "reference": config.is_reference}


def _measure(config: Config, runner: Runner, bundle: Bundle, x: np.ndarray, settings: Settings, targets: Any,
             tell: Stage) -> tuple[dict[str, Any], Explanation]:
    """Engine images/s per batch size, the explanation of every image (throughput, and the maps compared), the
    engine alone on the same passes, and the one-image explanation's percentiles."""
    explainer = Explainer(bundle, backend=runner)  # not its owner: the runner is closed by the caller

    def explain(images: np.ndarray, chosen: Any) -> Explanation:
        return explainer.explain(images, settings.method, settings.convention, targets=chosen,
                                 batch_size=settings.batch_size, seed=settings.seed, **settings.options)

    rates = {}
    for size in settings.batch_sizes:
        tell(config, f"engine alone, batch {size}")
        rates[str(size)] = latency.engine_rate(runner, x, size, settings.repeats)
    if settings.batch_size not in settings.batch_sizes:
        runner.logits(latency.tiled(x, settings.batch_size))  # warm the engine up at the explanations' batch
    tell(config, f"explaining {x.shape[0]} images")
    out = explain(x, targets)
    tell(config, "engine alone, the same passes")
    passes = out.passes_run + x.shape[0]  # the masked passes and one clean pass per image
    engine = latency.engine_seconds(runner, x, passes, settings.batch_size)
    tell(config, f"one image, {settings.repeats} times")
    one = latency.timed(lambda: explain(x[:1], out.targets[:1]), settings.repeats)
    row = {**_head(config), "status": "reference" if config.is_reference else "ok", "latency": {
        "engine_images_per_s": rates,
        "explain_one_image_s": latency.percentiles(one),
        "throughput_images_per_s": x.shape[0] / out.seconds,
        "explain_seconds": out.seconds,
        "engine_seconds_same_passes": engine,
        "explain_over_engine": out.seconds / engine if engine > 0 else None,
        "passes": passes, "passes_run": out.passes_run, "passes_saved": out.passes_saved,
    }}
    return row, out


def _fidelity(reference: Explanation, out: Explanation, metrics: Metrics, x: np.ndarray) -> dict[str, Any]:
    """The per-image comparison with the reference, and the means of the metrics of this configuration's maps
    (scored on the reference engine, for the reference's targets and clean logits)."""
    compared = fidelity.compare(reference, out)
    same = compared.pop("same_class")
    measured = metrics.measure(x, out.saliency[None], reference.targets, reference.logits)
    return {
        **{name: fidelity.summary(values) for name, values in compared.items()},
        "same_class": {"images": int(same.size), "same": int(same.sum()),
                       "changed": [int(i) for i in np.flatnonzero(~same)],
                       "predicted": [int(c) for c in out.logits.argmax(axis=1)]},
        "metrics": {name: mean(values[0]) for name, values in measured.columns.items()
                    if name.startswith(SUMMARISED)},
    }
