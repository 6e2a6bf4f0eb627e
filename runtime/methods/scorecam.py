"""Score-CAM (Wang et al., CVPRW 2020): each channel's normalised map masks the input; its score is the weight."""

from __future__ import annotations

from camrt.kernels.masks import MaskSpec
from camrt.runtime.methods.base import Convention, Option

OPTIONS: tuple[Option, ...] = ()  # Score-CAM has none: K passes per image


def conventions() -> dict[str, Convention]:
    """paper: haofanwang/Score-CAM; pytorch-grad-cam: grad-cam 1.5.7 ScoreCAM; torchcam: torchcam 0.5.0 ScoreCAM."""
    return {
        "paper": Convention(
            "scorecam", "paper", MaskSpec(align_corners=False, normalize_at="input", eps=0.0),
            score="prob", combine="paper", skip_constant=True,
        ),
        "pytorch-grad-cam": Convention(
            "scorecam", "pytorch-grad-cam", MaskSpec(align_corners=True, normalize_at="input", eps=1e-8),
            score="logit", combine="pytorch-grad-cam", softmax_weights=True,
        ),
        "torchcam": Convention(
            "scorecam", "torchcam", MaskSpec(align_corners=False, normalize_at="feature", eps=1e-8),
            score="logit-delta", combine="torchcam", softmax_weights=True,
        ),
    }
