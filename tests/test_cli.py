"""The ``camrt`` command line, in-process through ``main(argv)`` and as real ``python -m camrt`` subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camrt.cli import build_parser, main
from camrt.cli.args import parse_options, resolve_target
from camrt.cli.explain import collect_images, output_stems
from camrt.errors import InputError
from camrt.runtime.bundle import Bundle
from camrt.runtime.explainer import Explainer
from camrt.runtime.preprocess import preprocess

SIZE, CLASSES = 32, 5
NAMES = [f"class{i}" for i in range(CLASSES)]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def bundle(named_bundle) -> Path:
    return named_bundle


@pytest.fixture
def photos(tmp_path) -> Path:
    """A folder with two photos of different sizes (random pixels: any picture will do for a random model)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(folder / "wide.jpg")
    Image.fromarray(rng.integers(0, 256, (50, 36, 3), dtype=np.uint8)).save(folder / "tall.png")
    return folder


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_error_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("camrt: error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_explain_writes_maps_overlays_and_summary(bundle, photos, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code, stdout, err = _run(["explain", bundle, photos, "--method", "scorecam", "--convention", "paper",
                              "--out", out, "--threads", "1", "-q"], capsys)
    assert code == 0, err
    assert "explained 2 of 2 images" in stdout
    assert sorted(p.name for p in out.iterdir()) == [".camrt.lock", "run.json", "summary.json", "tall.npy", "tall.png",
                                                     "wide.npy", "wide.png"]
    for stem in ("tall", "wide"):
        saliency = np.load(out / f"{stem}.npy")
        assert saliency.shape == (SIZE, SIZE) and saliency.dtype == np.float32
        assert saliency.min() >= 0 and saliency.max() <= 1
        with Image.open(out / f"{stem}.png") as image:  # --overlay original (the default): at the photo's size
            assert image.size == {"tall": (36, 50), "wide": (60, 40)}[stem] and image.mode == "RGB"
    summary = json.loads((out / "summary.json").read_text())
    assert {"method", "convention", "backend", "model", "layer", "images", "totals"} <= set(summary)
    assert (summary["method"], summary["convention"], summary["backend"]) == ("scorecam", "paper", "onnxruntime")
    assert [Path(r["path"]).name for r in summary["images"]] == ["tall.png", "wide.jpg"]  # sorted by name
    for record in summary["images"]:
        assert record["status"] == "ok"
        assert 0 <= record["predicted"] < CLASSES and record["predicted_name"] == NAMES[record["predicted"]]
        assert record["target"] == record["predicted"] and 0 < record["probability"] <= 1
        assert 1 <= record["passes_run"] + record["passes_saved"] <= 8 and record["seconds"] >= 0  # K = 8
    totals = summary["totals"]
    assert (totals["images"], totals["explained"], totals["skipped"]) == (2, 2, 0)
    assert totals["passes_run"] == sum(r["passes_run"] for r in summary["images"])


def test_bad_images_are_skipped_and_reported(bundle, photos, tmp_path, capsys) -> None:
    (photos / "broken.jpg").write_bytes(np.random.default_rng(1).bytes(400))
    (photos / "notes.txt").write_text("not listed: folders give only image files")
    out = tmp_path / "out"
    code, stdout, err = _run(["explain", bundle, photos, tmp_path / "gone.png", "--out", out, "-q"], capsys)
    assert code == 2
    assert "broken.jpg: not an image" in err and "gone.png: file not found" in err and "Traceback" not in err
    assert {"tall.npy", "tall.png", "wide.npy", "wide.png", "summary.json"} <= {p.name for p in out.iterdir()}
    assert not (out / "broken.npy").exists()
    summary = json.loads((out / "summary.json").read_text())
    by_name = {Path(r["path"]).name: r for r in summary["images"]}
    assert set(by_name) == {"broken.jpg", "tall.png", "wide.jpg", "gone.png"}
    assert by_name["broken.jpg"]["status"] == "error" and "broken.jpg" in by_name["broken.jpg"]["error"]
    assert by_name["gone.png"]["status"] == "error"
    assert (summary["totals"]["explained"], summary["totals"]["skipped"]) == (2, 2)
    assert "2 skipped" in stdout


