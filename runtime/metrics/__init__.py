"""Metrics of explanation quality, computed on the bundle's engine, batched: no torch needed.

Average Drop / Increase in Confidence (confidence), Win % (win), deletion / insertion AUC (causal); see
../shared/reference/score-cam-family.md for the variants and whose code each one reproduces.
"""

from camrt.runtime.metrics.causal import (
    CausalCurves,
    CausalVariant,
    blur,
    causal_curves,
    get_variant,
    rise_auc,
    rise_variant,
    torchcam_variant,
    trapezoid_auc,
)
from camrt.runtime.metrics.confidence import (
    DEFAULT_VARIANTS,
    ConfidenceVariant,
    average_drop,
    drop_in_confidence,
    explanation_map,
    explanation_scores,
    increase_in_confidence,
    parse_variant,
)
from camrt.runtime.metrics.win import win_multiway, win_pairwise

__all__ = [
    "DEFAULT_VARIANTS", "CausalCurves", "CausalVariant", "ConfidenceVariant", "average_drop", "blur",
    "causal_curves", "drop_in_confidence", "explanation_map", "explanation_scores", "get_variant",
    "increase_in_confidence", "parse_variant", "rise_auc", "rise_variant", "torchcam_variant", "trapezoid_auc",
    "win_multiway", "win_pairwise",
]
