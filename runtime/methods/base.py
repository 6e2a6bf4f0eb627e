"""A convention: every knob on which the public implementations of one method disagree, named and fixed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from camrt.kernels.masks import MaskSpec

Score = Literal["prob", "logit", "logit-delta"]
Combine = Literal["paper", "pytorch-grad-cam", "torchcam", "gated"]
Noise = Literal["none", "mask", "input-range"]


@dataclass(frozen=True)
class Convention:
    """What one reference implementation computes; docs/conventions.md tabulates every convention.

    score: softmax probability, raw logit, or logit minus the clean logit (torchcam) of the target class.
    samples / coefficients: passes per channel; IS-CAM scales the masked input by coefficients[s].
    noise: "mask" adds noise_std * z to the mask (torchcam SS-CAM); "input-range" adds
    (noise_std / range(x))**2 * z to the masked input x (SS-CAM paper).
    skip_constant: constant channels are skipped (weight 0, no pass), as the authors' code does.
    softmax_weights: weights = softmax over channels of the mean score, else the mean score itself.
    combine: how weights and activations make the map.
    """

    method: str
    name: str
    mask: MaskSpec
    score: Score
    combine: Combine
    skip_constant: bool = False
    softmax_weights: bool = False
    samples: int = 1
    coefficients: tuple[float, ...] | None = None
    noise: Noise = "none"
    noise_std: float = 0.0

    @property
    def noisy(self) -> bool:
        return self.noise != "none"

    @property
    def zero_mask_skippable(self) -> bool:
        """An all-zero channel under this gate gives an all-zero mask and contributes nothing."""
        return self.mask.gate in ("tanh", "mish", "swish")
