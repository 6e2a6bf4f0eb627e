"""Issue 18's cases, each reproduced and shown fixed: no code from bundles, nothing overwritten, one writer per run,
resume keyed by content, the manifest checked against the graphs, SIGTERM committing, error texts naming paths."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from camrt.cli import main
from camrt.errors import BundleError, CamrtError, InputError
from camrt.runtime.atomic import atomic_write
from camrt.runtime.bundle import MANIFEST, Bundle, sha256_file
from camrt.runtime.explain_dataset import explain_dataset
from camrt.runtime.explainer import Explainer
from camrt.runtime.run_folder import Terminated, locked
from camrt.runtime.shards import ShardWriter, load_maps, read_index


def _photos(folder: Path, n: int, seed: int = 0, first: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(first, first + n):
        Image.fromarray(rng.integers(0, 256, (36, 44, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def _copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "bundle"))


def _edit_manifest(root: Path, **changes: Any) -> None:
    data = json.loads((root / MANIFEST).read_text())
    data.update(changes)
    (root / MANIFEST).write_text(json.dumps(data))


def _rehash(root: Path, *names: str) -> None:
    data = json.loads((root / MANIFEST).read_text())
    for name in names:
        data["files"][name] = sha256_file(root / name)
    (root / MANIFEST).write_text(json.dumps(data))


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("camrt: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _dataset(bundle: Path, data: Path, out: Path, **kwargs: Any) -> Any:
    return explain_dataset(bundle, data, out, "scorecam", shard_size=2, workers=1, progress=False,
                           backend_options={"intra_op_threads": 1}, **kwargs)


class _Payload:
    """A pickle that creates a file when loaded: what a hostile bundle's .pt2 could hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


# ------------------------------------------------------------------ 1. code from a bundle, 7. names not confined
def test_crafted_pt2_is_refused_without_trust_and_runs_nothing(named_bundle, tmp_path, capsys) -> None:
    root = _copy(named_bundle, tmp_path)
    marker = tmp_path / "pwned"
    (root / "features.pt2").write_bytes(pickle.dumps(_Payload(marker)))
    _rehash(root, "features.pt2")  # the attacker writes the hashes too
    photo = _photos(tmp_path / "photos", 1) / "000.png"
    code = main(["explain", str(root), str(photo), "--out", str(tmp_path / "out"), "--backend", "torch", "-q"])
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and "--trust-bundle" in line and "features.pt2" in line
    assert not marker.exists()
    with pytest.raises(BundleError, match="trust_pickles=True"):
        Explainer(root, backend="torch")
    assert not marker.exists()


def test_trust_flag_is_for_the_torch_backend_only(named_bundle, tmp_path, capsys) -> None:
    photo = _photos(tmp_path / "photos", 1) / "000.png"
    code = main(["explain", str(named_bundle), str(photo), "--out", str(tmp_path / "out"), "--trust-bundle", "-q"])
    assert code == 2 and "--trust-bundle" in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("name", ["../secret.txt", "/etc/hostname", "sub/../../secret.txt", "a\\..\\b"])
def test_manifest_names_outside_the_bundle_are_refused(named_bundle, tmp_path, name) -> None:
    root = _copy(named_bundle, tmp_path)
    (tmp_path / "secret.txt").write_text("secret")
    data = json.loads((root / MANIFEST).read_text())
    data["files"][name] = sha256_file(tmp_path / "secret.txt")
    (root / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="not a plain relative name inside the bundle"):
        Bundle.load(root)


def test_a_symlink_out_of_the_bundle_is_refused(named_bundle, tmp_path) -> None:
    root = _copy(named_bundle, tmp_path)
    (tmp_path / "secret.txt").write_text("secret")
    (root / "extra.txt").symlink_to(tmp_path / "secret.txt")
    data = json.loads((root / MANIFEST).read_text())
    data["files"]["extra.txt"] = sha256_file(tmp_path / "secret.txt")
    (root / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="leads out of the bundle folder"):
        Bundle.load(root)


