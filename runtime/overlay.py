"""Saliency heat-map overlays (jet blended with the photo, as pytorch-grad-cam's show_cam_on_image), numpy + PIL only.

Files are written atomically (runtime/atomic.py), so a crash never leaves a half-written image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from camrt.errors import InputError
from camrt.runtime.atomic import atomic_write


def _jet_lut() -> np.ndarray:
    """OpenCV's COLORMAP_JET (what pytorch-grad-cam uses) as the classic formula, within 1 level of its table."""
    x = np.arange(256, dtype=np.float64)[:, None] / 255
    rgb = np.clip(1.5 - np.abs(4 * x - np.array([3.0, 2.0, 1.0])), 0.0, 1.0)
    return np.round(rgb * 255).astype(np.uint8)


JET_LUT: np.ndarray = _jet_lut()  # (256, 3) uint8 RGB


def colorize(saliency: np.ndarray) -> np.ndarray:
    """Saliency (H, W) in [0, 1] to a jet RGB image (H, W, 3) uint8; values outside [0, 1] are clipped."""
    s = np.nan_to_num(np.asarray(saliency, dtype=np.float32), nan=0.0)
    return JET_LUT[(np.clip(s, 0.0, 1.0) * 255).astype(np.uint8)]


def overlay(rgb: np.ndarray, saliency: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend ``alpha`` of the jet map with the photo (H, W, 3) uint8, rescaled so the brightest value is 255."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"rgb: expected an (H, W, 3) image, got shape {rgb.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha: must be in [0, 1], got {alpha}")
    saliency = np.asarray(saliency, dtype=np.float32)
    if saliency.ndim != 2:
        raise InputError(f"saliency: expected an (H, W) map, got shape {saliency.shape}")
    if saliency.shape != rgb.shape[:2]:  # a map at another resolution: stretch it bilinearly over the photo
        size = (rgb.shape[1], rgb.shape[0])
        stretched = Image.fromarray(np.ascontiguousarray(saliency)).resize(size, Image.Resampling.BILINEAR)
        saliency = np.asarray(stretched, dtype=np.float32)
    heat = colorize(saliency).astype(np.float32) / 255
    photo = rgb.astype(np.float32) / 255
    blend = alpha * heat + (1.0 - alpha) * photo
    peak = float(blend.max())
    if peak > 0:
        blend /= peak
    return (blend * 255).astype(np.uint8)


def save_overlay(rgb: np.ndarray, saliency: np.ndarray, path: str | Path, alpha: float = 0.5) -> Path:
    """Write the overlay of ``saliency`` on ``rgb`` to ``path`` (format from the suffix, PNG when there is none)."""
    image = Image.fromarray(overlay(rgb, saliency, alpha))
    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    return atomic_write(path, lambda handle: image.save(handle, format=fmt))
