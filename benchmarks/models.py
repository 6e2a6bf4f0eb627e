"""The benchmark's models, their exported bundles (cached under benchmarks/.cache/) and their input images.

torchvision models get random weights from a fixed seed (nothing can be downloaded here; the speed of a CNN
does not depend on its weights); EfficientNet-Lite0 is the real pretrained model. Every process that builds a
model (the exporter here, the peers in their own subprocesses) builds the same weights from the same seed,
and the map differences in the results check that they did.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CACHE = Path(__file__).resolve().parent / ".cache"
SEED = 0


@dataclass(frozen=True)
class ModelSpec:
    """A model to explain: its name for the exporter's zoo (or a ``pkg.module:factory``), the layer, camrt's batch."""

    name: str
    layer: str | None  # None: the exporter's default (the last layer with a spatial map)
    batch_size: int = 64
    input_size: int = 224
    random_weights: bool = True

    @property
    def key(self) -> str:
        """The cache folder name: model, layer and seed."""
        layer = (self.layer or "default").replace(".", "_")
        return f"{self.name.replace(':', '_').replace('.', '_')}-{layer}-{self.input_size}-seed{SEED}"


MODELS = {
    "resnet18": ModelSpec("resnet18", "layer4"),  # K = 512, 7 x 7
    "resnet50": ModelSpec("resnet50", "layer4"),  # K = 2048, 7 x 7
    "vgg16": ModelSpec("vgg16", "features.29", batch_size=32),  # K = 512, 14 x 14; batch 32 (big activations)
    "efficientnet_lite0": ModelSpec("efficientnet_lite0", None, random_weights=False),  # K = 1280, 7 x 7
}
# the memory check's K = 512 layer: the same ResNet-50, cut at layer2 (K = 512, 28 x 28)
MEMORY_REFERENCE = ModelSpec("resnet50", "layer2")


def build_model(spec: ModelSpec) -> tuple[Any, dict[str, Any]]:
    """The torch model (eval mode) and its info from the exporter's zoo, with weights from the fixed seed."""
    import torch

    from camrt.exporter.models import load_model

    torch.manual_seed(SEED)
    return load_model(spec.name, random_weights=spec.random_weights)


def bundle_path(spec: ModelSpec, cache: Path = CACHE) -> Path:
    """The cached bundle folder for ``spec``, exported on first use (VGG16 takes a minute and ~1 GB of disk)."""
    root = cache / "bundles" / spec.key
    if (root / "manifest.json").is_file():
        return root
    import camrt

    model, info = build_model(spec)
    tmp = root.with_name(root.name + ".partial")
    camrt.export(model, spec.layer, tmp, input_shape=(3, spec.input_size, spec.input_size), mean=info["mean"],
                 std=info["std"], class_names=info["class_names"], model_name=spec.name,
                 random_weights=info["random_weights"])
    tmp.rename(root)
    return root


def images(bundle: Path, count: int, cache: Path = CACHE) -> Path:
    """A .npy of ``count`` real photos preprocessed for ``bundle`` (chelsea first; the six photos cycled)."""
    from camrt.runtime.bundle import Bundle
    from camrt.runtime.preprocess import load_batch
    from examples.photos import PHOTOS, photo_paths

    out = bundle / f"images-{count}.npy"
    if not out.is_file():
        paths = photo_paths(cache / "photos")
        order = [paths[list(PHOTOS).index("chelsea")], *[p for p in paths if p.stem != "chelsea"]]
        batch = load_batch([order[i % len(order)] for i in range(count)], Bundle.load(bundle).manifest.preprocessing)
        np.save(out, batch)
    return out


def targets(bundle: Path, images_file: Path) -> list[int]:
    """The classes every implementation explains: camrt's ONNX Runtime argmax of the clean images, fixed once.

    Random-weight models have close logits; fixing the target stops a 1e-6 tie-break from changing the class.
    """
    from camrt.runtime.backends import make_runner
    from camrt.runtime.bundle import Bundle

    cached = images_file.with_suffix(".targets.json")
    if cached.is_file():
        return list(json.loads(cached.read_text()))
    logits = make_runner("onnxruntime", Bundle.load(bundle)).logits(np.load(images_file))
    found = [int(t) for t in np.asarray(logits).argmax(axis=1)]
    cached.write_text(json.dumps(found))
    return found


def torchcam_noise(bundle: Path, images_file: Path, samples: int, seed: int) -> Path:
    """torchcam SSCAM's own draws (torch.manual_seed(seed), Normal(0, 2) per sample at N x K x H x W), / 2.

    As tests/test_parity.py does: camrt replays them through ArrayNoise, so both sides add the same noise.
    """
    out = images_file.with_name(f"{images_file.stem}.torchcam-noise-s{samples}-seed{seed}.npy")
    if out.is_file():
        return out
    import torch

    from camrt.runtime.bundle import Bundle

    n = int(np.load(images_file, mmap_mode="r").shape[0])
    manifest = Bundle.load(bundle).manifest
    k, (_, h, w) = manifest.activation_shape[0], manifest.input_shape
    torch.manual_seed(seed)
    dist = torch.distributions.normal.Normal(0, 2.0)
    draws = np.lib.format.open_memmap(out.with_suffix(".partial.npy"), "w+", np.float32, (n, samples, k, h, w))
    for s in range(samples):
        draws[:, s] = dist.sample((n, k, h, w)).numpy() / 2.0
    draws.flush()
    del draws
    out.with_suffix(".partial.npy").rename(out)
    return out