def _external_head(root: Path) -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(root / "head.onnx"))
    onnx.save_model(model, str(root / "head.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="head.onnx.data", size_threshold=0)
    _rehash(root, "head.onnx")


def test_unlisted_external_data_is_refused_even_beside_the_working_directory(named_bundle, tmp_path,
                                                                             monkeypatch) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    expected = Explainer(named_bundle).runner.logits(x)
    root = _copy(named_bundle, tmp_path)
    _external_head(root)
    monkeypatch.chdir(root)  # ONNX Runtime would otherwise look for head.onnx.data here
    with pytest.raises(BundleError, match="head.onnx: .*list its external data in the manifest"):
        Explainer(root)
    _rehash(root, "head.onnx.data")  # listed with its hash: loaded from the verified bytes
    np.testing.assert_allclose(Explainer(root).runner.logits(x), expected, rtol=1e-5, atol=1e-5)
    data = bytearray((root / "head.onnx.data").read_bytes())
    data[:4] = b"\x00\x00\x80\x7f"  # a changed weight
    (root / "head.onnx.data").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="head.onnx.data: SHA-256 does not match"):
        Explainer(root)


def test_a_graph_swapped_after_load_is_refused(named_bundle, tmp_path) -> None:
    from camrt.runtime.backends.onnxruntime import OnnxrtRunner

    root = _copy(named_bundle, tmp_path)
    bundle = Bundle.load(root)
    (root / "features.onnx").write_bytes((root / "head.onnx").read_bytes())  # after the hashes were checked
    with pytest.raises(BundleError, match="features.onnx: SHA-256 does not match"):
        OnnxrtRunner(bundle)


# ------------------------------------------------------------------ 2. and 8. nothing overwritten
def test_explain_into_the_photos_folder_leaves_the_photos(named_bundle, tmp_path, capsys) -> None:
    photos = _photos(tmp_path / "photos", 2)
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    code = main(["explain", str(named_bundle), str(photos), "--out", str(photos), "-q"])
    assert code == 2 and "is an input image, and an output would replace it" in _one_line(capsys.readouterr().err)
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == before
    out = tmp_path / "out"  # an explain folder the user dropped a photo into, named as an output
    assert main(["explain", str(named_bundle), str(photos / "000.png"), "--out", str(out), "-q"]) == 0
    shutil.copy(photos / "001.png", out / "001.png")
    code = main(["explain", str(named_bundle), str(out / "001.png"), "--out", str(out), "-q", "--overwrite"])
    assert code == 2 and "001.png is an input image" in _one_line(capsys.readouterr().err)
    assert (out / "001.png").read_bytes() == before["001.png"]


def test_explain_keeps_earlier_maps_unless_overwrite(named_bundle, tmp_path, capsys) -> None:
    photo = _photos(tmp_path / "photos", 1) / "000.png"
    out = tmp_path / "out"
    assert main(["explain", str(named_bundle), str(photo), "--out", str(out), "-q"]) == 0
    (out / "000.npy").write_bytes(b"keep me")
    assert main(["explain", str(named_bundle), str(photo), "--out", str(out), "-q"]) == 2
    assert "add --overwrite" in _one_line(capsys.readouterr().err)
    assert (out / "000.npy").read_bytes() == b"keep me"
    assert main(["explain", str(named_bundle), str(photo), "--out", str(out), "-q", "--overwrite"]) == 0
    assert np.load(out / "000.npy").shape == (32, 32)


def test_a_foreign_out_folder_loses_nothing(named_bundle, tmp_path, capsys) -> None:
    data = _photos(tmp_path / "data", 2)
    mine = tmp_path / "mine"
    (mine / "shards").mkdir(parents=True)
    (mine / "shards" / "draft.tmp").write_text("draft")
    (mine / "summary.json").write_text("{}")
    (mine / "summary.md").write_text("notes")
    before = {p: p.read_bytes() for p in mine.rglob("*") if p.is_file()}
    for command in (["explain-dataset", "--method", "scorecam"], ["evaluate", "--methods", "scorecam"]):
        for resume in ([], ["--resume"]):
            code = main([command[0], str(named_bundle), str(data), "--out", str(mine), *command[1:], *resume, "-q"])
            assert code == 2, command
            _one_line(capsys.readouterr().err)
    assert {p: p.read_bytes() for p in mine.rglob("*") if p.is_file() and p.name != ".camrt.lock"} == before
    ev = tmp_path / "ev"  # another command's run folder
    assert main(["evaluate", str(named_bundle), str(data), "--out", str(ev), "--methods", "scorecam", "-q",
                 "--confidence", "none", "--causal", "none"]) == 0
    capsys.readouterr()
    assert main(["explain-dataset", str(named_bundle), str(data), "--out", str(ev), "--resume", "-q"]) == 2
    assert "holds the results of camrt evaluate" in _one_line(capsys.readouterr().err)


def test_export_with_a_bad_layer_leaves_the_folder(tiny_cnn, tmp_path) -> None:
    import camrt

    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "manifest.json").write_text("mine")
    with pytest.raises(CamrtError, match="no_such_layer"):
        camrt.export(tiny_cnn(), "no_such_layer", proj, input_shape=(3, 32, 32))
    assert (proj / "manifest.json").read_text() == "mine"


