"""On a GPU: the CUDA kernels against NumPy, and every GPU backend's explanation against the CPU one.

Every method and convention (SS-CAM's paper noise included), FP32 / FP16 / BF16, NCHW and channels-last input
buffers, IS-CAM's scale, mask and input noise, constant and zero channels, batch size 1, and a 224 x 224 run of
many chunks. Each test draws a fresh seed, logs it and records it (``record_property``: the JUnit XML of
tools/gpu_check.sh keeps it), so a failure can be replayed. Skipped, with the reason, where there is no CuPy, no
GPU, no onnxruntime-gpu or no TensorRT.

Tolerances: fp32 engines differ from the CPU's MLAS in rounding only (1e-4); fp16 and bf16 runs compute the
model in 11 and 8 significant bits, so they are held to the explanation's shape (the saliency's correlation with
the fp32 CPU map, and the logits to a few of their ulps), not to its digits.
"""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from camrt.errors import CamrtError
from camrt.kernels import MaskSpec, add_range_scaled_noise, masked_inputs
from camrt.runtime.combine import combine
from camrt.runtime.explainer import Explainer
from camrt.runtime.methods import get_convention, list_conventions

from tiny import Tiny, images

log = logging.getLogger("camrt.test_gpu")
CONVENTIONS = [(m, c) for m, cs in list_conventions().items() for c in cs]
SAMPLED = {"sscam": {"num_samples": 2}, "iscam": {"num_samples": 2}}


@pytest.fixture
def seed(record_property, request) -> int:
    """A fresh seed per test, logged and recorded so that a failure names the draw that made it."""
    value = int(np.random.SeedSequence().entropy % 2**32)
    record_property("seed", value)
    log.warning("%s: seed %d", request.node.nodeid, value)
    return value


@pytest.fixture(scope="session", autouse=True)
def _needs_a_gpu():
    """Skip before any bundle is exported where there is no GPU (session scope: it runs first)."""
    _gpu_or_skip()


def _gpu_or_skip():
    from camrt.kernels.gpu import cuda_kernels, import_cupy

    try:
        cupy = import_cupy()
        return cupy, cuda_kernels()
    except CamrtError as exc:
        pytest.skip(str(exc))


SPECS = [MaskSpec(align_corners=True, eps=1e-8), MaskSpec(align_corners=True, normalize_at="feature", eps=0.0),
         MaskSpec(normalize_at="feature", eps=1e-8), MaskSpec(eps=0.0),
         *(MaskSpec(normalize="none", gate=g) for g in ("tanh", "sigmoid-relu", "mish", "swish"))]


def _inputs(rng, n=64, b=4, k=32, h=7, size=224, constant=True):
    """Activations with a zero channel and (``constant``) a constant one, images, and n jobs in plan order.

    A constant channel upsampled is constant only up to rounding (l0 * v + l1 * v), which a min-max after the
    upsampling (normalize_at="input") blows up to [0, 1]: the NumPy reference (interpolation matrices) and the
    kernel (torch's order) round differently there, so it is checked only where it is well conditioned."""
    acts = (rng.standard_normal((b, k, h, h)) * 3).astype(np.float32)
    if constant:
        acts[0, 1] = 1.5  # a constant channel
    acts[1, 2] = 0.0  # a zero channel: exactly zero after upsampling, so a zero mask under any min-max
    imgs = rng.standard_normal((b, 3, size, size)).astype(np.float32)
    bi, ki = rng.integers(0, b, n), rng.integers(0, k, n)
    if n >= 2:
        bi[:2], ki[:2] = (0, 1), (1, 2)  # both special channels are in every chunk
    order = np.argsort(bi, kind="stable")  # plan order: grouped by image
    return acts, imgs, bi[order], ki[order]


def _tol(ref):
    return 8 * np.finfo(np.float32).eps * max(1.0, float(np.abs(ref).max()))


def _buffer(cupy, n, layout, dtype):
    if layout == "nchw":
        return cupy.empty((n, 3, 224, 224), dtype)
    return cupy.empty((n, 224, 224, 3), dtype).transpose(0, 3, 1, 2)  # channels-last, seen as NCHW


@pytest.mark.parametrize("layout", ["nchw", "channels-last"])
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.normalize}-{s.normalize_at}-{s.gate}-ac{s.align_corners}")
def test_kernels_match_numpy_fp32_and_fp16(spec, layout, seed):
    cupy, kernels = _gpu_or_skip()
    rng = np.random.default_rng(seed)
    acts, imgs, bi, ki = _inputs(rng, constant=spec.normalize == "none" or spec.normalize_at == "feature")
    ref = masked_inputs(acts, imgs, bi, ki, spec, np.empty((64, 3, 224, 224), np.float32)).copy()
    d = [cupy.asarray(a) for a in (acts, imgs, bi, ki)]
    got = kernels.masked_inputs(*d, spec, _buffer(cupy, 64, layout, cupy.float32)).get()
    np.testing.assert_allclose(got, ref, rtol=0, atol=_tol(ref))
    half = kernels.masked_inputs(*d, spec, _buffer(cupy, 64, layout, cupy.float16)).get()
    np.testing.assert_allclose(half.astype(np.float32), ref, rtol=2.0**-11, atol=_tol(ref))


