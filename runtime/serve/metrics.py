"""The server's Prometheus metrics, in a registry of its own (so several apps in one process never clash).

Requests by route and status, request latency, time queued, queue depth, images in flight, engine batch fill
(masked inputs per engine batch over --max-batch: its mean is ``camrt_serve_batch_fill_sum /
camrt_serve_batch_fill_count``), and the masked passes run and saved.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
FILL_BUCKETS = tuple(i / 10 for i in range(1, 11))


class Metrics:
    """The metrics of one server."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, max_batch: int, queue_depth: Callable[[], int], in_flight: Callable[[], int]) -> None:
        self.max_batch = max_batch
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("camrt_serve_requests", "HTTP requests answered, by route and status",
                                ["route", "status"], registry=r)
        self.latency = Histogram("camrt_serve_request_seconds", "Time from a request's arrival to its answer",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.queued = Histogram("camrt_serve_queue_seconds", "Time an image waited before the engine took it",
                                buckets=LATENCY_BUCKETS, registry=r)
        self.depth = Gauge("camrt_serve_queue_depth", "Images waiting for the engine", registry=r)
        self.depth.set_function(lambda: float(queue_depth()))
        self.in_flight = Gauge("camrt_serve_in_flight", "Images in the engine loop", registry=r)
        self.in_flight.set_function(lambda: float(in_flight()))
        self.fill = Histogram("camrt_serve_batch_fill", "Masked inputs per engine batch over --max-batch",
                              buckets=FILL_BUCKETS, registry=r)
        self.images = Counter("camrt_serve_images", "Images that left the engine, by status: ok, error, "
                               "cancelled (client gone)", ["status"],
                              registry=r)
        self.passes_run = Counter("camrt_serve_passes_run", "Masked-input passes run", registry=r)
        self.passes_saved = Counter("camrt_serve_passes_saved", "Masked-input passes saved (exact pass saving)",
                                    registry=r)

    def batch(self, n: int) -> None:
        """One engine batch of ``n`` masked inputs ran."""
        self.fill.observe(n / self.max_batch)

    def image(self, status: str, queued: float, passes_run: int, passes_saved: int) -> None:
        """One image left the engine."""
        self.images.labels(status).inc()
        self.queued.observe(queued)
        self.passes_run.inc(passes_run)
        self.passes_saved.inc(passes_saved)

    def answered(self, route: str, status: int, seconds: float) -> None:
        """One request was answered."""
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def text(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
