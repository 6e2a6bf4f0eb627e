"""Smoke test of ``python -m benchmarks.bench_explain`` on the small CNN: the JSON's shape, no timing assertions."""

from __future__ import annotations

import json

from benchmarks.bench_explain import RUNS, main


def test_bench_explain_writes_every_run_and_the_same_maps(tmp_path):
    out = tmp_path / "cpu_explain.json"
    assert main(["--cases", "smallcnn", "--images", "3", "--rounds", "1", "--threads", "1", "--out", str(out),
                 "--cache", str(tmp_path / "cache")]) == 0
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    assert row["case"] == "smallcnn" and row["channels"] == 16 and report["images"] == 3
    assert all(row[f"{name}_images_per_second"] > 0 for name in RUNS)
    assert row["ratio"] > 0 and row["ratio_batching"] > 0
    assert row["max_map_difference"] < 1e-5  # the stream explains the same maps as one image at a time
