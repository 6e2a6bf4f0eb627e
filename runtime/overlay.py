"""Saliency heat-map overlays (jet blended with the photo, as pytorch-grad-cam's show_cam_on_image), numpy + PIL only.

Files are written atomically (a temporary file in the same folder, then ``os.replace``), so a crash never leaves a
half-written image where a finished one is expected.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from camrt.errors import InputError


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


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write`` on a temporary file beside ``path``, then rename it over ``path`` in one step."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)  # umask applies
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def save_overlay(rgb: np.ndarray, saliency: np.ndarray, path: str | Path, alpha: float = 0.5) -> Path:
    """Write the overlay of ``saliency`` on ``rgb`` to ``path`` (format from the suffix, PNG when there is none)."""
    image = Image.fromarray(overlay(rgb, saliency, alpha))
    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    return atomic_write(path, lambda handle: image.save(handle, format=fmt))
