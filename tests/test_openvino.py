"""The OpenVINO backend: FP32 equal to ONNX Runtime for every method and convention, BF16 and calibrated INT8 close
to FP32, the INT8 graph in the bundle (hashed, atomic, replaceable), and one-line errors for bad input."""

from __future__ import annotations

import json
import shutil
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camrt.errors import BundleError, CamrtError, InputError
from camrt.runtime.backends import make_runner, runner_options
from camrt.runtime.bundle import Bundle
from camrt.runtime.explainer import Explainer
from camrt.runtime.methods import list_conventions

from blocked_imports import run_without
from tiny import SIZE, Tiny, fresh_images

ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install camrt[openvino])")

from camrt.runtime.backends import openvino as ov_backend  # noqa: E402  # after the skip: needs openvino to run
from camrt.runtime.calibrate import calibrate  # noqa: E402

HAS_BF16 = "BF16" in ov_backend.capabilities(ov.Core())
SAMPLES = {"sscam": {"num_samples": 2}, "iscam": {"num_samples": 2}}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.fixture(scope="module")
def explainers(tiny_bundle):
    ort = Explainer(tiny_bundle, intra_op_threads=1)
    fp32 = Explainer(tiny_bundle, backend="openvino", threads=1)
    yield ort, fp32
    ort.close()
    fp32.close()


@pytest.fixture(scope="module")
def calibrated(tiny_bundle, tmp_path_factory):
    """A copy of the tiny bundle with an INT8 graph calibrated on 8 random images (16 inputs)."""
    bundle = shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("int8") / "bundle")
    x = np.random.default_rng(1).standard_normal((8, 3, SIZE, SIZE)).astype(np.float32)
    return calibrate(bundle, x, samples=16)


# ------------------------------------------------------------------------------------------ FP32 parity
@pytest.mark.parametrize("method,convention", [(m, c) for m, cs in list_conventions().items() for c in cs])
def test_fp32_equals_onnxruntime(explainers, method, convention):
    ort, fp32 = explainers
    x, seed = fresh_images(3)
    options = SAMPLES.get(method, {})
    expected = ort.explain(x, method, convention, batch_size=16, seed=0, **options)
    got = fp32.explain(x, method, convention, batch_size=16, seed=0, **options)
    np.testing.assert_array_equal(got.targets, expected.targets, err_msg=f"seed {seed}")
    for name in ("weights", "saliency"):  # float32 engines summing in another order: 1e-4 of the largest value
        want, have = getattr(expected, name), getattr(got, name)
        np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-4 * max(float(np.abs(want).max()), 1e-12),
                                   err_msg=f"{name}, seed {seed}")


