"""How fast a configuration runs: the engine alone (``runner.logits``) per batch size and for a given number of
passes, percentiles of repeated timings, and the process's peak resident memory while a configuration runs."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from camrt.runtime.backends.base import Runner

ENGINE_BATCHES = 8  # full batches timed for the engine's seconds over a pass count (their mean is scaled)
PERCENTILES = (50, 90, 99)


def tiled(x: np.ndarray, n: int) -> np.ndarray:
    """``n`` inputs cycled from the images x (N, C, H, W), scaled by 0.5 as a masked input is: contiguous float32."""
    rows = np.arange(n) % x.shape[0]
    return np.ascontiguousarray(x[rows] * np.float32(0.5), dtype=np.float32)


def engine_rate(runner: Runner, x: np.ndarray, batch_size: int, repeats: int) -> float:
    """Images/s of the engine alone at ``batch_size``: one warm-up call, then the median of ``repeats`` calls."""
    batch = tiled(x, batch_size)
    runner.logits(batch)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        runner.logits(batch)
        times.append(time.perf_counter() - started)
    return batch_size / float(np.median(times))


def engine_seconds(runner: Runner, x: np.ndarray, passes: int, batch_size: int,
                   max_batches: int = ENGINE_BATCHES) -> float:
    """Seconds of the engine alone for ``passes`` inputs in batches of ``batch_size`` (as explain runs them): up to
    ``max_batches`` full batches timed and scaled to the full-batch count, and the tail batch."""
    full, tail = divmod(passes, batch_size)
    seconds = 0.0
    if full:
        batch = tiled(x, batch_size)
        timed = min(full, max_batches)
        started = time.perf_counter()
        for _ in range(timed):
            runner.logits(batch)
        seconds += (time.perf_counter() - started) / timed * full
    if tail:
        part = tiled(x, tail)
        started = time.perf_counter()
        runner.logits(part)
        seconds += time.perf_counter() - started
    return seconds


def timed(call: Callable[[], Any], repeats: int) -> list[float]:
    """Seconds of ``repeats`` calls of ``call``."""
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        out.append(time.perf_counter() - started)
    return out


def percentiles(seconds: Sequence[float]) -> dict[str, Any]:
    """p50 / p90 / p99 of the runs (linear interpolation, numpy's default) and the runs themselves."""
    values = np.asarray(seconds, np.float64)
    return {**{f"p{q}": float(np.percentile(values, q)) for q in PERCENTILES}, "runs": [float(v) for v in values]}


class PeakMemory:
    """The process's resident-set high-water mark while a block runs: Linux's VmHWM, reset at the start (writing 5
    to /proc/self/clear_refs); elsewhere ``getrusage``'s maxrss, which cannot be reset (the process's peak so far)."""

    def __init__(self) -> None:
        self.resettable = _reset_peak()
        self.before_mb = _status_mb("VmRSS")
        self.source = "VmHWM since the configuration started" if self.resettable else \
            "ru_maxrss, the process's peak so far (not resettable here)"

    def peak_mb(self) -> float:
        """The high-water mark in MB since this object was made (see the class)."""
        peak = _status_mb("VmHWM") if self.resettable else None
        if peak is not None:
            return peak
        scale = 1 / 1024 / 1024 if sys.platform == "darwin" else 1 / 1024  # bytes on macOS, KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

    def fields(self) -> dict[str, Any]:
        """What the results record: the RSS before, the peak, the growth and how the peak was read."""
        peak = self.peak_mb()
        before = self.before_mb
        return {"rss_before_mb": before, "peak_rss_mb": peak,
                "growth_mb": None if before is None else peak - before, "source": self.source}


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return _status_mb("VmHWM") is not None
    except OSError:
        return False


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None
