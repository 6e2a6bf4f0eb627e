"""Saliency heat-map overlays (jet blended with the photo, as pytorch-grad-cam's show_cam_on_image), numpy + PIL only.

``overlay_on_original`` draws a map on the user's photo at the photo's own resolution: the map stretched over the
crop's box (``preprocess.crop_box``), the rest of the photo dimmed (the model never saw it), the box outlined.
Files are written atomically (runtime/atomic.py), so a crash never leaves a half-written image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

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


Box = Sequence[float]  # (left, top, right, bottom) in the photo's pixels


def overlay_on_original(photo: np.ndarray, saliency: np.ndarray, box: Box, alpha: float = 0.5,
                        dim: float = 0.45, line: int | None = None) -> np.ndarray:
    """The map ``saliency`` (h, w), which covers ``box`` of ``photo`` (H, W, 3) uint8 (``preprocess.crop_box``,
    scaled with the photo if it was resized), blended into that box as :func:`overlay` does (sub-pixel exact: the
    map's pixel edges land on the box's); outside the box the photo darkened by ``dim``; the box outlined in white
    (``line`` pixels wide, default about 1/200 of the photo's short side). Returns (H, W, 3) uint8."""
    photo = np.asarray(photo)
    if photo.ndim != 3 or photo.shape[2] != 3:
        raise InputError(f"photo: expected an (H, W, 3) image, got shape {photo.shape}")
    saliency = np.nan_to_num(np.asarray(saliency, dtype=np.float32), nan=0.0)
    if saliency.ndim != 2 or min(saliency.shape) < 1:
        raise InputError(f"saliency: expected an (H, W) map, got shape {saliency.shape}")
    left, top, right, bottom = (float(v) for v in box)
    if not (right > left and bottom > top and all(np.isfinite((left, top, right, bottom)))):
        raise InputError(f"box: expected (left, top, right, bottom) with right > left and bottom > top, got {box}")
    if not 0.0 <= dim <= 1.0:
        raise InputError(f"dim: must be in [0, 1], got {dim}")
    height, width = photo.shape[:2]
    out = (photo.astype(np.float32) * (1.0 - dim)).astype(np.uint8)
    x0, y0 = min(max(round(left), 0), width), min(max(round(top), 0), height)
    x1, y1 = min(max(round(right), 0), width), min(max(round(bottom), 0), height)
    if x1 > x0 and y1 > y0:
        h, w = saliency.shape
        per_x, per_y = (right - left) / w, (bottom - top) / h  # photo pixels per map pixel
        source = (min(max((x0 - left) / per_x, 0.0), w), min(max((y0 - top) / per_y, 0.0), h),  # (rounding the
                  min(max((x1 - left) / per_x, 0.0), w), min(max((y1 - top) / per_y, 0.0), h))  # box: < 1/2 px)
        stretched = Image.fromarray(np.ascontiguousarray(saliency)).resize(
            (x1 - x0, y1 - y0), Image.Resampling.BILINEAR, box=source)
        out[y0:y1, x0:x1] = overlay(photo[y0:y1, x0:x1], np.asarray(stretched, dtype=np.float32), alpha)
    width_px = line if line is not None else max(1, round(min(height, width) / 200))
    if width_px > 0:
        canvas = Image.fromarray(out)
        ImageDraw.Draw(canvas).rectangle((round(left), round(top), round(right) - 1, round(bottom) - 1),
                                         outline=(255, 255, 255), width=width_px)
        out = np.asarray(canvas)
    return out


def save_overlay_on_original(photo: np.ndarray, saliency: np.ndarray, box: Box, path: str | Path,
                             alpha: float = 0.5) -> Path:
    """Write :func:`overlay_on_original` to ``path`` (format from the suffix, PNG when there is none)."""
    image = Image.fromarray(overlay_on_original(photo, saliency, box, alpha))
    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    return atomic_write(path, lambda handle: image.save(handle, format=fmt))
