"""The engine configurations a bench compares: backend x precision from the registry, the reference first, and
each one's runner, or the one-line reason it cannot be made here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from camrt.errors import CamrtError, InputError, one_line
from camrt.runtime.backends import BACKENDS, close_runner, make_runner, on_gpu, precisions, runner_options
from camrt.runtime.backends.base import Runner
from camrt.runtime.bundle import Bundle
from camrt.runtime.engine import checked_logits

REFERENCE = ("onnxruntime", "fp32")  # what every configuration's maps and classes are compared with


@dataclass(frozen=True)
class Config:
    """One engine configuration: a backend at a precision."""

    backend: str
    precision: str

    @property
    def label(self) -> str:
        """``openvino bf16``: what the tables and the gate's messages name."""
        return f"{self.backend} {self.precision}"

    @property
    def is_reference(self) -> bool:
        return (self.backend, self.precision) == REFERENCE

    @property
    def offered(self) -> bool:
        """True when the backend's registry line lists this precision."""
        return self.precision in BACKENDS[self.backend].precisions


def names(text: str | Sequence[str], flag: str, known: Sequence[str]) -> list[str]:
    """A comma-separated list (or a sequence) of names, each once, every one in ``known``; one-line errors."""
    items = text.split(",") if isinstance(text, str) else list(text)
    chosen = list(dict.fromkeys(item.strip() for item in items if item.strip()))
    if not chosen:
        raise InputError(f"{flag}: name at least one")
    for name in chosen:
        if name not in known:
            raise InputError(f"{flag}: unknown {name!r}; choose from {', '.join(known)}")
    return chosen


def configurations(backends: str | Sequence[str], precision_names: str | Sequence[str]) -> list[Config]:
    """Every backend x precision asked for, the reference (FP32 ONNX Runtime) first whether asked for or not."""
    chosen = [Config(b, p) for b in names(backends, "--backends", list(BACKENDS))
              for p in names(precision_names, "--precisions", precisions())]
    return [Config(*REFERENCE), *(c for c in chosen if not c.is_reference)]


def engine_options(backend: str, precision: str, device: str | None = None, threads: int | None = None,
                   trust_pickles: bool = False) -> dict[str, Any]:
    """``make_runner``'s keyword arguments for ``backend`` at ``precision`` (``runner_options``); ``threads`` only
    where the backend takes a CPU thread count and runs on the CPU, ``trust_pickles`` only for torch."""
    cpu_threads = threads if BACKENDS[backend].threads and not on_gpu(backend, device) else None
    options: dict[str, Any] = runner_options(backend, device, precision, cpu_threads)
    if trust_pickles and backend == "torch":
        options["trust_pickles"] = True
    return options


def open_runner(config: Config, bundle: Bundle, probe: np.ndarray, device: str | None = None,
                threads: int | None = None, trust_pickles: bool = False) -> Runner | str:
    """The configuration's runner, checked on ``probe`` (a batch of one image), or the one-line reason it cannot be
    made: not offered by the backend, a package missing, a precision the device lacks, INT8 not calibrated, ...
    ``threads`` goes to the backends that take a CPU thread count, on the CPU."""
    if not config.offered:
        offers = ", ".join(BACKENDS[config.backend].precisions)
        return f"backend {config.backend} does not offer {config.precision} (it offers {offers})"
    runner = None
    try:
        options = engine_options(config.backend, config.precision, device, threads, trust_pickles)
        runner = make_runner(config.backend, bundle, **options)
        checked_logits(runner, probe, "the probe image")
        return runner
    except Exception as exc:  # noqa: BLE001 - any failure to make or run it is this configuration's reason
        if runner is not None:
            close_runner(runner)
        return one_line(exc) if isinstance(exc, CamrtError) else f"{type(exc).__name__}: {one_line(exc)}"
