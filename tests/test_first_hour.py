"""A new user's first hour (issue 19): every method option typed and checked, class names that match, real or
explicitly random weights, and a failed start that leaves no run folder."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import _one_error_line, _run
from torch import nn

from camrt.errors import ExportError, InputError
from camrt.runtime.bundle import Bundle
from camrt.runtime.classes import class_index, match_class
from camrt.runtime.dataset import label_index
from camrt.runtime.explainer import Explainer
from camrt.runtime.methods import OPTIONS, get_convention, option_names

from tiny import SIZE

SYNONYM_NAMES = ["tabby, tabby cat", "tiger cat", "Egyptian cat", "crane", "Crane"]

GOOD = {  # (value as given, the typed value the convention gets)
    "int": [("2", 2), (3, 3), ("1", 1)],
    "float": [("0.5", 0.5), (1, 1.0), ("0", 0.0)],
    "floats": [("0.1,0.5,1.0", (0.1, 0.5, 1.0)), ("0.5", (0.5,)), (0.5, (0.5,)), ([0.2, 0.4], (0.2, 0.4))],
}
BAD = {
    "int": ["0", "-1", "1.5", "x", "nan"],
    "float": ["nan", "-2", "inf", "x"],
    "floats": ["0.1,.,1.0", "", "nan", "0.5,-1", "a,b"],
    "enum": ["foo", "1"],
}
DECLARED = [(method, option) for method, options in OPTIONS.items() for option in options]


def _typed(convention, name: str):
    """What the convention made of option ``name``."""
    return {"num_samples": convention.samples, "std": convention.noise_std, "coefficients": convention.coefficients,
            "gate": convention.mask.gate, "combine": {"gated": "gated", "paper": "raw"}.get(convention.combine),
            "kernel": convention.head.kernel if convention.head is not None else None}[name]


def _good(option) -> list:
    if option.kind == "enum":
        return [(choice.upper(), choice) for choice in option.choices]
    return GOOD[option.kind]


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "cat.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def synonym_bundle(tmp_path_factory) -> Path:
    """A tiny CNN whose five classes carry synonyms and a case-only twin, as ImageNet's full names do."""
    from camrt.exporter import export

    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("features", nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU()))
    model.add_module("head", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)))
    out = tmp_path_factory.mktemp("synonyms") / "bundle"
    export(model.eval(), "features", out, input_shape=(3, SIZE, SIZE), class_names=SYNONYM_NAMES, model_name="syn")
    return out


# ------------------------------------------------------------------------------------------ options
def test_options_are_declared_once_and_match_the_factories() -> None:
    import inspect

    from camrt.runtime.methods import METHODS

    for method, factory in METHODS.items():
        parameters = inspect.signature(factory).parameters
        assert option_names(method) == list(parameters)
        for option in OPTIONS[method]:
            assert parameters[option.name].default == option.default and option.help


@pytest.mark.parametrize(("method", "option"), DECLARED, ids=[f"{m}.{o.name}" for m, o in DECLARED])
def test_every_option_good_and_bad_through_the_api(method, option, tiny_bundle) -> None:
    explainer = Explainer(tiny_bundle, intra_op_threads=1)
    x = np.random.default_rng(0).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    extra = {"num_samples": 2} if method == "sscam" and option.name != "num_samples" else {}
    for given, typed in _good(option):
        assert _typed(get_convention(method, "paper", **{option.name: given}), option.name) == typed
        out = explainer.explain(x, method, **extra, **{option.name: given})
        assert np.isfinite(out.saliency).all() and out.passes_run > 0
    for bad in BAD[option.kind]:
        with pytest.raises(InputError, match=rf"^{option.name}: {re.escape(method)}'s {option.name} must be"):
            explainer.explain(x, method, **{option.name: bad})


@pytest.mark.parametrize(("method", "option"), DECLARED, ids=[f"{m}.{o.name}" for m, o in DECLARED])
def test_every_option_good_and_bad_through_the_cli(method, option, tiny_bundle, photo, tmp_path, capsys) -> None:
    base = ["explain", tiny_bundle, photo, "--method", method, "--threads", "1", "-q"]
    extra = ["-O", "num_samples=2"] if method == "sscam" and option.name != "num_samples" else []
    for i, (given, _) in enumerate(v for v in _good(option) if not isinstance(v[0], list)):
        text = str(given)
        code, _, err = _run([*base, *extra, "-O", f"{option.name}={text}", "--out", tmp_path / f"ok{i}"], capsys)
        assert code == 0, err
        assert json.loads((tmp_path / f"ok{i}" / "summary.json").read_text())["images"][0]["status"] == "ok"
    for i, bad in enumerate(BAD[option.kind]):
        out = tmp_path / f"bad{i}"
        code, _, err = _run([*base, "-O", f"{method}.{option.name}={bad}", "--out", out], capsys)
        assert code == 2
        _one_error_line(err, option.name, bad or "''")
        assert not out.exists()


