"""ScoreCAM++ (Mitra et al., arXiv 2404.19341): a gate (tanh) replaces min-max, and gated maps are combined."""

from __future__ import annotations

from typing import Literal

from camrt.kernels.masks import GATES, MaskSpec
from camrt.runtime.methods.base import Convention, Option

OPTIONS = (
    Option("gate", "enum", "tanh", "the gate that replaces min-max on each channel", choices=GATES),
    Option("combine", "enum", "gated", "gated (the paper), or raw (its tanh-as-normaliser ablation)",
           choices=("gated", "raw")),
)


def conventions(gate: str = "tanh", combine: Literal["gated", "raw"] = "gated") -> dict[str, Convention]:
    """paper: AquillaNatus/ScoreCAMpp ScoreCAM_both (combine="gated"); combine="raw" is its ScoreCAM_norm."""
    return {
        "paper": Convention(
            "scorecam++", "paper", MaskSpec(align_corners=False, normalize="none", gate=gate),  # type: ignore[arg-type]
            score="prob", combine="gated" if combine == "gated" else "paper",
        ),
    }
