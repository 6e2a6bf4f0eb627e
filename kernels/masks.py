"""The masked-input op, NumPy reference: activations -> (upsample, normalise or gate) -> x image -> buffer.

One call turns a chunk of n (image, channel) selections into n masked inputs written straight into the
caller's buffer, so memory is bounded by the chunk, never by the channel count or the number of samples.
The CUDA kernels in this package take the same arguments and must agree with this reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from camrt.kernels.upsample import resize_bilinear

Gate = Literal["tanh", "sigmoid-relu", "mish", "swish"]
GATES: tuple[str, ...] = ("tanh", "sigmoid-relu", "mish", "swish")


@dataclass(frozen=True)
class MaskSpec:
    """How one channel's activations become a mask; each reference implementation is one setting.

    normalize: "minmax" -> (a - min) / (max - min + eps) per (image, channel), a constant channel giving 0;
    "none" -> raw values. normalize_at: "input" normalises after upsampling (the paper, pytorch-grad-cam),
    "feature" at h x w before upsampling (torchcam). gate: applied after upsampling (ScoreCAM++), with
    normalize="none".
    """

    align_corners: bool = False
    normalize: Literal["minmax", "none"] = "minmax"
    normalize_at: Literal["input", "feature"] = "input"
    eps: float = 0.0
    gate: Gate | None = None

    def __post_init__(self) -> None:
        if self.normalize not in ("minmax", "none"):
            raise ValueError(f"normalize must be 'minmax' or 'none', got {self.normalize!r}")
        if self.normalize_at not in ("input", "feature"):
            raise ValueError(f"normalize_at must be 'input' or 'feature', got {self.normalize_at!r}")
        if self.gate is not None and self.gate not in GATES:
            raise ValueError(f"gate must be one of {GATES}, got {self.gate!r}")


def apply_gate(x: np.ndarray, gate: str) -> np.ndarray:
    """Elementwise gate in place (float32): tanh, sigmoid(relu(x)), mish, swish (x * sigmoid(x))."""
    if gate == "tanh":
        return np.tanh(x, out=x)
    if gate == "sigmoid-relu":
        np.maximum(x, 0, out=x)
        return _sigmoid(x, out=x)
    if gate == "swish":
        sig = _sigmoid(x.copy())
        return np.multiply(x, sig, out=x)
    if gate == "mish":
        soft = np.logaddexp(np.float32(0), x).astype(np.float32)  # softplus, overflow-safe
        return np.multiply(x, np.tanh(soft), out=x)
    raise ValueError(f"unknown gate {gate!r}; choose one of {GATES}")


def _sigmoid(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    out = np.negative(x, out=out)
    np.exp(out, out=out)
    out += np.float32(1)
    return np.reciprocal(out, out=out)


def minmax(x: np.ndarray, eps: float, axes: tuple[int, ...] = (-2, -1)) -> np.ndarray:
    """In-place (x - min) / (max - min + eps) over ``axes``; an all-constant slice becomes 0."""
    lo = x.min(axis=axes, keepdims=True)
    x -= lo
    span = x.max(axis=axes, keepdims=True)
    if eps:
        span += np.float32(eps)
    else:
        span[span == 0] = np.float32(1)  # constant slice: 0 / 1 = 0, the limit every reference takes
    x /= span
    return x


def channel_masks(
    activations: np.ndarray,
    image_idx: np.ndarray,
    channel_idx: np.ndarray,
    size: tuple[int, int],
    spec: MaskSpec,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Masks (n, H, W) float32 for the selected (image, channel) pairs of activations (B, K, h, w)."""
    sel = activations[image_idx, channel_idx].astype(np.float32, copy=False)  # (n, h, w): the gather copied
    if spec.normalize == "minmax" and spec.normalize_at == "feature":
        minmax(sel, spec.eps)
    masks = resize_bilinear(sel, size, spec.align_corners, out=out)
    if spec.gate is not None:
        apply_gate(masks, spec.gate)
    if spec.normalize == "minmax" and spec.normalize_at == "input":
        minmax(masks, spec.eps)
    return masks


