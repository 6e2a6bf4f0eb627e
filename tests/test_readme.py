"""The README's Python examples run as written: every ```python block, in order, in one namespace, in a folder
holding the files they name (real photos), with the model they load swapped for the tiny CNN so the run is quick."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from examples.photos import photo_paths

from tiny import Tiny

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    """The README's ```python blocks, in order."""
    return re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.M | re.S)


def tiny_model(spec: str, weights: str | None = None, random_weights: bool = False) -> tuple[Tiny, dict]:
    """load_model's answer for the tiny CNN: the model and the info the README passes to export."""
    return Tiny(seed=0).eval(), {"class_names": [f"class{i}" for i in range(10)], "mean": (0.485, 0.456, 0.406),
                                 "std": (0.229, 0.224, 0.225)}


def test_the_readme_python_blocks_run_as_written(tmp_path, monkeypatch):
    blocks = python_blocks()
    assert len(blocks) >= 3 and "load_model" in blocks[0]
    photos = photo_paths(tmp_path / "cache")
    shutil.copyfile(photos[0], tmp_path / "cat.jpg")
    Image.open(photos[1]).save(tmp_path / "dog.png")
    (tmp_path / "photos").mkdir()
    for path in photos[:3]:
        shutil.copyfile(path, tmp_path / "photos" / path.name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("camrt.exporter.models.load_model", tiny_model)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - the README's own examples
    out = namespace["out"]
    assert out.saliency.shape == (1, 224, 224) and np.isfinite(out.saliency).all()
    assert namespace["x"].shape == (2, 3, 224, 224)
    assert namespace["run"].explained == 3 and len(namespace["rows"]) == 3
    assert namespace["saliency"].shape == (224, 224)


@pytest.mark.parametrize("needle", ["camrt.load_images", "explainer.explain("])
def test_the_readme_shows_how_x_is_made(needle):
    assert any(needle in block for block in python_blocks())
