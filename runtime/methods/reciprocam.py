"""Recipro-CAM (Byun & Lee, arXiv 2209.14074): for each position (i, j), a copy of the activations keeping only
that position; the target's score on each copy is the map at (i, j). A head-only method: h·w head passes."""

from __future__ import annotations

from camrt.kernels.activations import KERNELS, HeadSpec, Kernel
from camrt.kernels.masks import MaskSpec
from camrt.runtime.methods.base import Convention, Option

OPTIONS = (
    Option("kernel", "enum", "onehot", "onehot (the paper), or gaussian: the position's vector spread over its 3x3 "
           "neighbourhood (paper convention only)", choices=KERNELS),
)


def conventions(kernel: Kernel = "onehot") -> dict[str, Convention]:
    """paper: sybyun/ReciproCAM src/recipro_cam.py (softmax, min-max); openvino-xai: its TorchReciproCAM (logits,
    uint8 0..255 per class), one-hot as it is for CNNs."""
    up = MaskSpec(align_corners=False, normalize_at="input", eps=0.0)
    return {
        "paper": Convention("reciprocam", "paper", up, score="prob", combine="recipro",
                            head=HeadSpec("keep", kernel=kernel)),
        "openvino-xai": Convention("reciprocam", "openvino-xai", up, score="logit", combine="openvino-xai",
                                   head=HeadSpec("keep", kernel="onehot")),
    }