@pytest.mark.parametrize("multiplier", [2.0, 0.5, -1.0])
def test_scale_and_every_noise_match_numpy(multiplier, seed):
    """IS-CAM's scale, torchcam's mask noise, given-std input noise, and the SS-CAM paper's range noise."""
    cupy, kernels = _gpu_or_skip()
    rng = np.random.default_rng(seed)
    acts, imgs, bi, ki = _inputs(rng, constant=False)
    scale = rng.uniform(0.1, 5.5, 64).astype(np.float32)
    z_mask = rng.standard_normal((64, 224, 224)).astype(np.float32)
    z_in = rng.standard_normal((64, 3, 224, 224)).astype(np.float32)
    std = rng.uniform(0.1, 2.0, 64).astype(np.float32)
    spec = MaskSpec(normalize_at="feature", eps=1e-8)
    buf = lambda: np.empty((64, 3, 224, 224), np.float32)  # noqa: E731
    d = [cupy.asarray(a) for a in (acts, imgs, bi, ki, scale, z_mask, z_in, std)]
    ref = masked_inputs(acts, imgs, bi, ki, spec, buf(), scale=scale, mask_noise=z_mask, input_noise=z_in,
                        input_noise_std=std)
    got = kernels.masked_inputs(*d[:4], spec, cupy.empty((64, 3, 224, 224), cupy.float32), scale=d[4],
                                mask_noise=d[5], input_noise=d[6], input_noise_std=d[7]).get()
    np.testing.assert_allclose(got, ref, rtol=0, atol=_tol(ref))
    paper = MaskSpec(eps=0.0)
    ref = add_range_scaled_noise(masked_inputs(acts, imgs, bi, ki, paper, buf(), scale=scale), z_in, multiplier)
    got = kernels.masked_inputs(*d[:4], paper, cupy.empty((64, 3, 224, 224), cupy.float32), scale=d[4],
                                input_noise=d[6], range_noise=multiplier).get()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=_tol(ref))


def test_batch_of_one_in_a_torch_buffer(seed):
    """A one-item chunk written into a torch tensor (channels-last, batch 1: odd strides on a size-1 dimension)."""
    cupy, kernels = _gpu_or_skip()
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    acts, imgs, bi, ki = _inputs(rng, n=1, constant=False)
    spec = SPECS[0]
    ref = masked_inputs(acts, imgs, bi, ki, spec, np.empty((1, 3, 224, 224), np.float32))
    for tensor in (torch.empty((1, 224, 224, 3), device="cuda").permute(0, 3, 1, 2),
                   torch.empty((1, 3, 224, 224), device="cuda").contiguous(memory_format=torch.channels_last)):
        out = cupy.from_dlpack(tensor)
        kernels.masked_inputs(*(cupy.asarray(a) for a in (acts, imgs, bi, ki)), spec, out)
        np.testing.assert_allclose(tensor.cpu().numpy(), ref, rtol=0, atol=_tol(ref))


@pytest.mark.parametrize("method,convention", CONVENTIONS)
def test_combine_matches_numpy(method, convention, seed):
    cupy, kernels = _gpu_or_skip()
    rng = np.random.default_rng(seed)
    conv = get_convention(method, convention)
    acts = np.maximum(rng.standard_normal((64, 7, 7)), 0).astype(np.float32)
    acts[3] = 0.0
    weights = rng.standard_normal(64)
    weights[[5, 9]] = 0.0
    ref, ref_native = combine(conv, acts, weights, (224, 224))
    got, native = kernels.combine(conv, cupy.asarray(acts), cupy.asarray(weights), (224, 224))
    np.testing.assert_allclose(cupy.asnumpy(got), ref, atol=1e-5)
    assert (native is None) == (ref_native is None)
    if native is not None:
        np.testing.assert_allclose(cupy.asnumpy(native), ref_native, atol=1e-5)


# ---------------------------------------------------------------------------------------------- explanations
BACKENDS = [
    ("torch", "fp32", {"device": "cuda", "trust_pickles": True}),
    ("torch", "fp32", {"device": "cuda", "trust_pickles": True, "cuda_graphs": False, "channels_last": False}),
    ("torch", "fp16", {"device": "cuda", "trust_pickles": True, "precision": "fp16"}),
    ("torch", "bf16", {"device": "cuda", "trust_pickles": True, "precision": "bf16"}),
    ("onnxruntime-cuda", "fp32", {}),
    ("onnxruntime-tensorrt", "fp32", {}),
    ("onnxruntime-tensorrt", "fp16", {"fp16": True}),
    ("tensorrt", "fp32", {}),
    ("tensorrt", "fp16", {"precision": "fp16"}),
]
_RUNNERS: dict[tuple[str, str], Explainer] = {}


