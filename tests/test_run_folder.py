"""The run folder (run.json, --resume checks) and the one per-image record that evaluate and explain-dataset write."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camrt.cli import main
from camrt.errors import InputError
from camrt.runtime.records import FIELDS, RECORD_VERSION
from camrt.runtime.run_folder import RUN, bundle_hash, open_run, run_config
from camrt.runtime.shards import read_index

SETTINGS = {"method": "scorecam", "options": {"num_samples": 3}, "seed": 0}


def _one_line(caught: pytest.ExceptionInfo[InputError]) -> str:
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_new_folder_gets_run_json_and_a_resume_with_the_same_settings_is_accepted(named_bundle, tmp_path) -> None:
    out = tmp_path / "out"
    config = run_config(named_bundle, SETTINGS)
    assert open_run(out, config, resume=False, results=("index.csv",)) == out
    written = json.loads((out / RUN).read_text())
    assert written["record_version"] == RECORD_VERSION and "camrt_version" in written
    assert written["bundle_sha256"] == bundle_hash(named_bundle) and written["options"] == {"num_samples": 3}
    assert open_run(out, run_config(named_bundle, dict(SETTINGS)), resume=True) == out
    assert json.loads((out / RUN).read_text()) == written  # resuming leaves run.json as it was


def test_results_without_resume_and_changed_settings_are_refused(named_bundle, tmp_path) -> None:
    out = tmp_path / "out"
    open_run(out, run_config(named_bundle, SETTINGS), resume=False)
    with pytest.raises(InputError) as caught:
        open_run(out, run_config(named_bundle, SETTINGS), resume=False)
    assert "already has results; add --resume" in _one_line(caught)
    with pytest.raises(InputError) as caught:
        open_run(out, run_config(named_bundle, {**SETTINGS, "seed": 1, "method": "iscam"}), resume=True)
    assert "other settings (method, seed)" in _one_line(caught)
    other = tmp_path / "other"  # results without run.json are results too
    other.mkdir()
    (other / "index.csv").write_text("index\n")
    with pytest.raises(InputError, match="already has results"):
        open_run(other, run_config(named_bundle, SETTINGS), resume=False, results=("index.csv",))


@pytest.mark.parametrize(("run_json", "needle"), [
    (None, "has results but no run.json: not a camrt run folder"),
    ("{not json", "is not valid JSON: not a camrt run folder"),
    (json.dumps({"name": "someone else's"}), "was not written by camrt"),
    (json.dumps({"camrt_version": "0.1.0", "method": "scorecam"}), "older camrt (0.1.0, record version 1;"),
])
def test_a_foreign_or_older_folder_is_refused_in_one_line(named_bundle, tmp_path, run_json, needle) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "records.jsonl").write_text('{"file": "a.png", "score": {"prob": 0.5}}\n')
    if run_json is not None:
        (out / RUN).write_text(run_json)
    with pytest.raises(InputError) as caught:
        open_run(out, run_config(named_bundle, SETTINGS), resume=True, results=("records.jsonl",))
    message = _one_line(caught)
    assert needle in message and "--out" in message


def test_the_bundle_hash_follows_the_files(named_bundle, tmp_path) -> None:
    from camrt.runtime.bundle import Bundle

    assert bundle_hash(named_bundle) == bundle_hash(Bundle.load(named_bundle))
    assert len(bundle_hash(named_bundle)) == 64


# ---------------------------------------------------------------------------------------------- one record
def _photos(folder: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        sub = folder / f"class{i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(sub / f"{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    return folder


def test_evaluate_and_explain_dataset_use_the_same_keys_for_the_same_facts(named_bundle, tmp_path, capsys) -> None:
    data = _photos(tmp_path / "data", 3)
    common = ["--confidence", "prob-full,logit-top50", "--causal", "rise", "--threads", "1", "-q"]
    assert main(["evaluate", str(named_bundle), str(data), "--out", str(tmp_path / "ev"), "--methods", "scorecam",
                 *common]) == 2
    assert main(["explain-dataset", str(named_bundle), str(data), "--out", str(tmp_path / "ds"), "--method",
                 "scorecam", "--metrics", *common]) == 2
    capsys.readouterr()
    records = [json.loads(line) for line in (tmp_path / "ev" / "records.jsonl").read_text().splitlines()]
    with open(tmp_path / "ev" / "metrics.csv", newline="") as handle:
        metrics = list(csv.DictReader(handle))
    index = read_index(tmp_path / "ds")
    metric_columns = {f"{m}_{v}" for m in ("o", "average_drop", "increase", "change")
                      for v in ("prob-full", "logit-top50")} | {"deletion_auc_rise", "insertion_auc_rise"}
    ok_keys = set(FIELDS) | metric_columns
    assert ok_keys <= set(index[0]) and ok_keys <= set(metrics[0])
    assert list(index[0])[:len(FIELDS) + 1] == ["index", *FIELDS]
    assert list(metrics[0])[:len(FIELDS) + 2] == ["index", "method", *FIELDS]
    by_path = {row["path"]: row for row in index}
    ok = [r for r in records if r["status"] == "ok"]
    assert len(ok) == 3 and {"file", "score", "passes"}.isdisjoint(ok[0])
    for record in ok:  # the same facts, under the same keys, with the same values
        row = by_path[record["path"]]
        entry = record["methods"]["scorecam"]
        for key in ("target", "target_name", "predicted", "predicted_name", "probability", "logit"):
            assert str(record[key]) == row[key], key
        for key in metric_columns:
            assert entry[key] == pytest.approx(float(row[key]), rel=1e-5, abs=1e-9), key
        assert {"passes_run", "passes_saved", "seconds"} <= set(entry)
    bad = [r for r in records if r["status"] != "ok"]
    bad_rows = [row for row in index if row["status"] != "ok"]
    assert [r["status"] for r in bad] == [row["status"] for row in bad_rows] == ["error"]
    assert bad[0]["path"] == bad_rows[0]["path"] and "broken.png" in bad[0]["error"] and bad_rows[0]["error"]
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["skipped_images"][0]["path"] == bad[0]["path"]
