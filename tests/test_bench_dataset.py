"""Smoke test of ``python -m benchmarks.bench_dataset --quick`` on the small CNN: JSON shape, no timing assertions."""

from __future__ import annotations

import json

import pytest

from benchmarks.bench_dataset import SMALL_K, main


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench_dataset")
    out = folder / "cpu_dataset.json"
    assert main(["--quick", "--model", "small", "--threads", "1", "--memory-size", "64", "--out", str(out),
                 "--cache", str(folder / "cache")]) == 0
    return json.loads(out.read_text())


def test_throughput_rows(report):
    part = report["throughput"]
    assert [r["save_passes"] for r in part["rows"]] == [False, True]
    assert part["K"] == SMALL_K and not part["torch_imported"]
    every = part["rows"][0]
    assert every["images"] == 2 and every["failed"] == 0
    assert every["passes_per_image"] == SMALL_K + 1  # pytorch-grad-cam convention, every pass: K + the clean pass
    assert every["batches"]["masked_passes"] == 2 * SMALL_K and every["batches"]["clean_images"] == 2
    for row in part["rows"]:
        assert row["ratio_to_floor"] > 0 and row["engine_images_per_second"] > 0
        expected = row["dataset_images_per_second"] / row["floor_images_per_second"]
        assert row["ratio_to_floor"] == pytest.approx(expected, rel=1e-2)
        assert 0 < row["ratio_to_floor_in_run"] <= 1.0  # the run's own engine seconds / the run's seconds


def test_memory_figures(report):
    part = report["memory"]
    assert part["images"] == 100 and part["failed"] == 0 and not part["torch_imported"]
    assert [n for n, _ in part["rss_samples"]] == list(range(10, 101, 10))
    assert set(part["rss_at"]) == {"10", "50", "100"}
    assert part["rss_peak_mb"] >= max(rss for _, rss in part["rss_samples"]) > 0
    assert part["batches"]["masked_passes"] == part["passes"] and part["batches"]["mean_fill"] > 0.9
    assert isinstance(part["flat"], bool) and part["maps_written_mb_total"] == pytest.approx(100 * 64 * 64 * 2 / 2**20,
                                                                                             abs=0.01)
