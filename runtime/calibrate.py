"""Calibrated INT8: an engine's quantizer (runtime/quantizers/: NNCF for OpenVINO, static QDQ for ONNX Runtime)
quantizes the whole model on what the engine will see.

The calibration set is the calibration images' masked inputs (the method's own mask op, kernels/masks.py, on
channels drawn at random from each image's non-constant ones) beside the clean images, made one at a time as the
quantizer asks for them, so memory is bounded by one image's activations. The INT8 graph goes into the bundle
under a content-addressed name with its SHA-256, and the manifest's ``int8`` records, per engine, how it was
calibrated; calibrating for one engine keeps the other's graph.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from camrt.errors import InputError
from camrt.kernels.masks import masked_inputs
from camrt.runtime.backends import close_runner, make_runner
from camrt.runtime.bundle import Bundle
from camrt.runtime.methods import METHODS, get_convention
from camrt.runtime.preprocess import load_images
from camrt.runtime.quantizers import ENGINES, quantizer

MIXES = ("masked", "mixed", "clean")
IGNORE = ("none", "first-conv", "head", "first-conv+head")
PRESETS = ("performance", "mixed")  # NNCF's (engine openvino); onnxruntime has one recipe
DEFAULT_ENGINE = "openvino"
DEFAULT_SAMPLES = 300  # NNCF's own default subset size
DEFAULT_MIX = "masked"  # closest to FP32 maps on EfficientNet-Lite0 (benchmarks/bench_calibration.py); the clean
# pass runs at FP32 (runtime/backends/openvino.py), so the INT8 graph sees only masked and perturbed inputs
DEFAULT_IGNORE = "none"
DEFAULT_PRESET = "performance"
CLEAN_SHARE = 0.25  # mixed: at most this share of the samples are clean images, the rest masked inputs
# the methods whose passes are masked images (the head-only methods perturb activations, which INT8 never sees)
MASK_METHODS = tuple(m for m, table in METHODS.items() if not any(getattr(c, "head", None) for c in table().values()))


@dataclass(frozen=True)
class Recipe:
    """How the calibration set is made and what NNCF leaves in floating point."""

    samples: int = DEFAULT_SAMPLES
    mix: str = DEFAULT_MIX
    ignore: str = DEFAULT_IGNORE
    preset: str = DEFAULT_PRESET
    method: str = "scorecam"
    convention: str = "paper"
    seed: int = 0

    def check(self) -> None:
        """One-line errors naming the argument."""
        if not isinstance(self.samples, int) or self.samples < 1:
            raise InputError(f"samples: expected a positive integer, got {self.samples!r}")
        for name, value, choices in (("mix", self.mix, MIXES), ("ignore", self.ignore, IGNORE),
                                     ("preset", self.preset, PRESETS), ("method", self.method, MASK_METHODS)):
            if value not in choices:
                raise InputError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")


class CalibrationSet:
    """The calibration inputs, (1, 3, H, W) each, remade on every pass NNCF takes over them (deterministic)."""

    def __init__(self, x: np.ndarray, activations: np.ndarray, recipe: Recipe) -> None:
        self.x, self.activations = x, activations
        self.mask = get_convention(recipe.method, recipe.convention).mask
        n = x.shape[0]
        clean = {"clean": min(n, recipe.samples), "masked": 0,
                 "mixed": min(n, max(1, int(recipe.samples * CLEAN_SHARE)))}[recipe.mix]
        masked = 0 if recipe.mix == "clean" else recipe.samples - clean
        rng = np.random.default_rng(recipe.seed)
        flat = activations.reshape(n, activations.shape[1], -1)
        live = [np.flatnonzero(flat[b].max(axis=1) > flat[b].min(axis=1)) for b in range(n)]
        owners = np.array([b for b in range(n) if live[b].size], dtype=np.int64)
        if masked and not owners.size:
            raise InputError("calibration images: every channel of their activations is constant; no masked inputs")
        self.clean = np.arange(clean)
        bi = owners[np.arange(masked) % max(1, owners.size)] if masked else np.empty(0, np.int64)
        self.jobs = [(int(b), int(rng.choice(live[b]))) for b in bi]
        self.buffer = np.empty((1, *x.shape[1:]), np.float32)

    def __len__(self) -> int:
        return len(self.clean) + len(self.jobs)

    def __iter__(self) -> Iterator[np.ndarray]:
        for b in self.clean:
            yield self.x[b : b + 1]
        for b, k in self.jobs:
            yield masked_inputs(self.activations, self.x, np.array([b]), np.array([k]), self.mask,
                                self.buffer).copy()


def calibrate(bundle: str | Path | Bundle, images: Any, samples: int = DEFAULT_SAMPLES,
              mix: str = DEFAULT_MIX, ignore: str = DEFAULT_IGNORE, preset: str = DEFAULT_PRESET,
              method: str = "scorecam", convention: str = "paper", seed: int = 0, engine: str = DEFAULT_ENGINE,
              log: Callable[[str], None] | None = None) -> Bundle:
    """Quantize ``bundle``'s whole model to INT8 for ``engine`` (openvino: NNCF; onnxruntime: static QDQ),
    calibrated on ``images`` (paths or PIL images, or (N, 3, H, W) preprocessed as the bundle says,
    ``camrt.load_images``) and their masked inputs; write it into the bundle and return the bundle as reloaded.
    ``samples``: calibration inputs; ``mix``: mixed, masked or clean; ``ignore``: none, first-conv, head or
    first-conv+head; ``preset``: NNCF's performance (symmetric) or mixed."""
    recipe = Recipe(samples, mix, ignore, preset, method, convention, seed)
    recipe.check()
    tool = quantizer(engine)
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    x = np.asarray(images if isinstance(images, np.ndarray) else load_images(images, bundle), dtype=np.float32)
    if x.ndim != 4 or x.shape[1:] != tuple(bundle.manifest.input_shape) or not x.shape[0]:
        raise InputError(f"images: expected (N, {', '.join(map(str, bundle.manifest.input_shape))}) with N >= 1, "
                         f"got {x.shape}")
    if not np.isfinite(x).all():
        raise InputError("images: contain NaN or infinite values")
    started = time.perf_counter()
    fp32 = make_runner(engine, bundle)  # the engine's own FP32 activations and classes
    try:
        activations = np.concatenate([fp32.features(x[i : i + 16]) for i in range(0, x.shape[0], 16)])
        clean_logits = np.concatenate([fp32.head(activations[i : i + 16]) for i in range(0, x.shape[0], 16)])
    finally:
        close_runner(fp32)
    data = CalibrationSet(x, activations, recipe)
    if log:
        log(f"calibrating for {engine} on {len(data.clean)} clean images and {len(data.jobs)} masked inputs")
    made = tool.quantize(bundle, data, recipe)
    int8_logits = np.concatenate([made.logits(x[i : i + 16]) for i in range(0, x.shape[0], 16)])
    record: dict[str, Any] = {**made.record, "calibration": {
        "images": int(x.shape[0]), "samples": len(data), "clean": len(data.clean), "masked": len(data.jobs),
        "mix": mix, "mask": f"{method}:{convention}", "ignore": ignore, "seed": seed, **made.facts,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 1),
        "top1_agreement": float(np.mean(np.argmax(int8_logits, 1) == np.argmax(clean_logits, 1))),
    }}
    bundle.add_files(made.files, int8={**(bundle.manifest.int8 or {}), engine: record})
    return Bundle.load(bundle.root)


__all__ = ["DEFAULT_ENGINE", "ENGINES", "CalibrationSet", "Recipe", "calibrate"]