# ------------------------------------------------------------------ 3. one writer per run folder
def test_a_second_writer_is_refused_and_the_first_finishes(named_bundle, tmp_path) -> None:
    data, out = _photos(tmp_path / "data", 5), tmp_path / "out"
    refusals: list[str] = []

    def second_writer(row: dict[str, Any]) -> None:
        if not refusals:
            with pytest.raises(InputError, match="in use by another camrt run") as caught:
                _dataset(named_bundle, data, out, resume=True)
            refusals.append(str(caught.value))

    run = _dataset(named_bundle, data, out, on_record=second_writer)
    assert len(refusals) == 1 and "\n" not in refusals[0]
    rows = read_index(out)
    assert run.explained == 5 and sorted(int(r["index"]) for r in rows) == list(range(5))
    assert len({r["key"] for r in rows}) == 5
    with locked(out), pytest.raises(InputError, match="in use"):  # evaluate takes the same lock
        with locked(out):
            pass


def test_shards_never_replace_a_name_and_only_camrt_temporaries_go(named_bundle, tmp_path) -> None:
    target = tmp_path / "shard.csv"
    target.write_text("first")
    with pytest.raises(FileExistsError):
        atomic_write(target, lambda handle: handle.write(b"second"), replace=False)
    assert target.read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["shard.csv"]
    data, out = _photos(tmp_path / "data", 3), tmp_path / "out"
    _dataset(named_bundle, data, out, limit=1)
    (out / "shards" / "draft.tmp").write_text("user's")
    (out / "shards" / ".shard-000009.npz.77.beef.tmp").write_text("camrt's")
    _dataset(named_bundle, data, out, resume=True, allow_new=True)
    assert (out / "shards" / "draft.tmp").read_text() == "user's"
    assert not (out / "shards" / ".shard-000009.npz.77.beef.tmp").exists()


# ------------------------------------------------------------------ 4. resume keyed by content
def test_an_added_image_renumbers_nothing(named_bundle, tmp_path) -> None:
    data, out = _photos(tmp_path / "data", 3, first=1), tmp_path / "out"
    _dataset(named_bundle, data, out)
    before, maps_before = read_index(out), load_maps(out)
    _photos(data, 1, seed=5, first=0)  # 000.png sorts first: by position it would take index 0
    with pytest.raises(InputError, match="1 images the run .* did not list .*000.png.*--allow-new"):
        _dataset(named_bundle, data, out, resume=True)
    run = _dataset(named_bundle, data, out, resume=True, allow_new=True)
    assert (run.total, run.skipped_done, run.explained) == (4, 3, 1)
    rows = read_index(out)
    assert [r for r in rows if r["key"] != "000.png"] == before
    assert {r["key"]: int(r["index"]) for r in rows}["000.png"] == 3
    maps = load_maps(out)
    assert sorted(maps) == [0, 1, 2, 3]
    for index, saliency in maps_before.items():
        np.testing.assert_array_equal(maps[index], saliency)
    with np.load(next((out / "shards").glob("*.npz"))) as shard:
        assert set(shard["key"].tolist()) <= {r["key"] for r in rows}
    (data / "002.png").unlink()
    with pytest.raises(InputError, match="1 images gone"):
        _dataset(named_bundle, data, out, resume=True, allow_new=True)


