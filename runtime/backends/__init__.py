"""Backends behind one interface; each is imported only when asked for."""

from __future__ import annotations

from typing import Any

from camrt.errors import CamrtError
from camrt.runtime.backends.base import Runner
from camrt.runtime.bundle import Bundle

BACKENDS = ("onnxruntime", "torch")


def make_runner(name: str, bundle: Bundle, **options: Any) -> Runner:
    """The runner called ``name`` for ``bundle``; unknown names and missing packages give one-line errors."""
    if name == "onnxruntime":
        from camrt.runtime.backends.onnxruntime import OnnxrtRunner

        return OnnxrtRunner(bundle, **options)
    if name == "torch":
        from camrt.runtime.backends.torch import TorchRunner

        return TorchRunner.from_bundle(bundle, **options)
    raise CamrtError(f"backend: unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Runner", "make_runner"]
