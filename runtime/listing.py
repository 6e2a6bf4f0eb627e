"""A dataset run's listing, keyed by content: each image by its path relative to the data root, the listing's hash
in run.json, and dataset indices that ``--resume`` (and ``--resume --allow-new``) never renumber.

``listing.csv`` in the run folder holds ``index,key,label`` for every image the run has taken on; the data root is
resolved, so the same data through a symlinked path resumes.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from camrt.errors import InputError
from camrt.runtime.atomic import write_text
from camrt.runtime.dataset import Item
from camrt.runtime.run_folder import read_run, update_run

LISTING = "listing.csv"
Entry = tuple[int, str, Item]  # (dataset index, key, item)


def data_root(data: str | Path) -> Path:
    """The folder keys are relative to: DATA itself (a folder), a CSV's or file's folder, a glob's fixed part."""
    path = Path(data)
    if path.is_dir():
        return path
    if path.exists() or not glob.has_magic(str(data)):
        return path.parent
    fixed = []
    for part in path.parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def image_key(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` in POSIX form; the resolved absolute path for an image outside ``root``."""
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return Path(os.path.realpath(path)).as_posix()


def listing_facts(data: str | Path, items: Sequence[Item]) -> tuple[list[tuple[str, Item]], dict[str, Any]]:
    """Each item with its key, and what run.json records about the listing (data root, hash, count)."""
    root = data_root(data)
    keyed = [(image_key(item.path, root), item) for item in items]
    return keyed, {"data_root": os.path.realpath(root), "listing_sha256": _digest(_text(list(enumerate(keyed)))),
                   "images": len(keyed)}


def index_listing(out: Path, keyed: list[tuple[str, Item]], facts: dict[str, Any], allow_new: bool) -> list[Entry]:
    """Dataset indices for ``keyed``: as listing.csv in ``out`` has them (written here on a new run), new images
    after them with ``allow_new``; a changed listing otherwise, a removed or relabelled image, or another data
    root is refused in one line."""
    listing = out / LISTING
    if not listing.exists():
        entries = [(i, key, item) for i, (key, item) in enumerate(keyed)]
        write_text(listing, _text([(i, (key, item)) for i, key, item in entries]))
        return entries
    recorded = read_run(out)
    if recorded.get("data_root", facts["data_root"]) != facts["data_root"]:
        raise InputError(f"--resume: DATA is {facts['data_root']}, the run in {out} was made on "
                         f"{recorded['data_root']}; use the same data or another --out")
    previous = _read(listing)
    labels = {key: item.label or "" for key, item in keyed}
    gone = [key for key in previous if key not in labels]
    relabelled = [key for key, (_, label) in previous.items() if key in labels and labels[key] != label]
    new = [(key, item) for key, item in keyed if key not in previous]
    if gone or relabelled:
        key = (gone or relabelled)[0]
        raise InputError(f"--resume: DATA changed since the run in {out} began: {len(gone)} images gone, "
                         f"{len(relabelled)} relabelled (e.g. {key}); use the same data or another --out")
    if new and not allow_new:
        raise InputError(f"--resume: DATA has {len(new)} images the run in {out} did not list (e.g. {new[0][0]}); "
                         "add --allow-new to explain them after the others, or use another --out")
    start = max((index for index, _ in previous.values()), default=-1) + 1
    added = {key: start + n for n, (key, _) in enumerate(new)}
    entries = [(previous[key][0] if key in previous else added[key], key, item) for key, item in keyed]
    if new:
        every = sorted([(i, (k, Item(Path(k), lab or None))) for k, (i, lab) in previous.items()]
                       + [(added[k], (k, item)) for k, item in new], key=lambda entry: entry[0])
        text = _text(every)
        write_text(listing, text)
        update_run(out, {"listing_sha256": _digest(text), "images": len(every)})
    return entries


def _text(entries: list[tuple[int, tuple[str, Item]]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("index", "key", "label"))
    writer.writerows((index, key, item.label or "") for index, (key, item) in entries)
    return buffer.getvalue()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read(path: Path) -> dict[str, tuple[int, str]]:
    """key -> (index, label) of a listing.csv; a one-line error naming it when it is not one."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return {row["key"]: (int(row["index"]), row["label"]) for row in csv.DictReader(handle)}
    except (OSError, UnicodeDecodeError, csv.Error, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"--resume: {path} is unreadable or corrupt ({type(exc).__name__}: {exc}); "
                         "choose another --out") from None
