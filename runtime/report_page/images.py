"""The report's image files: per image, the photo with the crop's box, and every method's map over the original photo
(``overlay.overlay_on_original``), each as a thumbnail for the gallery and a larger view, small JPEGs beside the page.

Names are made here from the dataset index and the method's position only, never from a file name, so nothing read
from the records reaches a path or the page's markup through them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from camrt.runtime.atomic import atomic_write
from camrt.runtime.bundle import Preprocessing
from camrt.runtime.overlay import overlay_on_original
from camrt.runtime.preprocess import crop_box, load_image

FOLDER = "report"  # beside report.html
SIZES = {"thumb": 160, "view": 512}  # the long side in pixels: the gallery's thumbnails, the detail view's images
QUALITY = 85


def image_name(index: int, which: str, size: str) -> str:
    """``report/000012-m0-thumb.jpg``: ``which`` is ``photo`` or ``m<k>`` (the k-th method), ``size`` a key of SIZES."""
    return f"{FOLDER}/{int(index):06d}-{which}-{size}.jpg"


def report_facts(pre: Preprocessing, causal: Sequence[str] = (), step: int | None = None) -> dict[str, Any]:
    """What run.json records for the report (not compared by --resume): the resize and crop that place the map on the
    original photo, and the causal variants and step that rebuild the summary of an interrupted evaluate run."""
    return {"report": {"resize": int(pre.resize) if pre.resize else None, "crop": [int(c) for c in pre.crop],
                       "causal": list(causal), "step": step}}


def preprocessing_of(facts: dict[str, Any]) -> Preprocessing | None:
    """The resize and crop recorded by :func:`report_facts` (mean and std do not matter here), or None."""
    report = facts.get("report")
    if not isinstance(report, dict) or not isinstance(report.get("crop"), list) or len(report["crop"]) != 2:
        return None
    return Preprocessing(resize=report.get("resize") or 0, crop=(int(report["crop"][0]), int(report["crop"][1])),
                         mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def write_image_files(out: Path, index: int, photo_path: str | Path, pre: Preprocessing,
                      maps: Sequence[np.ndarray | None], background: Any = None) -> None:
    """Decode the photo again (as it looks, at its own resolution) and write its tiles for every size: the photo with
    the crop's box, and per method (``maps[k]``, the map of the crop; None for a method without one) its overlay."""
    from camrt.runtime.preprocess import BACKGROUND

    photo = load_image(photo_path, BACKGROUND if background is None else background)
    box = crop_box(photo.size, pre)
    (out / FOLDER).mkdir(exist_ok=True)
    for size, side in SIZES.items():
        scaled = photo.copy()
        scaled.thumbnail((side, side), Image.Resampling.BILINEAR)
        fx, fy = scaled.width / photo.width, scaled.height / photo.height
        small_box = (box[0] * fx, box[1] * fy, box[2] * fx, box[3] * fy)
        framed = scaled.copy()
        ImageDraw.Draw(framed).rectangle((round(small_box[0]), round(small_box[1]), round(small_box[2]) - 1,
                                          round(small_box[3]) - 1), outline=(255, 255, 255), width=1)
        _save(framed, out / image_name(index, "photo", size))
        pixels = np.asarray(scaled)
        for k, saliency in enumerate(maps):
            if saliency is not None:
                tile = overlay_on_original(pixels, np.asarray(saliency, dtype=np.float32), small_box, line=1)
                _save(Image.fromarray(tile), out / image_name(index, f"m{k}", size))


def _save(image: Image.Image, path: Path) -> None:
    atomic_write(path, lambda handle: image.save(handle, format="JPEG", quality=QUALITY))
