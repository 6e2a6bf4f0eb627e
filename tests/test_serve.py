"""``camrt serve``: a real server (``python -m camrt serve`` on a free port of 127.0.0.1) over real HTTP.

Concurrent clients get ``Explainer.explain``'s maps for the same images; every bad input gets its 4xx with a one-line
JSON error and the next request is served; a full queue gives 503, a slow request 504, a queued request whose client
left is never explained; SIGTERM drains what is queued and in flight and exits 0; the KServe route answers;
/metrics parses.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
prometheus_parser = pytest.importorskip("prometheus_client.parser")

from camrt.runtime.explainer import Explainer  # noqa: E402
from camrt.runtime.serve.local import Server, decode_map, serving  # noqa: E402

MODEL = "tiny-cli"  # conftest's named_bundle: K = 8 at 8 x 8, 5 classes class0..class4, input 32 x 32
MAX_BYTES, MAX_PIXELS = 300_000, 1_000_000
FLOAT16_ULP = 2.0**-11  # float16's rounding error for values in [0, 1] (10 stored mantissa bits)


def png(rng: np.random.Generator, height: int, width: int, kind: str = "PNG") -> bytes:
    """A smooth random colour photo as PNG (or JPEG) bytes."""
    small = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format=kind)
    return buffer.getvalue()


def slow_fields(server: Server, image: bytes, seconds: float = 3.0) -> dict:
    """SS-CAM fields whose request takes about ``seconds`` on this machine now (scaled from a timed request of
    200 samples), so the tests that need a request in flight for a while do not depend on the machine's speed."""
    started = time.perf_counter()
    assert server.explain(image, {"method": "sscam", "num_samples": 200}).status == 200
    took = time.perf_counter() - started
    return {"method": "sscam", "num_samples": int(min(max(200 * seconds / took, 200), 50_000))}


def one_line_error(reply, status: int, *needles: str) -> None:
    assert reply.status == status, (reply.status, reply.body[:300])
    body = reply.json
    assert isinstance(body, dict) and set(body) == {"error"}, reply.body[:300]
    assert "\n" not in body["error"] and body["error"], body
    for needle in needles:
        assert needle in body["error"], body["error"]


def metric(text: str, name: str, **labels: str) -> float:
    """The value of sample ``name`` with ``labels`` in the /metrics text (0 when absent)."""
    for family in prometheus_parser.text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


@pytest.fixture(scope="module")
def explainer(named_bundle) -> Explainer:
    with Explainer(named_bundle, intra_op_threads=1) as made:
        yield made


@pytest.fixture(scope="module")
def server(named_bundle) -> Server:
    """The main server: engine batches of 16 (two images' passes), 200 ms for a partial batch to fill."""
    with serving(named_bundle, ["--max-batch", 16, "--max-delay-ms", 200, "--max-bytes", MAX_BYTES,
                                "--max-pixels", MAX_PIXELS, "--threads", 1, "-q"]) as running:
        yield running


@pytest.fixture
def photo(tmp_path) -> bytes:
    return png(np.random.default_rng(1), 48, 64)


def reference(explainer: Explainer, image: bytes, tmp_path: Path, name: str, **kwargs) -> tuple[np.ndarray, int]:
    """Explainer.explain's map and target for one image, read from a file as camrt.load_images reads photos."""
    path = tmp_path / (f"{name}.jpg" if image[:2] == b"\xff\xd8" else f"{name}.png")
    path.write_bytes(image)
    out = explainer.explain(explainer.preprocess([path]), **kwargs)
    return out.saliency[0], int(out.targets[0])


CASES = [  # (method, convention, options): each client asks for one; two clients share each
    ("scorecam", "paper", {}),
    ("scorecam++", "paper", {}),
    ("sscam", "torchcam", {"num_samples": 3}),
    ("iscam", "paper", {"num_samples": 2}),
]