def test_the_same_data_through_a_symlink_resumes(named_bundle, tmp_path) -> None:
    data, out = _photos(tmp_path / "data", 3), tmp_path / "out"
    (tmp_path / "alias").symlink_to(data)
    _dataset(named_bundle, tmp_path / "alias", out)
    before = read_index(out)
    run = _dataset(named_bundle, data, out, resume=True)
    assert (run.skipped_done, run.explained) == (3, 0)
    assert read_index(out) == before and {r["key"] for r in before} == {"000.png", "001.png", "002.png"}
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["data_root"] == os.path.realpath(data) and len(run_json["listing_sha256"]) == 64


# ------------------------------------------------------------------ 5. the manifest against the graphs
@pytest.mark.parametrize("changes,message", [
    ({"class_names": ["a", "b"]}, "class_names has 2 names for 5 classes"),
    ({"class_names": [1, 2, 3, 4, 5]}, "class_names must be a list of strings"),
    ({"num_classes": -3}, r"num_classes must hold integers in \[1, "),
    ({"activation_shape": [10**9, 8, 8]}, r"activation_shape must hold integers in \[1, 65536\]"),
    ({"input_shape": [3, 100000, 100000]}, r"input_shape must hold integers in \[1, 8192\]"),
])
def test_malformed_manifests_are_one_line(named_bundle, tmp_path, changes, message) -> None:
    root = _copy(named_bundle, tmp_path)
    data = json.loads((root / MANIFEST).read_text())
    if "input_shape" in changes:
        data["preprocessing"]["crop"] = changes["input_shape"][1:]
    _edit_manifest(root, **{**data, **changes})
    with pytest.raises(BundleError, match=message) as caught:
        Bundle.load(root)
    assert "\n" not in str(caught.value)


def test_a_manifest_that_disagrees_with_the_graphs_is_refused(named_bundle, tmp_path) -> None:
    root = _copy(named_bundle, tmp_path)
    data = json.loads((root / MANIFEST).read_text())
    data["num_classes"], data["class_names"] = 7, [f"c{i}" for i in range(7)]
    (root / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"head.onnx: its output is \['batch', 5\], the manifest says \[batch, 7\]"):
        Explainer(root)
    data["num_classes"], data["class_names"] = 5, None
    data["input_shape"], data["preprocessing"]["crop"] = [3, 40, 40], [40, 40]
    (root / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="features.onnx: its input is"):
        Explainer(root)


def test_a_huge_batch_size_is_one_line(named_bundle, tmp_path, capsys) -> None:
    photo = _photos(tmp_path / "photos", 1) / "000.png"
    code = main(["explain", str(named_bundle), str(photo), "--out", str(tmp_path / "o"), "--batch-size", "10000000"])
    assert code == 2 and "--batch-size" in _one_line(capsys.readouterr().err)
    with pytest.raises(InputError, match=r"batch_size: must be an integer in \[1, 4096\]"):
        Explainer(named_bundle).explain(np.zeros((1, 3, 32, 32), np.float32), "scorecam", batch_size=10_000_000)


# ------------------------------------------------------------------ 6. SIGTERM commits what was finished
def _terminate_after(n: int) -> Any:
    seen = [0]

    def hook(*_: Any) -> None:
        seen[0] += 1
        if seen[0] == n:
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


