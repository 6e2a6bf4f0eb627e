"""Photo to model input, as torchvision does it on PIL images: Resize(short side), CenterCrop, ToTensor, Normalize.

numpy + PIL only, so the runtime stays free of torch; every bad file becomes a one-line :class:`InputError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from camrt.errors import InputError, first_line
from camrt.runtime.bundle import Preprocessing

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}


def load_image(image: str | Path | Image.Image) -> Image.Image:
    """Open ``image`` (a path or a PIL image) fully decoded as RGB, so a corrupt file fails here and names itself."""
    if isinstance(image, Image.Image):
        try:
            image.load()
            return image if image.mode == "RGB" else image.convert("RGB")
        except (OSError, SyntaxError, ValueError, EOFError) as exc:  # a lazily opened PIL image decodes only here
            raise InputError(f"image: cannot decode this PIL image ({first_line(exc)})") from None
    if not isinstance(image, (str, Path)):
        raise InputError(f"image: expected a file path or a PIL image, got {type(image).__name__}")
    path = Path(image)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an image")
    try:
        with Image.open(path) as opened:
            opened.load()
            return opened.convert("RGB")
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image (cannot identify image file)") from None
    except Image.DecompressionBombError as exc:
        raise InputError(f"{path}: image too large ({exc})") from None
    except PermissionError:
        raise InputError(f"{path}: cannot read (permission denied)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # PIL's decoders raise all of these on bad data
        raise InputError(f"{path}: corrupt or truncated image ({first_line(exc)})") from None


def resize_and_crop(image: Image.Image, pre: Preprocessing) -> Image.Image:
    """Resize the short side to ``pre.resize`` and centre-crop to ``pre.crop`` (H, W), with torchvision's rounding."""
    resample = _RESAMPLE.get(pre.interpolation)
    if resample is None:
        raise InputError(f"interpolation: unknown {pre.interpolation!r}; choose one of {', '.join(_RESAMPLE)}")
    if pre.resize:
        size = _short_side_size(image.size, int(pre.resize))
        if size != image.size:
            image = image.resize(size, resample)
    return _center_crop(image, (int(pre.crop[0]), int(pre.crop[1])))


def _short_side_size(size: tuple[int, int], short: int) -> tuple[int, int]:
    """(W, H) with the short side ``short`` and the long side truncated, as torchvision's Resize(int)."""
    width, height = size
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def _center_crop(image: Image.Image, crop: tuple[int, int]) -> Image.Image:
    """torchvision CenterCrop: zero-pad when the crop is larger, then take the centre box (round half to even)."""
    crop_h, crop_w = crop
    width, height = image.size
    pad_left = (crop_w - width) // 2 if crop_w > width else 0
    pad_top = (crop_h - height) // 2 if crop_h > height else 0
    padded_w = width + max(crop_w - width, 0)
    padded_h = height + max(crop_h - height, 0)
    left = int(round((padded_w - crop_w) / 2.0)) - pad_left
    top = int(round((padded_h - crop_h) / 2.0)) - pad_top
    if (left, top, crop_w, crop_h) == (0, 0, width, height):
        return image
    return image.crop((left, top, left + crop_w, top + crop_h))  # PIL fills outside the image with zeros


def normalize(rgb: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """uint8 (H, W, 3) to float32 (3, H, W): /255 then (x - mean) / std, in float32 as torchvision does."""
    x = np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    mean = np.asarray(pre.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(pre.std, dtype=np.float32).reshape(3, 1, 1)
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


def preprocess(image: str | Path | Image.Image, pre: Preprocessing) -> np.ndarray:
    """One photo as the model input (3, H, W) float32."""
    return normalize(np.asarray(resize_and_crop(load_image(image), pre)), pre)


def original_for_overlay(image: str | Path | Image.Image, pre: Preprocessing) -> np.ndarray:
    """The resized and cropped photo (H, W, 3) uint8: the pixels the saliency map lines up with."""
    return np.array(resize_and_crop(load_image(image), pre), dtype=np.uint8)


def load_batch(images: Sequence[Any], pre: Preprocessing) -> np.ndarray:
    """Photos (paths or PIL images) as one batch (N, 3, H, W) float32 for :meth:`Explainer.explain`."""
    if isinstance(images, (str, Path, Image.Image)):
        images = [images]
    if len(images) == 0:
        raise InputError("images: no images given")
    return np.stack([preprocess(image, pre) for image in images])