def test_concurrent_clients_get_explainers_maps(server, explainer, tmp_path) -> None:
    rng = np.random.default_rng(7)
    sizes = [(int(rng.integers(32, 90)), int(rng.integers(32, 90))) for _ in range(6)] + [(300, 420), (640, 480)]
    kinds = ["PNG"] * 6 + ["JPEG"] * 2  # JPEGs over twice the resized size: decoded at a reduced scale, as from files
    jobs = [(png(rng, h, w, kind), CASES[i % len(CASES)]) for i, ((h, w), kind) in enumerate(zip(sizes, kinds))]

    def ask(job):
        image, (method, convention, options) = job
        fields = {"method": method, "convention": convention, "map_dtype": "float32", **options}
        return server.explain(image, fields, multipart=bool(len(image) % 2))

    with ThreadPoolExecutor(len(jobs)) as pool:
        replies = list(pool.map(ask, jobs))
    for i, ((image, (method, convention, options)), reply) in enumerate(zip(jobs, replies)):
        assert reply.status == 200, reply.body[:300]
        body = reply.json
        expected, target = reference(explainer, image, tmp_path, f"p{i}", method=method, convention=convention,
                                     seed=0, **options)
        got = decode_map(body)
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
        assert (body["target"], body["predicted"], body["method"], body["convention"]) == (target, target, method,
                                                                                             convention)
        assert body["passes_run"] > 0 and body["queued_seconds"] >= 0 and body["compute_seconds"] > 0
        assert body["target_name"] == f"class{target}" and body["top"][0]["class"] == target


def test_masked_passes_of_several_requests_share_engine_batches(server, tmp_path) -> None:
    """Eight concurrent Score-CAM requests of at most 8 passes each, engine batches of 16: fewer batches than
    images (each image alone would take one batch) shows the batches were filled across requests."""
    before = metric(server.metrics(), "camrt_serve_batch_fill_count")
    rng = np.random.default_rng(3)
    images = [png(rng, 40, 40) for _ in range(8)]
    with ThreadPoolExecutor(len(images)) as pool:
        replies = list(pool.map(lambda image: server.explain(image, {"method": "scorecam"}), images))
    assert all(reply.status == 200 for reply in replies)
    batches = metric(server.metrics(), "camrt_serve_batch_fill_count") - before
    assert 1 <= batches < len(images)


def test_float16_map_and_overlay_by_default(server, explainer, photo, tmp_path) -> None:
    reply = server.explain(photo, {"overlay": 1, "target": "class2"}, multipart=True)
    assert reply.status == 200, reply.body
    body = reply.json
    expected, target = reference(explainer, photo, tmp_path, "photo", targets=2)
    got = decode_map(body)
    assert got.dtype == np.float16 and target == body["target"] == 2 and body["target_name"] == "class2"
    np.testing.assert_allclose(got.astype(np.float32), expected, atol=FLOAT16_ULP + 1e-5, rtol=0)
    overlay = Image.open(io.BytesIO(base64.b64decode(body["overlay_png_b64"])))
    assert overlay.format == "PNG" and overlay.size == (64, 48)  # drawn on the photo as sent
    reply = server.explain(photo, {"overlay": "input"})
    assert Image.open(io.BytesIO(base64.b64decode(reply.json["overlay_png_b64"]))).size == (32, 32)


