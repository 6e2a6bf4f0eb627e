"""From channel weights to the map, as each convention's reference does it (order of ReLU, resize, min-max)."""

from __future__ import annotations

import numpy as np

from camrt.kernels.activations import position_map
from camrt.kernels.masks import minmax, weighted_sum_upsampled
from camrt.kernels.upsample import resize_bilinear
from camrt.runtime.methods.base import Convention


def _minmax(x: np.ndarray, eps: float) -> np.ndarray:
    """(x - min) / (max - min + eps) over the map; with eps 0 a constant map becomes zeros (the references: None)."""
    return minmax(np.array(x, dtype=np.float32), eps)


def combine(
    conv: Convention, activations: np.ndarray, weights: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray | None]:
    """(saliency at H x W in [0, 1], map at the convention's native h x w or None) for one image (K, h, w)."""
    if conv.combine == "gated":
        total = weighted_sum_upsampled(activations, weights, size, conv.mask)
        return _minmax(np.maximum(total, 0), 0.0), None
    low64 = np.tensordot(weights.astype(np.float64), activations.astype(np.float64), axes=(0, 0))
    if conv.combine in ("recipro", "openvino-xai"):
        # Recipro-CAM: ``activations`` is its score map (1, h, w) with weight 1; min-max (no ReLU), then resize. In
        # the activations' precision: the head scorer's float64 scores, or float32 as the CUDA combine has them.
        native = position_map(np, low64 if activations.dtype == np.float64 else low64.astype(np.float32),
                              conv.combine)
        return resize_bilinear(native, size, align_corners=False), native
    low = low64.astype(np.float32)
    if conv.combine == "paper":
        # sum_k a_k Up(A_k) == Up(sum_k a_k A_k): upsampling is linear, so combine at h x w, then resize.
        up = resize_bilinear(low, size, align_corners=conv.mask.align_corners)
        return _minmax(np.maximum(up, 0), 0.0), None
    if conv.combine == "pytorch-grad-cam":
        native = _minmax(np.maximum(low, 0), 1e-7)  # scale_cam_image, then cv2 bilinear resize, then again
        return _minmax(resize_bilinear(native, size, align_corners=False), 1e-7), native
    if conv.combine == "torchcam":
        native = _minmax(np.maximum(low, 0), 1e-8)  # torchcam returns this h x w map
        return np.clip(resize_bilinear(native, size, align_corners=False), 0, 1), native
    raise ValueError(f"unknown combine {conv.combine!r}")


def head_weights(conv: Convention, sums: np.ndarray, clean: float) -> np.ndarray:
    """A head-only method's per-job results (float64) from its score sums (J,) and the target's clean score.

    Ablation-CAM: channel weights w_k = (y - y_k) / y (both references); Recipro-CAM: the scores themselves, its
    h·w map before normalisation.
    """
    scores = np.asarray(sums, np.float64) / conv.samples
    if conv.head is not None and conv.head.op == "ablate":
        with np.errstate(divide="ignore", invalid="ignore"):
            return (clean - scores) / clean
    return scores
