"""A dataset run's results on disk: float16 maps in .npz shards, one index row per image, all written atomically.

Layout of OUT::

    run.json                    the settings (--resume refuses other ones)
    listing.csv                 index, key, label of every image the run took on (``listing``)
    shards/shard-000000.npz     index (n,) int64, key (n,) str, saliency (n, H, W) float16, weights (n, K) float32,
                                target (n,)
    shards/shard-000000.csv     the index rows of that shard, and of the bad images met since the last shard
    index.csv                   every row, by dataset order: written when the run ends (README "Per-image records")

A shard is committed in two steps: its .npz is renamed into place, then its .csv. The .csv is the commit mark:
an .npz without one (a crash between the two renames) is deleted on --resume and its images are done again.
Nothing is ever appended to, and a shard is published by a hard link that never replaces an existing name, so a
crash leaves only whole files; only camrt's own temporary names are deleted. numpy reads the shards, pandas the
index. Rows are keyed by ``key``, the image's path relative to the data root.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from camrt.errors import InputError
from camrt.runtime.atomic import atomic_write, temporary_of
from camrt.runtime.records import to_csv

SHARDS = "shards"
INDEX = "index.csv"
FIRST = ("index",)  # then records.FIELDS, then the metric columns (with --metrics), then LAST
LAST = ("key", "label", "shard", "row")
_SHARD = re.compile(r"^shard-(\d{6})\.(npz|csv)$")


def _durable(write: Callable[[BinaryIO], object]) -> Callable[[BinaryIO], None]:
    """``write``, then flush and fsync, so the rename that follows publishes complete data."""

    def run(handle: BinaryIO) -> None:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())

    return run


def rows_to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """Index rows as CSV text, in the column order of the per-image record (``records.to_csv``)."""
    return to_csv(rows, FIRST, LAST)


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of one index CSV (strings, as written); a one-line error naming it when it is not one."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
        missing = [c for c in ("index", "key", "status") if c not in (reader.fieldnames or ())]
        problem = f"no {', '.join(missing)} column" if missing else ""
        if not missing:
            [int(row["index"]) for row in rows]
    except (OSError, UnicodeDecodeError, csv.Error, TypeError, ValueError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        raise InputError(f"{path}: not a camrt shard index ({problem}); delete it and its .npz to redo those "
                         "images, or choose another --out")
    return rows


class ShardWriter:
    """Collects finished images and commits them ``shard_size`` maps at a time; resumes what ``out`` holds."""

    def __init__(self, out: Path, shard_size: int) -> None:
        self.out, self.shard_size = Path(out), shard_size
        self.folder = self.out / SHARDS
        self.folder.mkdir(parents=True, exist_ok=True)
        self.committed: list[dict[str, Any]] = []  # every row on disk, this run's and earlier runs'
        self.next_shard = 0
        self._rows: list[dict[str, Any]] = []
        self._maps: list[np.ndarray] = []
        self._weights: list[np.ndarray] = []
        self._recover()

    # ------------------------------------------------------------------ resume
    def _recover(self) -> None:
        """Read the committed shards; delete temporaries and any .npz whose .csv never landed."""
        numbers: set[int] = set()
        for path in sorted(self.folder.iterdir()):
            match = _SHARD.match(path.name)
            if _SHARD.match(temporary_of(path.name) or ""):
                path.unlink(missing_ok=True)  # a shard's temporary, left by a crash (the run folder is locked)
            elif match and match.group(2) == "npz" and not path.with_suffix(".csv").exists():
                path.unlink()  # the crash came between the two renames: not committed
            elif match:
                numbers.add(int(match.group(1)))
                if match.group(2) == "csv":
                    self.committed.extend(read_rows(path))
        self.next_shard = max(numbers) + 1 if numbers else 0

    @property
    def done_keys(self) -> set[str]:
        """The keys with a committed row (ok or error): what --resume skips."""
        return {row["key"] for row in self.committed}

    # ------------------------------------------------------------------ writing
    def add(self, row: dict[str, Any], saliency: np.ndarray | None = None, weights: np.ndarray | None = None) -> None:
        """One image's row; its map and weights when it was explained. Commits a shard when one is full."""
        row = dict(row)
        if saliency is not None:
            row["row"] = len(self._maps)
            self._maps.append(np.asarray(saliency, dtype=np.float16))
            self._weights.append(np.asarray(weights, dtype=np.float32))
        self._rows.append(row)
        if len(self._maps) >= self.shard_size:
            self.commit()

    def commit(self) -> None:
        """Write what is collected as the next shard (.npz, then its .csv); nothing when nothing is collected."""
        if not self._rows:
            return
        name = f"shard-{self.next_shard:06d}"
        if self._maps:
            for row in self._rows:
                if "row" in row:
                    row["shard"] = f"{SHARDS}/{name}.npz"
            ok = [row for row in self._rows if "row" in row]
            index = np.array([int(row["index"]) for row in ok], dtype=np.int64)
            keys = np.array([str(row["key"]) for row in ok], dtype=str)
            target = np.array([int(row["target"]) for row in ok], dtype=np.int64)
            saliency, weights = np.stack(self._maps), np.stack(self._weights)
            atomic_write(self.folder / f"{name}.npz", _durable(lambda handle: np.savez(
                handle, index=index, key=keys, saliency=saliency, weights=weights, target=target)), replace=False)
        text = rows_to_csv(self._rows).encode()
        atomic_write(self.folder / f"{name}.csv", _durable(lambda handle: handle.write(text)), replace=False)
        self.committed.extend({k: "" if v is None else str(v) for k, v in row.items()} for row in self._rows)
        self.next_shard += 1
        self._rows, self._maps, self._weights = [], [], []

    def write_index(self) -> Path:
        """index.csv: every committed row, in dataset order (atomic)."""
        rows = sorted(self.committed, key=lambda row: int(row["index"]))
        text = rows_to_csv(rows).encode()
        return atomic_write(self.out / INDEX, _durable(lambda handle: handle.write(text)))


def read_index(out: str | Path) -> list[dict[str, str]]:
    """Every committed row of a run in ``out``, in dataset order, also while it runs or after a crash."""
    folder = Path(out) / SHARDS
    rows: list[dict[str, str]] = []
    for path in sorted(folder.glob("shard-*.csv")):
        rows.extend(read_rows(path))
    return sorted(rows, key=lambda row: int(row["index"]))


def load_maps(out: str | Path, indices: Iterable[int] | None = None) -> dict[int, np.ndarray]:
    """Maps (H, W) float16 of a run by dataset index (all, or ``indices``): a convenience over ``np.load``."""
    wanted = None if indices is None else set(int(i) for i in indices)
    maps: dict[int, np.ndarray] = {}
    for path in sorted((Path(out) / SHARDS).glob("shard-*.npz")):
        if not path.with_suffix(".csv").exists():
            continue
        with np.load(path) as shard:
            saliency = shard["saliency"]
            for j, index in enumerate(shard["index"].tolist()):
                if wanted is None or index in wanted:
                    maps[index] = saliency[j]
    return maps
