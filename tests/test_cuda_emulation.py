"""The CUDA kernels' arithmetic without a GPU: the same .cu text compiled for the host (tools/cuda_emulation) and
driven by the same Python (kernels/gpu.py over NumPy), against the NumPy reference on fresh random inputs."""

from __future__ import annotations

import numpy as np
import pytest

from camrt.kernels import MaskSpec, add_range_scaled_noise, masked_inputs
from camrt.kernels.gpu import CudaKernels
from camrt.runtime.combine import combine
from camrt.runtime.engine.scoring import score_rows
from camrt.runtime.explainer import Explainer
from camrt.runtime.methods import get_convention, list_conventions
from camrt.runtime.plan import plan_jobs

from emulated_device import EmulatedDeviceRunner, emulated_kernels
from tiny import images


@pytest.fixture(scope="module")
def emu(tmp_path_factory) -> CudaKernels:
    """The kernels compiled with g++ into a temp dir, behind the CudaKernels wrapper with NumPy arrays."""
    return emulated_kernels(tmp_path_factory.mktemp("cuda_emulation"))


def _rand(rng, *shape, scale=5.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


SPECS = [
    MaskSpec(align_corners=True, normalize_at="input", eps=1e-8),
    MaskSpec(align_corners=False, normalize_at="feature", eps=1e-8),
    MaskSpec(align_corners=False, normalize_at="input", eps=0.0),
    MaskSpec(align_corners=True, normalize_at="feature", eps=0.0),
    *(MaskSpec(align_corners=False, normalize="none", gate=g) for g in ("tanh", "sigmoid-relu", "mish", "swish")),
]


def _case(rng, size=(20, 16)):
    acts, imgs = _rand(rng, 3, 6, 5, 4), _rand(rng, 3, 3, *size)
    acts[1, 2] = 1.5  # a constant channel: min-max gives the zero mask
    bi, ki = np.array([0, 0, 1, 2, 2, 1]), np.array([1, 5, 0, 3, 4, 2])
    return acts, imgs, bi, ki


def _fp32_tol(ref):
    return 8 * np.finfo(np.float32).eps * max(1.0, float(np.abs(ref).max()))  # a few ulps of the largest value


def _spec_id(spec):
    return f"{spec.normalize}-{spec.normalize_at}-{spec.gate}-ac{int(spec.align_corners)}"


@pytest.mark.parametrize("spec", SPECS, ids=_spec_id)
def test_masked_inputs_fp32_and_fp16_match_numpy(emu, spec):
    rng = np.random.default_rng()
    acts, imgs, bi, ki = _case(rng)
    ref = masked_inputs(acts, imgs, bi, ki, spec, np.empty((6, 3, 20, 16), np.float32)).copy()
    out = np.full((8, 3, 20, 16), np.nan, np.float32)
    got = emu.masked_inputs(acts, imgs, bi, ki, spec, out)
    assert np.shares_memory(got, out) and np.isnan(out[6:]).all(), "only out[:n] of the caller's buffer is written"
    np.testing.assert_allclose(got, ref, rtol=0, atol=_fp32_tol(ref))
    half = emu.masked_inputs(acts, imgs, bi, ki, spec, np.empty((6, 3, 20, 16), np.float16))
    # fp16: the fp32 result rounded once (half an fp16 ulp, 2^-11 relative) on top of the fp32 differences
    np.testing.assert_allclose(half.astype(np.float32), ref, rtol=2.0**-11, atol=_fp32_tol(ref))
    assert np.mean(half == ref.astype(np.float16)) > 0.99


def test_masked_inputs_channels_last(emu):
    rng = np.random.default_rng()
    acts, imgs, bi, ki = _case(rng)
    spec = SPECS[0]
    ref = masked_inputs(acts, imgs, bi, ki, spec, np.empty((6, 3, 20, 16), np.float32))
    nhwc = np.empty((6, 20, 16, 3), np.float32)
    emu.masked_inputs(acts, imgs, bi, ki, spec, nhwc.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(nhwc.transpose(0, 3, 1, 2), ref, rtol=0, atol=_fp32_tol(ref))


def test_noise_and_scale_knobs(emu):
    rng = np.random.default_rng()
    acts, imgs, bi, ki = _case(rng, size=(12, 12))
    spec = MaskSpec(normalize_at="feature", eps=1e-8)
    scale = rng.uniform(0.1, 5.5, 6).astype(np.float32)
    z_mask, z_in = _rand(rng, 6, 12, 12, scale=2.0), _rand(rng, 6, 3, 12, 12, scale=1.0)
    std = rng.uniform(0.1, 2.0, 6).astype(np.float32)
    buf = lambda: np.empty((6, 3, 12, 12), np.float32)  # noqa: E731
    ref = masked_inputs(acts, imgs, bi, ki, spec, buf(), scale=scale, mask_noise=z_mask, input_noise=z_in,
                        input_noise_std=std)
    got = emu.masked_inputs(acts, imgs, bi, ki, spec, buf(), scale=scale, mask_noise=z_mask, input_noise=z_in,
                            input_noise_std=std)
    np.testing.assert_allclose(got, ref, rtol=0, atol=_fp32_tol(ref))
    # the SS-CAM paper's noise, fused: std = (m / range(x))**2 from the masked input before its noise
    paper = MaskSpec(normalize_at="input", eps=0.0)
    ref = add_range_scaled_noise(masked_inputs(acts, imgs, bi, ki, paper, buf()), z_in, 2.0)
    got = emu.masked_inputs(acts, imgs, bi, ki, paper, buf(), input_noise=z_in, range_noise=2.0)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=_fp32_tol(ref))


@pytest.mark.parametrize("multiplier", [2.0, 0.0, -1.5])
@pytest.mark.parametrize("scaled", [False, True])
def test_range_noise_is_the_hosts_for_any_multiplier(emu, multiplier, scaled):
    """The SS-CAM paper's noise: std (m / range)**2 on both sides, m = 0 no noise (the device once added N(0, 1)),
    a negative m squared as the host squares it; a constant (zero-mask) input gets none."""
    rng = np.random.default_rng()
    acts, imgs, bi, ki = _case(rng, size=(12, 12))
    bi, ki = np.append(bi, 1), np.append(ki, 2)  # acts[1, 2] is constant: a zero mask, a constant masked input
    spec = MaskSpec(normalize_at="input", eps=0.0)
    z = _rand(rng, 7, 3, 12, 12, scale=1.0)
    scale = rng.uniform(0.1, 5.5, 7).astype(np.float32) if scaled else None
    buf = lambda: np.empty((7, 3, 12, 12), np.float32)  # noqa: E731
    clean = masked_inputs(acts, imgs, bi, ki, spec, buf(), scale=scale).copy()
    ref = add_range_scaled_noise(clean.copy(), z, multiplier)
    got = emu.masked_inputs(acts, imgs, bi, ki, spec, buf(), scale=scale, input_noise=z, range_noise=multiplier)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=_fp32_tol(ref))
    device_clean = emu.masked_inputs(acts, imgs, bi, ki, spec, buf(), scale=scale)
    np.testing.assert_array_equal(got[6], device_clean[6])  # constant masked input: no noise
    if multiplier == 0.0:
        np.testing.assert_array_equal(got, device_clean)


