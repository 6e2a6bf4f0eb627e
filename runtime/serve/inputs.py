"""One request's inputs, read and checked before anything is queued: the image (bytes to model input, within the
server's byte and pixel limits) and the fields (method, convention, options, target, overlay, map dtype, seed).

Every problem is a :class:`Problem`: an HTTP status and one line, which the app answers as ``{"error": ...}``.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image

from camrt.errors import CamrtError, InputError, first_line, one_line
from camrt.runtime.bundle import Bundle
from camrt.runtime.classes import class_index
from camrt.runtime.methods import METHODS, get_convention
from camrt.runtime.methods.base import Convention
from camrt.runtime.preprocess import MAX_PIXELS, OPEN_LOCK, Decoding, crop_box, decode_photo, load_image, normalize

FIELDS = ("image", "method", "convention", "target", "overlay", "map_dtype", "seed")  # the rest: method options
MAP_DTYPES = ("float16", "float32")  # float16 (the default) is what explain-dataset stores; float32 is exact
OVERLAYS = {"": None, "0": None, "false": None, "no": None, "1": "original", "true": "original", "yes": "original",
            "original": "original", "input": "input"}
OVERLAY_SIDE = 1024  # an overlay on the original photo is drawn at most this many pixels on its long side
_SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None  # in memory


class Problem(Exception):
    """A request the server refuses: the HTTP status, one line saying why, and extra headers (Retry-After)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, " ".join(message.split()), headers or {}


@dataclass(frozen=True)
class Defaults:
    """What a request that does not say gets: the server's --method, --convention, -O options, --seed, --background."""

    method: str = "scorecam"
    convention: str = "paper"
    options: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    background: tuple[int, int, int] = (255, 255, 255)


@dataclass(frozen=True)
class Fields:
    """A request's checked fields; ``conv`` (with ``seed`` where the method draws noise) picks the engine window."""

    method: str
    convention: str
    options: dict[str, Any]
    conv: Convention
    target: int | None  # None: the predicted class
    overlay: str | None  # None, "original" (on the photo as sent) or "input" (on the crop the model saw)
    map_dtype: str
    seed: int

    @property
    def key(self) -> tuple[Convention, int | None]:
        """The engine window this request joins: one per convention (options included) and, for SS-CAM, seed."""
        return self.conv, self.seed if self.conv.noisy else None


@dataclass
class Upload:
    """A decoded image: the model input (3, H, W) float32, the crop it was made of, what decoding did, and (for an
    overlay on the original) the photo as it looks, scaled down, with the model's crop box in it."""

    x: np.ndarray
    crop: np.ndarray  # (H, W, 3) uint8: the resized and cropped photo the map lines up with
    decoding: Decoding
    photo: np.ndarray | None = None  # (h, w, 3) uint8, at most OVERLAY_SIDE pixels long
    box: tuple[float, ...] | None = None  # (left, top, right, bottom) of the crop in ``photo``


