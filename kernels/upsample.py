"""Bilinear resizing as two small matrix products, equal to ``torch.nn.functional.interpolate``.

``Up(A) = Wh @ A @ Ww.T`` with interpolation matrices built from torch's own index arithmetic (in float32),
so both ``align_corners`` settings match torch to fp32 rounding, with BLAS speed and no torch.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=64)
def interpolation_matrix(in_size: int, out_size: int, align_corners: bool) -> np.ndarray:
    """(out_size, in_size) float32 matrix of 1-D linear-interpolation weights, torch's convention."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got in_size={in_size}, out_size={out_size}")
    dst = np.arange(out_size, dtype=np.float32)
    if align_corners:
        scale = np.float32((in_size - 1) / (out_size - 1)) if out_size > 1 else np.float32(0.0)
        src = dst * scale
    else:
        scale = np.float32(in_size / out_size)
        src = np.maximum((dst + np.float32(0.5)) * scale - np.float32(0.5), np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    lam1 = (src - i0.astype(np.float32)).astype(np.float32)
    lam0 = (np.float32(1.0) - lam1).astype(np.float32)
    weights = np.zeros((out_size, in_size), dtype=np.float32)
    rows = np.arange(out_size)
    np.add.at(weights, (rows, i0), lam0)
    np.add.at(weights, (rows, i1), lam1)
    weights.setflags(write=False)
    return weights


def resize_bilinear(
    x: np.ndarray, size: tuple[int, int], align_corners: bool = False, out: np.ndarray | None = None
) -> np.ndarray:
    """Resize the last two axes of ``x`` (..., h, w) to ``size`` (H, W) bilinearly, float32."""
    h, w = x.shape[-2:]
    height, width = size
    x = np.asarray(x, dtype=np.float32)
    if (h, w) == (height, width):
        if out is None:
            return x.copy()
        out[...] = x
        return out
    wh = interpolation_matrix(h, height, align_corners)
    ww = interpolation_matrix(w, width, align_corners)
    tmp = np.matmul(x, ww.T)  # (..., h, W): along the width first, as torch does
    return np.matmul(wh, tmp, out=out)
