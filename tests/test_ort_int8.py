"""ONNX Runtime's calibrated INT8 (static QDQ, U8S8): made by ``camrt calibrate --engine onnxruntime`` into the
bundle beside OpenVINO's, close to FP32 on fresh inputs, the clean pass still FP32, and one-line errors."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camrt.errors import BundleError, CamrtError, InputError
from camrt.runtime.backends import make_runner
from camrt.runtime.bundle import Bundle
from camrt.runtime.explainer import Explainer

from blocked_imports import run_without
from tiny import SIZE, fresh_images

pytest.importorskip("onnx", reason="onnx is not installed (calibrating for onnxruntime needs it)")
pytest.importorskip("onnxruntime.quantization")

from camrt.runtime.calibrate import calibrate  # noqa: E402


def _photos(folder: Path, n: int) -> Path:
    """``n`` random RGB photos p0.png ... in ``folder``."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(folder / f"p{i}.png")
    return folder


@pytest.fixture(scope="module")
def calibrated(tiny_bundle, tmp_path_factory) -> Bundle:
    """A copy of the tiny bundle with an ONNX Runtime INT8 graph calibrated on 8 random images (24 inputs)."""
    bundle = shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("ort-int8") / "bundle")
    x = np.random.default_rng(1).standard_normal((8, 3, SIZE, SIZE)).astype(np.float32)
    return calibrate(bundle, x, samples=24, mix="mixed", engine="onnxruntime")


def test_int8_maps_correlate_with_fp32_and_the_clean_pass_stays_fp32(calibrated):
    x, seed = fresh_images(4)
    with Explainer(calibrated.root, intra_op_threads=1) as fp32, \
            Explainer(calibrated.root, precision="int8", intra_op_threads=1) as int8:
        assert not np.allclose(int8.runner.logits(x), fp32.runner.logits(x), rtol=1e-3)  # INT8 did run
        np.testing.assert_array_equal(int8.runner.features(x), fp32.runner.features(x))  # the clean pass: FP32
        exact, lower = (e.explain(x, "scorecam", "torchcam") for e in (fp32, int8))
    np.testing.assert_array_equal(lower.targets, exact.targets)
    r = [float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) for a, b in zip(lower.saliency, exact.saliency)]
    assert np.mean(r) > 0.95 and min(r) > 0.9, (r, seed)