def parse_fields(values: Mapping[str, Any], bundle: Bundle, defaults: Defaults) -> Fields:
    """The fields of a request (query, form or KServe parameters): known names, and method options for the rest."""
    method = str(values.get("method") or defaults.method)
    if method not in METHODS:
        hint = " (a query decodes '+' as a space: write scorecam%2B%2B)" if method.endswith(" ") else ""
        raise Problem(400, f"method: unknown method {method!r}; choose one of {', '.join(METHODS)}{hint}")
    convention = str(values.get("convention") or defaults.convention)
    given = {str(k).replace("-", "_"): v for k, v in values.items() if k not in FIELDS}
    options = {**(defaults.options if method == defaults.method else {}), **given}
    try:
        conv = get_convention(method, convention, **options)
    except CamrtError as exc:
        raise Problem(400, one_line(exc)) from None
    m = bundle.manifest
    given_target = values.get("target")
    target_text = "predicted" if given_target in (None, "") else str(given_target).strip()
    try:
        target = None if target_text == "predicted" else class_index(target_text, m.class_names, m.num_classes,
                                                                      "target")
    except InputError as exc:
        raise Problem(400, one_line(exc)) from None
    overlay_text = str(values.get("overlay") or "").strip().lower()
    if overlay_text not in OVERLAYS:
        raise Problem(400, f"overlay: expected 1, original, input or 0, got {overlay_text!r}")
    map_dtype = str(values.get("map_dtype") or "float16")
    if map_dtype not in MAP_DTYPES:
        raise Problem(400, f"map_dtype: expected one of {', '.join(MAP_DTYPES)}, got {map_dtype!r}")
    seed_text = values.get("seed")
    try:
        seed = defaults.seed if seed_text in (None, "") else int(str(seed_text))
    except ValueError:
        raise Problem(400, f"seed: expected an integer, got {seed_text!r}") from None
    return Fields(method, convention, {k: v for k, v in options.items()}, conv, target, OVERLAYS[overlay_text],
                  map_dtype, seed)


def decode_upload(data: bytes, bundle: Bundle, max_pixels: int, background: Any, overlay: str | None = None,
                  where: str = "image") -> Upload:
    """``data`` (an encoded image) as the model input, decoded as ``camrt explain`` decodes a file (the same
    function, on a temporary copy: EXIF orientation, modes, JPEG draft); an image over ``max_pixels`` (read from
    its header) is 413 before decoding, anything unreadable 400. With ``overlay="original"`` it also keeps the photo
    as it looks, at most OVERLAY_SIDE pixels long, and the model's crop box in it."""
    if not data:
        raise Problem(400, f"{where}: empty (send the image as the multipart field 'image' or as the body)")
    pre = bundle.manifest.preprocessing
    limit = min(max_pixels, MAX_PIXELS)
    with tempfile.NamedTemporaryFile(prefix="camrt-serve-", dir=_SCRATCH) as handle:
        name = handle.name
        try:
            with OPEN_LOCK, warnings.catch_warnings():  # the lock preprocess's reads take
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the pixel limit below decides
                with Image.open(io.BytesIO(data)) as header:
                    width, height = header.size
            if width * height > limit:
                raise Problem(413, f"{where}: {width} x {height} = {width * height:,} pixels, over this server's "
                                   f"limit of {limit:,} (--max-pixels)")
            handle.write(data)
            handle.flush()
            crop, decoding = decode_photo(name, pre, background)
            photo, box = _small_photo(name, pre, background) if overlay == "original" else (None, None)
        except Problem:
            raise
        except InputError as exc:
            raise Problem(400, f"{where}: {one_line(exc).replace(name + ': ', '')}") from None
        except Image.DecompressionBombError as exc:
            raise Problem(413, f"{where}: image too large ({first_line(exc)})") from None
        except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:  # UnidentifiedImageError: OSError
            what = "not an image" if isinstance(exc, Image.UnidentifiedImageError) else "corrupt or truncated image"
            raise Problem(400, f"{where}: {what} ({first_line(exc).replace(name, where)})") from None
    warning = decoding.warning.replace(name, where) if decoding.warning else None
    return Upload(normalize(crop, pre), crop, replace(decoding, warning=warning), photo, box)


def _small_photo(path: str, pre: Any, background: Any) -> tuple[np.ndarray, tuple[float, ...]]:
    """The photo as it looks, scaled to at most OVERLAY_SIDE pixels long, and the model's crop box in it."""
    photo = load_image(path, background)
    width, height = photo.size
    box = crop_box((width, height), pre)
    scale = min(1.0, OVERLAY_SIDE / max(width, height))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        photo = photo.resize(size, Image.Resampling.BILINEAR)
        box = tuple(v * s for v, s in zip(box, (size[0] / width, size[1] / height) * 2))
    return np.asarray(photo), box