def test_sigterm_commits_the_finished_images(named_bundle, tmp_path, monkeypatch, capsys) -> None:
    data, out = _photos(tmp_path / "data", 6), tmp_path / "out"
    with pytest.raises(Terminated):
        _dataset(named_bundle, data, out, on_record=_terminate_after(3))
    assert len(read_index(out)) >= 3  # the shard being collected was committed
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    run = _dataset(named_bundle, data, out, resume=True)
    assert run.skipped_done >= 3 and len(read_index(out)) == 6
    from camrt.cli import evaluate

    append = evaluate._append
    hook = _terminate_after(2)
    monkeypatch.setattr(evaluate, "_append", lambda path, record: (append(path, record), hook()))
    ev = tmp_path / "ev"
    argv = ["evaluate", str(named_bundle), str(data), "--out", str(ev), "--methods", "scorecam", "-q",
            "--confidence", "none", "--causal", "none"]
    assert main(argv) == 143
    assert len((ev / "records.jsonl").read_text().splitlines()) == 2
    monkeypatch.setattr(evaluate, "_append", append)
    assert main([*argv, "--resume"]) == 0
    assert len((ev / "records.jsonl").read_text().splitlines()) == 6
    assert "terminated" in capsys.readouterr().err


# ------------------------------------------------------------------ 7. error texts name the path
def test_a_full_disk_names_the_shard(tmp_path, monkeypatch) -> None:
    from camrt.runtime import shards

    writer = ShardWriter(tmp_path / "out", 4)
    writer.add({"index": 0, "key": "a.png", "path": "a.png", "status": "ok", "target": 1},
               np.zeros((4, 4)), np.zeros(3))

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shards.os, "fsync", full)
    with pytest.raises(OSError, match=r"No space left on device: '.*shards/shard-000000.npz'"):
        writer.commit()
    assert not list((tmp_path / "out" / "shards").iterdir())


def test_symlink_loops_are_named(named_bundle, tmp_path, capsys) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(BundleError, match="loop: bundle directory a symlink loop"):
        Bundle.load(loop)
    code = main(["explain-dataset", str(named_bundle), str(loop), "--out", str(tmp_path / "o"), "-q"])
    assert code == 2 and "symlink loop" in _one_line(capsys.readouterr().err)


def test_a_corrupt_shard_csv_is_one_line_naming_it(named_bundle, tmp_path) -> None:
    data, out = _photos(tmp_path / "data", 3), tmp_path / "out"
    _dataset(named_bundle, data, out, limit=2)
    shard = out / "shards" / "shard-000000.csv"
    shard.write_text("garbage,more\n1,2\n")
    with pytest.raises(InputError, match=r"shard-000000.csv: not a camrt shard index \(no index, key, status column"):
        _dataset(named_bundle, data, out, resume=True, allow_new=True)


def test_a_second_explain_into_a_folder_in_use_is_refused(named_bundle, tmp_path, capsys) -> None:
    photos = _photos(tmp_path / "photos", 2)
    out = tmp_path / "out"
    with locked(out):  # another run holds the folder
        code = main(["explain", str(named_bundle), str(photos), "--out", str(out), "-q"])
    assert code == 2 and "in use by another camrt run" in _one_line(capsys.readouterr().err)
    assert not list(out.glob("*.npy"))  # it wrote nothing
    assert main(["explain", str(named_bundle), str(photos), "--out", str(out), "-q"]) == 0  # free again: it runs


def test_evaluate_resume_is_keyed_by_content(named_bundle, tmp_path, capsys) -> None:
    data, out = _photos(tmp_path / "data", 2), tmp_path / "eval"
    argv = ["evaluate", str(named_bundle), str(data), "--out", str(out), "-q", "--overlays", "0"]
    assert main([*argv, "--allow-new"]) == 2 and "--allow-new: only with --resume" in _one_line(
        capsys.readouterr().err)
    assert not out.exists()  # refused before anything was made
    assert main(argv) == 0
    first = (out / "records.jsonl").read_bytes()
    _photos(data, 1, seed=7, first=2)  # an image added to DATA
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 2 and "--allow-new" in _one_line(capsys.readouterr().err)
    link = tmp_path / "link"
    link.symlink_to(data, target_is_directory=True)  # the same data through another path
    assert main([*argv[:2], str(link), *argv[3:], "--resume", "--allow-new"]) == 0
    lines = (out / "records.jsonl").read_bytes()
    assert lines.startswith(first)  # nothing done again, nothing rewritten
    records = [json.loads(line) for line in lines.splitlines()]
    assert [(r["index"], r["key"]) for r in records][2:] == [(2, "002.png")] and len(records) == 3