def test_target_by_index_and_name_and_noise_options(bundle, photos, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code, _, err = _run(["explain", bundle, photos / "wide.jpg", "--out", out, "--target", "class3", "-q",
                         "--method", "sscam", "--convention", "torchcam", "-O", "num_samples=2", "--seed", "7"], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    record = summary["images"][0]
    assert (record["target"], record["target_name"], summary["seed"]) == (3, "class3", 7)
    first = np.load(out / "wide.npy")
    code, _, err = _run(["explain", bundle, photos / "wide.jpg", "--out", out, "--target", "3", "-q", "--overwrite",
                         "--method", "sscam", "--convention", "torchcam", "-O", "num_samples=2", "--seed", "7"], capsys)
    assert code == 0, err
    np.testing.assert_array_equal(np.load(out / "wide.npy"), first)  # same seed, same map


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--target", "5"], ["--target", "out of range [0, 5)"]),
        (["--target", "-1"], ["--target", "out of range"]),
        (["--target", "clas3"], ["--target", "'class3'"]),
        (["--convention", "nope"], ["convention", "'nope'", "paper"]),
        (["--method", "gradcam"], ["--method", "'gradcam'"]),
        (["-O", "bogus=1"], ["bogus", "scorecam"]),
        (["--batch-size", "0"], ["--batch-size"]),
        (["--backend", "tensorrt"], ["--backend"]),
    ],
)
def test_bad_arguments_give_one_line(bundle, photos, tmp_path, capsys, extra, needles) -> None:
    out = tmp_path / "out"
    code, _, err = _run(["explain", bundle, photos, "--out", out, "-q", *extra], capsys)
    assert code == 2
    _one_error_line(err, *needles)
    assert not out.exists() or not any(out.iterdir())  # argument errors stop before any output


def test_missing_bundle_is_one_line(tmp_path, photos, capsys) -> None:
    missing = tmp_path / "no-bundle"
    for argv in (["info", missing], ["explain", missing, photos, "--out", tmp_path / "out"]):
        code, _, err = _run(argv, capsys)
        assert code == 2
        _one_error_line(err, str(missing), "not found")


def test_debug_shows_the_traceback(tmp_path) -> None:
    from camrt.errors import BundleError

    for argv in (["--debug", "info", str(tmp_path)], ["info", str(tmp_path), "--debug"]):
        with pytest.raises(BundleError):
            main(argv)


def test_info_prints_the_manifest(bundle, capsys) -> None:
    code, stdout, _ = _run(["info", bundle], capsys)
    assert code == 0
    for needle in ("tiny-cli", "features", "3 x 32 x 32", "8 x 8 x 8", "5 (class0", "opset", "verification",
                   "features.onnx", "head.onnx"):
        assert needle in stdout
    code, stdout, _ = _run(["info", bundle, "--json"], capsys)
    assert code == 0 and json.loads(stdout)["model_name"] == "tiny-cli"


def test_help_version_and_usage(capsys) -> None:
    assert main(["--version"]) == 0
    assert main(["explain", "--help"]) == 0
    assert "scorecam++" in capsys.readouterr().out
    code, _, err = _run([], capsys)
    assert code == 2
    _one_error_line(err, "COMMAND")


