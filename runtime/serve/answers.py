"""A request's JSON answer: the per-image record (runtime/records.py) plus the top classes, the seconds queued and
computing, the map as base64 of a ``.npy`` (float16 unless asked for float32) and the overlay as base64 PNG."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image

from camrt.runtime.bundle import Bundle
from camrt.runtime.engine.scoring import softmax
from camrt.runtime.overlay import overlay, overlay_on_original
from camrt.runtime.records import cost_fields, ok_record
from camrt.runtime.serve.batcher import Done
from camrt.runtime.serve.inputs import Fields, Upload

TOP = 5  # classes listed in ``top``


def answer(done: Done, fields: Fields, upload: Upload, bundle: Bundle) -> dict[str, Any]:
    """The JSON answer for one explained image (status ``ok``)."""
    result = done.explained
    logits = np.asarray(result.logits, np.float32)
    probabilities = softmax(logits)
    top = np.argsort(-probabilities, kind="stable")[:TOP]
    record = ok_record(None, result.target, logits, bundle.class_name,
                       **cost_fields(int(result.passes_run), int(result.passes_saved), result.seconds),
                       **upload.decoding.fields())
    saliency = np.asarray(result.saliency, np.float32)
    out: dict[str, Any] = {
        **record,
        "predicted_probability": round(float(probabilities[result.predicted]), 8),
        "top": [{"class": int(i), "name": bundle.class_name(int(i)), "probability": round(float(probabilities[i]), 8)}
                for i in top],
        "model": bundle.manifest.model_name,
        "method": fields.method,
        "convention": fields.convention,
        "options": fields.options,
        **({"seed": fields.seed} if fields.conv.noisy else {}),
        "queued_seconds": round(done.queued_seconds, 4),
        "compute_seconds": round(done.compute_seconds, 4),
        "map": {"dtype": fields.map_dtype, "shape": list(saliency.shape),
                "npy_b64": npy_b64(saliency.astype(fields.map_dtype))},
    }
    if fields.overlay is not None:
        out["overlay_png_b64"] = png_b64(draw_overlay(saliency, fields.overlay, upload))
    return out


def draw_overlay(saliency: np.ndarray, where: str, upload: Upload) -> np.ndarray:
    """The heat map on the photo as sent (``original``: scaled down by ``decode_upload``, the model's crop outlined)
    or on the crop the model saw (``input``)."""
    if where == "input" or upload.photo is None or upload.box is None:
        return overlay(upload.crop, saliency)
    return overlay_on_original(upload.photo, saliency, upload.box)


def npy_b64(array: np.ndarray) -> str:
    """``array`` as the bytes of a ``.npy`` file, base64 (``np.load(io.BytesIO(base64.b64decode(text)))``)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def png_b64(rgb: np.ndarray) -> str:
    """An (H, W, 3) uint8 image as base64 PNG."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(rgb, np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
