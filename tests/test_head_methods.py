"""The head-only methods (Ablation-CAM, Recipro-CAM): parity with the code each convention names, the
activation-masking op (NumPy reference and its CUDA kernels through the host emulation), exact pass saving, and the
engine loop (batching across images, streaming, errors, the device scorer).

Tolerances as tests/test_parity.py: weights 1e-5 relative, maps 1e-5 absolute (fp32 end to end; the two sides
differ by a few hundred fp32 ulps at most). Recipro-CAM's map is min-max over h·w scores, so its error is the
scores' (about 1e-7) divided by their range: the models' heads are scaled so that range is well above 1e-2.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from camrt.kernels.activations import GAUSSIAN, HeadSpec, ablation_fills, cuda_masked_activations, masked_activations
from camrt.kernels.gpu import CudaKernels
from camrt.runtime.engine.window import Image
from camrt.runtime.methods import get_convention
from camrt.runtime.plan import CLEAN, ZERO, plan_jobs

import reference_loops as ref
from emulated_device import EmulatedDeviceHeadRunner, emulated_kernels
from tiny import SIZE, Tiny, images, torch_explainer

W_RTOL, MAP_ATOL = 1e-5, 1e-5


class TinyLinear(Tiny):
    """Tiny with a target layer that ends in a convolution (negative activations, K = 40 > grad-cam's batch of
    32): grad-cam ablates it to min - 1e7·(i+1), and the linear head passes that fill through."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed=seed, k=40)
        self.features = nn.Sequential(*list(self.features.children())[:-1])


def _seed() -> int:
    return int(np.random.SeedSequence().entropy % 2**32)


@pytest.fixture(params=["tiny-torch", "tiny-onnxruntime", "linear-torch", "linear-onnxruntime"])
def setup(request, tiny_bundle_factory):
    """(model, explainer): a post-ReLU layer (fill 0) and a linear one (fill min - 1e7...), torch and ONNX Runtime."""
    kind, backend = request.param.split("-")
    model = (Tiny(seed=5) if kind == "tiny" else TinyLinear(seed=6)).eval()
    return model, (torch_explainer(model) if backend == "torch" else tiny_bundle_factory(model))


def _close_weights(ours: np.ndarray, theirs: np.ndarray) -> None:
    np.testing.assert_allclose(ours, theirs, rtol=W_RTOL, atol=W_RTOL * np.abs(theirs).max())


# ------------------------------------------------------------------------------------------ parity
def test_ablationcam_pytorch_grad_cam(setup):
    from pytorch_grad_cam import AblationCAM

    model, explainer = setup
    x = images(2, seed=_seed())
    ours = explainer.explain(x, "ablationcam", "pytorch-grad-cam", batch_size=7)
    cam = AblationCAM(model=model, target_layers=[model.features])  # its default batch_size, 32
    weights, theirs = ref.gradcam_run(cam, x, ours.targets)
    _close_weights(ours.weights, weights)
    np.testing.assert_allclose(ours.saliency, theirs, atol=MAP_ATOL)
    assert ours.native is not None and ours.native.shape == (2, 8, 8)
    if isinstance(model, TinyLinear):  # the chained fill matters: channel 0 and 32 share it, 1 differs
        assert np.abs(weights).max() > 1.0


def test_ablationcam_paper(setup):
    model, explainer = setup
    x = images(2, seed=_seed())
    ours = explainer.explain(x, "ablationcam", "paper", batch_size=5)
    for b in range(2):
        w, saliency = ref.paper_ablationcam(model, model.features, model.head, torch.from_numpy(x[b:b + 1]),
                                            int(ours.targets[b]))
        _close_weights(ours.weights[b], w)
        np.testing.assert_allclose(ours.saliency[b], saliency, atol=MAP_ATOL)


@pytest.mark.parametrize("kernel", ["onehot", "gaussian"])
def test_reciprocam_paper(setup, kernel):
    model, explainer = setup
    x = images(2, seed=_seed())
    ours = explainer.explain(x, "reciprocam", "paper", batch_size=24, kernel=kernel)
    assert ours.native is not None and ours.native.shape == (2, 8, 8)
    assert not ours.weights.any(), "Recipro-CAM has no channel weights"
    for b in range(2):
        native, up, conditioning = ref.paper_reciprocam(model, model.features, model.head,
                                                        torch.from_numpy(x[b:b + 1]), int(ours.targets[b]),
                                                        gaussian=kernel == "gaussian")
        # their fp32 softmax and min-max round the scores (a few ulps of the largest), magnified by max / range
        atol = MAP_ATOL + 8 * np.finfo(np.float32).eps * conditioning
        np.testing.assert_allclose(ours.native[b], native, atol=atol)
        np.testing.assert_allclose(ours.saliency[b], up, atol=atol)


