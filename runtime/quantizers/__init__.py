"""INT8 quantizers, one module per engine: each turns a bundle's whole model and a calibration set
(runtime/calibrate.py) into the INT8 graph that engine runs, the files to add to the bundle and their record.

A new engine is one module with ``MISSING``, ``available()`` and ``quantize()`` plus one line in QUANTIZERS, which
also names the record keys that hold its files (what runtime/bundle_checks.py checks are listed and hashed).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from camrt.errors import InputError


@dataclass(frozen=True)
class Quantizer:
    """An engine's quantizer: its module, and the keys of its manifest record that name the bundle files."""

    module: str
    files: tuple[str, ...]


QUANTIZERS = {  # engine (the backend that runs the graph) -> its quantizer
    "openvino": Quantizer("camrt.runtime.quantizers.openvino", ("graph", "weights")),  # NNCF, OpenVINO IR
    "onnxruntime": Quantizer("camrt.runtime.quantizers.onnxruntime", ("graph",)),  # static QDQ (U8S8), ONNX
}
ENGINES = tuple(QUANTIZERS)


@dataclass
class Quantized:
    """What a quantizer made: the files for the bundle (content-addressed names), the manifest record's file
    entries (engine, graph, ...), the quantizer's facts for the record's ``calibration`` (its packages' versions,
    the ops left in floating point, its settings) and the INT8 model's logits, for the top-1 check against FP32."""

    files: dict[str, bytes]
    record: dict[str, Any]
    facts: dict[str, Any]
    logits: Callable[[np.ndarray], np.ndarray]


def quantizer(engine: str) -> Any:
    """The quantizer module of ``engine``, its packages checked (one-line errors naming what to install)."""
    if engine not in QUANTIZERS:
        raise InputError(f"engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    module = importlib.import_module(QUANTIZERS[engine].module)
    module.available()
    return module
