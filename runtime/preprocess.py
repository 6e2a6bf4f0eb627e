"""Photo to model input, as torchvision does it on PIL images: Resize(short side), CenterCrop, ToTensor, Normalize.

Photos are read as they look (EXIF orientation, 16-bit and other modes at their real range, alpha on a stated
background) and within bounds (regular files only, a pixel and an aspect-ratio limit read from the header, only
the crop resized); numpy + PIL only, so the runtime stays free of torch; every bad file is one :class:`InputError`.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageColor, ImageOps, UnidentifiedImageError

from camrt.errors import InputError, first_line
from camrt.runtime.bundle import Preprocessing

MAX_PIXELS = 64_000_000  # camrt's limit on a photo's pixels, read from the header (PIL warns only above 89.5 M)
MAX_ASPECT = 100  # long side / short side at most: beyond it the resized photo is a sliver of a huge upscale
BACKGROUND = (255, 255, 255)  # what transparent pixels are composited on (white), unless background= says otherwise
_BOX_RESIZE = 4  # resize only the crop's box when the resized photo would be over this many crops (else all of it,
#                  which matches torchvision bit for bit; the box can move a pixel by one level)
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # "I" holds 16-bit PNGs and TIFFs: read as 0..65535
_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")
_ORIENTATION = 0x0112  # the EXIF tag
OPEN_LOCK = threading.Lock()  # warnings.catch_warnings is process-wide: one header read at a time under it

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class Decoding:
    """What decoding did to one photo, for its record (README "Per-image records")."""

    orientation: int = 1  # the EXIF orientation applied (1: none)
    mode: str = "RGB"  # the file's PIL mode before conversion to 8-bit RGB
    upscaled: bool = False  # the short side was resized up
    warning: str | None = None  # one line naming the file (an upscaled photo), else None

    def fields(self) -> dict[str, Any]:
        """The record's decode columns."""
        return {"orientation": self.orientation, "mode": self.mode, "upscaled": self.upscaled,
                "warning": self.warning}


