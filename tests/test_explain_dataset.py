"""explain-dataset: the stream batched across images, the shards and index, bad files, crashes and --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from camrt.cli import main
from camrt.runtime.evaluate import Evaluator, parse_methods
from camrt.runtime.explain_dataset import explain_dataset
from camrt.runtime.explainer import Explainer
from camrt.runtime.methods import get_convention
from camrt.runtime.plan import plan_jobs
from camrt.runtime.preprocess import preprocess
from camrt.runtime.shards import load_maps, read_index
from camrt.runtime.stream import Image, explain_stream

CASES = [
    ("scorecam", "paper", {}),
    ("scorecam", "torchcam", {}),
    ("scorecam", "pytorch-grad-cam", {}),
    ("sscam", "paper", {"num_samples": 3}),
    ("sscam", "torchcam", {"num_samples": 2}),
    ("iscam", "torchcam", {"num_samples": 3}),
    ("scorecam++", "paper", {}),
]
VOLATILE = ("seconds", "metric_seconds", "shard", "row")  # timing, and where a map landed: not results


@pytest.fixture(scope="module")
def explainer(tiny_bundle) -> Explainer:
    return Explainer(tiny_bundle, intra_op_threads=1)


def _photos(folder: Path, n: int, seed: int = 0, labels: tuple[str, ...] = ()) -> Path:
    """n random PNGs (36x44), in label subfolders when labels are given."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        sub = folder / labels[i % len(labels)] if labels else folder
        sub.mkdir(parents=True, exist_ok=True)
        PILImage.fromarray(rng.integers(0, 256, (36, 44, 3), dtype=np.uint8)).save(sub / f"{i:03d}.png")
    return folder


def _results(out: Path) -> tuple[list[dict[str, str]], dict[int, np.ndarray]]:
    rows = [{k: v for k, v in row.items() if k not in VOLATILE} for row in read_index(out)]
    return rows, load_maps(out)


# ---------------------------------------------------------------------------------------------- the stream
@pytest.mark.parametrize(("method", "convention", "options"), CASES)
def test_stream_equals_explain_on_the_stack(explainer, method, convention, options) -> None:
    """Batched across images (K=16, batch 24: most batches hold two images), results equal one explain() call on
    the stacked images, SS-CAM noise included (keyed by dataset index); every batch but the last is full."""
    x = np.random.default_rng(3).standard_normal((7, 3, 32, 32)).astype(np.float32)
    reference = explainer.explain(x, method, convention, batch_size=24, seed=5, **options)
    sizes: list[int] = []
    results = list(explain_stream(explainer, (Image(i, x[i]) for i in range(7)), method, convention, batch_size=24,
                                  seed=5, on_batch=sizes.append, **options))
    assert [r.index for r in results] == list(range(7))
    np.testing.assert_allclose(np.stack([r.saliency for r in results]), reference.saliency, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.stack([r.weights for r in results]), reference.weights, rtol=1e-5, atol=1e-7)
    assert [r.target for r in results] == reference.targets.tolist()
    assert sum(r.passes_run for r in results) == reference.passes_run
    assert sum(r.passes_saved for r in results) == reference.passes_saved
    plan = plan_jobs(explainer.clean_pass(x)[0], get_convention(method, convention, **options))
    assert sum(sizes) == plan.jobs  # the zero image's pass is not a masked-input batch
    assert all(size == 24 for size in sizes[:-1]) and 0 < sizes[-1] <= 24


def test_stream_window_is_bounded_by_the_batch(explainer) -> None:
    """Memory is bounded by the batch: however long the stream, at most batch_size + 1 images are in flight
    (pulled, not yet given back)."""
    rng = np.random.default_rng(0)
    pulled = [0]

    def images():
        for i in range(60):
            pulled[0] += 1
            yield Image(i, rng.standard_normal((3, 32, 32)).astype(np.float32))

    in_flight = []
    for done, _ in enumerate(explain_stream(explainer, images(), "scorecam", batch_size=8), start=1):
        in_flight.append(pulled[0] - done)
    assert max(in_flight) <= 8 + 1
    assert len(in_flight) == 60


