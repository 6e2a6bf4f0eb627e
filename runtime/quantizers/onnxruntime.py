"""INT8 for the ONNX Runtime backend: static QDQ quantization of the whole model (features then head merged into
one ONNX graph) by ``onnxruntime.quantization``, calibrated on the calibration set.

One recipe, the one ONNX Runtime's x86 and ARM kernels run fastest: unsigned 8-bit activations (per tensor,
min-max ranges), signed 8-bit weights per output channel (U8S8). On this repository's CPU it runs ResNet-18 at
about 3x FP32 ONNX Runtime, where S8S8 runs slower than FP32 (README "Backends and precisions").
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from camrt.errors import BundleError, CamrtError, InputError, first_line
from camrt.runtime.backends.base import require
from camrt.runtime.bundle import ACTIVATIONS, FEATURES_FILE, HEAD_FILE, IMAGE, INT8_PREFIX, LOGITS, Bundle
from camrt.runtime.quantizers import Quantized

MISSING = "camrt calibrate --engine onnxruntime needs onnx and onnxruntime: pip install camrt[cpu] onnx"
HEAD_OPS = ("MatMul", "Gemm", "Conv")


def available() -> None:
    """A one-line error naming what to install when onnx or onnxruntime's quantization tools are missing."""
    require("onnx", MISSING)
    require("onnxruntime.quantization", MISSING)


def _named(model: Any, prefix: str) -> Any:
    """``model`` with every unnamed node named ``prefix/i`` (the quantizer excludes nodes by name)."""
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{prefix}/{i}"
    return model


def whole_graph(bundle: Bundle) -> tuple[Any, list[Any], list[Any]]:
    """(features then head as one ONNX model, image -> logits; the features' nodes; the head's nodes), from the
    verified bytes. Bundles with external data (graphs over 2 GB) are refused in one line."""
    import onnx
    from onnx import compose

    if bundle.external_data():
        raise InputError(f"{bundle.root}: its graphs keep their weights in external data; camrt calibrate "
                         "--engine onnxruntime takes graphs under 2 GB (use --engine openvino)")
    try:
        features, head = (_named(onnx.load_from_string(bundle.read_verified(name)), key)
                          for key, name in (("features", FEATURES_FILE), ("head", HEAD_FILE)))
        merged = compose.merge_models(features, head, io_map=[(ACTIVATIONS, ACTIVATIONS)])
    except (BundleError, InputError):
        raise
    except Exception as exc:  # onnx raises ValueError, DecodeError and its checker's types
        raise BundleError(f"{bundle.root}: its graphs cannot be merged into one ONNX model ({first_line(exc)})") \
            from None
    default = [o for o in merged.opset_import if o.domain in ("", "ai.onnx")]
    kept = [o for o in merged.opset_import if o.domain not in ("", "ai.onnx")]
    del merged.opset_import[:]
    merged.opset_import.extend([max(default, key=lambda o: o.version)] + kept)  # one default-domain opset
    return merged, list(features.graph.node), list(head.graph.node)


def ignored_nodes(features: list[Any], head: list[Any], ignore: str) -> list[str]:
    """The names of the nodes left in floating point: the first convolution, the head's matrix products."""
    names: list[str] = []
    if "first-conv" in ignore:
        names += [n.name for n in features if n.op_type == "Conv"][:1]
    if "head" in ignore:
        names += [n.name for n in head if n.op_type in HEAD_OPS]
    return names


def reader(data: Any) -> Any:
    """The calibration set as ONNX Runtime's CalibrationDataReader: one {image: (1, 3, H, W)} at a time, remade on
    every pass (rewind)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.items = iter(data)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self.items, None)
            return None if item is None else {IMAGE: item}

        def rewind(self) -> None:
            self.items = iter(data)

    return Reader()


def quantize(bundle: Bundle, data: Any, recipe: Any) -> Quantized:
    """ONNX Runtime's static QDQ INT8 model of ``bundle`` calibrated on ``data`` (a CalibrationSet)."""
    import onnx
    import onnxruntime as ort
    from onnxruntime import quantization as q
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if recipe.preset != "performance":
        raise InputError(f"preset: NNCF's ({recipe.preset!r}); --engine onnxruntime has one recipe (U8S8)")
    model, features, head = whole_graph(bundle)
    ignored = ignored_nodes(features, head, recipe.ignore)
    with tempfile.TemporaryDirectory(prefix="camrt-int8-") as folder:
        ready, out = Path(folder) / "ready.onnx", Path(folder) / "int8.onnx"
        try:  # shapes inferred and the graph optimised (batch norms folded, ...) first, as ONNX Runtime advises
            quant_pre_process(model, ready, skip_symbolic_shape=True)
            q.quantize_static(
                str(ready), out, reader(data), quant_format=q.QuantFormat.QDQ, per_channel=True,
                activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                nodes_to_exclude=ignored or None, calibrate_method=q.CalibrationMethod.MinMax,
            )  # min-max calibration keeps two numbers per tensor per input, not the tensors: memory stays small
            graph = out.read_bytes()
        except (BundleError, InputError):
            raise
        except Exception as exc:  # onnxruntime and onnx raise their own types
            raise CamrtError(f"{bundle.root}: ONNX Runtime cannot quantize it ({first_line(exc)})") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    name = INT8_PREFIX + hashlib.sha256(graph).hexdigest()[:16] + ".onnx"

    facts = {"ignored_scope": ignored, "format": "QDQ", "activations": "uint8, per tensor, min-max",
             "weights": "int8, per output channel", "onnxruntime": ort.__version__, "onnx": onnx.__version__}
    return Quantized({name: graph}, {"engine": "onnxruntime", "graph": name}, facts,
                     lambda x: session.run([LOGITS], {IMAGE: x})[0])
