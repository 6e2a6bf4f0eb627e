"""Decode and preprocess images ahead of the engine, in worker threads, in order, a bounded number at a time.

PIL's decoders and resizers and numpy's arithmetic release the GIL, so threads decode in parallel with the
engine without the pickling a process pool would add to every image.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from camrt.errors import InputError
from camrt.runtime.bundle import Preprocessing
from camrt.runtime.preprocess import BACKGROUND, Decoding, decode_photo, normalize


@dataclass
class Decoded:
    """One dataset entry after decoding: its input (3, H, W), or the error that names the file."""

    index: int
    path: Path
    label: str | None
    x: np.ndarray | None
    error: str | None = None
    rgb: np.ndarray | None = None  # the resized and cropped photo (H, W, 3) uint8, when asked for (overlays)
    decoding: Decoding | None = None  # what decoding did (orientation, mode, upscaled), for the record


def decode(index: int, path: Path, label: str | None, pre: Preprocessing, keep_rgb: bool = False,
           background: object = BACKGROUND) -> Decoded:
    """Decode and preprocess one file (keep_rgb: keep the photo the map lines up with, so an overlay needs no
    second decode); a bad file gives its one-line error instead of raising."""
    try:
        rgb, decoding = decode_photo(path, pre, background)
        return Decoded(index, path, label, normalize(rgb, pre), rgb=rgb if keep_rgb else None, decoding=decoding)
    except InputError as exc:
        return Decoded(index, path, label, None, str(exc))
    except (OSError, ValueError, MemoryError) as exc:  # anything else the decoders raise on a hostile file
        return Decoded(index, path, label, None, f"{path}: cannot read this image ({type(exc).__name__}: {exc})")


def decode_ahead(
    entries: Iterable[tuple[int, Path, str | None]], pre: Preprocessing, workers: int = 2, depth: int | None = None,
    keep_rgb: bool = False, background: object = BACKGROUND,
) -> Iterator[Decoded]:
    """``decode`` each (index, path, label) on ``workers`` threads, keeping at most ``depth`` (default 4 per
    worker) decoded or in flight, and yield them in the order given. workers=0 decodes inline."""
    if workers <= 0:
        for index, path, label in entries:
            yield decode(index, path, label, pre, keep_rgb, background)
        return
    depth = max(depth or 4 * workers, 1)
    window: deque[Future[Decoded]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="camrt-decode") as pool:
        try:
            for index, path, label in entries:
                window.append(pool.submit(decode, index, path, label, pre, keep_rgb, background))
                if len(window) >= depth:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            for future in window:  # the consumer stopped early: drop what is queued
                future.cancel()