def test_runner_graphs_match_onnxruntime_and_close(tiny_bundle):
    bundle = Bundle.load(tiny_bundle)
    x, seed = fresh_images(5)
    reference = make_runner("onnxruntime", bundle, intra_op_threads=1)
    with make_runner("openvino", bundle, **runner_options("openvino", None, "fp32", 1)) as runner:
        activations = runner.features(x)
        np.testing.assert_allclose(activations, reference.features(x), rtol=1e-4, atol=1e-5, err_msg=str(seed))
        np.testing.assert_allclose(runner.head(activations), reference.head(activations), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(runner.logits(x), reference.logits(x), rtol=1e-4, atol=1e-5)
        first = runner.logits(x[:2])
        runner.logits(x)  # the next call reuses the request's buffers: an earlier result must not change
        np.testing.assert_array_equal(first, runner.logits(x[:2]))
    with pytest.raises(CamrtError, match="^backend 'openvino': this runner is closed; make a new one$"):
        runner.logits(x)


def test_throughput_hint_splits_a_batch_over_its_requests_and_gives_the_same_logits(tiny_bundle):
    bundle = Bundle.load(tiny_bundle)
    x, _ = fresh_images(9)
    with make_runner("openvino", bundle, hint="THROUGHPUT") as runner, make_runner("openvino", bundle) as latency:
        np.testing.assert_allclose(runner.logits(x), latency.logits(x), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ BF16, INT8
@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no native BF16")
def test_bf16_maps_correlate_with_fp32_and_the_clean_pass_stays_fp32(tiny_bundle, explainers):
    _, fp32 = explainers
    x, seed = fresh_images(4)
    with Explainer(tiny_bundle, backend="openvino", precision="bf16") as bf16:
        np.testing.assert_array_equal(bf16.runner.features(x), fp32.runner.features(x))
        lower = bf16.explain(x, "scorecam", "torchcam")
        assert not np.array_equal(bf16.runner.logits(x), fp32.runner.logits(x))  # the masked passes are BF16
    exact = fp32.explain(x, "scorecam", "torchcam")
    np.testing.assert_array_equal(lower.targets, exact.targets)
    r = [_pearson(a, b) for a, b in zip(lower.saliency, exact.saliency)]
    assert min(r) > 0.99, (r, seed)


def test_int8_maps_correlate_with_fp32(calibrated, explainers):
    _, fp32 = explainers
    x, seed = fresh_images(4)
    with Explainer(calibrated, backend="openvino", precision="int8") as int8:
        lower = int8.explain(x, "scorecam", "torchcam")
        assert not np.allclose(int8.runner.logits(x), fp32.runner.logits(x), rtol=1e-4)  # INT8 did run
    exact = fp32.explain(x, "scorecam", "torchcam")
    r = [_pearson(a, b) for a, b in zip(lower.saliency, exact.saliency)]
    assert np.mean(r) > 0.95 and min(r) > 0.9, (r, seed)


def test_the_calibration_is_recorded_hashed_and_replaced_atomically(calibrated, tmp_path):
    record = calibrated.manifest.int8["openvino"]
    assert record["engine"] == "openvino" and list(calibrated.manifest.int8) == ["openvino"]
    facts = record["calibration"]
    assert (facts["samples"], facts["clean"], facts["masked"], facts["mix"]) == (16, 0, 16, "masked")
    assert facts["images"] == 8
    assert facts["nncf"] and facts["openvino"] and facts["date"] and facts["mask"] == "scorecam:paper"
    for name in (record["graph"], record["weights"]):
        assert name in calibrated.manifest.files and (calibrated.root / name).is_file()
    # calibrating again (another recipe) lists the new graph and deletes the old one; the bundle still verifies
    bundle = shutil.copytree(calibrated.root, tmp_path / "again")
    again = calibrate(bundle, np.random.default_rng(2).standard_normal((4, 3, SIZE, SIZE)).astype(np.float32),
                      samples=6, mix="clean", ignore="first-conv+head", preset="mixed")
    facts = again.manifest.int8["openvino"]["calibration"]
    assert (facts["clean"], facts["masked"], facts["ignore"], facts["preset"]) == (4, 0, "first-conv+head", "mixed")
    assert len(facts["ignored_scope"]) >= 2  # the first convolution and the head's MatMul
    assert not (bundle / record["graph"]).exists() and record["graph"] not in again.manifest.files
    assert sorted(p.name for p in bundle.iterdir() if p.name.startswith("int8-")) == sorted(
        [again.manifest.int8["openvino"]["graph"], again.manifest.int8["openvino"]["weights"]])
    assert not [p for p in bundle.iterdir() if p.name.endswith(".tmp")]


def test_the_calibration_set_mixes_clean_images_and_the_methods_masked_inputs():
    from camrt.kernels.masks import masked_inputs
    from camrt.runtime.calibrate import CalibrationSet, Recipe
    from camrt.runtime.methods import get_convention

    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 3, SIZE, SIZE)).astype(np.float32)
    activations = np.maximum(rng.standard_normal((3, 16, 8, 8)), 0).astype(np.float32)
    activations[1] = 0.0  # an image whose channels are all constant gives no masked input
    data = CalibrationSet(x, activations, Recipe(samples=16, mix="mixed", method="scorecam++"))
    assert (len(data.clean), len(data.jobs), len(data)) == (3, 13, 16)  # a quarter clean, capped by the images
    assert {b for b, _ in data.jobs} == {0, 2}
    items = list(data)
    assert all(item.shape == (1, 3, SIZE, SIZE) for item in items)
    np.testing.assert_array_equal(items[0][0], x[0])
    b, k = data.jobs[0]
    expected = masked_inputs(activations, x, np.array([b]), np.array([k]), get_convention("scorecam++").mask,
                             np.empty((1, 3, SIZE, SIZE), np.float32))
    np.testing.assert_array_equal(items[3], expected)
    np.testing.assert_array_equal(np.concatenate(list(data)), np.concatenate(items))  # the same on every pass
    assert len(CalibrationSet(x, activations, Recipe(samples=16, mix="clean"))) == 3