def test_the_graph_is_qdq_hashed_and_recorded(calibrated):
    import onnx

    record = calibrated.manifest.int8["onnxruntime"]
    assert record["engine"] == "onnxruntime" and record["graph"] in calibrated.manifest.files
    graph = onnx.load(str(calibrated.root / record["graph"]))
    ops = {node.op_type for node in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert [i.name for i in graph.graph.input] == ["image"] and [o.name for o in graph.graph.output] == ["logits"]
    facts = record["calibration"]
    assert (facts["samples"], facts["clean"], facts["masked"], facts["mix"]) == (24, 6, 18, "mixed")
    assert facts["format"] == "QDQ" and facts["onnxruntime"] and facts["onnx"] and 0 <= facts["top1_agreement"] <= 1


def test_calibrating_one_engine_keeps_the_others_graph(calibrated, tmp_path):
    pytest.importorskip("nncf")
    bundle = shutil.copytree(calibrated.root, tmp_path / "both")
    x = np.random.default_rng(2).standard_normal((4, 3, SIZE, SIZE)).astype(np.float32)
    both = calibrate(bundle, x, samples=6, engine="openvino")
    assert list(both.manifest.int8) == ["onnxruntime", "openvino"]
    assert both.manifest.int8["onnxruntime"] == calibrated.manifest.int8["onnxruntime"]
    again = calibrate(bundle, x, samples=6, ignore="first-conv+head", engine="onnxruntime")  # replaces ORT's only
    old, new = calibrated.manifest.int8["onnxruntime"]["graph"], again.manifest.int8["onnxruntime"]["graph"]
    assert old != new and not (bundle / old).exists() and (bundle / new).is_file()
    assert again.manifest.int8["openvino"] == both.manifest.int8["openvino"]
    assert len(again.manifest.int8["onnxruntime"]["calibration"]["ignored_scope"]) >= 2  # first conv, head's Gemm
    for precision, backend in (("int8", "onnxruntime"), ("int8", "openvino")):
        with Explainer(bundle, backend=backend, precision=precision) as e:
            assert e.explain(x[:1], "scorecam").saliency.shape == (1, SIZE, SIZE)


def test_a_first_calibrate_record_still_loads(calibrated, tmp_path):
    """Bundles calibrated before ONNX Runtime INT8 hold one OpenVINO record, not one per engine."""
    bundle = shutil.copytree(calibrated.root, tmp_path / "old")
    manifest = json.loads((bundle / "manifest.json").read_text())
    ort = manifest["int8"]["onnxruntime"]
    record = {**ort, "engine": "openvino", "weights": ort["graph"]}  # any listed files: only the shape is read
    manifest["int8"] = record
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert Bundle.load(bundle).manifest.int8 == {"openvino": record}


def test_a_tampered_int8_graph_is_refused(calibrated, tmp_path):
    loaded = Bundle.load(calibrated.root)
    swapped = shutil.copytree(calibrated.root, tmp_path / "swapped")
    loaded.root = swapped
    (swapped / calibrated.manifest.int8["onnxruntime"]["graph"]).write_bytes(b"\0" * 16)
    with pytest.raises(BundleError, match="SHA-256 does not match"):
        make_runner("onnxruntime", loaded, precision="int8")


# ------------------------------------------------------------------------------------------ one-line errors
def test_int8_without_its_graph_names_the_command(tiny_bundle):
    with pytest.raises(InputError) as info:
        make_runner("onnxruntime", Bundle.load(tiny_bundle), precision="int8")
    assert str(info.value) == (f"--precision int8: {tiny_bundle} has no calibrated INT8 graph for onnxruntime; run "
                               f"'camrt calibrate {tiny_bundle} IMAGES --engine onnxruntime' first")


def test_int8_on_a_gpu_is_refused_in_one_line(calibrated):
    with pytest.raises(InputError, match="^--precision int8: backend onnxruntime runs INT8 on the CPU only; drop "
                                         "--device$"):
        make_runner("onnxruntime", calibrated, device="cuda", precision="int8")


@pytest.mark.parametrize("options,message", [
    ({"preset": "mixed"}, "preset: NNCF's ('mixed'); --engine onnxruntime has one recipe (U8S8)"),
    ({"engine": "tflite"}, "engine: expected one of openvino, onnxruntime, got 'tflite'"),
])
def test_bad_arguments_are_one_line(tiny_bundle, tmp_path, options, message):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    with pytest.raises(InputError) as info:
        calibrate(bundle, np.ones((1, 3, SIZE, SIZE), np.float32), **{"engine": "onnxruntime", **options})
    assert str(info.value) == message
    assert Bundle.load(bundle).manifest.int8 is None


def test_onnx_missing_is_one_line(tiny_bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(CamrtError) as info:
        calibrate(tiny_bundle, np.zeros((1, 3, SIZE, SIZE), np.float32), engine="onnxruntime")
    assert str(info.value) == ("camrt calibrate --engine onnxruntime needs onnx and onnxruntime: "
                               "pip install camrt[cpu] onnx")


def test_cli_calibrates_for_onnxruntime_then_explains_at_int8(tiny_bundle, tmp_path, capsys):
    from camrt.cli import main

    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    photos = _photos(tmp_path / "photos", 3)
    assert main(["calibrate", str(bundle), str(photos), "--engine", "onnxruntime", "--samples", "8"]) == 0
    out = capsys.readouterr().out
    assert "INT8 graph for onnxruntime written, calibrated on 3 image(s)" in out and ".bin" not in out
    assert main(["explain", str(bundle), str(photos / "p0.png"), "--precision", "int8", "--out",
                 str(tmp_path / "maps")]) == 0


def test_a_run_resumes_after_calibrating_and_an_int8_run_is_pinned_to_its_graph(tiny_bundle, tmp_path):
    """camrt calibrate changes no FP32 result, so an FP32 run resumes over it; a run at INT8 records its graph's
    SHA-256 and precision, so it never resumes over another calibration or precision."""
    from camrt.runtime.explain_dataset import explain_dataset

    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    photos = _photos(tmp_path / "photos", 2)
    x = np.random.default_rng(1).standard_normal((4, 3, SIZE, SIZE)).astype(np.float32)
    run = {"backend_options": {"intra_op_threads": 1}, "progress": False}
    explain_dataset(bundle, photos, tmp_path / "fp32", **run)
    calibrate(bundle, x, samples=8, engine="onnxruntime")
    explain_dataset(bundle, photos, tmp_path / "fp32", resume=True, **run)  # calibrating changed no FP32 result
    int8 = {**run, "backend_options": {"intra_op_threads": 1, "precision": "int8"}}
    with pytest.raises(InputError, match=r"other settings \(precision, int8_sha256\)"):
        explain_dataset(bundle, photos, tmp_path / "fp32", resume=True, **int8)
    explain_dataset(bundle, photos, tmp_path / "int8", **int8)
    written = json.loads((tmp_path / "int8" / "run.json").read_text())
    graph = Bundle.load(bundle).manifest.int8["onnxruntime"]["graph"]
    assert written["precision"] == "int8" and list(written["int8_sha256"]) == [graph]
    calibrate(bundle, x, samples=6, engine="onnxruntime")  # another calibration: another graph
    with pytest.raises(InputError, match=r"other settings \(int8_sha256\)"):
        explain_dataset(bundle, photos, tmp_path / "int8", resume=True, **int8)


def test_onnxruntime_int8_runs_without_torch(calibrated):
    run_without(f"""
        import numpy as np
        import camrt
        x = np.random.default_rng(0).standard_normal((2, 3, {SIZE}, {SIZE})).astype(np.float32)
        with camrt.Explainer({str(calibrated.root)!r}, precision="int8") as e:
            assert e.runner.precision == "int8" and e.explain(x, "scorecam").saliency.shape == (2, {SIZE}, {SIZE})
    """)


def test_an_int8_graph_onnxruntime_cannot_load_is_one_line(calibrated, tmp_path):
    import hashlib

    bundle = shutil.copytree(calibrated.root, tmp_path / "broken")
    graph = calibrated.manifest.int8["onnxruntime"]["graph"]
    (bundle / graph).write_bytes(b"not an onnx graph")  # hashed as listed, but no graph
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"][graph] = hashlib.sha256((bundle / graph).read_bytes()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as info:
        make_runner("onnxruntime", Bundle.load(bundle), precision="int8")
    assert str(info.value).startswith(f"{bundle / graph}: ONNX Runtime cannot load it (")
    assert "\n" not in str(info.value)


def test_a_precision_the_runner_lacks_and_external_data_are_one_line(tiny_bundle, monkeypatch):
    from camrt.runtime.backends.onnxruntime import OnnxrtRunner

    bundle = Bundle.load(tiny_bundle)
    with pytest.raises(InputError, match=r"^--precision bf16: backend onnxruntime takes fp32, int8 on the CPU$"):
        OnnxrtRunner(bundle, precision="bf16")
    monkeypatch.setattr(bundle, "external_data", lambda: {"features.onnx.data": b"\0"})
    with pytest.raises(InputError) as info:
        calibrate(bundle, np.ones((1, 3, SIZE, SIZE), np.float32), engine="onnxruntime")
    assert str(info.value) == (f"{tiny_bundle}: its graphs keep their weights in external data; camrt calibrate "
                               "--engine onnxruntime takes graphs under 2 GB (use --engine openvino)")