def test_stream_fails_bad_images_alone(explainer) -> None:
    x = np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype(np.float32)
    nan = x[1].copy()
    nan[0, 3, 3] = np.nan
    images = [Image(0, x[0]), Image(1, nan), Image(2, x[2], target=99), Image(3, x[3], target=4)]
    results = {r.index: r for r in explain_stream(explainer, images, "scorecam", batch_size=16)}
    assert results[1].status == "error" and "NaN" in (results[1].error or "")
    assert results[2].status == "error" and "class index 99 out of range [0, 10)" in (results[2].error or "")
    good = explainer.explain(x[[0, 3]], targets=[int(results[0].target), 4], batch_size=16)
    np.testing.assert_allclose(results[0].saliency, good.saliency[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results[3].saliency, good.saliency[1], rtol=1e-5, atol=1e-6)
    assert results[3].target == 4


# ---------------------------------------------------------------------------------------------- shards and index
def test_shards_and_index_open_with_numpy_and_pandas_alone(tiny_bundle, tmp_path) -> None:
    data = _photos(tmp_path / "data", 7, labels=("a", "b"))
    (data / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    run = explain_dataset(tiny_bundle, data, out, shard_size=3, batch_size=20, progress=False,
                          backend_options={"intra_op_threads": 1})
    assert (run.explained, run.failed, run.total) == (7, 1, 8)
    assert not list(out.rglob("*.tmp"))
    script = textwrap.dedent(f"""
        import sys, numpy as np, pandas as pd
        index = pd.read_csv({str(out / "index.csv")!r})
        ok = index[index.status == "ok"].astype({{"row": int, "target": int}})  # error rows leave them empty
        assert len(index) == 8 and len(ok) == 7, index
        bad = index[index.status == "error"]
        assert bad.path.iloc[0].endswith("broken.png") and "broken.png" in bad.error.iloc[0], bad
        for shard, rows in ok.groupby("shard"):
            with np.load({str(out)!r} + "/" + shard) as z:
                assert z["saliency"].dtype == np.float16 and z["saliency"].shape[1:] == (32, 32)
                assert (z["index"][rows.row.to_numpy()] == rows["index"].to_numpy()).all()
                assert (z["target"][rows.row.to_numpy()] == rows.target.to_numpy()).all()
                assert 0 <= z["saliency"].min() and z["saliency"].max() <= 1
        assert not any(m.startswith("camrt") for m in sys.modules)
        print("ok", len(ok))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok 7", result.stderr


def test_maps_equal_explain_on_the_decoded_images(tiny_bundle, explainer, tmp_path) -> None:
    """A dataset run's float16 maps are the float32 maps of explain() on the same preprocessed files, rounded."""
    data = _photos(tmp_path / "data", 5)
    out = tmp_path / "out"
    explain_dataset(explainer, data, out, "sscam", options={"num_samples": 2}, seed=7, batch_size=12,
                    shard_size=2, progress=False)
    files = sorted(data.iterdir())
    x = np.stack([preprocess(f, explainer.bundle.manifest.preprocessing) for f in files])
    reference = explainer.explain(x, "sscam", num_samples=2, seed=7, batch_size=12)
    maps = load_maps(out)
    np.testing.assert_allclose(np.stack([maps[i] for i in range(5)]).astype(np.float32), reference.saliency,
                               atol=1e-3)  # float16 storage: half an ulp of 1.0 is 4.9e-4
    rows = read_index(out)
    assert [row["path"] for row in rows] == [str(f) for f in files]
    assert [int(row["target"]) for row in rows] == reference.targets.tolist()


def test_per_image_metrics_equal_the_evaluator(tiny_bundle, explainer, tmp_path) -> None:
    data = _photos(tmp_path / "data", 5)
    out = tmp_path / "out"
    explain_dataset(explainer, data, out, "scorecam++", confidence=("prob-full", "logit-full", "prob-top50"),
                    causal=("rise",), batch_size=16, progress=False)
    x = np.stack([preprocess(f, explainer.bundle.manifest.preprocessing) for f in sorted(data.iterdir())])
    evaluation = Evaluator(explainer, ["prob-full", "logit-full", "prob-top50"], ["rise"], batch_size=16).evaluate(
        x, parse_methods("scorecam++"))
    rows = read_index(out)
    for name, (_, _, o) in evaluation.confidence.items():
        np.testing.assert_allclose([float(r[f"o_{name}"]) for r in rows], o[0], rtol=1e-5)
    curves = evaluation.causal["rise"]
    np.testing.assert_allclose([float(r["deletion_auc_rise"]) for r in rows], curves.deletion_auc[0], rtol=1e-5)
    np.testing.assert_allclose([float(r["insertion_auc_rise"]) for r in rows], curves.insertion_auc[0], rtol=1e-5)


def test_dataset_worker_scores_the_zero_image_once_per_run(tiny_bundle, explainer) -> None:
    """Metric groups of METRIC_GROUP images share one cache: the all-zero image is one pass for the whole run."""
    from camrt.runtime.dataset_worker import METRIC_GROUP, DatasetSpec, DatasetWorker
    from camrt.runtime.prefetch import Decoded

    zero = [0]

    class Counter:
        def __init__(self, inner) -> None:
            self.inner = inner

        def logits(self, batch):
            zero[0] += batch.shape[0] == 1 and not batch.any()
            return self.inner.logits(batch)

    worker = DatasetWorker(explainer, DatasetSpec(confidence=("prob-full",), causal=("rise", "torchcam"),
                                                  batch_size=16))
    worker.metrics.cache.runner = Counter(explainer.runner)  # type: ignore[assignment]
    x = np.random.default_rng(4).standard_normal((3 * METRIC_GROUP, 3, 32, 32)).astype(np.float32)
    records = list(worker.process(Decoded(i, Path(f"{i}.png"), None, x[i]) for i in range(len(x))))
    assert [r.row["status"] for r in records] == ["ok"] * len(x)
    assert zero[0] == 1


# ---------------------------------------------------------------------------------------------- crashes and resume
def _cli(bundle: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "camrt", "explain-dataset", str(bundle), str(data), "--out", str(out), "-q",
            "--method", "sscam", "-O", "num_samples=32", "--shard-size", "5", "--threads", "1", "--workers", "1",
            *extra]


def test_sigkill_then_resume_equals_an_uninterrupted_run(tiny_bundle, tmp_path) -> None:
    data = _photos(tmp_path / "data", 120, seed=2)
    (data / "zz-corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert subprocess.run(_cli(tiny_bundle, data, whole), capture_output=True, timeout=300).returncode == 2
    process = subprocess.Popen(_cli(tiny_bundle, data, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (killed / "shards" / "shard-000002.csv").exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    committed = read_index(killed)
    assert 10 <= len(committed) < 121, "the kill must land mid-run"
    assert not (killed / "index.csv").exists()
    first = {row["path"]: row for row in committed}
    # a crash between the two renames of a shard, and a temporary left behind: resume must drop both
    np.savez(killed / "shards" / "shard-000900.npz", index=np.array([0]), saliency=np.zeros((1, 32, 32), np.float16))
    (killed / "shards" / ".shard-000901.npz.123.abcd.tmp").write_bytes(b"partial")
    result = subprocess.run(_cli(tiny_bundle, data, killed, "--resume"), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr  # 2: the corrupt file is listed
    rows, maps = _results(killed)
    expected_rows, expected_maps = _results(whole)
    assert len(rows) == 121 and len({row["path"] for row in rows}) == 121  # nothing lost, nothing twice
    assert rows == expected_rows
    assert maps.keys() == expected_maps.keys() and len(maps) == 120
    for index, saliency in expected_maps.items():  # SS-CAM noise keyed by dataset index: the same draws
        np.testing.assert_array_equal(maps[index], saliency)
    for row in read_index(killed):  # rows committed before the kill are untouched
        if row["path"] in first:
            assert row == first[row["path"]]
    assert not (killed / "shards" / "shard-000900.npz").exists() and not list(killed.rglob("*.tmp"))


def test_ctrl_c_commits_what_is_finished(tiny_bundle, explainer, tmp_path) -> None:
    data = _photos(tmp_path / "data", 12)
    out, whole = tmp_path / "out", tmp_path / "whole"
    seen: list[dict] = []

    def interrupt_after_five(row: dict) -> None:
        seen.append(row)
        if len(seen) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        explain_dataset(explainer, data, out, shard_size=100, batch_size=16, progress=False,
                        on_record=interrupt_after_five)
    assert len(read_index(out)) == 5 and (out / "index.csv").exists()
    run = explain_dataset(explainer, data, out, shard_size=100, batch_size=16, progress=False, resume=True)
    assert (run.skipped_done, run.explained) == (5, 7)
    explain_dataset(explainer, data, whole, shard_size=100, batch_size=16, progress=False)
    rows, maps = _results(out)
    expected_rows, expected_maps = _results(whole)
    assert rows == expected_rows and len(rows) == 12
    for index in expected_maps:
        np.testing.assert_array_equal(maps[index], expected_maps[index])


# ---------------------------------------------------------------------------------------------- the command line
def test_cli_resume_checks_and_exit_codes(tiny_bundle, tmp_path, capsys) -> None:
    data = _photos(tmp_path / "data", 4)
    out = tmp_path / "out"
    args = ["explain-dataset", str(tiny_bundle), str(data), "--out", str(out), "-q", "--threads", "1"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["explained"] == 4 and summary["failed"] == 0
    capsys.readouterr()
    assert main(args) == 2
    assert "already has results; add --resume" in capsys.readouterr().err
    assert main([*args, "--resume", "--method", "iscam"]) == 2
    err = capsys.readouterr().err
    assert "other settings (method)" in err and len(err.strip().splitlines()) == 1
    assert main([*args, "--resume", "-b", "7"]) == 0  # the batch size changes no result: resuming with another is fine
    assert "0 explained" in capsys.readouterr().out
    assert main([*args[:-2], "--out", str(tmp_path / "o2"), "--target", "12"]) == 2
    assert "--target: class index 12 out of range [0, 10)" in capsys.readouterr().err


def test_cli_labels_from_a_csv(named_bundle, tmp_path, capsys) -> None:
    """--target label takes each CSV row's class name; an unknown label is that row's error, not the run's."""
    data = _photos(tmp_path / "img", 3)
    files = sorted(data.iterdir())
    (tmp_path / "list.csv").write_text("path,label\n" + "".join(
        f"img/{f.name},{label}\n" for f, label in zip(files, ["class3", "class1", "zebra"])))
    out = tmp_path / "out"
    code = main(["explain-dataset", str(named_bundle), str(tmp_path / "list.csv"), "--out", str(out), "-q",
                 "--target", "label", "--metrics", "--causal", "none"])
    assert code == 2
    rows = read_index(out)
    assert [row["target"] for row in rows[:2]] == ["3", "1"] and rows[0]["target_name"] == "class3"
    assert rows[2]["status"] == "error" and "label 'zebra' is not a class of this bundle" in rows[2]["error"]
    assert "average_drop_prob-full" in rows[0] and "deletion_auc_rise" not in rows[0]
    assert "zebra" in capsys.readouterr().err
