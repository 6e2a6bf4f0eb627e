"""The activation-masking op of the head-only methods: a NumPy reference, and the driver of its CUDA twin.

Ablation-CAM replaces channel k of the target layer's activations A (K, h, w) with a fill value; Recipro-CAM keeps
only position (i, j), as a one-hot copy or spread over its 3x3 neighbourhood with a Gaussian (clipped at the border).
Each job (image slot, index) writes one perturbed copy into a reused head-input buffer, so memory is bounded by the
batch size, never K or h·w copies. ``kernels/cuda/activations.cu`` computes the same values (exactly: copies and
products by powers of two), driven by :func:`cuda_masked_activations` through a :class:`~camrt.kernels.gpu.CudaKernels`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

ABLATION_VALUE = 1e7  # grad-cam 1.5.7 AblationLayer: a layer whose minimum is not 0 is ablated to min - 1e7
GRADCAM_BATCH = 32  # AblationCAM's default batch_size: its fill is chained within each batch (see ablation_fills)
GAUSSIAN = np.array([[1 / 16, 1 / 8, 1 / 16], [1 / 8, 1 / 4, 1 / 8], [1 / 16, 1 / 8, 1 / 16]], np.float32)

HeadOp = Literal["ablate", "keep"]
Fill = Literal["zero", "pytorch-grad-cam"]
Kernel = Literal["onehot", "gaussian"]
KERNELS: tuple[Kernel, ...] = ("onehot", "gaussian")


@dataclass(frozen=True)
class HeadSpec:
    """How a head-only method perturbs the activations: ``ablate`` one channel (with ``fill``) or ``keep`` one
    position (with ``kernel``). Jobs per image: K channels or h·w positions."""

    op: HeadOp
    fill: Fill = "zero"
    kernel: Kernel = "onehot"

    def jobs(self, activation_shape: tuple[int, int, int]) -> int:
        k, h, w = activation_shape
        return k if self.op == "ablate" else h * w


def ablation_fills(spec: HeadSpec, activations: np.ndarray) -> np.ndarray:
    """(P,) float32: the value channel k of one image's activations (K, h, w) is ablated to is fills[k % P].

    ``zero``: 0 (the paper). ``pytorch-grad-cam``: grad-cam 1.5.7's AblationLayer sets the channel to 0 when the
    layer's minimum (over all channels) is 0, else to min(output) - 1e7, where ``output`` is the batch being ablated
    in place: the i-th copy of a batch of 32 sees the minimum the (i-1)-th wrote, so its fill is m - (i+1)·1e7, each
    step rounded to float32.
    """
    if spec.fill == "zero":
        return np.zeros(1, np.float32)
    low = np.float32(np.min(activations))
    if low == 0:
        return np.zeros(1, np.float32)
    fills = np.empty(GRADCAM_BATCH, np.float32)
    value = low
    for i in range(GRADCAM_BATCH):
        value = np.float32(value - np.float32(ABLATION_VALUE))
        fills[i] = value
    return fills


def masked_activations(
    activations: np.ndarray,
    image_idx: np.ndarray,
    index: np.ndarray,
    spec: HeadSpec,
    out: np.ndarray,
    fill: np.ndarray | None = None,
) -> np.ndarray:
    """Write n perturbed copies of ``activations[image_idx]`` (S, K, h, w) into ``out[:n]`` and return that view.

    ablate: channel index[j] of copy j set to fill[j] (n,). keep: everything 0 but position index[j] = i·w + j',
    whose vector A[:, i, j'] is kept (onehot) or spread as A[:, i, j'] · GAUSSIAN over the 3x3 neighbourhood
    clipped at the border (gaussian), as the Recipro-CAM authors' ``_mosaic_feature`` does.
    """
    n = int(image_idx.shape[0])
    _, k, h, w = activations.shape
    if out.shape[0] < n or tuple(out.shape[1:]) != (k, h, w):
        raise ValueError(f"out must have shape (>={n}, {k}, {h}, {w}), got {tuple(out.shape)}")
    view = out[:n]
    if n == 0:
        return view
    rows = np.arange(n)
    if spec.op == "ablate":
        if fill is None:
            raise ValueError("ablation needs a fill value per job")
        np.take(activations, image_idx, axis=0, out=view)
        view[rows, index] = np.asarray(fill, np.float32)[:, None, None]
        return view
    view[...] = 0.0
    ci, cj = np.divmod(index, w)
    centre = activations[image_idx, :, ci, cj]  # (n, K)
    if spec.kernel == "onehot":
        view[rows, :, ci, cj] = centre
        return view
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            y, x = ci + dy, cj + dx
            ok = (y >= 0) & (y < h) & (x >= 0) & (x < w)
            view[rows[ok], :, y[ok], x[ok]] = centre[ok] * GAUSSIAN[dy + 1, dx + 1]
    return view


def position_map(xp: Any, scores: Any, combine: str) -> Any:
    """Recipro-CAM's h x w map (float32) from its score map (h, w), in NumPy or CuPy (``xp``), no ReLU.

    ``recipro``: (s - min) / (max - min), a constant map becoming 0 (the authors divide by 0 there). ``openvino-xai``:
    OpenVINO XAI's ``_normalize_map``, uint8(255 · (s - min) / (max - min + 1e-12)), truncated, then / 255.
    Computed in the scores' own precision (float64 on the host): the map divides by the scores' range, so
    rounding the scores to float32 first would cost up to ulp(max) / range.
    """
    s = xp.asarray(scores)
    lo, hi = s.min(), s.max()
    if combine == "recipro":
        span = hi - lo
        return ((s - lo) / (span if span != 0 else 1.0)).astype(xp.float32)
    if combine == "openvino-xai":
        q = xp.trunc(255.0 * (s - lo) / ((hi - lo) + 1e-12))
        return (q / 255.0).astype(xp.float32)
    raise ValueError(f"not a position map: {combine!r}")


def cuda_masked_activations(
    kernels: Any,
    activations: Any,
    image_idx: Any,
    index: Any,
    spec: HeadSpec,
    out: Any,
    fill: Any | None = None,
) -> Any:
    """As :func:`masked_activations`, by the CUDA kernels of activations.cu on ``kernels`` (a CudaKernels: its array
    module, launcher and threads per block); ``out`` is a float32 (n', K, h, w) buffer, C-contiguous."""
    xp = kernels.xp
    acts = xp.ascontiguousarray(activations, dtype=xp.float32)
    bi = xp.ascontiguousarray(image_idx, dtype=xp.int32)
    ki = xp.ascontiguousarray(index, dtype=xp.int32)
    n = int(bi.shape[0])
    _, k, h, w = acts.shape
    if out.shape[0] < n or tuple(out.shape[1:]) != (k, h, w) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 of shape (>={n}, {k}, {h}, {w}), got {out.dtype} {tuple(out.shape)}")
    view = out[:n]
    if n == 0:
        return view
    total = n * k * h * w
    grid = max(1, min(-(-total // kernels.threads), 65535))
    if spec.op == "ablate":
        if fill is None:
            raise ValueError("ablation needs a fill value per job")
        fills = xp.ascontiguousarray(fill, dtype=xp.float32)
        kernels.launch("ablate_channels", grid, kernels.threads,
                       [acts, np.int32(k), np.int32(h * w), bi, ki, fills, np.int32(n), view])
    else:
        kernels.launch("keep_positions", grid, kernels.threads,
                       [acts, np.int32(k), np.int32(h), np.int32(w), bi, ki,
                        np.int32(spec.kernel == "gaussian"), np.int32(n), view])
    return view
