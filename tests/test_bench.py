"""Smoke test of the benchmark machinery on the tiny model: JSON shape and map agreement, no timing assertions.

Every implementation runs in its own subprocess, as in the real benchmark; the tiny model (K = 16, 32 x 32) makes
each one take about a second.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.models import ModelSpec
from benchmarks.report import markdown
from benchmarks.run import run_bench
from benchmarks.suite import Case, Preset

TINY = {"tiny": ModelSpec("tiny:Tiny", "features", batch_size=16, input_size=32)}


@pytest.fixture(scope="module")
def result(tmp_path_factory, request):
    tests = str(Path(request.fspath).parent)
    with pytest.MonkeyPatch.context() as patch:  # the workers import tests/tiny.py through the model's factory
        patch.setenv("PYTHONPATH", tests)
        cases = [Case("tiny", "scorecam"), Case("tiny", "sscam", samples=2, saved=False, other_backends=False),
                 Case("tiny", "scorecam", mode="throughput", images=2, repeats=2, other_backends=False, peers=False)]
        return run_bench(Preset("tiny", tuple(cases)), cases, models=TINY, cache=tmp_path_factory.mktemp("bench"),
                         threads=1, log=lambda line: None, memory=False)


def test_rows_cover_every_implementation(result):
    assert not [r for r in result["rows"] if "error" in r]
    latency = {(r["method"], r["implementation"]) for r in result["rows"] if r["mode"] == "latency"}
    assert ("scorecam", "grad-cam 1.5.7 (batch 16)") in latency
    assert ("sscam", "torchcam 0.5.0 (batch 32)") in latency
    assert ("scorecam", "camrt torch, pytorch-grad-cam, every pass") in latency
    assert ("scorecam", "camrt onnxruntime, pytorch-grad-cam, passes saved") in latency
    json.dumps(result)  # JSON-ready


def test_figures_are_present_and_consistent(result):
    for row in result["rows"]:
        assert row["passes_run"] + row["passes_saved"] == 16 * row["images"] * (row["samples"] or 1)
        assert row["engine"]["passes"] == row["passes_run"]
        assert row["rss_peak_mb"] >= row["rss_before_mb"] > 0
        assert row["seconds_median"] > 0 and row["engine_efficiency"] > 0 and "vs_camrt" in row
        assert len(row["seconds"]) == row["repeats"]
    camrt_ort = [r for r in result["rows"] if r["impl"] == "camrt" and r["backend"] == "onnxruntime"]
    assert camrt_ort and not any(r["torch_imported"] for r in camrt_ort)


def test_maps_agree_with_the_named_implementation(result):
    for row in result["rows"]:
        if row["mode"] == "latency" or "diff_vs" in row:  # the camrt-only throughput base rows have no reference
            assert row["max_abs_diff"] < 1e-5, row
    sscam = [r for r in result["rows"] if r["method"] == "sscam" and r["impl"] == "camrt"]
    assert all("torchcam's noise" in r["maps_from"] for r in sscam)


def test_markdown_has_a_row_per_implementation(result):
    text = markdown(result)
    assert "### Latency" in text and "### Throughput" in text
    tables = text.split("### Targets")[0]  # the engines table after it repeats the camrt rows
    assert text.count("grad-cam 1.5.7 (batch 16)") >= 2 and tables.count("| camrt onnxruntime") == 7


def test_engine_rows_follow_the_usable_backends():
    """A case's (backend, precision) rows appear where the backend is usable, labelled with their precision."""
    from benchmarks.suite import ENGINES, rows_for

    case = Case("tiny", "scorecam", saved=False, other_backends=False, engines=ENGINES)
    labels = [row.label for row in rows_for(case, ["onnxruntime", "openvino"])]
    assert labels[:3] == ["camrt onnxruntime, pytorch-grad-cam, every pass", "camrt onnxruntime, torchcam, every pass",
                          "camrt onnxruntime int8, pytorch-grad-cam, every pass"]
    assert labels[3:6] == [f"camrt openvino{p}, pytorch-grad-cam, every pass" for p in ("", " bf16", " int8")]
    alone = [row.label for row in rows_for(case, ["onnxruntime"])]
    assert not [label for label in alone if "openvino" in label] and "int8" in alone[2]