def masked_inputs(
    activations: np.ndarray,
    images: np.ndarray,
    image_idx: np.ndarray,
    channel_idx: np.ndarray,
    spec: MaskSpec,
    out: np.ndarray,
    *,
    scale: np.ndarray | None = None,
    mask_noise: np.ndarray | None = None,
    input_noise: np.ndarray | None = None,
    input_noise_std: np.ndarray | None = None,
    mask_buffer: np.ndarray | None = None,
) -> np.ndarray:
    """Write n masked inputs ``images[b] * mask`` into ``out[:n]`` (n, 3, H, W) and return that view.

    activations (B, K, h, w); images (B, 3, H, W) normalised; image_idx, channel_idx (n,) the selection.
    Optional per-item knobs, applied in the references' order:
    mask_noise (n, H, W) is added to the mask before the product (torchcam SS-CAM);
    scale (n,) multiplies the product (IS-CAM's integration coefficients);
    input_noise (n, 3, H, W) times input_noise_std (n,) is added last (the SS-CAM paper's noise).
    mask_buffer (>= n, H, W) is optional scratch space, so a caller can avoid one allocation per chunk.
    """
    image_idx = np.asarray(image_idx, dtype=np.int64)
    channel_idx = np.asarray(channel_idx, dtype=np.int64)
    n = image_idx.shape[0]
    size = (images.shape[-2], images.shape[-1])
    if out.shape[0] < n or out.shape[1:] != (images.shape[1], *size) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 with shape (>={n}, {images.shape[1]}, {size[0]}, {size[1]})")
    masks = channel_masks(
        activations, image_idx, channel_idx, size, spec, out=None if mask_buffer is None else mask_buffer[:n]
    )
    if mask_noise is not None:
        masks += mask_noise[:n]
    view = out[:n]
    for lo, hi in _runs(image_idx):  # one broadcast product per image: no gathered copy of the images
        np.multiply(images[image_idx[lo]][None], masks[lo:hi, None], out=view[lo:hi])
    if scale is not None:
        view *= np.asarray(scale, dtype=np.float32)[:, None, None, None]
    if input_noise is not None:
        std = np.ones(n, np.float32) if input_noise_std is None else np.asarray(input_noise_std, np.float32)
        view += std[:, None, None, None] * input_noise[:n]
    return view


def _runs(index: np.ndarray) -> list[tuple[int, int]]:
    """[lo, hi) ranges of equal consecutive values in ``index``."""
    if index.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(index)) + 1
    edges = np.concatenate(([0], cuts, [index.size]))
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def weighted_sum_upsampled(
    activations: np.ndarray,
    weights: np.ndarray,
    size: tuple[int, int],
    spec: MaskSpec,
    chunk: int = 64,
) -> np.ndarray:
    """sum_k w_k * mask_k at H x W for one image (K, h, w), channel chunk by channel chunk.

    Needed where the combination is not linear in the activations (ScoreCAM++'s gated maps);
    otherwise ``resize(sum_k w_k A_k)`` is the same number for a K-th of the work.
    """
    k = activations.shape[0]
    acc = np.zeros(size, dtype=np.float64)
    nz = np.flatnonzero(weights)
    buf = np.empty((min(chunk, max(len(nz), 1)), *size), dtype=np.float32)
    zeros = np.zeros(k, dtype=np.int64)
    for start in range(0, len(nz), chunk):
        sel = nz[start : start + chunk]
        masks = channel_masks(activations[None], zeros[: len(sel)], sel, size, spec, out=buf[: len(sel)])
        acc += np.tensordot(weights[sel].astype(np.float64), masks, axes=(0, 0))
    return acc.astype(np.float32)


def add_range_scaled_noise(view: np.ndarray, noise: np.ndarray, multiplier: float) -> np.ndarray:
    """SS-CAM paper noise, in place: x += (m / (max x - min x))**2 * z per item (the code passes sigma**2 as std)."""
    flat = view.reshape(view.shape[0], -1)
    span = (flat.max(axis=1) - flat.min(axis=1)).astype(np.float64)
    span[span == 0] = np.inf  # a constant masked input gets no noise (the paper skips such channels anyway)
    std = ((multiplier / span) ** 2).astype(np.float32)
    view += std[:, None, None, None] * noise[: view.shape[0]]
    return view
