"""explain-dataset --engine ray on a real two-node Ray cluster (head + worker raylet, one CPU each, on 127.0.0.1).

The cluster is started here with ``ray start`` (token authentication on: the head and the worker share
``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN``, and so does each camrt driver) and always stopped afterwards with
``ray stop --force`` (which stops every Ray of this user on the machine). Every command has a subprocess timeout;
the module is skipped when Ray cannot start here.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from test_ray_engine import _rows, _same_rows

from camrt.runtime.shards import load_maps, read_index

pytest.importorskip("ray")

RAY = Path(sys.executable).with_name("ray")
START_SECONDS = 60
RUN_SECONDS = 120


def _free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together so that they differ)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _node_ports() -> list[str]:
    """The ports a raylet opens, chosen free: two raylets on one machine must not share Ray's defaults."""
    names = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port")
    return [str(a) for name, port in zip(names, _free_ports(len(names))) for a in (name, port)]


def _ray(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(RAY), *args], env=env, capture_output=True, text=True, timeout=START_SECONDS)


class Cluster:
    """A running two-node cluster: its address, the environment that reaches it, and its worker node."""

    def __init__(self, address: str, env: dict[str, str], worker: subprocess.Popen[bytes]) -> None:
        self.address, self.env, self.worker = address, env, worker

    def kill_worker(self) -> None:
        """SIGKILL the worker node: its raylet and every process on it (a machine lost)."""
        if self.worker.poll() is None:
            os.killpg(self.worker.pid, signal.SIGKILL)
            self.worker.wait(timeout=START_SECONDS)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A head and a worker node, one CPU each; torn down whatever happens. The worker runs ``ray start --block`` in
    its own process group, so a test can kill the whole node."""
    if not RAY.exists():
        pytest.skip(f"no ray command at {RAY}")
    temp = tempfile.mkdtemp(prefix="camrt-ray-", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    (port,) = _free_ports(1)
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus", "1", "--object-store-memory", str(200 * 2**20), "--node-ip-address", "127.0.0.1",
              "--disable-usage-stats"]
    worker: subprocess.Popen[bytes] | None = None
    try:
        head = _ray(["start", "--head", "--port", str(port), "--temp-dir", temp, "--include-dashboard", "false",
                     *common, *_node_ports()], env)
        if head.returncode:
            pytest.skip(f"ray start --head failed here: {head.stderr.strip().splitlines()[-1:]}")
        worker = subprocess.Popen([str(RAY), "start", "--address", address, "--block", *common, *_node_ports()],
                                  env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        _wait_for_nodes(address, env, 2, worker)
        yield Cluster(address, env, worker)
    except subprocess.TimeoutExpired as exc:
        pytest.skip(f"ray did not start in {START_SECONDS} s: {exc.cmd}")
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        subprocess.run([str(RAY), "stop", "--force"], env=env, capture_output=True, timeout=START_SECONDS)
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_nodes(address: str, env: dict[str, str], nodes: int, worker: subprocess.Popen[bytes]) -> None:
    """Until ``ray status`` lists ``nodes`` active nodes (skip the module if the worker dies or it takes too long)."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            pytest.skip(f"ray start (worker node) exited with status {worker.returncode}")
        status = _ray(["status", "--address", address], env)
        if status.stdout.count(" node_") >= nodes:
            return
        time.sleep(1)
    pytest.skip(f"the worker node did not join in {START_SECONDS} s")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """16 random PNGs and a corrupt bad.jpg."""
    data = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(4)
    for i in range(16):
        PILImage.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(data / f"{i:03d}.png")
    (data / "bad.jpg").write_bytes(b"not an image")
    return data


def _explain(bundle: Path, data: Path, out: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "camrt", "explain-dataset", str(bundle), str(data), "--out", str(out),
            "--batch-size", "16", "--shard-size", "4", "--quiet", *extra]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=RUN_SECONDS)


def test_actors_on_every_cpu_finish_and_equal_local(cluster, named_bundle, images, tmp_path) -> None:
    """Two actors on a two-CPU cluster hold every CPU; the decode tasks (no CPU reserved) still run."""
    local = _explain(named_bundle, images, tmp_path / "local", cluster.env)
    assert local.returncode == 2, local.stderr  # 2: the index lists the bad image
    run = _explain(named_bundle, images, tmp_path / "ray", cluster.env, "--engine", "ray",
                   "--ray-address", cluster.address, "--actors", "2")
    assert run.returncode == 2, run.stderr
    assert "16 explained, 1 bad in this run" in run.stdout
    _same_rows(_rows(tmp_path / "ray"), _rows(tmp_path / "local"))
    ray_maps, local_maps = load_maps(tmp_path / "ray"), load_maps(tmp_path / "local")
    assert sorted(ray_maps) == sorted(local_maps) and len(local_maps) == 16
    for index, saliency in local_maps.items():  # at most one float16 step apart (see test_ray_engine)
        np.testing.assert_allclose(ray_maps[index].astype(np.float32), saliency.astype(np.float32), atol=1e-3)


def test_more_actors_than_the_cluster_holds_is_one_line(cluster, named_bundle, images, tmp_path) -> None:
    run = _explain(named_bundle, images, tmp_path / "out", cluster.env, "--engine", "ray",
                   "--ray-address", cluster.address,
                   "--actors", "3")
    assert run.returncode == 2  # bad input: one line and exit status 2 (camrt.cli)
    lines = run.stderr.strip().splitlines()
    assert lines == ["camrt: error: --actors 3: the Ray cluster's live nodes hold 2 actor(s) of 1 CPU each; "
                     "ask for at most 2"], run.stderr
    assert not (tmp_path / "out").exists()  # refused before any image was explained: no run folder left behind


def test_a_worker_node_killed_mid_run_loses_nothing(cluster, named_bundle, tmp_path) -> None:
    """Last in the module (it kills the worker node): Ray Data retries the lost batches on the head node (or the
    run ends in one line); either way, --resume then leaves every image explained exactly once."""
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(5)
    for i in range(200):
        PILImage.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(data / f"{i:03d}.png")
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "camrt", "explain-dataset", str(named_bundle), str(data), "--out", str(out),
            "--shard-size", "8", "--quiet", "--engine", "ray", "--ray-address", cluster.address, "--actors", "2"]
    run = subprocess.Popen(argv, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + RUN_SECONDS
        while not list((out / "shards").glob("shard-*")) and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert run.poll() is None, "the run ended before the worker node could be killed"
        cluster.kill_worker()
        stdout, stderr = run.communicate(timeout=RUN_SECONDS)
    finally:
        if run.poll() is None:
            run.kill()
    errors = [line for line in stderr.splitlines() if line.startswith("camrt: error:")]
    assert run.returncode == 0 or len(errors) == 1, stderr[-2000:]
    before = {row["index"]: row for row in read_index(out)}
    again = subprocess.run([*argv, "--resume"], env=cluster.env, capture_output=True, text=True, timeout=RUN_SECONDS)
    assert again.returncode == 0, again.stderr[-2000:]
    rows = read_index(out)
    assert sorted(int(row["index"]) for row in rows) == list(range(200))
    assert all(row["status"] == "ok" for row in rows)
    assert all({**row, "shard": "", "row": ""} == {**before[row["index"]], "shard": "", "row": ""}
               for row in rows if row["index"] in before)  # committed rows kept as they were
    assert sorted(load_maps(out)) == list(range(200))
