"""SS-CAM (Naidu et al., arXiv 2006.14255): Score-CAM with each score averaged over noisy copies."""

from __future__ import annotations

from camrt.errors import InputError
from camrt.kernels.masks import MaskSpec
from camrt.runtime.methods.base import Convention, Option

OPTIONS = (
    Option("num_samples", "int", 35, "noisy copies per channel (35 x K passes per image)", minimum=1),
    Option("std", "float", 2.0, "the noise's standard deviation (paper: on the masked input, / its range)",
           minimum=0),
)


def conventions(num_samples: int = 35, std: float = 2.0) -> dict[str, Convention]:
    """paper: r0cketr1kky/SS-CAM SSCAM2 (noise std (std / range)**2 on the masked input); torchcam: 0.5.0 SSCAM.

    std must be >= 0 (0: no noise, on the host and on the GPU alike); the paper squares it, so a negative std
    would act as its absolute value there and not in torchcam's: refused here too, for callers that skip OPTIONS."""
    if not std >= 0:
        raise InputError(f"std: sscam's std must be a finite number >= 0, got {std!r}")
    return {
        "paper": Convention(
            "sscam", "paper", MaskSpec(align_corners=False, normalize_at="input", eps=0.0),
            score="prob", combine="paper", skip_constant=True, samples=num_samples,
            noise="input-range", noise_std=std,
        ),
        "torchcam": Convention(
            "sscam", "torchcam", MaskSpec(align_corners=False, normalize_at="feature", eps=1e-8),
            score="logit-delta", combine="torchcam", softmax_weights=True, samples=num_samples,
            noise="mask", noise_std=std,
        ),
    }