def test_a_modified_int8_graph_or_an_unlisted_one_is_refused(calibrated, tmp_path):
    bundle = shutil.copytree(calibrated.root, tmp_path / "tampered")
    weights = bundle / calibrated.manifest.int8["openvino"]["weights"]
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(BundleError, match="SHA-256 does not match"):
        Bundle.load(bundle)
    loaded = Bundle.load(calibrated.root)  # loaded, then swapped: the runner reads verified bytes only
    swapped = shutil.copytree(calibrated.root, tmp_path / "swapped")
    loaded.root = swapped
    (swapped / calibrated.manifest.int8["openvino"]["graph"]).write_text("<net/>")
    with pytest.raises(BundleError, match="SHA-256 does not match"):
        make_runner("openvino", loaded, precision="int8")
    manifest = json.loads((calibrated.root / "manifest.json").read_text())
    manifest["int8"]["openvino"]["graph"] = "elsewhere.xml"
    unlisted = shutil.copytree(calibrated.root, tmp_path / "unlisted")
    (unlisted / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"int8\.openvino\.graph must name a file listed in files, got 'elsewhere"):
        Bundle.load(unlisted)


def test_an_int8_graph_openvino_cannot_read_is_one_line(calibrated, tmp_path):
    import hashlib

    bundle = shutil.copytree(calibrated.root, tmp_path / "broken")
    graph = calibrated.manifest.int8["openvino"]["graph"]
    (bundle / graph).write_text("<net name='x'><layers><layer/></net>")  # hashed as listed, but no IR
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"][graph] = hashlib.sha256((bundle / graph).read_bytes()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as info:
        make_runner("openvino", Bundle.load(bundle), precision="int8")
    assert str(info.value).startswith(f"{bundle / graph}: OpenVINO cannot read it (")
    assert "\n" not in str(info.value) and "Exception from" not in str(info.value)


def test_reason_drops_openvinos_location_lines():
    error = RuntimeError("Exception from src/inference/src/cpp/core.cpp:117:\nException from src/plugin.cpp:54:\n"
                         "Check 'output_index >= 0' failed: no such op\n")
    assert ov_backend.reason(error) == "Check 'output_index >= 0' failed: no such op"
    assert ov_backend.reason(RuntimeError("")) == "RuntimeError"


def test_a_bundle_without_int8_still_loads_and_its_manifest_says_none(tiny_bundle):
    data = json.loads((Path(tiny_bundle) / "manifest.json").read_text())
    assert "int8" not in data or data["int8"] is None  # bundles from before camrt calibrate
    assert Bundle.load(tiny_bundle).manifest.int8 is None


# ------------------------------------------------------------------------------------------ one-line errors
def test_int8_without_calibration_names_camrt_calibrate(tiny_bundle):
    with pytest.raises(InputError) as info:
        make_runner("openvino", Bundle.load(tiny_bundle), precision="int8")
    assert str(info.value) == (f"--precision int8: {tiny_bundle} has no calibrated INT8 graph for openvino; run "
                               f"'camrt calibrate {tiny_bundle} IMAGES' first")


def test_a_precision_the_cpu_lacks_is_one_line(tiny_bundle, monkeypatch):
    monkeypatch.setattr(ov_backend, "capabilities", lambda core, device="CPU": ("FP32", "INT8"))
    for precision, need in (("bf16", "BF16"), ("fp16", "FP16")):
        with pytest.raises(InputError) as info:
            make_runner("openvino", Bundle.load(tiny_bundle), precision=precision)
        assert str(info.value) == (f"--precision {precision}: this CPU has no native {need} (FP32, INT8); "
                                   "use --precision fp32")


