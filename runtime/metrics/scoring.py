"""Batched scoring of perturbed images: jobs are written chunk by chunk into one reused input buffer, so memory is
bounded by the batch size."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from camrt.runtime.backends.base import Runner
from camrt.runtime.engine import checked_logits, softmax

Fill = Callable[[np.ndarray, int, int], None]  # fill(buffer[:stop - start], start, stop) writes jobs start..stop-1
Progress = Callable[[int, int], None]


def class_scores(logits: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logit, softmax probability) of ``classes[i]`` in row i of ``logits`` (n, classes), both float64."""
    rows = np.arange(logits.shape[0])
    return logits[rows, classes].astype(np.float64), softmax(logits)[rows, classes]


def score_jobs(
    runner: Runner,
    count: int,
    fill: Fill,
    image_shape: tuple[int, ...],
    classes: np.ndarray,
    batch_size: int,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``count`` perturbed images made by ``fill``; return each one's (logit, probability) of ``classes[job]``.

    Only ``batch_size`` images exist at a time, whatever ``count`` is.
    """
    logit = np.empty(count, dtype=np.float64)
    prob = np.empty(count, dtype=np.float64)
    if count == 0:
        return logit, prob
    buffer = np.empty((min(batch_size, count), *image_shape), dtype=np.float32)
    for start in range(0, count, buffer.shape[0]):
        stop = min(start + buffer.shape[0], count)
        view = buffer[: stop - start]
        fill(view, start, stop)
        out = checked_logits(runner, view)  # the engine's one run-then-check step
        logit[start:stop], prob[start:stop] = class_scores(out, classes[start:stop])
        if progress is not None:
            progress(stop, count)
    return logit, prob