def test_reciprocam_openvino_xai(setup):
    model, explainer = setup
    x = images(2, seed=_seed())
    ours = explainer.explain(x, "reciprocam", "openvino-xai", batch_size=64)
    for b in range(2):
        theirs = ref.openvino_xai_reciprocam(model.features, model.head, torch.from_numpy(x[b:b + 1]),
                                             int(ours.targets[b]))
        # uint8 levels: equal but where a value sits within fp32 rounding of a level boundary (one level off)
        diff = np.abs(ours.native[b] - theirs)
        assert diff.max() <= 1 / 255 + 1e-7 and np.mean(diff == 0) > 0.95
        assert np.isin(np.round(ours.native[b] * 255, 3), np.arange(256)).all()


def test_the_kernels_differ_and_the_conventions_differ(tiny_bundle_factory):
    """The knobs are live: gaussian vs one-hot, softmax vs logits, zero vs grad-cam fill on a linear layer."""
    model = TinyLinear(seed=2).eval()
    explainer = torch_explainer(model)
    x = images(1, seed=_seed())
    a = explainer.explain(x, "reciprocam", "paper").native
    b = explainer.explain(x, "reciprocam", "paper", kernel="gaussian").native
    c = explainer.explain(x, "reciprocam", "openvino-xai").native
    assert np.abs(a - b).max() > 1e-2 and np.abs(a - c).max() > 1e-2
    d = explainer.explain(x, "ablationcam", "paper").weights
    e = explainer.explain(x, "ablationcam", "pytorch-grad-cam").weights
    assert np.abs(d - e).max() > 1e-2 * np.abs(d).max()


# ------------------------------------------------------------------------------------------ the NumPy op
def test_masked_activations_against_loops():
    rng = np.random.default_rng()
    acts = rng.standard_normal((3, 5, 4, 6)).astype(np.float32)
    bi, ki = np.array([0, 2, 1, 1, 2, 0]), np.array([3, 0, 23, 5, 18, 6])
    out = np.full((8, 5, 4, 6), np.nan, np.float32)
    fill = rng.standard_normal(6).astype(np.float32)
    got = masked_activations(acts, bi, ki % 5, HeadSpec("ablate"), out, fill)
    assert np.shares_memory(got, out) and np.isnan(out[6:]).all()
    for j in range(6):
        want = acts[bi[j]].copy()
        want[ki[j] % 5] = fill[j]
        np.testing.assert_array_equal(got[j], want)
    for kernel in ("onehot", "gaussian"):
        got = masked_activations(acts, bi, ki, HeadSpec("keep", kernel=kernel), out)
        for j in range(6):
            feature = torch.from_numpy(acts[bi[j]][None])
            want = ref._recipro_mosaic(feature, 5, 4, 6, kernel == "gaussian")[ki[j]].numpy()
            np.testing.assert_array_equal(got[j], want)  # exact: copies and products by powers of two
    assert GAUSSIAN.sum() == 1.0


def test_ablation_fills_follow_grad_cams_in_place_minimum():
    acts = np.maximum(np.random.default_rng().standard_normal((4, 3, 3)).astype(np.float32), 0)
    spec = HeadSpec("ablate", fill="pytorch-grad-cam")
    assert ablation_fills(spec, acts).tolist() == [0.0]  # a post-ReLU layer with a 0 in it
    acts -= 0.25
    fills = ablation_fills(spec, acts)
    assert fills.shape == (32,) and fills[0] == np.float32(np.float32(-0.25) - np.float32(1e7))
    assert np.all(np.diff(fills) < 0) and ablation_fills(HeadSpec("ablate"), acts).tolist() == [0.0]


