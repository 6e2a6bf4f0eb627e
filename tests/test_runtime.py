"""The runtime: batch-size invariance, exact pass saving, bad input, bundles, and no torch at run time."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from camrt import Bundle, BundleError, CamrtError, Explainer, InputError

import reference_loops as ref
from blocked_imports import run_without
from tiny import SIZE, Tiny, images, torch_explainer


@pytest.mark.parametrize("method,convention", [("scorecam", "paper"), ("scorecam", "torchcam"),
                                               ("iscam", "torchcam"), ("sscam", "paper"), ("scorecam++", "paper")])
def test_batch_size_invariance(tiny_bundle, method, convention):
    explainer = Explainer(tiny_bundle)
    x = images(3, seed=np.random.SeedSequence().entropy % 2**32)
    opts = {"num_samples": 3} if method in ("iscam", "sscam") else {}
    runs = [explainer.explain(x, method, convention, batch_size=b, seed=5, **opts) for b in (1, 7, 64)]
    for other in runs[1:]:
        # ONNX Runtime may block a batch of 1 and of 64 differently: fp32 rounding only
        np.testing.assert_allclose(other.weights, runs[0].weights, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(other.saliency, runs[0].saliency, atol=1e-5)
        assert other.passes_run == runs[0].passes_run


def test_onnxruntime_matches_torch_backend(tiny_bundle_factory):
    model = Tiny(seed=4).eval()
    x = images(2, seed=np.random.SeedSequence().entropy % 2**32)
    a = tiny_bundle_factory(model).explain(x, "scorecam", "pytorch-grad-cam")
    b = torch_explainer(model).explain(x, "scorecam", "pytorch-grad-cam")
    np.testing.assert_allclose(a.logits, b.logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.weights, b.weights, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(a.saliency, b.saliency, atol=1e-5)


class _Counting:
    """Wraps a runner and counts the masked inputs it is given."""

    def __init__(self, runner):
        self.inner, self.name, self.count = runner, "counting", 0

    def features(self, x):
        return self.inner.features(x)

    def head(self, a):
        return self.inner.head(a)

    def logits(self, x):
        self.count += x.shape[0]
        return self.inner.logits(x)


def _dead_and_twin_model() -> Tiny:
    """Channels 0-3 always zero (dead ReLU), channel 5 an exact twin of channel 4."""
    model = Tiny(seed=2).eval()
    conv = model.features[2]
    with torch.no_grad():
        conv.weight[:4] = 0
        conv.bias[:4] = -1
        conv.weight[5] = conv.weight[4]
        conv.bias[5] = conv.bias[4]
    return model


@pytest.mark.parametrize("convention,run_per_image", [("paper", 11), ("pytorch-grad-cam", 11), ("torchcam", 11)])
def test_exact_pass_saving_scorecam(convention, run_per_image):
    model = _dead_and_twin_model()
    explainer = torch_explainer(model)
    plain = explainer.explain(images(2, seed=1), "scorecam", convention)
    counting = _Counting(explainer.runner)
    saved = Explainer(explainer.bundle, backend=counting).explain(images(2, seed=1), "scorecam", convention)
    zero_pass = convention != "paper"  # the paper skips constant channels; the others share one zero pass
    assert counting.count == saved.passes_run == 2 * run_per_image + zero_pass
    assert saved.passes_saved == 2 * (16 if zero_pass else 12) - saved.passes_run
    # and the result is the one every pass gives: channel 5 scored as channel 4, dead channels as the zero image
    assert saved.weights[0, 5] == saved.weights[0, 4]
    reference = _reference(model, convention)
    np.testing.assert_allclose(saved.weights, reference.weights, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(plain.saliency, saved.saliency)


def _reference(model: Tiny, convention: str):
    from pytorch_grad_cam import ScoreCAM

    x = images(2, seed=1)
    explainer = torch_explainer(model)
    ours = explainer.explain(x, "scorecam", convention)
    if convention == "pytorch-grad-cam":
        cam = ScoreCAM(model=model, target_layers=[model.features])
        ours.weights = ref.gradcam_run(cam, x, ours.targets)[0]
    return ours


def test_scorecampp_zero_channels_share_one_pass():
    model = _dead_and_twin_model()
    counting = _Counting(torch_explainer(model).runner)
    explainer = Explainer(torch_explainer(model).bundle, backend=counting)
    out = explainer.explain(images(3, seed=2), "scorecam++", "paper")
    assert counting.count == out.passes_run == 3 * 11 + 1  # 4 dead: one zero pass for all; the twin: none
    assert np.all(out.weights[:, :4] == out.weights[:, :1])  # the zero image's probability, exactly


def test_targets_and_shapes(tiny_bundle):
    explainer = Explainer(tiny_bundle)
    x = images(2, seed=9)
    out = explainer.explain(x, targets=[3, 7])
    assert out.targets.tolist() == [3, 7] and out.saliency.shape == (2, SIZE, SIZE) and out.weights.shape == (2, 16)
    assert out.saliency.dtype == np.float32 and 0 <= out.saliency.min() and out.saliency.max() <= 1
    assert explainer.explain(x, targets=4).targets.tolist() == [4, 4]
    np.testing.assert_array_equal(explainer.explain(x).targets, out.logits.argmax(1))


@pytest.mark.parametrize(
    "kwargs,word",
    [
        ({"targets": 10}, "targets"),
        ({"targets": -1}, "targets"),
        ({"targets": [1, 2, 3]}, "targets"),
        ({"method": "gradcam"}, "method"),
        ({"convention": "torchcam", "method": "scorecam++"}, "convention"),
        ({"num_samples": 0, "method": "iscam"}, "num_samples"),
        ({"gate": "relu", "method": "scorecam++"}, "gate"),
        ({"sigma": 3, "method": "scorecam"}, "sigma"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments(tiny_bundle, kwargs, word):
    with pytest.raises(InputError, match=word) as info:
        Explainer(tiny_bundle).explain(images(2, seed=0), **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "x,word",
    [
        (np.full((1, 3, SIZE, SIZE), np.nan, np.float32), "NaN"),
        (np.zeros((1, 3, SIZE + 1, SIZE), np.float32), "shape"),
        (np.zeros((1, 3, SIZE, SIZE), np.uint8), "dtype"),
        ([[1.0]], "numpy"),
    ],
)
def test_bad_images(tiny_bundle, x, word):
    with pytest.raises(InputError, match=word):
        Explainer(tiny_bundle).explain(x)


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_bad_bundles(tiny_bundle, tmp_path):
    with pytest.raises(BundleError, match="not found"):
        Bundle.load(tmp_path / "nope")
    broken = _copy(tiny_bundle, tmp_path / "no_manifest")
    (broken / "manifest.json").unlink()
    with pytest.raises(BundleError, match="manifest.json"):
        Bundle.load(broken)
    corrupt = _copy(tiny_bundle, tmp_path / "corrupt_json")
    (corrupt / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="corrupt JSON"):
        Bundle.load(corrupt)
    missing = _copy(tiny_bundle, tmp_path / "missing_head")
    (missing / "head.onnx").unlink()
    with pytest.raises(BundleError, match="head.onnx"):
        Bundle.load(missing)
    tampered = _copy(tiny_bundle, tmp_path / "tampered")
    with open(tampered / "features.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match="SHA-256"):
        Bundle.load(tampered)
    newer = _copy(tiny_bundle, tmp_path / "newer")
    data = json.loads((newer / "manifest.json").read_text())
    data["format_version"] = 99
    (newer / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="newer"):
        Bundle.load(newer)
    incomplete = _copy(tiny_bundle, tmp_path / "incomplete")
    data = json.loads((incomplete / "manifest.json").read_text())
    del data["activation_shape"]
    (incomplete / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="activation_shape"):
        Bundle.load(incomplete)
    miscropped = _copy(tiny_bundle, tmp_path / "miscropped")
    data = json.loads((miscropped / "manifest.json").read_text())
    data["preprocessing"]["crop"] = [data["input_shape"][1] + 8, data["input_shape"][2]]
    (miscropped / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"miscropped/manifest.json: preprocessing crops to \d+ x \d+, the model"):
        Bundle.load(miscropped)
    garbage = _copy(tiny_bundle, tmp_path / "garbage_onnx")
    (garbage / "head.onnx").write_bytes(b"not an onnx file")
    data = json.loads((garbage / "manifest.json").read_text())
    from camrt.runtime.bundle import sha256_file

    data["files"]["head.onnx"] = sha256_file(garbage / "head.onnx")
    (garbage / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="head.onnx"):
        Explainer(garbage)
    with pytest.raises(CamrtError, match="backend"):
        Explainer(tiny_bundle, backend="tensorflow")


def test_runtime_runs_without_torch(tiny_bundle):
    """The runtime never needs torch: with `import torch` made to fail, a bundle still loads and explains on
    ONNX Runtime."""
    run_without(f"""
        import numpy as np
        import camrt
        explainer = camrt.Explainer({str(tiny_bundle)!r})
        x = np.random.default_rng(0).standard_normal((2, 3, {SIZE}, {SIZE})).astype(np.float32)
        for method in ("scorecam", "sscam", "iscam", "scorecam++"):
            out = explainer.explain(x, method=method, num_samples=2) if method in ("sscam", "iscam") \\
                else explainer.explain(x, method=method)
            assert out.saliency.shape == (2, {SIZE}, {SIZE})
    """, timeout=120)


def test_torch_backend_loads_the_bundle_programs(tiny_bundle):
    """backend='torch' runs the bundle's torch.export programs: the same numbers as ONNX Runtime."""
    x = images(2, seed=np.random.SeedSequence().entropy % 2**32)
    a = Explainer(tiny_bundle).explain(x, "iscam", "torchcam", num_samples=2)
    b = Explainer(tiny_bundle, backend="torch", trust_pickles=True).explain(x, "iscam", "torchcam", num_samples=2)
    np.testing.assert_allclose(a.logits, b.logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.weights, b.weights, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(a.saliency, b.saliency, atol=1e-5)


def test_iscam_with_the_unit_path_is_scorecam():
    """IS-CAM with coefficients (1.0,) integrates nothing: it must give Score-CAM's weights and map exactly."""
    explainer = torch_explainer(Tiny(seed=6).eval())
    x = images(2, seed=np.random.SeedSequence().entropy % 2**32)
    for convention in ("paper", "torchcam"):
        a = explainer.explain(x, "iscam", convention, coefficients=[1.0])
        b = explainer.explain(x, "scorecam", convention)
        np.testing.assert_array_equal(a.weights, b.weights)
        np.testing.assert_array_equal(a.saliency, b.saliency)


def test_a_cancelled_image_runs_no_more_passes_and_the_others_are_unchanged(tiny_bundle):
    """Window.cancel (a serve client gone) drops an image's queued jobs; the images beside it get the maps they get
    alone, and the engine runs only what was left of theirs."""
    from camrt.runtime.engine.window import Image, Window
    from camrt.runtime.methods import get_convention

    explainer = Explainer(tiny_bundle)
    m = explainer.bundle.manifest
    x = images(3, seed=np.random.SeedSequence().entropy % 2**32)
    conv = get_convention("scorecam", "pytorch-grad-cam")
    batches: list[int] = []
    k = m.activation_shape[0]
    cancelled: list[bool] = []

    def on_batch(n: int) -> None:
        batches.append(n)
        if not cancelled and any(state.index == 1 for state in window.state.values()):
            cancelled.append(window.cancel(1))  # image 1 is in flight, some of its jobs still queued

    window = Window(explainer.runner, conv, 4, tuple(m.input_shape), tuple(m.activation_shape), m.num_classes,
                    on_batch=on_batch)
    kept = list(window.run(Image(i, x[i]) for i in range(3)))
    assert cancelled == [True] and [e.index for e in kept] == [0, 2]
    assert sum(batches) < 3 * k  # image 1's remaining passes never ran
    assert window.pending == 0 and not window.state and not window.cancel(1)
    alone = explainer.explain(x[[0, 2]], "scorecam", "pytorch-grad-cam")
    np.testing.assert_allclose(np.stack([e.saliency for e in kept]), alone.saliency, atol=1e-5)