def _backend_id(case):
    backend, precision, options = case
    extra = "-eager-nchw" if options.get("cuda_graphs") is False else ""
    return f"{backend}-{precision}{extra}"


def _explainer_or_skip(bundle, case) -> Explainer:
    """One Explainer per (bundle, backend case) for the module: engines are built once."""
    _gpu_or_skip()
    key = (str(bundle), _backend_id(case))
    if key not in _RUNNERS:
        backend, _, options = case
        try:
            _RUNNERS[key] = Explainer(bundle, backend=backend, **options)
        except CamrtError as exc:
            pytest.skip(str(exc))
    return _RUNNERS[key]


def _check(a, b, precision):
    """``b`` (a GPU explanation) against ``a`` (the CPU's), within what ``precision`` can hold."""
    assert b.passes_run == a.passes_run
    assert np.isfinite(b.saliency).all() and np.isfinite(b.weights).all()
    if precision == "fp32":
        np.testing.assert_allclose(b.logits, a.logits, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(b.weights, a.weights, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(b.saliency, a.saliency, atol=1e-4)
        return
    bits = {"fp16": 11, "bf16": 8}[precision]
    scale = max(1.0, float(np.abs(a.logits).max()))
    np.testing.assert_allclose(b.logits, a.logits, rtol=0, atol=16 * 2.0**-bits * scale)
    for ref, got in zip(a.saliency, b.saliency):
        if ref.std() > 0 and got.std() > 0:
            assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.9


@pytest.fixture(scope="module")
def gpu_bundle(tiny_bundle, tmp_path_factory):
    """A copy of the tiny bundle: the TensorRT runners write their engines into the bundle they run."""
    out = tmp_path_factory.mktemp("gpu") / "tiny"
    shutil.copytree(tiny_bundle, out)
    return out


@pytest.mark.parametrize("case", BACKENDS, ids=_backend_id)
@pytest.mark.parametrize("method,convention", CONVENTIONS)
def test_gpu_explain_matches_cpu(gpu_bundle, case, method, convention, seed):
    gpu = _explainer_or_skip(gpu_bundle, case)
    cpu = Explainer(gpu_bundle)
    x = images(3, seed=seed)
    x[2] = 0.0  # a constant image: constant and zero channels (skipped, or scored as the references do)
    opts = SAMPLED.get(method, {})
    a = cpu.explain(x, method, convention, batch_size=8, seed=seed, **opts)
    b = gpu.explain(x, method, convention, batch_size=8, seed=seed, **opts)
    _check(a, b, case[1])


@pytest.mark.parametrize("case", BACKENDS, ids=_backend_id)
def test_batch_size_one(gpu_bundle, case, seed):
    gpu = _explainer_or_skip(gpu_bundle, case)
    x = images(2, seed=seed)
    for method, convention in (("scorecam", "pytorch-grad-cam"), ("sscam", "paper")):
        opts = SAMPLED.get(method, {})
        a = Explainer(gpu_bundle).explain(x, method, convention, batch_size=1, seed=seed, **opts)
        _check(a, gpu.explain(x, method, convention, batch_size=1, seed=seed, **opts), case[1])


@pytest.fixture(scope="module")
def bundle_224(tmp_path_factory):
    """A 224 x 224 bundle (Tiny: K = 16 at 56 x 56), so the kernels and engines see full-size inputs."""
    import camrt

    out = tmp_path_factory.mktemp("tiny224")
    camrt.export(Tiny(seed=1).eval(), "features", out, input_shape=(3, 224, 224), model_name="tiny224")
    return out


@pytest.mark.parametrize("case", [c for c in BACKENDS if c[1] == "fp32"], ids=_backend_id)
def test_224_run_of_many_chunks(bundle_224, case, seed):
    """SS-CAM paper and IS-CAM with 8 samples on two 224 x 224 images: 256 passes in 16 chunks of 16 (and a
    remainder-free and a remainder chunk size), on the device as on the CPU."""
    gpu = _explainer_or_skip(bundle_224, case)
    cpu = Explainer(bundle_224)
    x = images(2, seed=seed, size=224)
    for method, convention, batch in (("sscam", "paper", 16), ("iscam", "paper", 24), ("scorecam", "torchcam", 5)):
        opts = {"num_samples": 8} if method != "scorecam" else {}
        a = cpu.explain(x, method, convention, batch_size=batch, seed=seed, save_passes=False, **opts)
        b = gpu.explain(x, method, convention, batch_size=batch, seed=seed, save_passes=False, **opts)
        _check(a, b, "fp32")
