"""Which images a run covers, with labels where the layout gives them: a folder (ImageFolder), a CSV, or a glob.

Only names are listed here; files are opened later, one at a time, so a bad file fails alone and names itself.
"""

from __future__ import annotations

import csv
import glob
import os
from dataclasses import dataclass
from pathlib import Path

from camrt.errors import InputError
from camrt.runtime.bundle import Bundle
from camrt.runtime.classes import match_class
from camrt.runtime.preprocess import regular_file

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"}
)
_PATH_HEADERS = ("path", "file", "filename", "image", "img")


@dataclass(frozen=True)
class Item:
    """One image to process and its label as the data gives it (a folder name or a CSV cell), if any."""

    path: Path
    label: str | None = None


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()


def images_in(folder: Path, recursive: bool = False) -> list[Path]:
    """The image files of ``folder`` (and its subfolders when recursive), by path; hidden files left out."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted((p for p in found if _is_image(p)), key=lambda p: str(p.relative_to(folder)))


def discover(data: str | Path) -> list[Item]:
    """The images of ``data``: a CSV of path[,label]; a folder (its images, and each subfolder's images labelled
    with the subfolder's name, as torchvision's ImageFolder); one image file; or a glob pattern."""
    text = str(data)
    path = Path(data)
    if path.is_file() and path.suffix.lower() == ".csv":
        items = _from_csv(path)
    elif path.is_dir():
        items = [Item(p) for p in images_in(path, recursive=False)]
        for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
            items += [Item(p, sub.name) for p in images_in(sub, recursive=True)]
    elif path.is_file():
        items = [Item(path)]
    elif glob.has_magic(text):
        items = [Item(Path(p)) for p in sorted(glob.glob(text, recursive=True)) if _is_image(Path(p))]
    else:
        if os.path.lexists(path):
            regular_file(path)  # a FIFO, device or symlink loop: say which, without opening it
        raise InputError(f"{data}: no such file or folder")
    if not items:
        raise InputError(f"{data}: no images found")
    return items


def _from_csv(path: Path) -> list[Item]:
    """Rows of path[,label]; a header row naming a path column is optional; relative paths are from the CSV."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read this CSV ({exc})") from None
    if not rows:
        raise InputError(f"{path}: the CSV has no rows")
    column, label_column = 0, 1
    header = [cell.strip().lower() for cell in rows[0][1]]
    has_header = any(name in header for name in _PATH_HEADERS)
    if has_header:
        column = next(header.index(n) for n in _PATH_HEADERS if n in header)
        label_column = header.index("label") if "label" in header else (1 if column == 0 and len(header) > 1 else -1)
        rows = rows[1:]
    items = []
    for number, row in rows:
        if column >= len(row) or not row[column].strip():
            raise InputError(f"{path}: line {number} has no image path")
        file = Path(row[column].strip())
        label = row[label_column].strip() if 0 <= label_column < len(row) and row[label_column].strip() else None
        items.append(Item(file if file.is_absolute() else path.parent / file, label))
    return items


def label_index(label: str | None, bundle: Bundle) -> int | None:
    """A label as the bundle's class index: an index in range, or a class name or synonym (``classes.match_class``)."""
    if label is None:
        return None
    classes = bundle.manifest.num_classes
    if label.lstrip("-").isdigit():
        index = int(label)
        return index if 0 <= index < classes else None
    return match_class(label, bundle.manifest.class_names)