def test_sscam_std_is_validated_and_zero_means_no_noise_on_both_sides(emu):
    """A negative std is refused (through the options and through the factory); std 0 adds no noise on the host
    and on the device alike (the device once added N(0, 1) there: the fused kernel read m <= 0 as 'not ranged')."""
    from camrt.errors import InputError
    from camrt.runtime.methods import sscam

    for std in (-2.0, "-1", float("nan")):
        with pytest.raises(InputError, match="std: sscam's std must be a finite number >= 0") as info:
            get_convention("sscam", "paper", std=std)
        assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="std: sscam's std must be a finite number >= 0, got -1.0"):
        sscam.conventions(std=-1.0)
    conv = get_convention("sscam", "paper", std=0)
    assert conv.noise_std == 0.0
    rng = np.random.default_rng()
    acts, imgs, bi, ki = _case(rng, size=(12, 12))
    z = _rand(rng, 6, 3, 12, 12, scale=1.0)
    buf = lambda: np.empty((6, 3, 12, 12), np.float32)  # noqa: E731
    clean = emu.masked_inputs(acts, imgs, bi, ki, conv.mask, buf()).copy()
    noisy = emu.masked_inputs(acts, imgs, bi, ki, conv.mask, buf(), input_noise=z, range_noise=conv.noise_std)
    np.testing.assert_array_equal(noisy, clean)
    host = masked_inputs(acts, imgs, bi, ki, conv.mask, buf())
    np.testing.assert_array_equal(add_range_scaled_noise(host.copy(), z, conv.noise_std), host)


