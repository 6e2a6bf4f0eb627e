"""Shared pytest fixtures: small random CNNs that build and export in milliseconds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from camrt.runtime.explainer import Explainer

from tiny import SIZE, Tiny


class TinyBlock(nn.Module):
    """A residual block: relu(bn2(conv2(relu(bn1(conv1(x))))) + x)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


class TinyCNN(nn.Module):
    """stem -> residual block -> conv (8 -> 16 channels) -> pool -> linear, with one ReLU module shared by all.

    ``batch_read=True`` flattens with ``x.view(inputs.size(0), -1)`` as efficientnet_lite_pytorch does.
    """

    def __init__(self, classes: int = 5, batch_read: bool = False) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8))
        self.act = nn.ReLU()  # called twice: after the stem and after conv; its last call is the default cut
        self.block = TinyBlock(8)
        self.conv = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)
        self.batch_read = batch_read

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        bs = inputs.size(0)
        x = self.act(self.stem(inputs))
        x = self.act(self.conv(self.block(x)))
        x = self.pool(x)
        return self.fc(x.view(bs, -1) if self.batch_read else torch.flatten(x, 1))


@pytest.fixture
def tiny_cnn() -> Callable[..., TinyCNN]:
    """Factory: ``tiny_cnn(seed=0, classes=5, batch_read=False)`` -> a TinyCNN in eval mode, random weights."""

    def make(seed: int = 0, classes: int = 5, batch_read: bool = False) -> TinyCNN:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = TinyCNN(classes, batch_read)
            for module in model.modules():  # non-trivial batch-norm statistics, so eval mode is not identity
                if isinstance(module, nn.BatchNorm2d):
                    module.running_mean.uniform_(-0.5, 0.5)
                    module.running_var.uniform_(0.5, 2.0)
        return model.eval()

    return make

@pytest.fixture(scope="session")
def tiny_bundle_factory(tmp_path_factory):
    """export(model) -> Explainer on the ONNX bundle of that Tiny model (cached per model seed)."""
    import camrt

    cache: dict[int, Explainer] = {}

    def make(model: Tiny) -> Explainer:
        key = id(model)
        if key not in cache:
            out = tmp_path_factory.mktemp("tiny_bundle")
            camrt.export(model, "features", out, input_shape=(3, SIZE, SIZE), model_name="tiny")
            cache[key] = Explainer(out, intra_op_threads=1)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """The path of one exported Tiny bundle (seed 0)."""
    import camrt

    out = tmp_path_factory.mktemp("tiny")
    camrt.export(Tiny(seed=0).eval(), "features", out, input_shape=(3, SIZE, SIZE), model_name="tiny")
    return out


@pytest.fixture(scope="session")
def named_bundle(tmp_path_factory) -> Path:
    """A real bundle of a tiny random CNN (K=8 at 8x8, 5 classes named class0..class4), named tiny-cli."""
    from camrt.exporter import export

    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("features", nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
    ))
    model.add_module("head", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)))
    out = tmp_path_factory.mktemp("named") / "bundle"
    export(model.eval(), "features", out, input_shape=(3, SIZE, SIZE), class_names=[f"class{i}" for i in range(5)],
           model_name="tiny-cli")
    return out