def regular_file(path: str | Path) -> Path:
    """``path`` when it is a regular file (after symlinks); else a one-line error saying what it is, without
    opening it, so a FIFO or a device can never block a run."""
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except PermissionError:
        raise InputError(f"{path}: cannot read (permission denied)") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{path}: symlink loop (too many levels of symbolic links)") from None
        raise InputError(f"{path}: cannot read ({first_line(exc)})") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{path}: is a directory, not an image")
    if not stat.S_ISREG(info.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(info.st_mode) else "a socket" if stat.S_ISSOCK(info.st_mode)
                else "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else "not a file")
        raise InputError(f"{path}: not a regular file ({kind})")
    return path


@contextmanager
def _reading(where: str) -> Iterator[None]:
    """PIL's and the system's errors while reading an image, as one line starting with ``where``."""
    try:
        yield
    except UnidentifiedImageError:
        raise InputError(f"{where}: not an image (cannot identify image file)") from None
    except Image.DecompressionBombError as exc:
        raise InputError(f"{where}: image too large ({first_line(exc)})") from None
    except PermissionError:
        raise InputError(f"{where}: cannot read (permission denied)") from None
    except MemoryError:
        raise InputError(f"{where}: out of memory decoding this image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # PIL's decoders raise all of these on bad data
        raise InputError(f"{where}: corrupt or truncated image ({first_line(exc)})") from None


def _open(path: Path) -> Image.Image:
    """Open a regular file lazily (header only); a warning PIL gives on it (a decompression bomb, a bad header)
    becomes the file's one-line error."""
    regular_file(path)
    with OPEN_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = Image.open(path)
    try:
        _check_size(image, str(path))  # first: over PIL's limit too, the pixel count says more than its warning
        for warning in caught:  # PIL's own (bomb: a RuntimeWarning; bad headers: UserWarning); the capture is
            # process-wide, so a ResourceWarning of another thread's file (a server's upload) is not this file's
            if issubclass(warning.category, (Image.DecompressionBombWarning, UserWarning)):
                raise InputError(f"{path}: {first_line(Exception(warning.message))}")
    except InputError:
        image.close()
        raise
    return image


def _check_size(image: Image.Image, where: str) -> None:
    """Refuse, from the header, a photo over :data:`MAX_PIXELS` or more elongated than :data:`MAX_ASPECT`."""
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise InputError(f"{where}: {width} x {height} = {width * height:,} pixels, over camrt's limit of "
                         f"{MAX_PIXELS:,} (MAX_PIXELS)")
    if min(width, height) < 1 or max(width, height) > MAX_ASPECT * min(width, height):
        raise InputError(f"{where}: {width} x {height} is more elongated than {MAX_ASPECT}:1 (MAX_ASPECT); "
                         "its short side would be upscaled out of all proportion")


def parse_background(value: Any) -> tuple[int, int, int]:
    """background= as an RGB triple: a colour name or #hex that PIL knows, three integers in [0, 255], or None
    (:data:`BACKGROUND`)."""
    if value is None:
        return BACKGROUND
    try:
        rgb = ImageColor.getrgb(value)[:3] if isinstance(value, str) else tuple(int(v) for v in value)
    except (ValueError, TypeError):
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise InputError(f"background: expected a colour name, #rrggbb or three integers in [0, 255], got {value!r}")
    return rgb  # type: ignore[return-value]


def _to_rgb(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """8-bit RGB from any PIL mode at its real range: 16-bit as 0..65535, float as 0..1, alpha composited."""
    mode = image.mode
    if mode in _SIXTEEN_BIT or mode == "F":
        values = np.asarray(image).astype(np.float64)
        scale = 1.0 if mode == "F" else 65535.0
        scaled = np.clip(np.nan_to_num(values / scale), 0.0, 1.0)
        image = Image.fromarray(np.round(scaled * 255).astype(np.uint8), "L")
    if mode in _ALPHA or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (*background, 255)), rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _orientation(image: Image.Image) -> int:
    value = image.getexif().get(_ORIENTATION, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def decode_photo(image: str | Path | Image.Image, pre: Preprocessing,
                 background: Any = BACKGROUND) -> tuple[np.ndarray, Decoding]:
    """The resized and cropped photo (H, W, 3) uint8 as a person sees it, and what decoding did."""
    rgb, decoding = _decode(image, pre, parse_background(background))
    return np.array(resize_and_crop(rgb, pre), dtype=np.uint8), decoding


def _decode(image: Any, pre: Preprocessing | None, background: tuple[int, int, int]) -> tuple[Image.Image, Decoding]:
    """The photo, oriented and as 8-bit RGB, and what was done; JPEGs decoded at a reduced scale (``draft``) when
    they are over twice the resized size."""
    if isinstance(image, Image.Image):
        where, opened = "image", image
    elif isinstance(image, (str, Path)):
        where = str(image)
        with _reading(where):
            opened = _open(Path(image))
    else:
        raise InputError(f"image: expected a file path or a PIL image, got {type(image).__name__}")
    try:
        with _reading(where if opened is not image else "image: cannot decode this PIL image"):
            if opened is image:
                _check_size(opened, where)  # (a file's header was checked when it was opened)
            orientation, mode, size = _orientation(opened), opened.mode, opened.size
            resized = _short_side_size(size, int(pre.resize)) if pre is not None and pre.resize else size
            if opened is not image and opened.format == "JPEG" and resized != size:
                opened.draft(opened.mode, (2 * resized[0], 2 * resized[1]))
            opened.load()
            oriented = ImageOps.exif_transpose(opened) if orientation != 1 else opened
            rgb = _to_rgb(oriented, background)
    except BaseException:
        if opened is not image:
            opened.close()
        raise
    if opened is not image and rgb is not opened:
        opened.close()  # (load() has closed a single-frame file already; rgb may be the loaded image itself)
    upscaled = bool(pre is not None and pre.resize and int(pre.resize) > min(size))
    warning = (f"{where}: upscaled from {size[0]} x {size[1]} (short side {min(size)} to {pre.resize})"
               if upscaled and pre is not None else None)
    return rgb, Decoding(orientation, mode, upscaled, warning)


def load_image(image: str | Path | Image.Image, background: Any = BACKGROUND) -> Image.Image:
    """Open ``image`` (a path or a PIL image) fully decoded as RGB as it looks, so a bad file fails here, naming
    itself."""
    return _decode(image, None, parse_background(background))[0]


def resize_and_crop(image: Image.Image, pre: Preprocessing) -> Image.Image:
    """Resize the short side to ``pre.resize`` and centre-crop to ``pre.crop`` (H, W), with torchvision's rounding;
    a photo that would resize to many crops' worth of pixels has only the crop's box resized."""
    resample = _RESAMPLE.get(pre.interpolation)
    if resample is None:
        raise InputError(f"interpolation: unknown {pre.interpolation!r}; choose one of {', '.join(_RESAMPLE)}")
    crop = (int(pre.crop[0]), int(pre.crop[1]))
    size = _short_side_size(image.size, int(pre.resize)) if pre.resize else image.size
    if size == image.size:
        return _center_crop(image, crop)
    if size[0] * size[1] <= _BOX_RESIZE * crop[0] * crop[1]:
        return _center_crop(image.resize(size, resample), crop)
    left, top = _crop_origin(size, crop)
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + crop[1], size[0]), min(top + crop[0], size[1])
    sx, sy = image.size[0] / size[0], image.size[1] / size[1]
    part = image.resize((x1 - x0, y1 - y0), resample, box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy))
    canvas = Image.new(image.mode, (crop[1], crop[0]))  # zeros where the crop is larger, as CenterCrop pads
    canvas.paste(part, (x0 - left, y0 - top))
    return canvas


def crop_box(size: tuple[int, int], pre: Preprocessing) -> tuple[float, ...]:
    """The region the model sees, (left, top, right, bottom) in the pixels of the photo as it looks (``size``: its
    W, H after the EXIF orientation): the centre crop of the resized photo mapped back, beyond the photo's edges
    where the crop pads. What :func:`camrt.runtime.overlay.overlay_on_original` draws the map into."""
    crop_h, crop_w = int(pre.crop[0]), int(pre.crop[1])
    resized = _short_side_size(size, int(pre.resize)) if pre.resize else size
    left, top = _crop_origin(resized, (crop_h, crop_w))
    sx, sy = size[0] / resized[0], size[1] / resized[1]
    return left * sx, top * sy, (left + crop_w) * sx, (top + crop_h) * sy


def _short_side_size(size: tuple[int, int], short: int) -> tuple[int, int]:
    """(W, H) with the short side ``short`` and the long side truncated, as torchvision's Resize(int)."""
    width, height = size
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def _crop_origin(size: tuple[int, int], crop: tuple[int, int]) -> tuple[int, int]:
    """torchvision CenterCrop's top-left corner (left, top) in an image of ``size`` (W, H), negative when it pads."""
    crop_h, crop_w = crop
    width, height = size
    pad_left = (crop_w - width) // 2 if crop_w > width else 0
    pad_top = (crop_h - height) // 2 if crop_h > height else 0
    padded_w = width + max(crop_w - width, 0)
    padded_h = height + max(crop_h - height, 0)
    return int(round((padded_w - crop_w) / 2.0)) - pad_left, int(round((padded_h - crop_h) / 2.0)) - pad_top


def _center_crop(image: Image.Image, crop: tuple[int, int]) -> Image.Image:
    """torchvision CenterCrop: zero-pad when the crop is larger, then take the centre box (round half to even)."""
    crop_h, crop_w = crop
    left, top = _crop_origin(image.size, crop)
    if (left, top, crop_w, crop_h) == (0, 0, *image.size):
        return image
    return image.crop((left, top, left + crop_w, top + crop_h))  # PIL fills outside the image with zeros


def normalize(rgb: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """uint8 (H, W, 3) to float32 (3, H, W): /255 then (x - mean) / std, in float32 as torchvision does."""
    x = np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    mean = np.asarray(pre.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(pre.std, dtype=np.float32).reshape(3, 1, 1)
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


def preprocess(image: str | Path | Image.Image, pre: Preprocessing, background: Any = BACKGROUND) -> np.ndarray:
    """One photo as the model input (3, H, W) float32."""
    return normalize(original_for_overlay(image, pre, background), pre)


def original_for_overlay(image: str | Path | Image.Image, pre: Preprocessing,
                         background: Any = BACKGROUND) -> np.ndarray:
    """The resized and cropped photo (H, W, 3) uint8: the pixels the saliency map lines up with."""
    return decode_photo(image, pre, background)[0]


def load_batch(images: Sequence[Any], pre: Preprocessing, background: Any = BACKGROUND) -> np.ndarray:
    """Photos (paths or PIL images) as one batch (N, 3, H, W) float32 for :meth:`Explainer.explain`."""
    if isinstance(images, (str, Path, Image.Image)):
        images = [images]
    if len(images) == 0:
        raise InputError("images: no images given")
    return np.stack([preprocess(image, pre, background) for image in images])


def load_images(images: Any, bundle: Any, background: Any = BACKGROUND) -> np.ndarray:
    """Photos (paths or PIL images) preprocessed as ``bundle`` (a bundle folder, a Bundle or an Explainer) says:
    the (N, 3, H, W) float32 batch ``Explainer.explain`` takes."""
    from camrt.runtime.bundle import Bundle

    bundle = getattr(bundle, "bundle", bundle)
    if not isinstance(bundle, Bundle):
        if not isinstance(bundle, (str, Path)):
            raise InputError(f"bundle: expected a bundle folder, a Bundle or an Explainer, got {type(bundle).__name__}")
        bundle = Bundle.load(bundle)
    return load_batch(images, bundle.manifest.preprocessing, background)
