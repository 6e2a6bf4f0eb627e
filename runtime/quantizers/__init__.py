"""INT8 quantizers, one module per engine: each turns a bundle's whole model and a calibration set
(runtime/calibrate.py) into the INT8 graph that engine runs, the files to add to the bundle and their record.

A new engine is one module with ``MISSING``, ``available()`` and ``quantize()`` plus one line in QUANTIZERS.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from camrt.errors import InputError

QUANTIZERS = {  # engine (the backend that runs the graph) -> module
    "openvino": "camrt.runtime.quantizers.openvino",  # NNCF post-training quantization, OpenVINO IR
    "onnxruntime": "camrt.runtime.quantizers.onnxruntime",  # ONNX Runtime static QDQ (U8S8), an ONNX graph
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
    module = importlib.import_module(QUANTIZERS[engine])
    module.available()
    return module
