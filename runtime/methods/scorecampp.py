"""ScoreCAM++ (Mitra et al., arXiv 2404.19341): a gate (tanh) replaces min-max, and gated maps are combined."""

from __future__ import annotations

from typing import Literal

from camrt.errors import InputError
from camrt.kernels.masks import GATES, MaskSpec
from camrt.runtime.methods.base import Convention


def conventions(gate: str = "tanh", combine: Literal["gated", "raw"] = "gated") -> dict[str, Convention]:
    """paper: AquillaNatus/ScoreCAMpp ScoreCAM_both (combine="gated"); combine="raw" is its ScoreCAM_norm."""
    if gate not in GATES:
        raise InputError(f"gate: unknown gate {gate!r}; choose one of {', '.join(GATES)}")
    if combine not in ("gated", "raw"):
        raise InputError(f"combine: must be 'gated' or 'raw', got {combine!r}")
    return {
        "paper": Convention(
            "scorecam++", "paper", MaskSpec(align_corners=False, normalize="none", gate=gate),  # type: ignore[arg-type]
            score="prob", combine="gated" if combine == "gated" else "paper",
        ),
    }
