"""Parity of weights and maps with the implementation each convention names, on fresh random inputs.

grad-cam 1.5.7 and torchcam 0.5.0 run through their own code on the same model; the paper conventions and
ScoreCAM++ against loops written after the authors' code (tests/reference_loops.py). fp32 end to end: the
tolerances (1e-5 relative on weights, 1e-5 absolute on maps in [0, 1]) are a few hundred fp32 ulps, well
above the ~1e-7 rounding the two orders of summation give, and far below any convention difference (>1e-2).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from camrt.runtime.noise import ArrayNoise

import reference_loops as ref
from tiny import SIZE, Tiny, images, torch_explainer

W_RTOL, MAP_ATOL = 1e-5, 1e-5


def _close_weights(ours: np.ndarray, theirs: np.ndarray) -> None:
    np.testing.assert_allclose(ours, theirs, rtol=W_RTOL, atol=W_RTOL * np.abs(theirs).max())


@pytest.fixture(params=["torch", "onnxruntime"])
def setup(request, tiny_bundle_factory):
    """(model, explainer) on both backends: eager torch and the exported ONNX bundle on ONNX Runtime."""
    model = Tiny(seed=11).eval()
    if request.param == "torch":
        return model, torch_explainer(model)
    return model, tiny_bundle_factory(model)


def test_scorecam_pytorch_grad_cam(setup):
    from pytorch_grad_cam import ScoreCAM

    model, explainer = setup
    x = images(3, seed=np.random.SeedSequence().entropy % 2**32)
    ours = explainer.explain(x, "scorecam", "pytorch-grad-cam", batch_size=5)
    cam = ScoreCAM(model=model, target_layers=[model.features])
    weights, theirs = ref.gradcam_run(cam, x, ours.targets)
    _close_weights(ours.weights, weights)
    np.testing.assert_allclose(ours.saliency, theirs, atol=MAP_ATOL)
    assert ours.native is not None and ours.native.shape == (3, 8, 8)


def _torchcam(cls, model, x, targets, **kwargs):
    extractor = cls(model, target_layer="features", batch_size=7, input_shape=(3, SIZE, SIZE), **kwargs)
    captured = []
    original = extractor._get_weights
    extractor._get_weights = lambda *a, **k: captured.append(original(*a, **k)) or captured[-1]
    with torch.no_grad():
        model(torch.from_numpy(x))
    cams = extractor(class_idx=[int(t) for t in targets])
    extractor.remove_hooks()
    return captured[0][0].numpy(), cams[0].numpy()


@pytest.mark.parametrize("method", ["scorecam", "iscam", "sscam"])
def test_torchcam(setup, method):
    import torchcam.methods as tc

    model, explainer = setup
    x = images(2, seed=np.random.SeedSequence().entropy % 2**32)
    targets = np.random.default_rng().integers(0, 10, size=2)
    cls = {"scorecam": tc.ScoreCAM, "iscam": tc.ISCAM, "sscam": tc.SSCAM}[method]
    options, noise = {}, None
    if method == "sscam":  # the same draws on both sides: replay torchcam's stream, in its order
        options = {"num_samples": 6}
        torch.manual_seed(7)
        dist = torch.distributions.normal.Normal(0, 2.0)
        draws = np.stack([dist.sample((2, 16, SIZE, SIZE)).numpy() for _ in range(6)], axis=1)
        noise = ArrayNoise(draws / 2.0)  # exact: torchcam's sample is 2 * z
        torch.manual_seed(7)
    weights, native = _torchcam(cls, model, x, targets, **options)
    ours = explainer.explain(x, method, "torchcam", targets=targets, batch_size=9, noise=noise, **options)
    _close_weights(ours.weights, weights)
    np.testing.assert_allclose(ours.native, native, atol=MAP_ATOL)
    assert ours.saliency.shape == (2, SIZE, SIZE)


@pytest.mark.parametrize(
    "method,loop,options",
    [
        ("scorecam", ref.paper_scorecam, {}),
        ("iscam", ref.paper_iscam, {}),
        ("scorecam++", ref.scorecampp, {}),
        ("scorecam++", ref.scorecampp, {"gate": "sigmoid-relu"}),
        ("scorecam++", ref.scorecampp, {"gate": "mish"}),
        ("scorecam++", ref.scorecampp, {"combine": "raw"}),
    ],
)
def test_paper_loops(setup, method, loop, options):
    model, explainer = setup
    x = images(2, seed=np.random.SeedSequence().entropy % 2**32)
    ours = explainer.explain(x, method, "paper", batch_size=16, **options)
    for b in range(2):
        weights, saliency = loop(model, model.features, torch.from_numpy(x[b : b + 1]), int(ours.targets[b]), **options)
        _close_weights(ours.weights[b], weights)
        np.testing.assert_allclose(ours.saliency[b], saliency, atol=MAP_ATOL)


def test_sscam_paper_loop(setup):
    model, explainer = setup
    x = images(1, seed=np.random.SeedSequence().entropy % 2**32)
    n = 5
    z = np.random.default_rng().standard_normal((1, n, 16, 3, SIZE, SIZE)).astype(np.float32)
    ours = explainer.explain(x, "sscam", "paper", num_samples=n, noise=ArrayNoise(z), batch_size=32)
    weights, saliency = ref.paper_sscam(model, model.features, torch.from_numpy(x), z[0], int(ours.targets[0]), n=n)
    _close_weights(ours.weights[0], weights)
    np.testing.assert_allclose(ours.saliency[0], saliency, atol=MAP_ATOL)


def test_conventions_really_differ(setup):
    """The conventions are not the same numbers under other names."""
    _, explainer = setup
    x = images(1, seed=3)
    maps = [explainer.explain(x, "scorecam", c).saliency for c in ("paper", "pytorch-grad-cam", "torchcam")]
    assert np.abs(maps[0] - maps[1]).max() > 1e-3 and np.abs(maps[1] - maps[2]).max() > 1e-3