def test_the_issue_examples_of_bad_options() -> None:
    assert get_convention("iscam", "paper", coefficients="0.1,0.5,1.0").samples == 3
    assert get_convention("iscam", "torchcam", coefficients=0.5).coefficients == (0.5,)
    for method, key, value in [("sscam", "std", float("nan")), ("sscam", "std", -2), ("iscam", "num_samples", 0),
                               ("scorecam++", "gate", "foo")]:
        with pytest.raises(InputError) as info:
            get_convention(method, "paper", **{key: value})
        assert str(info.value).startswith(f"{key}: ") and str(value) in str(info.value)
    with pytest.raises(InputError, match=r"^std: not an option of scorecam \(its options: none\)$"):
        get_convention("scorecam", "paper", std=2)


# ------------------------------------------------------------------------------------------ class names
def test_class_names_match_case_insensitively_and_by_synonym() -> None:
    assert class_index("tabby cat", SYNONYM_NAMES, 5) == 0
    assert class_index("TABBY", SYNONYM_NAMES, 5) == 0
    assert class_index("Tiger_Cat", SYNONYM_NAMES, 5) == 1
    assert class_index("Crane", SYNONYM_NAMES, 5) == 4 and class_index("crane", SYNONYM_NAMES, 5) == 3  # exact first
    assert class_index("3", SYNONYM_NAMES, 5) == 3 and class_index(2, None, 5) == 2
    with pytest.raises(InputError, match=r"^--target: no class named 'tigr' .*did you mean 'tiger cat'\?$"):
        class_index("tigr", SYNONYM_NAMES, 5)
    with pytest.raises(InputError, match=r"^--target: class index 5 out of range \[0, 5\)$"):
        class_index("5", SYNONYM_NAMES, 5)
    with pytest.raises(InputError, match="^targets: this bundle has no class names"):
        class_index("cat", None, 5, "targets")
    assert match_class("nothing like it", SYNONYM_NAMES) is None


def test_target_names_through_the_cli_the_api_and_labels(synonym_bundle, photo, tmp_path, capsys) -> None:
    for name, index in [("tabby cat", 0), ("TABBY", 0), ("egyptian CAT", 2)]:
        out = tmp_path / f"t{index}{len(name)}"
        code, _, err = _run(["explain", synonym_bundle, photo, "--target", name, "--out", out, "-q"], capsys)
        assert code == 0, err
        assert json.loads((out / "summary.json").read_text())["images"][0]["target"] == index
    code, _, err = _run(["explain", synonym_bundle, photo, "--target", "tabby kat", "--out", tmp_path / "x", "-q"],
                        capsys)
    assert code == 2
    _one_error_line(err, "--target", "did you mean", "'tabby, tabby cat'")
    explainer = Explainer(synonym_bundle)
    out = explainer.explain_images([photo], targets="Tabby Cat")
    assert out.targets.tolist() == [0]
    out = explainer.explain_images([photo, photo], targets=["tiger cat", 2])
    assert out.targets.tolist() == [1, 2]
    with pytest.raises(InputError, match="^targets: no class named 'lion'"):
        explainer.explain_images([photo], targets="lion")
    bundle = Bundle.load(synonym_bundle)
    assert label_index("Tabby_Cat", bundle) == 0 and label_index("4", bundle) == 4 and label_index("x", bundle) is None


def test_readme_target_names_are_classes_of_the_demo_model() -> None:
    from camrt.exporter.models import imagenet_classes

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    names = re.findall(r'--target "([^"]+)"', readme) + re.findall(r'\(`281`, `"([^"]+)"`', readme)
    assert names, "the README shows a --target by name"
    for name in names:
        assert class_index(name, imagenet_classes(), 1000) == 281, name


# ------------------------------------------------------------------------------------------ weights
@pytest.fixture
def offline(monkeypatch):
    """torchvision's weight download fails as it does without a network (whatever this machine's cache holds)."""
    import torchvision.models._api as api

    def no_network(url, *args, **kwargs):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(api, "load_state_dict_from_url", no_network)