def test_openvino_missing_is_one_line(tiny_bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    with pytest.raises(CamrtError) as info:
        make_runner("openvino", Bundle.load(tiny_bundle))
    assert str(info.value) == "backend 'openvino' needs the openvino package: pip install camrt[openvino]"


def test_nncf_missing_names_the_extra(tiny_bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(CamrtError) as info:
        calibrate(tiny_bundle, np.zeros((1, 3, SIZE, SIZE), np.float32))
    assert str(info.value) == "camrt calibrate needs nncf (and openvino): pip install camrt[openvino]"


@pytest.mark.parametrize("options,message", [
    ({"samples": 0}, "samples: expected a positive integer, got 0"),
    ({"mix": "half"}, "mix: expected one of masked, mixed, clean, got 'half'"),
    ({"ignore": "all"}, "ignore: expected one of none, first-conv, head, first-conv+head, got 'all'"),
    ({"method": "ablationcam"}, "method: expected one of scorecam, sscam, iscam, scorecam++, got 'ablationcam'"),
])
def test_bad_calibration_arguments_are_one_line(tiny_bundle, options, message):
    with pytest.raises(InputError) as info:
        calibrate(tiny_bundle, np.zeros((1, 3, SIZE, SIZE), np.float32), **options)
    assert str(info.value) == message


def test_runner_options_for_openvino_on_the_cpu():
    assert runner_options("openvino", None, "bf16", 2) == {"precision": "bf16", "threads": 2}
    assert runner_options("openvino", "cpu", "int8") == {"device": "cpu", "precision": "int8"}
    assert runner_options("onnxruntime", None, "int8") == {"precision": "int8"}  # its own calibrated QDQ graph
    with pytest.raises(CamrtError, match="^backend 'openvino' runs on the CPU only; drop --device cuda$"):
        make_runner("openvino", None, device="cuda")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ the command
def _photos(folder: Path, good: int, bad: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(good):
        Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(folder / f"good{i}.png")
    for i in range(bad):
        (folder / f"bad{i}.jpg").write_bytes(b"not a jpeg at all")
    return folder


def test_cli_calibrate_skips_bad_images_in_one_line_each(tiny_bundle, tmp_path, capsys):
    from camrt.cli import main

    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    photos = _photos(tmp_path / "photos", good=3, bad=2)
    assert main(["calibrate", str(bundle), str(photos), "--samples", "8"]) == 2  # written, but images skipped
    err = capsys.readouterr()
    warnings = [line for line in err.err.splitlines() if line.startswith("camrt: warning:")]
    assert [w.split(": ")[2] for w in warnings] == [str(photos / "bad0.jpg"), str(photos / "bad1.jpg")]
    assert all(w.endswith("; skipped") for w in warnings)
    assert "INT8 graph for openvino (and its .bin) written, calibrated on 3 image(s)" in err.out
    assert Bundle.load(bundle).manifest.int8["openvino"]["calibration"]["images"] == 3


def test_cli_calibrate_with_no_usable_image_fails_in_one_line(tiny_bundle, tmp_path, capsys):
    from camrt.cli import main

    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    photos = _photos(tmp_path / "photos", good=0, bad=2)
    assert main(["calibrate", str(bundle), str(photos)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"camrt: error: {photos}: none of its 2 image(s) could be read; nothing to calibrate on"
    assert Bundle.load(bundle).manifest.int8 is None


# ------------------------------------------------------------------------------------------ no torch, memory
def test_the_openvino_backend_runs_without_torch(calibrated):
    run_without(f"""
        import numpy as np
        import camrt
        x = np.random.default_rng(0).standard_normal((2, 3, {SIZE}, {SIZE})).astype(np.float32)
        for precision in ("fp32", "int8"):
            with camrt.Explainer({str(calibrated.root)!r}, backend="openvino", precision=precision) as e:
                assert e.explain(x, "scorecam++").saliency.shape == (2, {SIZE}, {SIZE})
    """)


def _peak(explainer: Explainer) -> int:
    x = np.random.default_rng(0).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    explainer.explain(x, "scorecam", "torchcam", batch_size=8)  # warm-up
    tracemalloc.start()
    try:
        explainer.explain(x, "scorecam", "torchcam", batch_size=8)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_flat_in_channels(tmp_path):
    import camrt

    peaks = []
    for k in (16, 512):
        out = tmp_path / f"k{k}"
        camrt.export(Tiny(seed=0, k=k).eval(), "features", out, input_shape=(3, SIZE, SIZE), model_name="tiny")
        with Explainer(out, backend="openvino", threads=1) as explainer:
            peaks.append(_peak(explainer))
    # as tests/test_memory.py: K = 512 may add O(K) bookkeeping and its activations, never K masked inputs (6 MB)
    assert peaks[1] < peaks[0] + 1_000_000, peaks

