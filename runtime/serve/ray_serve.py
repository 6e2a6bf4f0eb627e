"""``camrt serve --engine ray``: the same FastAPI application (``create_app``) on Ray Serve, one engine per replica.

Each replica opens the bundle and builds its own ``Explainer`` and app (nothing but the bundle's path and the
settings travel from the driver); Ray Serve runs the app's lifespan in the replica, so each replica's batcher starts
with it and drains on shutdown. Replicas: as asked, else one per GPU of the cluster for a GPU backend (each reserving
one GPU, which Ray shows it alone), else one; ``autoscaling`` (Ray Serve's ``autoscaling_config``) is passed through.
The bundle must be reachable at the same path on every node (a shared filesystem), and camrt installed there.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

from camrt.errors import CamrtError, one_line
from camrt.runtime.backends import visible_gpu_options
from camrt.runtime.ray_cluster import placeable

APP_NAME = "camrt"
REPLICA_CPUS = 1.0
MIN_RAY = (2, 47)
INSTALL = "pip install 'camrt[serve,ray]'"


def import_serve() -> Any:
    """The ``ray.serve`` module; a missing Ray or Ray Serve (its grpc, aiohttp, ...) is one line naming the extra."""
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise CamrtError(f"--engine ray: Ray Serve is not installed ({exc.name or one_line(exc)} missing); "
                         f"{INSTALL}") from None
    version = tuple(int(part) for part in ray.__version__.split(".")[:2] if part.isdigit())
    if version < MIN_RAY:  # serve.ingress takes an app builder (run in each replica) from Ray 2.47 on
        raise CamrtError(f"--engine ray: Ray {ray.__version__} is too old, Ray Serve 2.47 or newer is needed; "
                         f"{INSTALL}")
    return serve


def replicas_for(ray: Any, asked: int | None, gpu: bool, autoscaling: dict[str, Any] | None) -> int | None:
    """How many replicas: ``asked``, else one per GPU of the cluster (GPU backend) or one; None under autoscaling
    (Ray Serve scales between its bounds). More than the live nodes can place is refused in one line."""
    if autoscaling is not None:
        return None
    return placeable(ray, asked, REPLICA_CPUS, gpu, "--replicas", "replica",
                     "use a CPU backend or join a cluster with GPUs")


def deployment(bundle: Path, backend: str, backend_options: dict[str, Any], settings: Any, gpu: bool,
               replicas: int | None, autoscaling: dict[str, Any] | None) -> Any:
    """The bound Ray Serve application: a deployment whose replicas each build the Explainer and the app."""
    serve = import_serve()
    options = visible_gpu_options(backend_options) if gpu else dict(backend_options)

    def build() -> Any:  # runs in each replica, after Ray has set its CUDA_VISIBLE_DEVICES
        from camrt.runtime.explainer import Explainer
        from camrt.runtime.serve.app import create_app

        return create_app(Explainer(bundle, backend=backend, **options), settings)

    scaling: dict[str, Any] = ({"autoscaling_config": autoscaling} if autoscaling is not None
                               else {"num_replicas": replicas})
    actor = {"num_cpus": REPLICA_CPUS, **({"num_gpus": 1} if gpu else {})}

    @serve.deployment(name="camrt", ray_actor_options=actor, graceful_shutdown_timeout_s=max(settings.grace, 1.0),
                      max_ongoing_requests=max(settings.max_queue, 1), **scaling)
    @serve.ingress(build)
    class CamrtServe:
        """One replica: the app ``build`` returns (Ray Serve runs its lifespan, which starts the batcher)."""

    return CamrtServe.bind()  # type: ignore[attr-defined]  # serve.deployment made it a Deployment


def run(bundle: Path, backend: str, backend_options: dict[str, Any], settings: Any, gpu: bool, host: str, port: int,
        replicas: int | None, autoscaling: dict[str, Any] | None) -> None:
    """Start (or join) Ray, deploy on ``host:port`` and serve until SIGTERM or Ctrl-C; then shut Serve down (each
    replica drains for ``settings.grace`` seconds at most), and Ray when it was started here."""
    serve = import_serve()
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(include_dashboard=False, **quiet)
    stop = threading.Event()  # installed after ray.init, whose own SIGTERM handler would exit 15
    handlers = {sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    serving = False
    try:
        count = replicas_for(ray, replicas, gpu, autoscaling)
        app = deployment(bundle.resolve(), backend, backend_options, settings, gpu, count, autoscaling)
        serving = True
        serve.start(http_options={"host": host, "port": port})
        try:
            serve.run(app, name=APP_NAME, route_prefix="/")
        except Exception as exc:  # noqa: BLE001 - a replica that fails to start: Ray's reason, on one line
            raise CamrtError(f"--engine ray: the deployment did not start: {one_line(exc)[-2000:]}") from None
        while not stop.wait(0.5):
            pass
    finally:
        try:
            if serving:
                serve.shutdown()
        finally:
            if started_here:
                ray.shutdown()
            for sig, previous in handlers.items():
                signal.signal(sig, previous)