def bad_inputs(photo: bytes) -> list[tuple[str, bytes, dict, int, str]]:
    """(what, image, fields, status, words of the error) for every kind of bad input."""
    truncated = photo[: len(photo) // 2]
    noisy = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)).save(noisy, "PNG")
    huge = io.BytesIO()
    Image.new("RGB", (1100, 1000)).save(huge, "PNG")  # 1.1 M pixels in a few kB: a (small) decompression bomb
    return [
        ("not an image", b"hello, I am not an image", {}, 400, "not an image"),
        ("truncated", truncated, {}, 400, "truncated"),
        ("empty", b"", {}, 400, "empty"),
        ("too many bytes", noisy.getvalue(), {}, 413, "--max-bytes"),
        ("too many pixels", huge.getvalue(), {}, 413, "--max-pixels"),
        ("unknown method", photo, {"method": "gradcam"}, 400, "unknown method"),
        ("unknown convention", photo, {"convention": "mine"}, 400, "no convention"),
        ("unknown option", photo, {"colour": "red"}, 400, "not an option"),
        ("bad option value", photo, {"method": "sscam", "num_samples": 0}, 400, "num_samples"),
        ("target out of range", photo, {"target": 5}, 400, "out of range"),
        ("unknown class", photo, {"target": "clas3"}, 400, "did you mean"),
        ("bad map dtype", photo, {"map_dtype": "int8"}, 400, "map_dtype"),
        ("bad overlay", photo, {"overlay": "maybe"}, 400, "overlay"),
        ("bad seed", photo, {"seed": "x"}, 400, "seed"),
    ]


def test_every_bad_input_is_a_4xx_and_the_next_request_is_served(server, photo) -> None:
    for what, image, fields, status, words in bad_inputs(photo):
        for multipart in (False, True):
            one_line_error(server.explain(image, fields, multipart=multipart), status, words)
        assert server.explain(photo).status == 200, f"not served after {what}"
    one_line_error(server.request("POST", "/v1/explain", *_form_without_image()), 400, "image: missing")
    one_line_error(server.request("GET", "/nowhere"), 404)
    one_line_error(server.request("GET", "/v1/explain"), 405)
    text = server.metrics()
    assert metric(text, "camrt_serve_requests_total", route="/v1/explain", status="413") >= 4
    assert metric(text, "camrt_serve_requests_total", route="/v1/explain", status="400") >= 24


def _form_without_image() -> tuple[bytes, dict[str, str]]:
    boundary = "b0undary"
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="method"\r\n\r\nscorecam\r\n--{boundary}--\r\n'
    return body.encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_kserve_explain_route(server, explainer, photo, tmp_path) -> None:
    other = png(np.random.default_rng(5), 70, 40)
    doc = {"instances": [{"image_bytes": {"b64": base64.b64encode(photo).decode()}},
                         {"b64": base64.b64encode(other).decode()}],
           "parameters": {"method": "scorecam++", "map_dtype": "float32"}}
    reply = server.request("POST", f"/v1/models/{MODEL}:explain", json.dumps(doc).encode(),
                           {"Content-Type": "application/json"})
    assert reply.status == 200, reply.body[:300]
    explanations = reply.json["explanations"]
    assert len(explanations) == 2
    for i, (image, answer) in enumerate(zip((photo, other), explanations)):
        expected, target = reference(explainer, image, tmp_path, f"k{i}", method="scorecam++")
        np.testing.assert_allclose(decode_map(answer), expected, atol=1e-5, rtol=0)
        assert answer["target"] == target and answer["method"] == "scorecam++"
    one_line_error(server.request("POST", "/v1/models/other:explain", json.dumps(doc).encode()), 404, "other")
    for bad in (b"not json", b'{"instances": []}', b'{"instances": [{"b64": "***"}]}',
                b'{"instances": [{"b64": "aGVsbG8="}]}', b'{"instances": [{"b64": "aGVsbG8="}], "parameters": 3}'):
        one_line_error(server.request("POST", f"/v1/models/{MODEL}:explain", bad), 400)
    assert server.explain(photo).status == 200