# ------------------------------------------------------------------------------------------ pass saving
def test_saved_passes_cannot_change_the_result():
    """An all-zero channel ablated to 0 is the clean pass (CLEAN); an all-zero position is the head on zeros (ZERO,
    once per run). The same explanation as with every pass run."""
    model = Tiny(seed=4).eval()
    with torch.no_grad():  # kill channels 3 and 7 of the target layer: their conv outputs go negative, then ReLU
        model.features[2].weight[[3, 7]] = 0
        model.features[2].bias[[3, 7]] = -1
    explainer = torch_explainer(model)
    x = images(3, seed=_seed())
    x[:, :, :8, :8] = 0  # a dark corner: some positions of the target layer may die too
    acts = explainer.runner.features(x)
    for method, convention in (("ablationcam", "paper"), ("ablationcam", "pytorch-grad-cam"), ("reciprocam", "paper")):
        conv = get_convention(method, convention)
        plan = plan_jobs(acts, conv)
        a = explainer.explain(x, method, convention, batch_size=10)
        b = explainer.explain(x, method, convention, batch_size=10, save_passes=False)
        np.testing.assert_array_equal(a.weights, b.weights) if method == "ablationcam" else None
        np.testing.assert_allclose(a.saliency, b.saliency, atol=1e-6)
        if method == "ablationcam":
            assert (plan.rep[:, [3, 7]] == CLEAN).all()
            assert a.passes_saved >= 6 and a.passes_run == b.passes_run - a.passes_saved
            assert (a.weights[:, [3, 7]] == 0).all()
        else:
            dead = ~acts.reshape(3, 16, -1).any(axis=1)
            assert ((plan.rep == ZERO) == dead).all()
            assert a.passes_run == int((~dead).sum()) + int(dead.any())


# ------------------------------------------------------------------------------------------ the engine loop
def test_batches_span_images_and_streaming_equals_explain(tiny_bundle):
    from camrt.runtime.explainer import Explainer

    explainer = Explainer(tiny_bundle, intra_op_threads=1)
    x = images(4, seed=_seed())
    sizes: list[int] = []
    for method, convention in (("ablationcam", "pytorch-grad-cam"), ("reciprocam", "paper")):
        one = explainer.explain(x, method, convention, batch_size=40, progress=None)
        sizes.clear()
        streamed = sorted(explainer.stream((Image(i, x[i]) for i in range(4)), method, convention, batch_size=40,
                                           on_batch=sizes.append), key=lambda r: r.index)
        assert all(s == 40 for s in sizes[:-1]), sizes  # full batches across images (16 or 64 jobs per image)
        np.testing.assert_array_equal(np.stack([r.saliency for r in streamed]), one.saliency)
        np.testing.assert_array_equal(np.stack([r.weights for r in streamed]), one.weights)


def test_bad_images_are_one_record_each(tiny_bundle):
    from camrt.runtime.explainer import Explainer

    explainer = Explainer(tiny_bundle, intra_op_threads=1)
    x = images(3, seed=_seed())
    x[1, 0, 0, 0] = np.nan
    out = list(explainer.stream((Image(i, x[i]) for i in range(3)), "reciprocam", batch_size=16))
    status = {r.index: r.status for r in out}
    assert status == {0: "ok", 1: "error", 2: "ok"}


def test_zero_clean_logit_is_one_line_for_ablation():
    model = Tiny(seed=1).eval()
    with torch.no_grad():
        model.head[2].weight.zero_()
        model.head[2].bias.zero_()  # every logit 0: (y - y_k) / y undefined
    out = list(torch_explainer(model).stream([Image(0, images(1, seed=0)[0])], "ablationcam"))
    assert out[0].status == "error" and "clean logit is 0" in str(out[0].error)


def test_options_are_checked():
    from camrt.errors import InputError

    with pytest.raises(InputError, match="kernel"):
        get_convention("reciprocam", "paper", kernel="box")
    with pytest.raises(InputError, match="not an option of ablationcam"):
        get_convention("ablationcam", "paper", kernel="onehot")


# ------------------------------------------------------------------------------------------ CUDA, emulated
@pytest.fixture(scope="module")
def emu(tmp_path_factory) -> CudaKernels:
    """kernels/cuda/*.cu, activations.cu's kernels among them, compiled for the host."""
    return emulated_kernels(tmp_path_factory.mktemp("head_emulation"))


@pytest.mark.parametrize("spec", [HeadSpec("ablate"), HeadSpec("keep"), HeadSpec("keep", kernel="gaussian")],
                         ids=["ablate", "onehot", "gaussian"])
def test_cuda_kernels_equal_the_numpy_op(emu, spec):
    rng = np.random.default_rng()
    acts = rng.standard_normal((3, 7, 5, 4)).astype(np.float32)
    n = 9
    bi = rng.integers(0, 3, n)
    ki = rng.integers(0, 7 if spec.op == "ablate" else 20, n)
    fill = rng.standard_normal(n).astype(np.float32) if spec.op == "ablate" else None
    want = masked_activations(acts, bi, ki, spec, np.empty((n, 7, 5, 4), np.float32), fill)
    out = np.full((n + 2, 7, 5, 4), np.nan, np.float32)
    got = cuda_masked_activations(emu, acts, bi, ki, spec, out, fill)
    np.testing.assert_array_equal(got, want)  # bit-equal: copies and products by powers of two
    assert np.isnan(out[n:]).all(), "only out[:n] of the caller's buffer is written"


