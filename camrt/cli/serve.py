"""``camrt serve BUNDLE``: explain images over HTTP, the masked passes of all clients batched by one engine loop.

FastAPI on uvicorn, a page at ``/``, KServe's v1 explain route, Prometheus metrics. Needs ``pip install
'camrt[serve]'``; README "Serving over HTTP" has the routes and fields."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from camrt.cli import args as flags
from camrt.errors import CamrtError, InputError
from camrt.runtime.preprocess import MAX_PIXELS

NAME = "serve"


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``serve`` to the CLI's subparsers."""
    p = flags.add_command(subparsers, NAME, parents, "serve explanations over HTTP, batched across clients",
                          __doc__)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    flags.add_method_arguments(p)  # the method, convention and options of a request that names none
    flags.add_backend_arguments(p)
    flags.add_run_arguments(p, "masked inputs per engine batch, across requests (--max-batch is the same)")
    p.add_argument("--max-batch", dest="batch_size", type=flags.batch_size, default=argparse.SUPPRESS, metavar="N",
                   help="the same as --batch-size")
    p.add_argument("--max-delay-ms", type=float, default=10.0, metavar="MS",
                   help="how long a partial engine batch may wait for more requests (default: 10)")
    p.add_argument("--max-queue", type=flags.positive_int, default=256, metavar="N",
                   help="images waiting for the engine at most; beyond: 503 with Retry-After (default: 256)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S",
                   help="seconds a request may take; beyond: 504 (default: 300)")
    p.add_argument("--max-bytes", type=flags.positive_int, default=20_000_000, metavar="B",
                   help="an image's encoded size at most; beyond: 413 (default: 20000000)")
    p.add_argument("--max-pixels", type=flags.positive_int, default=MAX_PIXELS, metavar="P",
                   help=f"an image's pixels at most, read from its header; beyond: 413 (default and most: "
                        f"{MAX_PIXELS})")
    p.add_argument("--grace", type=float, default=30.0, metavar="S",
                   help="after SIGTERM: seconds to finish what is queued and in flight (default: 30)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: one engine in this process (default); ray: the same app on Ray Serve, one engine "
                        "per replica (pip install 'camrt[serve,ray]'; RAY_ADDRESS joins a cluster)")
    p.add_argument("--replicas", type=flags.positive_int, default=None, metavar="N",
                   help="--engine ray: replicas (default: one per GPU of the cluster for a GPU backend, else 1)")
    p.add_argument("--autoscaling", type=_json_object, default=None, metavar="JSON",
                   help="--engine ray: Ray Serve's autoscaling_config, passed through, e.g. "
                        "'{\"min_replicas\": 1, \"max_replicas\": 4}' (instead of --replicas)")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or Ctrl-C; 0 after a clean drain."""
    try:
        import uvicorn

        from camrt.runtime.serve.app import Settings, create_app
        from camrt.runtime.serve.inputs import Defaults
    except ImportError as exc:
        raise CamrtError(f"serve: {exc.name or exc} is not installed (pip install 'camrt[serve]')") from None
    options = flags.parse_options(args.option, args.method)
    from camrt.runtime.methods import get_convention

    get_convention(args.method, args.convention, **options)  # a bad default method or option fails first
    for name in ("max_delay_ms", "timeout", "grace"):
        value = getattr(args, name)
        if not value >= 0 or value == float("inf"):
            raise InputError(f"--{name.replace('_', '-')}: expected a finite number of 0 or more, got {value}")
    if not 0 < args.port < 65536:
        raise InputError(f"--port: expected 1 to 65535, got {args.port}")
    for name in ("replicas", "autoscaling"):
        if args.engine != "ray" and getattr(args, name) is not None:
            raise InputError(f"--{name}: only with --engine ray")
    if args.replicas is not None and args.autoscaling is not None:
        raise InputError("--replicas: not with --autoscaling (its min_replicas and max_replicas bound the replicas)")
    settings = Settings(max_batch=args.batch_size, max_delay=args.max_delay_ms / 1000, max_queue=args.max_queue,
                        timeout=args.timeout, max_bytes=args.max_bytes, max_pixels=min(args.max_pixels, MAX_PIXELS),
                        grace=args.grace,
                        defaults=Defaults(args.method, args.convention, options, args.seed, args.background))
    if args.engine == "ray":
        return _run_on_ray(args, settings)
    explainer = flags.make_explainer(args)
    app = create_app(explainer, settings)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning" if args.quiet else "info",
                            timeout_graceful_shutdown=max(int(args.grace), 1), lifespan="on")
    server = _server(config, app)
    previous = signal.signal(signal.SIGTERM, _noted)  # uvicorn re-raises the signal after its drain: exit 0
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
        explainer.close()
    if not server.started:
        print(f"camrt: error: serve: could not start on {args.host}:{args.port}", file=sys.stderr)
        return 2
    return 0


def _run_on_ray(args: argparse.Namespace, settings: Any) -> int:
    """The same app on Ray Serve until SIGTERM or Ctrl-C; then Serve (and a Ray started here) shut down: 0."""
    from camrt.runtime.backends import on_gpu
    from camrt.runtime.bundle import Bundle
    from camrt.runtime.serve import ray_serve

    ray_serve.import_serve()  # a missing ray[serve] is one line before anything starts
    options = flags.backend_options(args)
    flags.warn_random_weights(Bundle.load(args.bundle))  # a bad bundle fails here, before Ray starts
    ray_serve.run(args.bundle, args.backend, options, settings, on_gpu(args.backend, args.device), args.host,
                  args.port, args.replicas, args.autoscaling)
    return 0


def _json_object(text: str) -> dict[str, Any]:
    """--autoscaling: a JSON object."""
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object such as {\"max_replicas\": 4}")
    return value


def _noted(signum: int, frame: Any) -> None:
    """SIGTERM after uvicorn has drained: nothing left to do but return 0."""


def _server(config: Any, app: Any) -> Any:
    """uvicorn's server, whose app reports not ready (``/readyz`` 503) as soon as a signal asks it to exit."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            app.state.draining = True
            super().handle_exit(sig, frame)

    return Server(config)