def test_metadata_health_and_metrics(server, photo) -> None:
    meta = server.request("GET", f"/v1/models/{MODEL}").json
    assert meta["name"] == MODEL and meta["ready"] is True and meta["layer"] == "features"
    assert meta["classes"] == {"count": 5, "names": [f"class{i}" for i in range(5)]}
    assert "torchcam" in meta["methods"]["sscam"]["conventions"]
    assert "num_samples" in [o["name"] for o in meta["methods"]["sscam"]["options"]]
    one_line_error(server.request("GET", "/v1/models/other"), 404)
    assert server.request("GET", "/healthz").json == {"status": "ok"}
    assert server.request("GET", "/readyz").json["status"] == "ready"
    assert server.explain(photo).status == 200
    text = server.metrics()
    families = {f.name: f for f in prometheus_parser.text_string_to_metric_families(text)}
    for name, kind in [("camrt_serve_requests", "counter"), ("camrt_serve_request_seconds", "histogram"),
                       ("camrt_serve_queue_depth", "gauge"), ("camrt_serve_batch_fill", "histogram"),
                       ("camrt_serve_passes_run", "counter"), ("camrt_serve_passes_saved", "counter")]:
        assert families[name].type == kind, name
    assert metric(text, "camrt_serve_requests_total", route="/v1/explain", status="200") >= 1
    assert metric(text, "camrt_serve_passes_run_total") > 0
    fill = metric(text, "camrt_serve_batch_fill_sum") / metric(text, "camrt_serve_batch_fill_count")
    assert 0 < fill <= 1
    page = server.request("GET", "/")
    assert page.status == 200 and b"/page/app.js" in page.body
    assert server.request("GET", "/page/app.js").status == 200
    one_line_error(server.request("GET", "/page/secret.py"), 404)


def test_timeout_and_a_gone_client_drop_queued_work(named_bundle, photo) -> None:
    """--timeout 1: a slow request gets 504 and its remaining passes, already in the engine, are dropped; a request
    queued behind it that times out, and one whose client hangs up, are never finished."""
    with serving(named_bundle, ["--timeout", 1, "--threads", 1, "-q"]) as server:
        slow_request = slow_fields(server, photo)
        before = metric(server.metrics(), "camrt_serve_images_total", status="ok")
        started = time.monotonic()
        with ThreadPoolExecutor(2) as pool:
            slow = pool.submit(server.explain, photo, slow_request)
            time.sleep(0.2)
            queued = pool.submit(server.explain, photo, slow_request)  # waits: the slow one fills the window
            time.sleep(0.2)
            hang_up(server, photo)
            one_line_error(slow.result(), 504, "--timeout")
            one_line_error(queued.result(), 504, "--timeout")
        wait_for(lambda: metric(server.metrics(), "camrt_serve_in_flight") == 0)  # the slow image was dropped
        assert time.monotonic() - started < 60
        assert server.explain(photo).status == 200
        text = server.metrics()
        assert metric(text, "camrt_serve_images_total", status="ok") - before == 1  # the last one only
        # the slow one mid-explain; the queued one too if the engine took it before its own timeout
        assert metric(text, "camrt_serve_images_total", status="cancelled") in (1, 2)
        assert metric(text, "camrt_serve_requests_total", route="/v1/explain", status="499") == 1


