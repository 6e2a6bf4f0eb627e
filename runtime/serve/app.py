"""The HTTP routes of ``camrt serve`` (FastAPI): explain an image, KServe's v1 explain, the model's metadata,
health, readiness, Prometheus metrics and the page at ``/``.

Decoding and encoding run in the thread pool, the engine in the batcher's one thread; a request waits on its
future, checking every :data:`POLL` seconds whether its client is still there and whether ``--timeout`` passed.
Every refusal is a 4xx (or 503/504) with ``{"error": "one line"}``; nothing a request sends can stop the server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from camrt._version import __version__
from camrt.errors import one_line
from camrt.runtime.methods import OPTIONS, list_conventions
from camrt.runtime.preprocess import MAX_PIXELS
from camrt.runtime.serve.answers import answer
from camrt.runtime.serve.batcher import Batcher, Closed, Done, Job, QueueFull
from camrt.runtime.serve.inputs import Defaults, Fields, Problem, Upload, decode_upload, parse_fields
from camrt.runtime.serve.metrics import Metrics

POLL = 0.05  # seconds between checks for a gone client while a request waits for the engine
MULTIPART_SLACK = 64 * 1024  # a multipart body may exceed --max-bytes by its fields and boundaries
MAX_INSTANCES = 16  # images in one KServe request at most
DECODERS = max(2, os.cpu_count() or 2)  # photos decoded at once (each up to --max-pixels of RGB in memory)
PAGE = Path(__file__).resolve().parent / "page"
PAGE_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
CLIENT_GONE = 499  # nginx's "client closed request", for the metrics (nobody reads the answer)


@dataclass(frozen=True)
class Settings:
    """The server's limits and batching knobs (``camrt serve``'s flags)."""

    max_batch: int = 64  # masked inputs per engine batch
    max_delay: float = 0.01  # seconds a partial batch may wait for more work
    max_queue: int = 256  # images waiting at most; beyond: 503
    timeout: float = 300.0  # seconds a request may take; beyond: 504
    max_bytes: int = 20_000_000  # an image's encoded size at most; beyond: 413
    max_pixels: int = MAX_PIXELS  # an image's pixels at most, read from its header; beyond: 413
    grace: float = 30.0  # seconds to finish what is queued and in flight after SIGTERM
    save_passes: bool = True
    defaults: Defaults = field(default_factory=Defaults)


def create_app(explainer: Any, settings: Settings) -> FastAPI:
    """The FastAPI app serving ``explainer`` (an ``Explainer``: its bundle and runner); the engine thread starts
    with the app's lifespan and stops, after draining for ``settings.grace`` seconds, with it."""
    bundle, runner = explainer.bundle, explainer.runner
    metrics: Metrics
    batcher = Batcher(runner, bundle.manifest, settings.max_batch, settings.max_delay, settings.max_queue,
                      settings.save_passes, on_batch=lambda n: metrics.batch(n),
                      on_done=lambda job, done: metrics.image(done.explained.status, done.queued_seconds,
                                                              done.explained.passes_run,
                                                              done.explained.passes_saved),
                      on_cancel=lambda n: metrics.images.labels("cancelled").inc(n))
    metrics = Metrics(settings.max_batch, batcher.depth, lambda: len(batcher.in_flight))
    name = bundle.manifest.model_name
    decoding = asyncio.Semaphore(DECODERS)  # photos being decoded at once: memory stays bounded under a flood

    async def decode(data: bytes, fields: Fields, where: str = "image") -> Upload:
        async with decoding:
            return await run_in_threadpool(decode_upload, data, bundle, settings.max_pixels,
                                           settings.defaults.background, fields.overlay, where)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await run_in_threadpool(batcher.close, settings.grace)

    app = FastAPI(title="camrt", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.batcher, app.state.metrics, app.state.settings = batcher, metrics, settings
    app.state.draining = False  # set on SIGTERM (camrt.cli.serve): /readyz answers 503 while the server drains
    app.add_middleware(_Measured, metrics=metrics)  # type: ignore[arg-type]

    @app.exception_handler(Problem)
    async def problem(request: Request, exc: Problem) -> Response:
        return error(exc.status, exc.message, exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return error(400, f"bad request: {one_line(Exception(exc.errors()))}")

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        return error(500, f"internal error: {one_line(exc)}")

    async def explain_one(request: Request, fields: Fields, upload: Upload) -> Done:
        """Queue one image and wait for it: 503 when the queue is full, 504 after --timeout, _ClientGone when the
        client leaves (a queued image is then never explained)."""
        job = Job(fields.key, upload.x, fields.target)
        try:
            future = batcher.submit(job)
        except QueueFull as exc:
            raise Problem(503, f"busy: {exc}; retry later", {"Retry-After": "1"}) from None
        except Closed as exc:
            raise Problem(503, str(exc), {"Retry-After": "5"}) from None
        waiter = asyncio.wrap_future(future)
        deadline = time.monotonic() + settings.timeout
        try:
            while not waiter.done():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Problem(504, f"timeout: not explained within {settings.timeout:g} s (--timeout)")
                await asyncio.wait({waiter}, timeout=min(POLL, left))
                if not waiter.done() and await request.is_disconnected():
                    raise _ClientGone
            try:
                return _explained(waiter.result())
            except Closed as exc:
                raise Problem(503, str(exc)) from None
            except RuntimeError as exc:  # the engine failed on this image's batch; the server goes on
                raise Problem(500, one_line(exc)) from None
        finally:
            if not waiter.done():
                batcher.abandon(job)  # a queued image is never admitted; one in the engine is dropped from it
                waiter.cancel()

    @app.post("/v1/explain")
    async def explain(request: Request) -> Response:
        data, form = await read_image(request, settings.max_bytes)
        fields = parse_fields({**request.query_params, **form}, bundle, settings.defaults)
        upload = await decode(data, fields)
        try:
            done = await explain_one(request, fields, upload)
        except _ClientGone:
            return Response(status_code=CLIENT_GONE)
        body = await run_in_threadpool(answer, done, fields, upload, bundle)
        return JSONResponse(body)

    @app.post("/v1/models/{model}:explain")
    async def kserve_explain(model: str, request: Request) -> Response:
        check_model(model)
        limit = MAX_INSTANCES * (settings.max_bytes * 4 // 3 + 1024) + MULTIPART_SLACK
        text = await read_body(request, limit, "request body")
        try:
            doc = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise Problem(400, f"request body: not JSON ({exc})") from None
        instances = doc.get("instances") if isinstance(doc, dict) else None
        if not isinstance(instances, list) or not 1 <= len(instances) <= MAX_INSTANCES:
            raise Problem(400, 'request body: expected {"instances": [{"image_bytes": {"b64": "..."}}, ...]} with '
                               f"1 to {MAX_INSTANCES} instances")
        parameters = doc.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise Problem(400, "parameters: expected an object of fields (method, convention, target, options)")
        fields = parse_fields(parameters, bundle, settings.defaults)
        uploads = []
        for i, instance in enumerate(instances):
            data = instance_bytes(instance, f"instances[{i}]", settings.max_bytes)
            uploads.append(await decode(data, fields, f"instances[{i}]"))
        tasks = [asyncio.ensure_future(explain_one(request, fields, upload)) for upload in uploads]
        try:
            done = await asyncio.gather(*tasks)
        except _ClientGone:
            return Response(status_code=CLIENT_GONE)
        finally:
            for task in tasks:  # one instance failed: the others' queued images are dropped too
                task.cancel()
        bodies = [await run_in_threadpool(answer, d, fields, u, bundle)
                  for d, u in zip(done, uploads)]
        return JSONResponse({"explanations": bodies})

    @app.get("/v1/models/{model}")
    async def model_metadata(model: str) -> Response:
        check_model(model)
        return JSONResponse(metadata(explainer, settings, batcher.ready.is_set()))

    @app.get("/healthz")
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        if batcher.error is not None:
            return error(503, batcher.error)
        if batcher.closed or app.state.draining:
            return error(503, "shutting down")
        if not batcher.ready.is_set():
            return error(503, "warming up")
        return JSONResponse({"status": "ready", "model": name})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.text(), media_type=metrics.content_type)

    @app.get("/")
    async def page() -> Response:
        return Response((PAGE / "index.html").read_bytes(), media_type="text/html; charset=utf-8")

    @app.get("/page/{file}")
    async def page_file(file: str) -> Response:
        if file not in PAGE_FILES:
            raise Problem(404, f"{file}: no such file")
        return Response((PAGE / file).read_bytes(), media_type=f"{PAGE_FILES[file]}; charset=utf-8")

    def check_model(model: str) -> None:
        if model != name:
            raise Problem(404, f"model: no model named {model!r} here (this server serves {name!r})")

    return app


class _ClientGone(Exception):
    """The client disconnected while its request waited."""


def _explained(done: Done) -> Done:
    """``done`` when its image was explained, else a 422 naming why (non-finite activations or logits)."""
    if done.explained.status != "ok":
        raise Problem(422, f"image: cannot be explained ({done.explained.error})")
    return done


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """The one-line JSON error every refusal answers."""
    return JSONResponse({"error": " ".join(message.split())}, status_code=status, headers=headers)


async def read_body(request: Request, limit: int, what: str) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (Content-Length checked first)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise Problem(413, f"{what}: {int(length):,} bytes, over this server's limit of {limit:,} (--max-bytes)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Problem(413, f"{what}: over this server's limit of {limit:,} bytes (--max-bytes)")
    return bytes(body)


async def read_image(request: Request, max_bytes: int) -> tuple[bytes, dict[str, str]]:
    """The image (multipart field ``image``, or the whole body whatever its type) and the form's other fields."""
    kind = request.headers.get("content-type", "").lower()
    if kind.startswith("multipart/form-data"):
        request._body = await read_body(request, max_bytes + MULTIPART_SLACK, "request body")
        try:
            form = await request.form()
        except HTTPException as exc:
            raise Problem(400, f"request body: {exc.detail}") from None
        image = form.get("image")
        if image is None:
            raise Problem(400, "image: missing (send the image as the multipart field 'image' or as the body)")
        if not isinstance(image, UploadFile):
            raise Problem(400, "image: expected a file in the multipart field 'image', got a text field")
        data = await image.read()
        if len(data) > max_bytes:
            raise Problem(413, f"image: {len(data):,} bytes, over this server's limit of {max_bytes:,} (--max-bytes)")
        return data, {k: v for k, v in form.items() if k != "image" and isinstance(v, str)}
    return await read_body(request, max_bytes, "image"), {}  # any other type (curl's default too): the image


def instance_bytes(instance: Any, where: str, max_bytes: int) -> bytes:
    """A KServe instance's image: ``{"image_bytes": {"b64": ...}}`` or ``{"b64": ...}``, decoded."""
    inner = instance.get("image_bytes", instance) if isinstance(instance, dict) else None
    text = inner.get("b64") if isinstance(inner, dict) else None
    if not isinstance(text, str):
        raise Problem(400, f'{where}: expected {{"image_bytes": {{"b64": "..."}}}}')
    if len(text) > max_bytes * 4 // 3 + 4:
        raise Problem(413, f"{where}: over this server's limit of {max_bytes:,} bytes (--max-bytes)")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Problem(400, f"{where}: not valid base64") from None


def metadata(explainer: Any, settings: Settings, ready: bool) -> dict[str, Any]:
    """``GET /v1/models/{name}``: the bundle (input, classes, layer) and the methods, conventions and options."""
    m = explainer.bundle.manifest
    pre = m.preprocessing
    return {
        "name": m.model_name,
        "ready": ready,
        "platform": f"camrt {__version__}",
        "backend": type(explainer.runner).__name__,
        "random_weights": m.random_weights,
        "input": {"shape": list(m.input_shape), "resize": pre.resize, "crop": list(pre.crop),
                  "interpolation": pre.interpolation, "mean": list(pre.mean), "std": list(pre.std)},
        "layer": m.target_layer,
        "activations": list(m.activation_shape),
        "classes": {"count": m.num_classes, "names": m.class_names},
        "methods": {method: {"conventions": conventions,
                             "options": [{"name": o.name, "kind": o.kind, "default": o.default, "help": o.help}
                                         for o in OPTIONS[method]]}
                    for method, conventions in list_conventions().items()},
        "defaults": {"method": settings.defaults.method, "convention": settings.defaults.convention,
                     "options": dict(settings.defaults.options), "seed": settings.defaults.seed},
        "limits": {"max_batch": settings.max_batch, "max_delay_ms": settings.max_delay * 1000,
                   "max_queue": settings.max_queue, "timeout": settings.timeout, "max_bytes": settings.max_bytes,
                   "max_pixels": settings.max_pixels},
    }


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class _Measured:
    """ASGI middleware: every HTTP answer counted by route and status, and its latency (pure ASGI, so a waiting
    request still sees its client's disconnect)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def sending(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "other")
            self.metrics.answered(route, status[0], time.perf_counter() - started)
