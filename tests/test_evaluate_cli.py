"""``camrt evaluate``: data layouts, the files it writes, bad input, and --resume after a crash."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camrt.cli import main
from camrt.runtime.dataset import Item, discover, label_index

SIZE, CLASSES = 32, 5
NAMES = [f"class{i}" for i in range(CLASSES)]


@pytest.fixture(scope="module")
def bundle(named_bundle) -> Path:
    """A tiny random CNN (K=8 at 8x8, 5 named classes) exported to a real bundle."""
    return named_bundle


def _photo(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """ImageFolder layout: class0/ and class3/ with two photos each, one photo at the top (no label)."""
    root = tmp_path / "data"
    for i, name in enumerate(["class0/a.png", "class0/b.jpg", "class3/c.png", "class3/d.png", "top.png"]):
        _photo(root / name, i)
    return root


def _run(argv: list, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


ARGS = ["--methods", "scorecam,scorecam++", "--causal", "rise,torchcam", "--threads", "1", "-q"]


def test_evaluate_writes_tables_plots_and_overlays(bundle, image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = _run(["evaluate", bundle, image_folder, "--out", out, "--overlays", "2", *ARGS], capsys)
    assert code == 0, err
    assert {"records.jsonl", "run.json", "metrics.csv", "summary.md", "summary.json", "curves-rise.png",
            "curves-torchcam.png", "overlays"} <= {p.name for p in out.iterdir()}
    assert len(list((out / "overlays").iterdir())) == 2
    with Image.open(out / "curves-rise.png") as plot:
        assert plot.size[0] > 500
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 5 * 2 and {r["method"] for r in rows} == {"scorecam", "scorecam++"}
    assert {r["label"] for r in rows} == {"class0", "class3", ""}
    for column in ("average_drop_prob-full", "increase_prob-top50", "o_logit-full", "deletion_auc_rise",
                   "insertion_auc_torchcam", "passes_run"):
        assert column in rows[0]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["images"], summary["evaluated"], summary["skipped"]) == (5, 5, 0)
    metrics = {(r["metric"], r["variant"]) for r in summary["metrics"]}
    assert ("Average Drop %", "prob-top50") in metrics and ("Insertion AUC", "torchcam") in metrics
    assert ("Win % (multi-way)", "logit-full") in metrics
    for row in summary["metrics"]:
        if row["metric"].startswith("Win"):
            assert sum(row["values"].values()) == pytest.approx(100.0)
    assert summary["variants"]["rise"].startswith("prob of the predicted class")
    assert "| Deletion AUC ↓ | rise |" in stdout and "| Average Drop % ↓ | prob-full |" in stdout
    assert stdout == (out / "summary.md").read_text() + f"results: {out} ({summary['seconds']:.1f} s)\n"


def test_bad_images_are_skipped_and_listed(bundle, image_folder, tmp_path, capsys):
    (image_folder / "class0" / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    code, stdout, err = _run(["evaluate", bundle, image_folder, "--out", out, "--causal", "none",
                              "--methods", "scorecam", "-q"], capsys)
    assert code == 2
    assert "broken.png" in err and "skipped" in err and "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["evaluated"], summary["skipped"]) == (5, 1)
    assert "broken.png" in summary["skipped_images"][0]["path"]
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["status"] for r in rows].count("error") == 1


def test_resume_redoes_only_what_a_crash_lost(bundle, image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["evaluate", bundle, image_folder, "--out", out, *ARGS]
    assert _run(argv, capsys)[0] == 0
    complete = (out / "records.jsonl").read_bytes()
    full_summary = json.loads((out / "summary.json").read_text())
    lines = complete.splitlines(keepends=True)
    (out / "records.jsonl").write_bytes(b"".join(lines[:3]) + lines[3][:40])  # a crash mid-write of image 4
    code, _, err = _run(argv, capsys)
    assert code == 2 and "--resume" in err  # without --resume, finished results are never overwritten
    code, _, err = _run([*argv, "--resume"], capsys)
    assert code == 0, err
    resumed = [json.loads(line) for line in (out / "records.jsonl").read_bytes().splitlines()]
    assert sorted(r["index"] for r in resumed) == [0, 1, 2, 3, 4]  # nothing lost, nothing twice
    originals = {json.loads(line)["index"]: json.loads(line) for line in complete.splitlines()}
    for record in resumed:
        if record["index"] < 3:
            assert record == originals[record["index"]]  # kept, not recomputed
    again = json.loads((out / "summary.json").read_text())
    for before, after in zip(full_summary["metrics"], again["metrics"]):
        for method, value in before["values"].items():
            assert after["values"][method] == pytest.approx(value, rel=1e-6, abs=1e-9)
    code, _, err = _run(["evaluate", bundle, image_folder, "--out", out, "--methods", "scorecam,scorecam++",
                         "--causal", "rise", "-q", "--resume"], capsys)
    assert code == 2 and "other settings (causal)" in err


def test_target_label_uses_the_folder_names(bundle, image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = _run(["evaluate", bundle, image_folder, "--out", out, "--target", "label", "--causal", "none",
                         "--methods", "scorecam", "-q"], capsys)
    assert code == 2 and "top.png: no label" in err  # the unlabelled photo is skipped, the others explained
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    for record in records:
        if record["status"] == "ok":
            assert record["target"] == NAMES.index(record["label"])


def test_target_class_by_name_or_index(bundle, image_folder, tmp_path, capsys):
    """--target CLASS, as in explain and explain-dataset: every image explains that class, labelled or not."""
    for given in ("class3", "3"):
        out = tmp_path / given
        code, _, err = _run(["evaluate", bundle, image_folder, "--out", out, "--target", given, "--causal", "none",
                             "--methods", "scorecam", "-q"], capsys)
        assert code == 0, err
        records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
        assert len(records) == 5 and {(r["status"], r["target"]) for r in records} == {("ok", 3)}


@pytest.mark.parametrize("argv, needle", [
    (["--methods", "gradcam"], "unknown method 'gradcam'"),
    (["--confidence", "prob-half"], "confidence variant"),
    (["--causal", "lime"], "expected rise or torchcam"),
    (["--option", "num_samples=3"], "no method in --methods takes it"),
    (["--overlays", "-1"], "--overlays: must be 0 or more"),
    (["--target", "label", "--step", "0"], "--step"),
])
def test_bad_arguments_give_one_line(bundle, image_folder, tmp_path, capsys, argv, needle):
    code, _, err = _run(["evaluate", bundle, image_folder, "--out", tmp_path / "o", *argv], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("camrt: error: ") and needle in lines[0], err


def test_missing_data_names_itself(bundle, tmp_path, capsys):
    code, _, err = _run(["evaluate", bundle, tmp_path / "nowhere", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "nowhere: no such file or folder" in err


# ---------------------------------------------------------------------------------------------- data layouts
def test_discover_csv_with_and_without_header(tmp_path):
    a, b = _photo(tmp_path / "imgs" / "a.png", 0), _photo(tmp_path / "imgs" / "b.png", 1)
    (tmp_path / "with.csv").write_text("path,label\nimgs/a.png,class1\nimgs/b.png,\n")
    (tmp_path / "without.csv").write_text(f"{a},2\n{b},class4\n")
    assert discover(tmp_path / "with.csv") == [Item(a, "class1"), Item(b, None)]
    assert discover(tmp_path / "without.csv") == [Item(a, "2"), Item(b, "class4")]
    assert discover(str(tmp_path / "imgs" / "*.png")) == [Item(a), Item(b)]


def test_label_index_accepts_indices_and_names(bundle):
    from camrt.runtime.bundle import Bundle

    b = Bundle.load(bundle)
    assert [label_index(v, b) for v in ("3", "class2", "CLASS1", "cat", "7", None)] == [3, 2, 1, None, None, None]


def test_a_bad_csv_names_itself(bundle, tmp_path, capsys):
    (tmp_path / "empty.csv").write_text("\n")
    (tmp_path / "holes.csv").write_text("path,label\n\na.png,1\n,2\n")  # a blank line still counts
    for name, needle in (("empty.csv", "empty.csv: the CSV has no rows"),
                         ("holes.csv", "holes.csv: line 4 has no image path")):
        code, _, err = _run(["evaluate", bundle, tmp_path / name, "--out", tmp_path / "o"], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and needle in lines[0], err
