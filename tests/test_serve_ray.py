"""``camrt serve --engine ray``: the same app on Ray Serve (a local Ray the server starts), over real HTTP.

One server for the module (Ray and Serve take a while to start): its maps are ``Explainer.explain``'s, the metadata
route answers, a bad image is a one-line 4xx and the next request is served, SIGTERM shuts Serve and Ray down and
exits 0. The flags that only --engine ray takes are refused without it.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
try:
    import ray.serve  # noqa: F401
except ImportError as exc:  # Ray Serve needs grpc, aiohttp, ... (ray[serve]), not only ray[data]
    pytest.skip(f"ray.serve is not importable ({exc}); pip install 'camrt[serve,ray]'", allow_module_level=True)

from test_serve import one_line_error, png, reference  # noqa: E402

from camrt.runtime.explainer import Explainer  # noqa: E402
from camrt.runtime.serve.local import Server, decode_map, serving  # noqa: E402

MODEL = "tiny-cli"  # conftest's named_bundle


@pytest.fixture(scope="module")
def server(named_bundle) -> Server:
    with serving(named_bundle, ["--engine", "ray", "--replicas", 1, "--threads", 1, "--max-delay-ms", 50, "-q"],
                 ready_timeout=300) as running:
        yield running


@pytest.fixture(scope="module")
def explainer(named_bundle) -> Explainer:
    with Explainer(named_bundle, intra_op_threads=1) as made:
        yield made


def test_ray_replica_gives_explainers_maps(server, explainer, tmp_path) -> None:
    rng = np.random.default_rng(11)  # fresh photos of random sizes: resize and crop run as for files
    for i, (method, options) in enumerate([("scorecam", {}), ("sscam", {"num_samples": 2})]):
        image = png(rng, int(rng.integers(32, 90)), int(rng.integers(32, 90)))
        reply = server.explain(image, {"method": method, "map_dtype": "float32", **options}, multipart=bool(i))
        assert reply.status == 200, reply.body[:300]
        expected, target = reference(explainer, image, tmp_path, f"r{i}", method=method, seed=0, **options)
        got = decode_map(reply.json)
        assert got.dtype == np.float32 and got.shape == expected.shape
        # the same bundle, backend and arithmetic in the replica: only float32 summation order may differ
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
        assert reply.json["target"] == target


def test_ray_metadata_and_bad_image(server) -> None:
    reply = server.request("GET", f"/v1/models/{MODEL}")
    assert reply.status == 200 and reply.json["name"] == MODEL and reply.json["classes"]["count"] == 5
    one_line_error(server.request("GET", "/v1/models/other"), 404)
    one_line_error(server.explain(b"hello, I am not an image"), 400, "not an image")
    assert server.explain(png(np.random.default_rng(2), 40, 40)).status == 200  # still serving


def test_ray_sigterm_exits_0(server) -> None:
    assert server.terminate(timeout=120) == 0, server.log_text()[-2000:]


@pytest.mark.parametrize("flags", [["--replicas", "2"], ["--autoscaling", '{"max_replicas": 2}']])
def test_ray_only_flags_need_engine_ray(named_bundle, flags) -> None:
    run = subprocess.run([sys.executable, "-m", "camrt", "serve", str(named_bundle), *flags], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "only with --engine ray" in lines[0], run.stderr
