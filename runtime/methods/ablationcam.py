"""Ablation-CAM (Desai & Ramaswamy, WACV 2020): each channel ablated in turn, w_k = (y - y_k) / y on the logit.

A head-only method: every pass runs the head graph on the clean activations with channel k replaced, K passes.
"""

from __future__ import annotations

from camrt.kernels.activations import HeadSpec
from camrt.kernels.masks import MaskSpec
from camrt.runtime.methods.base import Convention, Option

OPTIONS: tuple[Option, ...] = ()  # none: K head passes per image


def conventions() -> dict[str, Convention]:
    """paper: the channel set to 0, map as Score-CAM's paper; pytorch-grad-cam: grad-cam 1.5.7 AblationCAM."""
    return {
        "paper": Convention(
            "ablationcam", "paper", MaskSpec(align_corners=False, normalize_at="input", eps=0.0),
            score="logit", combine="paper", head=HeadSpec("ablate", fill="zero"),
        ),
        "pytorch-grad-cam": Convention(
            "ablationcam", "pytorch-grad-cam", MaskSpec(align_corners=False, normalize_at="input", eps=1e-7),
            score="logit", combine="pytorch-grad-cam", head=HeadSpec("ablate", fill="pytorch-grad-cam"),
        ),
    }