def test_input_collection_and_output_names(tmp_path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("b.JPG", "a.png", ".hidden.png", "readme.md"):
        (folder / name).write_bytes(b"")
    (folder / "sub").mkdir()
    warnings: list[str] = []
    assert [i.path.name for i in collect_images([folder, tmp_path / "x.txt"], warnings.append)] == ["a.png", "b.JPG",
                                                                                                      "x.txt"]
    collect_images([folder, folder / "sub"], warnings.append)
    assert warnings == [f"{folder / 'sub'}: no images in this folder"]
    files = [Path("a/cat.jpg"), Path("b/cat.png"), Path("c/Cat.jpg"), Path("summary.png")]
    assert output_stems(files) == ["cat", "cat-2", "Cat-3", "summary-2"]


# ---------------------------------------------------------------------------------------------- shared flags
DATA_COMMANDS = ("explain", "evaluate", "explain-dataset")


@pytest.mark.parametrize("command", DATA_COMMANDS)
def test_shared_flags_parse_the_same_in_every_subcommand(bundle, command) -> None:
    """--seed, --target, -O, the backend, output and progress flags: one default and one reading everywhere."""
    def parse(*extra: str):
        return build_parser().parse_args([command, str(bundle), "data", "--out", "o", *extra])

    args = parse()
    assert (args.seed, args.target, args.option, args.batch_size, args.limit, args.quiet) == (0, "predicted", [], 64,
                                                                                             None, False)
    assert (args.backend, args.device, args.precision, args.threads) == ("onnxruntime", None, "fp32", None)
    assert hasattr(args, "resume") == (command != "explain")  # explain writes per-image files: nothing to resume
    loaded = Bundle.load(bundle)
    for given, expected in (("predicted", "predicted"), ("label", "label"), ("3", 3), ("class3", 3)):
        assert resolve_target(parse("--target", given).target, loaded) == expected
        assert resolve_target(parse("-t", given).target, loaded) == expected
    args = parse("-O", "num_samples=3", "--option", "iscam.std=0.5", "--seed", "7", "-b", "5", "-q", "--limit", "2")
    assert (args.option, args.seed, args.batch_size, args.quiet, args.limit) == (
        ["num_samples=3", "iscam.std=0.5"], 7, 5, True, 2)


def test_one_option_parser_for_every_command() -> None:
    assert parse_options(["num_samples=3", "std=2.0", "gate=tanh", "num-samples=4"]) == {
        "num_samples": 4, "std": 2.0, "gate": "tanh"}
    assert parse_options(["iscam.num_samples=3", "std=0.5"]) == {"iscam.num_samples": 3, "std": 0.5}
    assert parse_options(["iscam.num_samples=3", "std=0.5"], "iscam") == {"num_samples": 3, "std": 0.5}
    assert parse_options(["scorecam++.gate=mish"], "scorecam++") == {"gate": "mish"}
    with pytest.raises(InputError, match="'sscam' is not the method of this run \\(iscam\\)"):
        parse_options(["sscam.std=1"], "iscam")
    for bad in ("num_samples", "=3", "iscam.=3"):
        with pytest.raises(InputError, match="expected \\[METHOD.\\]KEY=VALUE"):
            parse_options([bad])


@pytest.mark.parametrize("command, extra, needle", [
    ("explain", ["--method", "iscam", "-O", "sscam.num_samples=2"], "'sscam' is not the method of this run (iscam)"),
    ("explain-dataset", ["-O", "iscam.num_samples=2"], "'iscam' is not the method of this run (scorecam)"),
    ("evaluate", ["--methods", "iscam", "-O", "nope.num_samples=2"], "unknown method 'nope'"),
    ("explain", ["-O", "num_samples"], "expected [METHOD.]KEY=VALUE"),
    ("evaluate", ["-O", "num_samples"], "expected [METHOD.]KEY=VALUE"),
])
def test_option_prefix_errors_are_one_line(bundle, photos, tmp_path, capsys, command, extra, needle) -> None:
    code, _, err = _run([command, bundle, photos, "--out", tmp_path / "out", "-q", *extra], capsys)
    assert code == 2
    _one_error_line(err, needle)


def test_prefixed_option_reaches_the_method(bundle, photos, tmp_path, capsys) -> None:
    """-O sscam.num_samples=2 on an sscam run is num_samples=2: the same maps as the unprefixed option."""
    maps = []
    for option in ("num_samples=2", "sscam.num_samples=2"):
        out = tmp_path / option
        code, _, err = _run(["explain", bundle, photos / "wide.jpg", "--out", out, "-q", "-m", "sscam", "-O", option],
                            capsys)
        assert code == 0, err
        assert json.loads((out / "summary.json").read_text())["options"] == {"num_samples": 2}
        maps.append(np.load(out / "wide.npy"))
    np.testing.assert_array_equal(maps[0], maps[1])


# ---------------------------------------------------------------------------------------------- explain, many images
def _tree(root: Path) -> list[Path]:
    """Photos at the top, in class1/ and in class3/deeper/ (an ImageFolder tree), of several sizes."""
    rng = np.random.default_rng(5)
    paths = [root / "top.png", root / "class1" / "a.png", root / "class1" / "b.jpg",
             root / "class3" / "deeper" / "c.png", root / "class3" / "a.png"]
    for i, path in enumerate(paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (34 + 3 * i, 40 - 2 * i, 3), dtype=np.uint8)).save(path)
    return paths


