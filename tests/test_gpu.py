"""On a GPU: the CUDA kernels against NumPy, and every GPU backend's explanation against the CPU one.

Skipped, with the reason, where there is no CuPy, no GPU, no onnxruntime-gpu or no TensorRT.
"""

from __future__ import annotations

import numpy as np
import pytest

from camrt.errors import CamrtError
from camrt.kernels import MaskSpec, add_range_scaled_noise, masked_inputs
from camrt.runtime.combine import combine
from camrt.runtime.explainer import Explainer
from camrt.runtime.methods import get_convention

from tiny import images


def _gpu_or_skip():
    from camrt.kernels.gpu import cuda_kernels, import_cupy

    try:
        cupy = import_cupy()
    except CamrtError as exc:
        pytest.skip(str(exc))
    return cupy, cuda_kernels()


SPECS = [MaskSpec(align_corners=True, eps=1e-8), MaskSpec(normalize_at="feature", eps=1e-8), MaskSpec(eps=0.0),
         MaskSpec(normalize="none", gate="tanh"), MaskSpec(normalize="none", gate="mish")]


@pytest.mark.parametrize("spec", SPECS)
def test_kernels_match_numpy_fp32_and_fp16(spec):
    cupy, kernels = _gpu_or_skip()
    rng = np.random.default_rng()
    acts = (rng.standard_normal((4, 32, 7, 7)) * 3).astype(np.float32)
    imgs = rng.standard_normal((4, 3, 224, 224)).astype(np.float32)
    bi, ki = rng.integers(0, 4, 64), rng.integers(0, 32, 64)
    order = np.argsort(bi, kind="stable")
    bi, ki = bi[order], ki[order]
    z = rng.standard_normal((64, 3, 224, 224)).astype(np.float32)
    ref = masked_inputs(acts, imgs, bi, ki, spec, np.empty((64, 3, 224, 224), np.float32)).copy()
    ref_noisy = add_range_scaled_noise(ref.copy(), z, 2.0)
    d = [cupy.asarray(a) for a in (acts, imgs, bi, ki, z)]
    got = kernels.masked_inputs(d[0], d[1], d[2], d[3], spec, cupy.empty((64, 3, 224, 224), cupy.float32)).get()
    tol = 8 * np.finfo(np.float32).eps * max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got, ref, rtol=0, atol=tol)
    half = kernels.masked_inputs(d[0], d[1], d[2], d[3], spec, cupy.empty((64, 3, 224, 224), cupy.float16)).get()
    np.testing.assert_allclose(half.astype(np.float32), ref, rtol=2.0**-11, atol=tol)
    noisy = kernels.masked_inputs(d[0], d[1], d[2], d[3], spec, cupy.empty((64, 3, 224, 224), cupy.float32),
                                  input_noise=d[4], range_noise=2.0).get()
    np.testing.assert_allclose(noisy, ref_noisy, rtol=1e-5, atol=tol)


def test_combine_matches_numpy():
    cupy, kernels = _gpu_or_skip()
    rng = np.random.default_rng()
    acts = np.maximum(rng.standard_normal((64, 7, 7)), 0).astype(np.float32)
    weights = rng.standard_normal(64)
    for method, convention in (("scorecam", "paper"), ("scorecam", "pytorch-grad-cam"), ("scorecam", "torchcam"),
                               ("scorecam++", "paper")):
        conv = get_convention(method, convention)
        ref, _ = combine(conv, acts, weights, (224, 224))
        got, _ = kernels.combine(conv, cupy.asarray(acts), cupy.asarray(weights), (224, 224))
        np.testing.assert_allclose(got.get(), ref, atol=1e-5)


CASES = [("scorecam", "paper"), ("scorecam", "pytorch-grad-cam"), ("scorecam", "torchcam"), ("sscam", "torchcam"),
         ("iscam", "paper"), ("scorecam++", "paper")]


def _backend_or_skip(tiny_bundle, backend, **options):
    _gpu_or_skip()
    try:
        return Explainer(tiny_bundle, backend=backend, **options)
    except CamrtError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("backend,options", [
    ("torch", {"device": "cuda", "trust_pickles": True}),
    ("torch", {"device": "cuda", "cuda_graphs": False, "trust_pickles": True}),
    ("onnxruntime-cuda", {}), ("onnxruntime-tensorrt", {}), ("tensorrt", {}),
])
@pytest.mark.parametrize("method,convention", CASES)
def test_gpu_explain_matches_cpu(tiny_bundle, backend, options, method, convention):
    gpu = _backend_or_skip(tiny_bundle, backend, **options)
    cpu = Explainer(tiny_bundle)
    x = images(3, seed=int(np.random.SeedSequence().entropy % 2**32))
    opts = {"num_samples": 2} if method in ("sscam", "iscam") else {}
    a = cpu.explain(x, method, convention, batch_size=8, seed=1, **opts)
    b = gpu.explain(x, method, convention, batch_size=8, seed=1, **opts)
    assert b.passes_run == a.passes_run
    # fp32 engines: cuDNN / TensorRT kernels differ from MLAS in rounding only
    np.testing.assert_allclose(b.logits, a.logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(b.weights, a.weights, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(b.saliency, a.saliency, atol=1e-4)
