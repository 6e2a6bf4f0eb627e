"""IS-CAM (Naidu et al., arXiv 2010.03023): Score-CAM with the score integrated over scaled masked inputs."""

from __future__ import annotations

from collections.abc import Sequence

from camrt.kernels.masks import MaskSpec
from camrt.runtime.methods.base import Convention, Option

OPTIONS = (
    Option("num_samples", "int", 10, "integration steps per channel (10 x K passes per image)", minimum=1),
    Option("coefficients", "floats", None, "the masked input's scales c_i, e.g. 0.1,0.5,1.0 (default: "
           "c_i = sum_{j<=i} j/N; replaces num_samples by its length)", minimum=0),
)


def cumulative_coefficients(num_samples: int) -> tuple[float, ...]:
    """c_i = sum_{j<=i} j/N, accumulated in float as both references do: 0.1, 0.3, 0.6, ..., 5.5 for N=10."""
    coeffs, c = [], 0.0
    for i in range(num_samples):
        c += (i + 1) / num_samples
        coeffs.append(c)
    return tuple(coeffs)


def conventions(num_samples: int = 10, coefficients: Sequence[float] | None = None) -> dict[str, Convention]:
    """paper: ankitaghosh9/Variations-on-Score-CAM IS_CAM; torchcam: 0.5.0 ISCAM (its code, not its docstring).

    coefficients replaces the cumulative path c_i (then num_samples is its length).
    """
    if coefficients is None:
        coeffs = cumulative_coefficients(num_samples)
    else:
        coeffs = tuple(float(c) for c in coefficients)
        num_samples = len(coeffs)
    return {
        "paper": Convention(
            "iscam", "paper", MaskSpec(align_corners=False, normalize_at="input", eps=0.0),
            score="prob", combine="paper", skip_constant=True, samples=num_samples, coefficients=coeffs,
        ),
        "torchcam": Convention(
            "iscam", "torchcam", MaskSpec(align_corners=False, normalize_at="feature", eps=1e-8),
            score="logit-delta", combine="torchcam", softmax_weights=True, samples=num_samples,
            coefficients=coeffs,
        ),
    }