@pytest.mark.parametrize("method,convention,options", [
    ("ablationcam", "paper", {}), ("ablationcam", "pytorch-grad-cam", {}), ("reciprocam", "paper", {}),
    ("reciprocam", "paper", {"kernel": "gaussian"}), ("reciprocam", "openvino-xai", {}),
])
def test_device_head_scorer_equals_the_host_scorer(emu, method, convention, options):
    """runtime/engine/device_head_scorer.py in the engine loop with the emulated kernels: the host's explanation."""
    from camrt.runtime.engine.device_head_scorer import DeviceHeadScorer, is_device_head_runner
    from camrt.runtime.engine.window import make_scorer
    from camrt.runtime.explainer import Explainer

    model = TinyLinear(seed=8).eval()
    cpu = torch_explainer(model)
    runner = EmulatedDeviceHeadRunner(cpu.runner, emu, tuple(cpu.bundle.manifest.activation_shape))
    assert is_device_head_runner(runner)
    conv = get_convention(method, convention, **options)
    assert isinstance(make_scorer(runner, conv, 4, (3, SIZE, SIZE), runner.activation_shape), DeviceHeadScorer)
    device = Explainer(cpu.bundle, backend=runner)
    x = images(3, seed=_seed())
    a = cpu.explain(x, method, convention, batch_size=13, **options)
    b = device.explain(x, method, convention, batch_size=13, **options)
    assert (b.passes_run, b.passes_saved) == (a.passes_run, a.passes_saved)
    np.testing.assert_allclose(b.weights, a.weights, rtol=1e-6, atol=1e-7 * np.abs(a.weights).max())
    np.testing.assert_allclose(b.saliency, a.saliency, atol=1e-6)
    assert (a.native is None) == (b.native is None)
    if a.native is not None:
        np.testing.assert_allclose(b.native, a.native, atol=1e-6)


# ------------------------------------------------------------------------------------------ the CLI
def test_info_counts_the_heads_share_and_calls_a_big_head_heavy(tmp_path, capsys):
    """Tiny by hand: convs 2·8·16²·27 + 2·16·8²·72 FLOPs, head 2·16·10; a wide fully connected head is 'heavy'."""
    import camrt
    from camrt.cli import main
    from camrt.cli.info import graph_cost
    from camrt.runtime.bundle import FEATURES_FILE, HEAD_FILE, Bundle

    camrt.export(Tiny(seed=0).eval(), "features", tmp_path / "tiny", input_shape=(3, SIZE, SIZE), model_name="tiny")
    bundle = Bundle.load(tmp_path / "tiny")
    assert graph_cost(bundle.read_verified(FEATURES_FILE))[0] == 2 * 8 * 16 * 16 * 27 + 2 * 16 * 8 * 8 * 72
    assert graph_cost(bundle.read_verified(HEAD_FILE)) == (2 * 16 * 10, 16 * 10 + 10)
    assert main(["info", str(tmp_path / "tiny")]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("head cost:"))
    assert "heavy" not in line and "%" in line

    class WideHead(Tiny):  # VGG-like: fully connected layers on the flattened map hold most of the weights
        def __init__(self) -> None:
            super().__init__(seed=0)
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 8 * 8, 512), nn.ReLU(), nn.Linear(512, 10))

    camrt.export(WideHead().eval(), "features", tmp_path / "wide", input_shape=(3, SIZE, SIZE), model_name="wide")
    assert main(["info", str(tmp_path / "wide")]) == 0
    assert "a heavy head" in capsys.readouterr().out


def test_cli_explain_and_evaluate_take_the_head_methods(named_bundle, tmp_path):
    from PIL import Image as PILImage

    from camrt.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        PILImage.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    assert main(["explain", str(named_bundle), str(photos), "--method", "reciprocam", "-O", "kernel=gaussian",
                 "--out", str(tmp_path / "maps"), "-q"]) == 0
    assert np.load(tmp_path / "maps" / "p0.npy").shape == (SIZE, SIZE)
    assert main(["evaluate", str(named_bundle), str(photos), "--methods", "ablationcam,reciprocam", "--out",
                 str(tmp_path / "eval"), "-q", "--overlays", "0"]) == 0
    summary = (tmp_path / "eval" / "summary.md").read_text()
    assert "ablationcam" in summary and "reciprocam" in summary
    assert main(["explain-dataset", str(named_bundle), str(photos), "--method", "ablationcam", "--convention",
                 "pytorch-grad-cam", "--out", str(tmp_path / "dataset"), "--metrics", "-q"]) == 0
    from camrt import load_maps

    assert sorted(load_maps(tmp_path / "dataset")) == [0, 1]
