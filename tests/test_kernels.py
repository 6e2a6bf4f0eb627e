"""The NumPy masked-input op against torch: upsampling, normalisation, gates, noise and scale knobs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from camrt.kernels import MaskSpec, add_range_scaled_noise, apply_gate, masked_inputs, resize_bilinear


def _rand(*shape: int) -> np.ndarray:
    return (np.random.default_rng().standard_normal(shape) * 5).astype(np.float32)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("src,dst", [((7, 7), (224, 224)), ((13, 9), (64, 50)), ((1, 1), (5, 5)), ((10, 10), (7, 3))])
def test_upsample_matches_torch(align_corners, src, dst):
    x = _rand(2, 5, *src)
    ref = F.interpolate(torch.from_numpy(x), dst, mode="bilinear", align_corners=align_corners).numpy()
    got = resize_bilinear(x, dst, align_corners)
    # fp32: the two orders of the same 4-term sum differ by a few ulps of the largest input
    np.testing.assert_allclose(got, ref, rtol=0, atol=4e-6 * np.abs(x).max())


@pytest.mark.parametrize("gate,fn", [("tanh", torch.tanh), ("sigmoid-relu", lambda t: torch.sigmoid(F.relu(t))),
                                     ("mish", F.mish), ("swish", F.silu)])
def test_gates_match_torch(gate, fn):
    x = _rand(4, 9, 9)
    np.testing.assert_allclose(apply_gate(x.copy(), gate), fn(torch.from_numpy(x)).numpy(), rtol=1e-6, atol=1e-6)


def _torch_masks(acts, imgs, bi, ki, spec, size):
    a = torch.from_numpy(acts[bi, ki][:, None])
    if spec.normalize_at == "feature":
        lo = a.amin(dim=(2, 3), keepdim=True)
        a = (a - lo) / ((a - lo).amax(dim=(2, 3), keepdim=True) + spec.eps)
    m = F.interpolate(a, size, mode="bilinear", align_corners=spec.align_corners)
    if spec.gate == "tanh":
        m = torch.tanh(m)
    if spec.normalize == "minmax" and spec.normalize_at == "input":
        lo, hi = m.amin(dim=(2, 3), keepdim=True), m.amax(dim=(2, 3), keepdim=True)
        m = (m - lo) / (hi - lo + spec.eps)
    return torch.from_numpy(imgs[bi]) * m


@pytest.mark.parametrize(
    "spec",
    [
        MaskSpec(align_corners=True, normalize_at="input", eps=1e-8),
        MaskSpec(align_corners=False, normalize_at="feature", eps=1e-8),
        MaskSpec(align_corners=False, normalize_at="input", eps=0.0),
        MaskSpec(align_corners=False, normalize="none", gate="tanh"),
    ],
)
def test_masked_inputs_match_torch(spec):
    acts, imgs = _rand(3, 6, 5, 4), _rand(3, 3, 20, 16)
    bi, ki = np.array([0, 0, 1, 2, 2]), np.array([1, 5, 0, 3, 4])
    out = np.full((8, 3, 20, 16), np.nan, np.float32)
    view = masked_inputs(acts, imgs, bi, ki, spec, out)
    assert view.shape == (5, 3, 20, 16) and np.shares_memory(view, out)
    np.testing.assert_allclose(view, _torch_masks(acts, imgs, bi, ki, spec, (20, 16)).numpy(), rtol=1e-5, atol=1e-5)
    assert np.isnan(out[5:]).all(), "only the first n rows of the caller's buffer are written"


def test_noise_and_scale_knobs():
    acts, imgs = _rand(2, 4, 3, 3), _rand(2, 3, 12, 12)
    bi, ki = np.array([0, 1, 1]), np.array([2, 0, 3])
    spec = MaskSpec(normalize_at="feature", eps=1e-8)
    plain = masked_inputs(acts, imgs, bi, ki, spec, np.empty((3, 3, 12, 12), np.float32)).copy()
    scale = np.array([0.1, 0.3, 5.5], np.float32)
    scaled = masked_inputs(acts, imgs, bi, ki, spec, np.empty((3, 3, 12, 12), np.float32), scale=scale)
    np.testing.assert_allclose(scaled, plain * scale[:, None, None, None], rtol=1e-6)
    z = _rand(3, 12, 12)
    noisy = masked_inputs(acts, imgs, bi, ki, spec, np.empty((3, 3, 12, 12), np.float32), mask_noise=z)
    masks = _torch_masks(acts, np.ones_like(imgs), bi, ki, spec, (12, 12)).numpy()
    np.testing.assert_allclose(noisy, imgs[bi] * (masks + z[:, None]), rtol=1e-5, atol=1e-5)
    zin = _rand(3, 3, 12, 12)
    x = plain.copy()
    add_range_scaled_noise(x, zin, 2.0)
    span = plain.reshape(3, -1).max(1) - plain.reshape(3, -1).min(1)
    np.testing.assert_allclose(x, plain + ((2.0 / span) ** 2)[:, None, None, None] * zin, rtol=1e-5, atol=1e-5)


def test_constant_channel_gives_zero_mask():
    acts = np.zeros((1, 2, 4, 4), np.float32)
    acts[0, 1] = 3.5
    imgs = _rand(1, 3, 8, 8)
    for spec in (MaskSpec(eps=0.0), MaskSpec(eps=1e-8, align_corners=True), MaskSpec(normalize_at="feature")):
        out = masked_inputs(acts, imgs, np.array([0, 0]), np.array([0, 1]), spec, np.empty((2, 3, 8, 8), np.float32))
        assert not out.any()