def test_torchvision_weights_that_cannot_be_had_are_one_line_errors(offline, tmp_path, capsys) -> None:
    code, _, err = _run(["export", "resnet18", "--out", tmp_path / "a"], capsys)
    assert code == 2
    _one_error_line(err, "resnet18", "ResNet18_Weights.IMAGENET1K_V1", "--weights", "--random-weights")
    code, _, err = _run(["export", "resnet18", "--weights", "IMAGENET1K_V1", "--out", tmp_path / "b"], capsys)
    assert code == 2
    _one_error_line(err, "--weights IMAGENET1K_V1", "cannot be downloaded")
    code, _, err = _run(["export", "resnet18", "--weights", "IMAGENET9K", "--out", tmp_path / "c"], capsys)
    assert code == 2
    _one_error_line(err, "IMAGENET9K", "IMAGENET1K_V1")
    code, _, err = _run(["export", "resnet18", "--weights", "DEFAULT", "--random-weights", "--out", tmp_path / "d"],
                        capsys)
    assert code == 2
    _one_error_line(err, "--random-weights")
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_pretrained_weights_load_from_torch(monkeypatch, tmp_path, capsys) -> None:
    import torchvision
    import torchvision.models._api as api

    torch.manual_seed(1)
    state = torchvision.models.resnet18().state_dict()
    monkeypatch.setattr(api, "load_state_dict_from_url", lambda url, *a, **k: state)
    out = tmp_path / "b"
    code, _, err = _run(["export", "resnet18", "--weights", "imagenet1k_v1", "--input-size", "64", "--out", out],
                        capsys)
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["random_weights"] is False and manifest["class_names"][281] == "tabby"


def test_random_weights_only_when_asked_recorded_shown_and_warned(photo, tmp_path, capsys) -> None:
    out = tmp_path / "r18"
    code, _, err = _run(["export", "resnet18", "--random-weights", "--input-size", "64", "--out", out], capsys)
    assert code == 0, err
    assert Bundle.load(out).manifest.random_weights is True
    code, stdout, _ = _run(["info", out], capsys)
    assert code == 0 and re.search(r"^weights: +random", stdout, re.M), stdout
    code, _, err = _run(["explain", out, photo, "--out", tmp_path / "maps", "-q"], capsys)
    assert code == 0
    warnings = [line for line in err.splitlines() if "--random-weights" in line]
    assert len(warnings) == 1 and warnings[0].startswith("camrt: warning: "), err


def test_older_manifests_read_as_trained(named_bundle, tmp_path) -> None:
    data = json.loads((named_bundle / "manifest.json").read_text())
    assert data.pop("random_weights") is False
    from camrt.runtime.bundle import Manifest

    assert Manifest.from_dict(data, "old").random_weights is False


def test_a_checkpoint_of_another_class_count(tmp_path) -> None:
    import torchvision

    from camrt.exporter.models import load_model

    path = tmp_path / "seven.pt"
    torch.save({"state_dict": torchvision.models.resnet18(num_classes=7).state_dict()}, path)
    model, info = load_model("resnet18", str(path))
    assert model.fc.out_features == 7 and info["class_names"] is None and info["random_weights"] is False
    torch.save(torchvision.models.squeezenet1_0().state_dict(), path)
    with pytest.raises(ExportError) as caught:
        load_model("torchvision.models:squeezenet1_1", str(path))
    message = str(caught.value)
    assert "\n" not in message and "make your factory" in message and message.endswith(")")
    assert "in current model" in message  # torch's whole reason, not cut mid-word


# ------------------------------------------------------------------------------------------ failed start
def test_a_failed_start_leaves_no_run_folder(named_bundle, photo, tmp_path, monkeypatch, capsys) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.png").write_bytes(photo.read_bytes())
    out = tmp_path / "maps"
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed
    code, _, err = _run(["explain-dataset", named_bundle, data, "--out", out, "--engine", "ray", "-q"], capsys)
    assert code == 2
    _one_error_line(err, "Ray is not installed")
    assert not out.exists()
    code, _, err = _run(["explain-dataset", named_bundle, data, "--out", out, "-m", "sscam", "-O", "num_samples=0",
                         "-q"], capsys)
    assert code == 2 and not out.exists()
    code, _, err = _run(["explain-dataset", named_bundle, data, "--out", out, "-q"], capsys)  # the plain rerun
    assert code == 0, err
    assert (out / "index.csv").is_file()


def test_folder_labels_match_by_synonym_and_hint_when_they_do_not(synonym_bundle, photo, tmp_path, capsys) -> None:
    from camrt.runtime.shards import read_index

    for folder in ("Tabby_Cat", "tabby kat"):
        (tmp_path / "data" / folder).mkdir(parents=True)
        (tmp_path / "data" / folder / "a.png").write_bytes(photo.read_bytes())
    out = tmp_path / "maps"
    code, _, err = _run(["explain-dataset", synonym_bundle, tmp_path / "data", "--out", out, "--target", "label",
                         "-q"], capsys)
    assert code == 2, err
    rows = {Path(row["path"]).parent.name: row for row in read_index(out)}
    assert rows["Tabby_Cat"]["status"] == "ok" and int(rows["Tabby_Cat"]["target"]) == 0
    assert rows["tabby kat"]["status"] == "error" and "did you mean 'tabby, tabby cat'?" in rows["tabby kat"]["error"]
