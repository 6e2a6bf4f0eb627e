"""``camrt bench``: the fidelity and speed tables and the JSON on a tiny bundle, the reference against itself and
against other engines, the --min-correlation gate, and configurations that cannot be made. No timing assertions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from camrt.cli import main
from camrt.runtime.backends import BACKENDS, Backend
from camrt.runtime.backends.onnxruntime import OnnxrtRunner
from camrt.runtime.bench.fidelity import pearson, spearman, top_iou

FAST = ["--threads", "1", "--repeats", "1", "--batch-sizes", "1,4", "--batch-size", "16", "-q"]


class Perturbed:
    """ONNX Runtime with seeded Gaussian noise of ``scale`` added to the whole model's logits (the masked inputs'),
    not to the clean pass's head: the predicted class stays, the channel weights and maps move. scale 0: a copy."""

    name = "perturbed"

    def __init__(self, bundle: Any, scale: float) -> None:
        self.inner, self.scale = OnnxrtRunner(bundle, intra_op_threads=1), scale
        self.rng = np.random.default_rng(0)

    @classmethod
    def create(cls, bundle: Any, device: str = "cpu", scale: float = 0.0, **options: Any) -> Perturbed:
        return cls(bundle, scale)

    def features(self, images: np.ndarray) -> np.ndarray:
        return self.inner.features(images)

    def head(self, activations: np.ndarray) -> np.ndarray:
        return self.inner.head(activations)

    def logits(self, images: np.ndarray) -> np.ndarray:
        out = self.inner.logits(images)
        return out + np.float32(self.scale) * self.rng.standard_normal(out.shape).astype(np.float32)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def fakes(monkeypatch):
    """Two registered fake backends: ``copy`` (ONNX Runtime unchanged) and ``noisy`` (logits + N(0, 3²))."""
    for name, scale in (("copy", 0.0), ("noisy", 3.0)):
        monkeypatch.setitem(BACKENDS, name, Backend(name, f"{__name__}:Perturbed.create", ("cpu",),
                                                    defaults={"scale": scale}))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench-photos")
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def _run(argv: list, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _rows(path: Path) -> dict[str, dict]:
    return {row["configuration"]: row for row in json.loads(path.read_text())["configurations"]}


def test_tables_and_json_have_every_field(named_bundle, photos, tmp_path, capsys, fakes):
    out = tmp_path / "bench.json"
    code, text, err = _run(["bench", named_bundle, photos, "--backends", "onnxruntime,copy,torch", "--trust-bundle",
                            "--json", out, *FAST], capsys)
    assert code == 0, err
    assert "Fidelity" in text and "Speed" in text and "onnxruntime fp32 (reference)" in text
    assert "| copy fp32 | 1.0000 (1.0000) | 1.0000 (1.0000) | 1.0000 (1.0000) | 3 of 3 |" in text
    result = json.loads(out.read_text())
    assert result["reference"] == "onnxruntime fp32" and result["images"] == 3 and len(result["targets"]) == 3
    rows = _rows(out)
    assert list(rows) == ["onnxruntime fp32", "copy fp32", "torch fp32"]
    for row in rows.values():
        f, t, m = row["fidelity"], row["latency"], row["memory"]
        for key in ("map_r", "top20_iou", "weights_spearman"):
            assert len(f[key]["per_image"]) == 3 and f[key]["min"] <= f[key]["mean"]
        assert f["same_class"]["images"] == 3
        assert {"average_drop_prob-full", "deletion_auc_rise", "insertion_auc_rise"} <= set(f["metrics"])
        assert set(t["engine_images_per_s"]) == {"1", "4"} and all(v > 0 for v in t["engine_images_per_s"].values())
        assert set(t["explain_one_image_s"]) == {"p50", "p90", "p99", "runs"}
        assert t["throughput_images_per_s"] > 0 and t["explain_over_engine"] > 0 and t["passes"] > 0
        assert m["peak_rss_mb"] > 0
    # an identical engine gives identical maps, and the same Average Drop / deletion AUC on the reference engine
    copy, reference = rows["copy fp32"]["fidelity"], rows["onnxruntime fp32"]["fidelity"]
    assert copy["map_r"]["min"] == 1.0 and copy["top20_iou"]["min"] == 1.0 and copy["weights_spearman"]["min"] == 1.0
    assert copy["metrics"] == reference["metrics"]
    # eager PyTorch on the bundle's programs: the same maps to float rounding
    assert rows["torch fp32"]["fidelity"]["map_r"]["min"] > 0.9999


def test_min_correlation_fails_naming_the_configuration(named_bundle, photos, tmp_path, capsys, fakes):
    out = tmp_path / "bench.json"
    code, text, err = _run(["bench", named_bundle, photos, "--backends", "copy,noisy", "--min-correlation", "0.99",
                            "--json", out, *FAST], capsys)
    noisy = _rows(out)["noisy fp32"]["fidelity"]
    assert noisy["map_r"]["mean"] < 0.99 and noisy["same_class"]["same"] == 3  # only the masked passes are noised
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "noisy fp32: mean map r" in lines[0] and "below 0.99" in lines[0], err
    assert lines[0] == f"camrt: --min-correlation 0.99: {json.loads(out.read_text())['min_correlation']['failed'][0]}"
    code, _, err = _run(["bench", named_bundle, photos, "--backends", "copy", "--min-correlation", "0.99", *FAST],
                        capsys)
    assert code == 0 and not err.strip()


def test_configurations_that_cannot_be_made_are_rows(named_bundle, photos, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(BACKENDS, "ghost", Backend("ghost", "camrt_no_such_engine:Runner.create", ("cpu",)))
    out = tmp_path / "bench.json"
    code, text, err = _run(["bench", named_bundle, photos, "--backends", "onnxruntime,ghost,torch,tensorrt",
                            "--precisions", "fp32,fp16", "--json", out, *FAST], capsys)
    assert code == 0, err
    rows = _rows(out)
    assert rows["ghost fp32"]["status"] == "unavailable" and "camrt_no_such_engine" in rows["ghost fp32"]["reason"]
    assert rows["torch fp32"]["status"] == "unavailable" and "--trust-bundle" in rows["torch fp32"]["reason"]
    assert rows["tensorrt fp32"]["status"] == "unavailable"
    assert rows["onnxruntime fp16"]["status"] == "not offered"
    for name in ("ghost fp32", "torch fp32", "onnxruntime fp16"):
        assert f"| {name} | {rows[name]['status']}: " in text and "\n" not in rows[name]["reason"]
    # under the gate a configuration asked for that could not be measured fails; one not offered does not
    code, _, err = _run(["bench", named_bundle, photos, "--backends", "onnxruntime,ghost", "--precisions",
                         "fp32,fp16", "--min-correlation", "0.5", *FAST], capsys)
    assert code == 1 and err.count("\n") == 1 and "ghost fp32: could not be measured" in err


@pytest.mark.parametrize(("argv", "needle"), [
    (["--backends", "nosuch"], "--backends: unknown 'nosuch'"),
    (["--precisions", "fp8"], "--precisions: unknown 'fp8'"),
    (["--min-correlation", "1.5"], "--min-correlation"),
    (["--batch-sizes", "0"], "--batch-sizes"),
    (["-O", "num_samples=0", "--method", "sscam"], "num_samples"),
])
def test_bad_arguments_give_one_line(named_bundle, photos, capsys, argv, needle):
    code, _, err = _run(["bench", named_bundle, photos, *argv, *FAST], capsys)
    assert code == 2 and err.count("\n") == 1 and needle in err, err


def test_fidelity_statistics():
    rng = np.random.default_rng(1)
    a = rng.random((8, 8))
    assert pearson(a, a) == 1.0 and top_iou(a, a) == 1.0 and spearman(a, a) == 1.0
    assert pearson(a, 2 * a + 1) == pytest.approx(1.0) and pearson(a, -a) == pytest.approx(-1.0)
    assert spearman(a, np.exp(a)) == pytest.approx(1.0)  # any increasing function keeps the ranks
    ties = np.array([0.0, 0.0, 1.0, 2.0])
    assert spearman(ties, np.array([0.0, 0.0, 3.0, 5.0])) == pytest.approx(1.0)
    assert np.isnan(pearson(np.zeros(4), np.arange(4.0))) and pearson(np.ones(4), np.ones(4)) == 1.0
    b = a.copy()
    b.ravel()[np.argsort(-a.ravel())[:13]] = -1.0  # the top 20 % (13 of 64) of a are the least salient of b
    assert top_iou(a, b) == 0.0