def test_explain_recurses_into_subfolders_and_takes_their_labels(bundle, tmp_path, capsys) -> None:
    paths = _tree(tmp_path / "data")
    out = tmp_path / "out"
    code, stdout, err = _run(["explain", bundle, tmp_path / "data", "--out", out, "-q"], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(r["path"] for r in summary["images"]) == sorted(str(p) for p in paths)
    assert "explained 5 of 5 images" in stdout
    assert {p.name for p in out.iterdir()} == {".camrt.lock", "run.json", "summary.json",
                                               *(f"{s}.{e}" for s in ("top", "a", "b", "c", "a-2")
                                                                  for e in ("npy", "png"))}
    code, _, err = _run(["explain", bundle, tmp_path / "data", paths[1], "--out", tmp_path / "labels", "-q",
                         "--target", "label"], capsys)
    assert code == 2  # top.png (in no subfolder) and a file given by itself have no label
    assert "top.png: no label" in err and err.count("no label") == 2
    records = json.loads((tmp_path / "labels" / "summary.json").read_text())["images"]
    assert [r["status"] for r in records] == ["error", "ok", "ok", "ok", "ok", "error"]
    for record in records:
        if record["status"] == "ok":
            assert record["target_name"] == Path(record["path"]).relative_to(tmp_path / "data").parts[0]
    assert list(records[1]) == ["path", "status", "error", "target", "target_name", "predicted", "predicted_name",
                                "probability", "logit", "passes_run", "passes_saved", "seconds", "orientation",
                                "mode", "upscaled", "warning", "saliency", "overlay"]


@pytest.mark.parametrize("method, convention, options", [
    ("scorecam", "paper", []), ("scorecam++", "paper", []), ("iscam", "torchcam", ["-O", "num_samples=2"]),
])
def test_explain_many_equals_each_alone(bundle, tmp_path, capsys, method, convention, options) -> None:
    """Batches filled across images (K=8, batch 5) give each image the map explain() gives it alone."""
    paths = _tree(tmp_path / "data")
    out = tmp_path / "out"
    code, _, err = _run(["explain", bundle, tmp_path / "data", "--out", out, "-q", "-b", "5", "--threads", "1",
                         "-m", method, "-c", convention, *options], capsys)
    assert code == 0, err
    records = {r["path"]: r for r in json.loads((out / "summary.json").read_text())["images"]}
    explainer = Explainer(bundle, intra_op_threads=1)
    kwargs = parse_options(options[1:])
    for path in paths:
        record = records[str(path)]
        alone = explainer.explain(preprocess(path, explainer.bundle.manifest.preprocessing)[None], method, convention,
                                  batch_size=5, **kwargs)
        np.testing.assert_allclose(np.load(out / record["saliency"]), alone.saliency[0], rtol=1e-5, atol=1e-6)
        assert (record["target"], record["passes_run"], record["passes_saved"]) == (
            int(alone.targets[0]), alone.passes_run, alone.passes_saved)
        probs = alone.probabilities[0]
        assert record["probability"] == pytest.approx(float(probs[record["target"]]), rel=1e-5)
        assert record["logit"] == pytest.approx(float(alone.logits[0][record["target"]]), rel=1e-5, abs=1e-6)


def _blocked_torch(tmp_path: Path) -> dict[str, str]:
    """An environment where ``import torch`` fails, as on a machine with only onnxruntime."""
    fake = tmp_path / "no_torch"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'torch' (blocked by the test)\", name='torch')\n"
    )
    path = os.pathsep.join([str(fake), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


def test_subprocess_explain_and_info_without_torch(bundle, photos, tmp_path) -> None:
    env = _blocked_torch(tmp_path)
    run = [sys.executable, "-m", "camrt"]
    result = subprocess.run([*run, "explain", str(bundle), str(photos), "--out", "out", "--threads", "1"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "summary.json").is_file() and (tmp_path / "out" / "wide.png").is_file()
    result = subprocess.run([*run, "info", str(bundle)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "tiny-cli" in result.stdout, result.stderr
    result = subprocess.run([*run, "evaluate", str(bundle), str(photos), "--out", "ev", "--threads", "1", "-q",
                             "--methods", "scorecam,iscam", "-O", "num_samples=2"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ev" / "summary.md").is_file() and (tmp_path / "ev" / "curves-rise.png").is_file()
    result = subprocess.run([*run, "explain-dataset", str(bundle), str(photos), "--out", "ds", "--threads", "1", "-q",
                             "--metrics"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ds" / "index.csv").is_file() and (tmp_path / "ds" / "shards" / "shard-000000.npz").is_file()
    result = subprocess.run([*run, "export", "resnet18", "--out", "b"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    _one_error_line(result.stderr, "torch")


def test_export_prints_the_bundle_summary(tmp_path, monkeypatch, capsys) -> None:
    """The export command with load_model stubbed: MODEL, --weights and the model's defaults reach export()."""
    torch = pytest.importorskip("torch")
    try:
        import camrt.exporter  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"camrt.exporter is not importable ({exc})")
    calls = []

    def load_model(spec, weights=None, random_weights=False):
        calls.append((spec, weights))
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                                    torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
        info = {"name": "stub", "class_names": ["a", "b", "c"], "mean": (0.5, 0.5, 0.5), "std": (0.2, 0.2, 0.2),
                "input_size": 24, "random_weights": random_weights}
        return model, info

    stub = types.ModuleType("camrt.exporter.models")
    stub.load_model = load_model  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "camrt.exporter.models", stub)
    out = tmp_path / "bundle"
    code, stdout, err = _run(["export", "stub-model", "--layer", "1", "--out", out, "--weights", "w.pt"], capsys)
    assert code == 0, err
    assert calls == [("stub-model", "w.pt")]
    for needle in ("model:        stub", "layer:        1", "3 x 24 x 24", "4 x 24 x 24", "max abs error", "seconds"):
        assert needle in stdout, stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["class_names"] == ["a", "b", "c"] and manifest["preprocessing"]["std"] == [0.2, 0.2, 0.2]
    code, _, err = _run(["export", "stub-model", "--layer", "nope", "--out", tmp_path / "b2"], capsys)
    assert code == 2
    _one_error_line(err, "nope")


def test_export_from_a_factory(tmp_path, monkeypatch, capsys) -> None:
    """``camrt export package.module:factory``: runs last in this file, as it needs camrt.exporter.models."""
    pytest.importorskip("torch")
    try:
        import camrt.exporter.models  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"camrt.exporter.models is not importable yet ({exc})")
    (tmp_path / "cli_tiny_models.py").write_text(
        "import torch\n"
        "from torch import nn\n\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "bundle"
    code, stdout, err = _run(["export", "cli_tiny_models:make", "--layer", "1", "--out", out, "--input-size", "32"],
                             capsys)
    assert code == 0, err
    assert "layer:" in stdout and "4 x 16 x 16" in stdout and "max abs error" in stdout
    assert (out / "manifest.json").is_file()
    code, _, err = _run(["export", "cli_tiny_models:make", "--layer", "nope", "--out", tmp_path / "b2",
                         "--input-size", "32"], capsys)
    assert code == 2
    _one_error_line(err, "nope")
