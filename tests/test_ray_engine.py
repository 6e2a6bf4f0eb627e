"""explain-dataset on Ray Data: the same rows and maps as the local engine, bad files listed, --resume."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from camrt.errors import CamrtError
from camrt.runtime.explain_dataset import explain_dataset
from camrt.runtime.ray_cluster import Watchdog, actors_that_fit
from camrt.runtime.shards import load_maps, read_index

ray = pytest.importorskip("ray")

VOLATILE = ("seconds", "metric_seconds", "shard", "row")  # timing, and where a map landed: not results
RAY_OPTIONS = {"actors": 1, "decode_tasks": 1}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One small local Ray for the module; run_on_ray reuses it and leaves it running."""
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024 * 1024, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def folder(tmp_path) -> Path:
    """6 random PNGs (40x48) in two label folders, and a corrupt bad.jpg at the top."""
    data = tmp_path / "data"
    rng = np.random.default_rng(3)
    for i in range(6):
        sub = data / ("cats" if i % 2 else "dogs")
        sub.mkdir(parents=True, exist_ok=True)
        PILImage.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(sub / f"{i:03d}.png")
    (data / "bad.jpg").write_bytes(b"not an image")
    return data


def _rows(out: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k not in VOLATILE} for row in read_index(out)]


def _same_rows(ray_rows: list[dict[str, str]], local_rows: list[dict[str, str]]) -> None:
    """Equal rows; numbers compared as numbers (metrics may differ in the last bits, see the maps below)."""
    assert [sorted(r) for r in ray_rows] == [sorted(r) for r in local_rows]
    for a, b in zip(ray_rows, local_rows):
        for key, value in a.items():
            try:
                x, y = float(value), float(b[key])
            except ValueError:
                assert value == b[key], key
                continue
            assert math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-6) or (math.isnan(x) and math.isnan(y)), key


@pytest.mark.parametrize(("method", "options", "metrics", "batch_images"), [
    ("scorecam", {}, {"confidence": ("prob-full",), "causal": ("rise",)}, None),
    # SS-CAM's noise is keyed by each image's dataset index, so images split over three Ray batches (of 3, in
    # whatever order Ray finishes them) get the noise, and the maps, of the local run
    ("sscam", {"num_samples": 2}, {}, 3),
])
def test_ray_equals_local(named_bundle, folder, tmp_path, method, options, metrics, batch_images) -> None:
    common = {"options": options, "batch_size": 16, "shard_size": 4, "progress": False, "seed": 5, **metrics}
    local = explain_dataset(named_bundle, folder, tmp_path / "local", method, engine="local", **common)
    run = explain_dataset(named_bundle, folder, tmp_path / "ray", method, engine="ray",
                          ray_options={**RAY_OPTIONS, "batch_images": batch_images}, **common)
    assert (run.engine, run.explained, run.failed, run.passes) == ("ray", 6, 1, local.passes)
    rows = _rows(tmp_path / "ray")
    _same_rows(rows, _rows(tmp_path / "local"))
    bad = [row for row in rows if row["status"] == "error"]
    assert [row["path"] for row in bad] == [str(folder / "bad.jpg")]
    assert str(folder / "bad.jpg") in bad[0]["error"]
    assert {row["label"] for row in rows} == {"", "cats", "dogs"}
    ray_maps, local_maps = load_maps(tmp_path / "ray"), load_maps(tmp_path / "local")
    assert sorted(ray_maps) == sorted(local_maps) == [int(row["index"]) for row in rows if row["status"] == "ok"]
    for index, saliency in local_maps.items():
        # the same jobs and arithmetic on both engines; only which images share an ONNX Runtime batch may differ,
        # which can move float32 scores in their last bits: at most one float16 step (4.9e-4 below 1.0) apart
        np.testing.assert_allclose(ray_maps[index].astype(np.float32), saliency.astype(np.float32), atol=1e-3)


def test_ray_resume_does_each_image_once(named_bundle, folder, tmp_path) -> None:
    out = tmp_path / "out"
    first = explain_dataset(named_bundle, folder, out, engine="ray", limit=3, batch_size=16, shard_size=2,
                            progress=False, ray_options=RAY_OPTIONS)
    assert first.total == 3
    before = read_index(out)
    maps_before = load_maps(out)
    run = explain_dataset(named_bundle, folder, out, engine="ray", resume=True, allow_new=True, batch_size=16,
                          shard_size=2, progress=False, ray_options=RAY_OPTIONS)
    assert (run.total, run.skipped_done, run.explained + run.failed) == (7, 3, 4)
    rows = read_index(out)
    assert sorted(int(row["index"]) for row in rows) == list(range(7))
    assert len({row["path"] for row in rows}) == 7
    assert [row for row in rows if int(row["index"]) < 3] == before
    maps = load_maps(out)
    for index, saliency in maps_before.items():
        np.testing.assert_array_equal(maps[index], saliency)