def hang_up(server: Server, image: bytes) -> None:
    """Send a request on a raw socket and close it without reading the answer."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        query = urlencode({"method": "scorecam"})
        sock.sendall(f"POST /v1/explain?{query} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(image)}\r\n"
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + image)
        time.sleep(0.3)


def test_full_queue_gives_503_and_sigterm_drains_and_exits_0(named_bundle, photo) -> None:
    with serving(named_bundle, ["--max-queue", 1, "--grace", 60, "--threads", 1, "-q"]) as server:
        slow_request = slow_fields(server, photo)
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(server.explain, photo, slow_request)  # in the engine
            wait_for(lambda: metric(server.metrics(), "camrt_serve_in_flight") == 1)
            second = pool.submit(server.explain, photo, {"method": "scorecam", "map_dtype": "float32"})  # queued
            wait_for(lambda: metric(server.metrics(), "camrt_serve_queue_depth") == 1)
            full = server.explain(photo)
            one_line_error(full, 503, "--max-queue")
            assert full.headers.get("retry-after") == "1"
            assert not first.done() and not second.done()
            server.process.send_signal(15)  # SIGTERM: stop accepting, finish both, exit 0
            code = server.process.wait(90)
            assert first.result().status == 200 and second.result().status == 200
        assert code == 0, server.log_text()[-2000:]
        with pytest.raises(OSError):
            server.request("GET", "/healthz", timeout=5)


def wait_for(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_the_server_imports_no_torch() -> None:
    script = ("import sys, camrt.cli, camrt.cli.serve, camrt.runtime.serve.app, camrt.runtime.serve.local; "
              "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_bad_flags_are_one_line_errors(named_bundle, capsys) -> None:
    from camrt.cli import main

    assert main(["serve", str(named_bundle), "--max-delay-ms", "-1"]) == 2
    assert "--max-delay-ms" in capsys.readouterr().err
    assert main(["serve", str(named_bundle), "-O", "nope=1"]) == 2
    assert "nope" in capsys.readouterr().err


def test_engine_thread_survives_concurrent_mixed_load(server, photo) -> None:
    """Many clients, several methods at once: every request answered 200, none lost."""
    fields = [{"method": m, "convention": c, **o} for m, c, o in CASES]
    errors: list[str] = []

    def client(i: int) -> None:
        for j in range(3):
            reply = server.explain(photo, fields[(i + j) % len(fields)])
            if reply.status != 200:
                errors.append(reply.body.decode()[:200])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []


def test_an_engine_failure_fails_its_requests_and_the_engine_goes_on(explainer, photo, tmp_path) -> None:
    """In process: the runner raising in a masked batch fails that request (500 in the app); the next is served."""
    from camrt.runtime.methods import get_convention
    from camrt.runtime.serve.batcher import Batcher, Job

    class Flaky:
        def __init__(self, runner) -> None:
            self.runner, self.fail = runner, False

        def features(self, x):
            return self.runner.features(x)

        def head(self, a):
            return self.runner.head(a)

        def logits(self, x):
            if self.fail:
                raise RuntimeError("device lost")
            return self.runner.logits(x)

        def close(self) -> None:
            pass

    runner = Flaky(explainer.runner)
    batcher = Batcher(runner, explainer.bundle.manifest, 16, 0.01, 8)
    batcher.start()
    assert batcher.ready.wait(60)
    path = tmp_path / "photo.png"
    path.write_bytes(photo)
    x = explainer.preprocess([path])[0]
    key = (get_convention("scorecam", "paper"), None)
    runner.fail = True
    with pytest.raises(RuntimeError, match="device lost"):
        batcher.submit(Job(key, x, None)).result(60)
    runner.fail = False
    done = batcher.submit(Job(key, x, None)).result(60)
    expected = explainer.explain(x[None], "scorecam").saliency[0]
    np.testing.assert_allclose(done.explained.saliency, expected, atol=1e-5, rtol=0)
    batcher.close(5)
    assert not batcher.thread.is_alive()


def test_several_methods_take_turns_without_delay(explainer, photo, tmp_path) -> None:
    """In process, --max-delay-ms 0: requests of two methods queued together, interleaved, are all explained (the
    engine thread switches windows in the order of their oldest requests), each as Explainer.explain does it."""
    from camrt.runtime.methods import get_convention
    from camrt.runtime.serve.batcher import Batcher, Job

    batcher = Batcher(explainer.runner, explainer.bundle.manifest, 8, 0.0, 64)
    batcher.start()
    assert batcher.ready.wait(60)
    path = tmp_path / "photo.png"
    path.write_bytes(photo)
    x = explainer.preprocess([path])[0]
    methods = ["scorecam", "scorecam++"] * 6
    try:
        futures = [batcher.submit(Job((get_convention(m, "paper"), None), x, None)) for m in methods]
        expected = {m: explainer.explain(x[None], m).saliency[0] for m in set(methods)}
        for method, future in zip(methods, futures):
            np.testing.assert_allclose(future.result(60).explained.saliency, expected[method], atol=1e-5, rtol=0)
    finally:
        batcher.close(5)
