"""INT8 for the OpenVINO backend: NNCF quantizes the whole model (features then head, one OpenVINO model) on the
calibration set; the result is OpenVINO IR (an .xml graph and its .bin weights)."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

from camrt.errors import CamrtError
from camrt.runtime.backends.base import require
from camrt.runtime.backends.openvino import import_openvino, read_onnx, reason, whole_model
from camrt.runtime.bundle import FEATURES_FILE, HEAD_FILE, INT8_PREFIX, Bundle
from camrt.runtime.quantizers import Quantized

MISSING = "camrt calibrate needs nncf (and openvino): pip install camrt[openvino]"
PRESETS = ("performance", "mixed")  # NNCF's: symmetric, or asymmetric activations


def available() -> None:
    """A one-line error naming the extra when nncf or openvino is missing."""
    require("nncf", MISSING)
    import_openvino()


def ignored_names(features: Any, head: Any, ignore: str) -> list[str]:
    """The friendly names of the ops NNCF must leave in floating point: the first convolution, the head's ops."""
    names: list[str] = []
    if "first-conv" in ignore:
        names += [op.get_friendly_name() for op in features.get_ordered_ops()
                  if op.get_type_name() == "Convolution"][:1]
    if "head" in ignore:
        names += [op.get_friendly_name() for op in head.get_ordered_ops()
                  if op.get_type_name() in ("MatMul", "Convolution", "GroupConvolution")]
    return names


def quantize(bundle: Bundle, data: Any, recipe: Any) -> Quantized:
    """NNCF's INT8 model of ``bundle`` calibrated on ``data`` (a CalibrationSet), as OpenVINO IR."""
    nncf = require("nncf", MISSING)
    ov = import_openvino()
    core = ov.Core()
    features, head = read_onnx(ov, core, bundle, FEATURES_FILE), read_onnx(ov, core, bundle, HEAD_FILE)
    ignored = ignored_names(features, head, recipe.ignore)
    try:
        quantized = nncf.quantize(
            whole_model(ov, features, head), nncf.Dataset(data), subset_size=len(data),
            preset=getattr(nncf.QuantizationPreset, recipe.preset.upper()),
            ignored_scope=nncf.IgnoredScope(names=ignored) if ignored else None,
        )
    except Exception as exc:  # NNCF raises its own and OpenVINO's types
        raise CamrtError(f"{bundle.root}: NNCF cannot quantize it ({reason(exc)})") from None
    with tempfile.TemporaryDirectory(prefix="camrt-int8-") as folder:
        ov.save_model(quantized, str(Path(folder) / "int8.xml"), compress_to_fp16=False)
        xml, weights = (Path(folder) / "int8.xml").read_bytes(), (Path(folder) / "int8.bin").read_bytes()
    compiled = core.compile_model(quantized, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    stem = INT8_PREFIX + hashlib.sha256(xml + weights).hexdigest()[:16]
    record = {"engine": "openvino", "graph": f"{stem}.xml", "weights": f"{stem}.bin"}
    facts = {"ignored_scope": ignored, "preset": recipe.preset, "nncf": nncf.__version__, "openvino": ov.__version__}
    return Quantized({record["graph"]: xml, record["weights"]: weights}, record, facts, lambda x: compiled(x)[0])