def test_ray_errors_are_one_line(named_bundle, folder, tmp_path) -> None:
    with pytest.raises(CamrtError, match="^ray_options: unknown nodes;"):
        explain_dataset(named_bundle, folder, tmp_path / "a", engine="ray", progress=False, ray_options={"nodes": 2})
    with pytest.raises(CamrtError, match="^backend: unknown backend 'tensorflow';"):  # before Ray starts
        explain_dataset(named_bundle, folder, tmp_path / "c", engine="ray", progress=False, backend="tensorflow")
    with pytest.raises(CamrtError, match="^graph_optimization must be one of") as caught:  # raised on the actor
        explain_dataset(named_bundle, folder, tmp_path / "b", engine="ray", progress=False, ray_options=RAY_OPTIONS,
                        backend_options={"graph_optimization": "fastest"})
    assert "\n" not in str(caught.value)


def test_ray_started_here_is_shut_down(named_bundle, folder, tmp_path) -> None:
    """With no Ray initialised, run_on_ray starts a local one for the run and shuts it down after."""
    ray.shutdown()
    run = explain_dataset(named_bundle, folder, tmp_path / "out", engine="ray", limit=2, progress=False,
                          ray_options={**RAY_OPTIONS, "num_cpus": 2})
    assert (run.explained, run.failed) == (1, 1)
    assert not ray.is_initialized()


def test_actors_that_fit_counts_each_live_node_alone() -> None:
    nodes = [{"Alive": True, "Resources": {"CPU": 1.0}}, {"Alive": True, "Resources": {"CPU": 3.0, "GPU": 1.0}},
             {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 8.0}}]
    assert actors_that_fit(nodes, 1, gpu=False) == 4
    assert actors_that_fit(nodes, 2, gpu=False) == 1  # 1 + 3 CPUs, but no node holds two 2-CPU actors
    assert actors_that_fit(nodes, 0.5, gpu=False) == 8
    assert actors_that_fit(nodes, 1, gpu=True) == 1


def test_too_many_actors_are_refused_in_one_line(named_bundle, folder, tmp_path) -> None:
    """The module's local Ray has 2 CPUs and one node: 3 actors of 1 CPU cannot be placed, 4 of 0.5 can."""
    with pytest.raises(CamrtError, match=r"^--actors 3: the Ray cluster's live nodes hold 2 actor\(s\) of 1 CPU each"):
        explain_dataset(named_bundle, folder, tmp_path / "a", engine="ray", progress=False,
                        ray_options={**RAY_OPTIONS, "actors": 3})
    assert not (tmp_path / "a").exists()  # a failed start leaves no run folder behind: the plain rerun works
    run = explain_dataset(named_bundle, folder, tmp_path / "b", engine="ray", limit=3, progress=False,
                          ray_options={**RAY_OPTIONS, "actors": 4, "actor_cpus": 0.5})
    assert run.explained + run.failed == 3


class _StalledRay:
    """Stands in for the ray module in the watchdog: no autoscaler status, 0 CPUs available."""

    def __init__(self) -> None:
        self.asked = threading.Event()

    def get_runtime_context(self) -> None:
        raise RuntimeError("not connected")

    def available_resources(self) -> dict[str, float]:
        self.asked.set()
        return {"CPU": 0.0, "memory": 2.0 ** 30}


def test_watchdog_names_what_ray_lacks_when_nothing_finishes(capsys) -> None:
    fake = _StalledRay()

    def results() -> Iterator[int]:
        yield 1
        assert fake.asked.wait(30)  # a result that only comes after the watchdog has spoken
        yield 2

    watchdog = Watchdog(fake, 0.2, "1 actor(s) of {CPU: 1}")
    assert list(watchdog.watch(results())) == [1, 2]
    assert watchdog.stalls >= 1
    line = capsys.readouterr().err.strip().splitlines()[0]
    assert line == ("camrt: warning: --engine ray: no image finished in 0.2 s; no pending demands reported; "
                    "available {CPU: 0, memory: 1024MB}; this run asks 1 actor(s) of {CPU: 1}")
