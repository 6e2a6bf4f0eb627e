"""The torch side of camrt: split a CNN at a target layer and write a bundle (two ONNX graphs + manifest)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from camrt.errors import ExportError
from camrt.exporter.onnx_export import check_model, check_opset, export_graph, verify_onnx
from camrt.exporter.programs import save_programs
from camrt.exporter.split import check_input_shape, example_input, split_model
from camrt.runtime.bundle import (
    ACTIVATIONS,
    FEATURES_FILE,
    HEAD_FILE,
    IMAGE,
    LOGITS,
    MANIFEST,
    Bundle,
    Manifest,
    Preprocessing,
    sha256_file,
)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "export", "split_model"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_FRACTION = 0.875  # the usual ImageNet evaluation: resize the short side to crop / 0.875, centre-crop


def export(
    model: nn.Module,
    target_layer: str | None,
    out_dir: str | os.PathLike[str],
    input_shape: Sequence[int] = (3, 224, 224),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    class_names: Sequence[str] | None = None,
    model_name: str | None = None,
    resize: int | None = None,
    opset: int = 18,
    torch_programs: bool = True,
    random_weights: bool = False,
) -> Bundle:
    """Split ``model`` at ``target_layer`` (None: the last layer with a spatial map), write and verify a bundle.

    Writes ``features.onnx`` (image -> activations), ``head.onnx`` (activations -> logits) and, last,
    ``manifest.json``; both graphs are checked against torch with ONNX Runtime before the manifest exists.
    torch_programs also writes ``features.pt2`` / ``head.pt2`` (torch.export) for the PyTorch reference backend;
    random_weights is recorded in the manifest, so every command that loads the bundle warns of it.
    """
    shape = check_input_shape(input_shape)
    if shape[0] != 3:
        raise ExportError(f"input_shape: camrt bundles take RGB images (3 channels), got {shape[0]} channels")
    opset = check_opset(opset)
    preprocessing = Preprocessing(
        resize=_resize(resize, shape),
        crop=(shape[1], shape[2]),
        mean=_channel_values("mean", mean, positive=False),
        std=_channel_values("std", std, positive=True),
    )
    _check_model(model)
    was_training = model.training
    try:
        features, head, layer = split_model(model, target_layer, shape)
        root = _prepare_dir(out_dir)  # only once the model and layer are known to split: a bad one touches nothing
        example = example_input(shape, batch=2)
        with torch.no_grad():
            activations = features(example)
            num_classes = int(head(activations.clone()).shape[1])
        names = _class_names(class_names, num_classes)
        export_graph(features, example, root / FEATURES_FILE, IMAGE, ACTIVATIONS, opset)
        export_graph(head, activations.clone(), root / HEAD_FILE, ACTIVATIONS, LOGITS, opset)
        for path in (root / FEATURES_FILE, root / HEAD_FILE):
            check_model(path)
        verification = verify_onnx(model, features, root / FEATURES_FILE, root / HEAD_FILE, shape)
        programs = save_programs(features, head, example, activations, root) if torch_programs else []
    finally:
        model.train(was_training)
    k, h, w = (int(v) for v in activations.shape[1:])
    manifest = Manifest(
        model_name=model_name or type(model).__name__,
        target_layer=layer,
        input_shape=shape,
        activation_shape=(k, h, w),
        num_classes=num_classes,
        preprocessing=preprocessing,
        opset=opset,
        files={name: sha256_file(root / name) for name in (FEATURES_FILE, HEAD_FILE, *programs)},
        verification=verification,
        class_names=names,
        random_weights=bool(random_weights),
    )
    staging = root / (MANIFEST + ".tmp")
    staging.write_text(manifest.to_json(), encoding="utf-8")
    os.replace(staging, root / MANIFEST)  # the manifest appears last, complete: a bundle is never half-written
    return Bundle.load(root, verify_hashes=False)  # the hashes were computed from these very files just above


def _check_model(model: nn.Module) -> None:
    """Require a float32 CPU nn.Module: the graphs are traced and verified on the CPU in fp32."""
    if not isinstance(model, nn.Module):
        raise ExportError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.device.type != "cpu":
            raise ExportError(f"model: its weights are on {tensor.device}; move it to the CPU first (model.cpu())")
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            raise ExportError(f"model: its weights are {tensor.dtype}; export a float32 model (model.float())")


def _resize(resize: int | None, shape: tuple[int, int, int]) -> int:
    """The short-side resize: default round(crop / 0.875) (256 for 224); it must cover the crop."""
    crop = max(shape[1], shape[2])
    if resize is None:
        return round(crop / CROP_FRACTION)
    if isinstance(resize, bool) or not isinstance(resize, int) or resize < crop:
        raise ExportError(f"resize: expected an integer >= the crop size {crop}, got {resize!r}")
    return resize


def _channel_values(name: str, values: Sequence[float], positive: bool) -> tuple[float, float, float]:
    """Validate per-channel ``mean``/``std`` as three finite floats (std > 0)."""
    try:
        floats = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        floats = ()
    if len(floats) != 3 or not all(abs(v) < float("inf") and (v > 0 or not positive) for v in floats):
        kind = "positive" if positive else "finite"
        raise ExportError(f"{name}: expected three {kind} numbers (R, G, B), got {values!r}")
    return floats[0], floats[1], floats[2]


def _class_names(class_names: Sequence[str] | None, num_classes: int) -> list[str] | None:
    """One name per logit, or None."""
    if class_names is None:
        return None
    if isinstance(class_names, str) or len(class_names) != num_classes:
        count = "a string" if isinstance(class_names, str) else f"{len(class_names)} names"
        raise ExportError(f"class_names: got {count} for a model with {num_classes} classes")
    return [str(name) for name in class_names]


def _prepare_dir(out_dir: str | os.PathLike[str]) -> Path:
    """Create ``out_dir``; drop an old manifest first so an interrupted export never looks like a bundle."""
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise ExportError(f"out_dir {root}: exists and is not a directory")
    try:
        root.mkdir(parents=True, exist_ok=True)
        (root / MANIFEST).unlink(missing_ok=True)
    except OSError as exc:
        raise ExportError(f"out_dir {root}: cannot write there ({exc.strerror or exc})") from None
    return root
