"""A small random-weight CNN split into features and head, and Explainers over it, for fast tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from camrt.runtime.backends.torch import TorchRunner
from camrt.runtime.bundle import Bundle, Manifest, Preprocessing
from camrt.runtime.explainer import Explainer

SIZE = 32


class Tiny(nn.Module):
    """conv-relu-conv-relu (the target, K=16 at 8x8) then pool + linear to 10 classes."""

    def __init__(self, seed: int = 0, k: int = 16, classes: int = 10) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, k, 3, stride=2, padding=1), nn.ReLU()
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(k, classes))
        with torch.no_grad():
            self.head[2].weight.mul_(4.0)  # spread the logits so that the scores differ visibly

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def fake_bundle(model: Tiny, size: int = SIZE) -> Bundle:
    """An in-memory bundle for a TorchRunner (no ONNX files): the Explainer needs only the manifest."""
    k = model.features[2].out_channels
    act = model.features(torch.zeros(1, 3, size, size)).shape
    manifest = Manifest(
        model_name="tiny", target_layer="features", input_shape=(3, size, size), activation_shape=(k, act[2], act[3]),
        num_classes=model.head[2].out_features,
        preprocessing=Preprocessing(resize=size, crop=(size, size), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
        opset=18, files={}, verification={},
    )
    return Bundle(Path("."), manifest)


def torch_explainer(model: Tiny, size: int = SIZE) -> Explainer:
    model.eval()
    return Explainer(fake_bundle(model, size), backend=TorchRunner(model.features, model.head))


def images(n: int, seed: int, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


def fresh_images(n: int, size: int = SIZE) -> tuple[np.ndarray, int]:
    """n standard-normal inputs (n, 3, size, size) from a fresh seed, and the seed (for the failure message)."""
    seed = int.from_bytes(os.urandom(4), "little")
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32), seed