def test_size_one_dimensions_may_have_any_stride(emu):
    """torch gives a batch-1 buffer (or a size-1 channel) strides that address nothing; _layout accepts them."""
    from numpy.lib.stride_tricks import as_strided

    rng = np.random.default_rng()
    acts, imgs, _, _ = _case(rng)
    bi, ki = np.array([2]), np.array([3])
    spec = SPECS[0]
    ref = masked_inputs(acts, imgs, bi, ki, spec, np.empty((1, 3, 20, 16), np.float32))
    nchw = np.zeros((1, 3, 20, 16), np.float32)
    odd = as_strided(nchw, nchw.shape, (4, *nchw.strides[1:]))  # batch stride 4: never used with one item
    emu.masked_inputs(acts, imgs, bi, ki, spec, odd)
    np.testing.assert_allclose(nchw, ref, rtol=0, atol=_fp32_tol(ref))
    nhwc = np.zeros((1, 20, 16, 3), np.float32)
    view = nhwc.transpose(0, 3, 1, 2)
    emu.masked_inputs(acts, imgs, bi, ki, spec, as_strided(view, view.shape, (12, *view.strides[1:])))
    np.testing.assert_allclose(nhwc.transpose(0, 3, 1, 2), ref, rtol=0, atol=_fp32_tol(ref))
    gray = np.zeros((1, 1, 20, 16), np.float32)  # one channel: NCHW and channels-last are the same memory
    one = as_strided(gray, gray.shape, (4, 4, 64, 4))
    emu.masked_inputs(acts, imgs[:, :1], bi, ki, spec, one)
    np.testing.assert_allclose(gray, masked_inputs(acts, imgs[:, :1], bi, ki, spec, np.empty((1, 1, 20, 16),
                                                                                               np.float32)),
                               rtol=0, atol=_fp32_tol(ref))
    with pytest.raises(ValueError, match="C-contiguous"):
        emu.masked_inputs(acts, imgs, bi, ki, spec, np.zeros((1, 20, 3, 16), np.float32).transpose(0, 2, 1, 3))


@pytest.mark.parametrize("method,convention", [(m, c) for m, cs in list_conventions().items() for c in cs])
def test_combine_matches_numpy(emu, method, convention):
    rng = np.random.default_rng()
    conv = get_convention(method, convention)
    acts = np.maximum(_rand(rng, 9, 5, 4), 0)
    weights = rng.standard_normal(9)
    weights[[2, 6]] = 0.0
    ref, ref_native = combine(conv, acts, weights, (20, 16))
    got, native = emu.combine(conv, acts, weights, (20, 16))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
    assert (native is None) == (ref_native is None)
    if native is not None:
        np.testing.assert_allclose(native, ref_native, rtol=0, atol=1e-6)


def test_scores_accumulate_per_image_and_non_finite_rows_flag_their_image(emu):
    rng = np.random.default_rng()
    acts = rng.standard_normal((3, 7, 2, 2)).astype(np.float32)
    acts[1] = 0.0  # an image with no live channel: no jobs
    conv = get_convention("sscam", "paper", num_samples=3)
    plan = plan_jobs(acts, conv)
    target = rng.integers(0, 10, 3)
    base = rng.standard_normal(3)
    for kind in ("prob", "logit", "logit-delta"):
        sums, expected = np.zeros((3, 7)), np.zeros((3, 7))
        bad = np.zeros(3, np.int32)
        jobs = [(b, k) for b, channels in enumerate(plan.unique) for _ in range(plan.samples) for k in channels]
        for start in range(0, len(jobs), 4):  # batches of 4 jobs, across images
            hb, hk = (np.array(column, np.int64) for column in zip(*jobs[start:start + 4]))
            logits = _rand(rng, hb.size, 10)
            emu.accumulate_scores(logits, hb.astype(np.int32), hk.astype(np.int32), target.astype(np.int32), base,
                                  kind, sums, bad)
            np.add.at(expected, (hb, hk), score_rows(kind, logits, target[hb], base[hb]))
        np.testing.assert_allclose(sums, expected, rtol=1e-12, atol=1e-12)
        assert not bad.any()
    logits = _rand(rng, 2, 10)
    logits[1, 3] = np.nan  # the second row, of image 2: only image 2 is flagged
    emu.accumulate_scores(logits, np.array([0, 2], np.int32), np.array([1, 1], np.int32), target.astype(np.int32),
                          base, "prob", sums, bad)
    assert bad.tolist() == [0, 0, 1]


@pytest.mark.parametrize("method,convention", [
    ("scorecam", "paper"), ("scorecam", "pytorch-grad-cam"), ("scorecam", "torchcam"), ("sscam", "paper"),
    ("sscam", "torchcam"), ("iscam", "paper"), ("iscam", "torchcam"), ("scorecam++", "paper"),
])
def test_device_scorer_matches_the_host_scorer(emu, tiny_bundle, method, convention):
    """runtime/engine/device_scorer.py end to end with the emulated kernels: the same explanation as the host."""
    cpu = Explainer(tiny_bundle, intra_op_threads=1)
    device = Explainer(cpu.bundle, backend=EmulatedDeviceRunner(cpu.runner, emu))
    x = images(2, seed=int(np.random.SeedSequence().entropy % 2**32))
    opts = {"num_samples": 2} if method in ("sscam", "iscam") else {}
    a = cpu.explain(x, method, convention, batch_size=5, seed=3, **opts)
    b = device.explain(x, method, convention, batch_size=5, seed=3, **opts)
    assert b.passes_run == a.passes_run and b.passes_saved == a.passes_saved
    np.testing.assert_allclose(b.weights, a.weights, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(b.saliency, a.saliency, atol=1e-5)
    assert (a.native is None) == (b.native is None)
    if a.native is not None:
        np.testing.assert_allclose(b.native, a.native, atol=1e-5)
