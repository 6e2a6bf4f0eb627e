"""What a Ray cluster can hold, and a stall watchdog: ``--engine ray`` never waits silently for resources.

``actors_that_fit`` counts the explaining actors the cluster's live nodes can place (an actor lives on one node,
so each node is counted alone); ``run_on_ray`` refuses more. The decode tasks reserve no CPU (only memory), so
actors taking every CPU still leave room for decoding. ``Watchdog`` prints one line on stderr whenever no
result arrives for ``stall_seconds`` while the driver waits on Ray, naming what the cluster could not schedule.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TypeVar

from camrt.errors import CamrtError, InputError

T = TypeVar("T")


def placeable(ray: Any, asked: int | None, cpus: float, gpu: bool, flag: str, noun: str, no_gpu: str) -> int:
    """How many actors (or Serve replicas): ``asked``, else one per GPU of the cluster for a GPU backend, else one;
    one-line errors when a GPU backend finds no GPU (``no_gpu`` says what to do) or the live nodes cannot place them
    (Ray would wait for them forever)."""
    count = asked
    if count is None and gpu:
        count = int(ray.cluster_resources().get("GPU", 0))
        if count < 1:
            raise CamrtError(f"--engine ray: this backend runs on a GPU and the Ray cluster has none; {no_gpu}")
    count = 1 if count is None else count
    fit = actors_that_fit(ray.nodes(), cpus, gpu)
    if count > fit:
        each = f"{cpus:g} CPU{' and 1 GPU' if gpu else ''}"
        raise InputError(f"{flag} {count}: the Ray cluster's live nodes hold {fit} {noun}(s) of {each} each; "
                         f"ask for at most {fit}")
    return count


def actors_that_fit(nodes: list[dict[str, Any]], actor_cpus: float, gpu: bool) -> int:
    """How many actors reserving ``actor_cpus`` CPUs (and one GPU each when ``gpu``) the live nodes can place."""
    fit = 0
    for node in nodes:
        if not node.get("Alive", True):
            continue
        have = node.get("Resources", {})
        here = math.floor(have.get("CPU", 0) / actor_cpus + 1e-9) if actor_cpus > 0 else sys.maxsize
        if gpu:
            here = min(here, math.floor(have.get("GPU", 0) + 1e-9))
        fit += here
    return fit


def pending_demands(ray: Any) -> str:
    """What the cluster could not schedule, as ``ray status`` shows it; else what is available."""
    try:  # the autoscaler's view (not a stable API: on any failure, fall back to the available resources)
        from ray.autoscaler.v2.sdk import get_cluster_status

        status = get_cluster_status(ray.get_runtime_context().gcs_address)
        demands = [f"{_resources(r.bundle)} x{r.count}"
                   for demand in status.resource_demands.ray_task_actor_demand for r in demand.bundles_by_count]
        if demands:
            return "pending demands " + ", ".join(demands)
    except Exception:  # noqa: BLE001 - a diagnostic line must not end the run
        pass
    return f"no pending demands reported; available {_resources(ray.available_resources())}"


def _resources(bundle: dict[str, float]) -> str:
    """CPU/GPU/memory of a resource bundle, memory in MB (Ray's node: and object-store entries left out)."""
    shown = {k: (f"{v / 2**20:.0f}MB" if k == "memory" else f"{v:g}") for k, v in sorted(bundle.items())
             if k in ("CPU", "GPU", "memory")}
    return "{" + ", ".join(f"{k}: {v}" for k, v in shown.items()) + "}"


class Watchdog:
    """Warn on stderr, one line per ``seconds`` without a result, while the driver waits on Ray."""

    def __init__(self, ray: Any, seconds: float, asked: str) -> None:
        self.ray, self.seconds, self.asked = ray, seconds, asked
        self.waiting_since: float | None = None
        self.stalls = 0  # warnings printed (tests read it)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="camrt-ray-watchdog", daemon=True)

    def watch(self, results: Iterator[T]) -> Iterator[T]:
        """``results``, timing each wait for the next one (time spent by the consumer is not a stall)."""
        self._thread.start()
        try:
            while True:
                self.waiting_since = time.monotonic()
                try:
                    result = next(results)
                except StopIteration:
                    return
                finally:
                    self.waiting_since = None
                yield result
        finally:
            self._stop.set()

    def _watch(self) -> None:
        warned = 0.0  # the next warning of one long wait comes a full period after the last
        while not self._stop.wait(min(1.0, self.seconds / 4)):
            since = self.waiting_since
            if since is not None and time.monotonic() - max(since, warned) >= self.seconds:
                self.stalls += 1
                print(f"camrt: warning: --engine ray: no image finished in {self.seconds:g} s; "
                      f"{pending_demands(self.ray)}; this run asks {self.asked}", file=sys.stderr, flush=True)
                warned = time.monotonic()
