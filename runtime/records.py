"""The per-image record: one set of key names for the same facts in every command's output.

``explain``'s summary.json, ``evaluate``'s records.jsonl and metrics.csv and ``explain-dataset``'s index.csv all
build their rows here, so ``path``, ``probability`` or ``passes_run`` mean the same thing wherever they appear.
``RECORD_VERSION`` goes into each run folder's run.json; ``--resume`` refuses folders written with another one.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from camrt.runtime.engine import softmax

RECORD_VERSION = 2  # 1: the per-command schemas before one record (file/path, score/probability, passes/passes_run)

# The order of the columns, image facts first; metric columns follow them.
FIELDS = ("path", "status", "error", "target", "target_name", "predicted", "predicted_name", "probability", "logit",
          "passes_run", "passes_saved", "seconds", "orientation", "mode", "upscaled", "warning")  # the last four:
# what decoding did (``preprocess.Decoding``), present when the image was decoded by camrt

ClassName = Callable[[int], "str | None"]


def error_record(path: str | Path, error: str) -> dict[str, Any]:
    """The record of an image that could not be explained: its path, status ``error`` and the one-line reason."""
    return {"path": str(path), "status": "error", "error": error}


def clean_fields(target: int, logits: np.ndarray, class_name: ClassName | None = None) -> dict[str, Any]:
    """What the clean image says: the class explained and the class predicted (with names), and the explained
    class's softmax ``probability`` and ``logit``."""
    logits = np.asarray(logits)
    predicted = int(logits.argmax())
    name = class_name or (lambda _: None)
    return {
        "target": int(target),
        "target_name": name(int(target)),
        "predicted": predicted,
        "predicted_name": name(predicted),
        "probability": round(float(softmax(logits)[int(target)]), 8),
        "logit": round(float(logits[int(target)]), 6),
    }


def cost_fields(passes_run: float, passes_saved: float, seconds: float) -> dict[str, Any]:
    """What explaining cost: masked-input passes run and saved (the clean pass not counted), and seconds."""
    return {"passes_run": passes_run, "passes_saved": passes_saved, "seconds": round(float(seconds), 4)}


def ok_record(path: str | Path | None, target: int, logits: np.ndarray, class_name: ClassName | None = None,
              **extra: Any) -> dict[str, Any]:
    """An explained image's record: path (left out when None), status ``ok``, :func:`clean_fields`, then ``extra``
    (costs, metrics)."""
    record: dict[str, Any] = {} if path is None else {"path": str(path)}
    return {**record, "status": "ok", "error": None, **clean_fields(target, logits, class_name), **extra}


def ordered(record: dict[str, Any], first: Sequence[str] = ()) -> dict[str, Any]:
    """The record with the keys ``first``, then :data:`FIELDS` in their order, then its other keys."""
    keys = [*first, *FIELDS]
    return {**{key: record[key] for key in keys if key in record}, **record}


def to_csv(rows: Sequence[dict[str, Any]], first: Sequence[str] = (), last: Sequence[str] = ()) -> str:
    """Records as CSV text: the columns ``first``, :data:`FIELDS`, the rows' other keys in first-seen order, then
    ``last``; missing and None cells empty (an image without a value)."""
    names: dict[str, None] = dict.fromkeys([*first, *FIELDS])
    for row in rows:
        names.update(dict.fromkeys(row))
    columns = [key for key in names if key not in last] + list(last)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()
