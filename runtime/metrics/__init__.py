"""Metrics of explanation quality, computed on the bundle's engine, batched: no torch needed.

Families (``registry.FAMILIES``): Average Drop / Increase in Confidence / Win % (``confidence``, ``win``) and
deletion / insertion AUC (``causal``); README "Evaluating the maps" names the variants and whose code each matches.
"""

from camrt.runtime.metrics.base import Family, MetricBatch, MetricCache
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
    ConfidenceValues,
    ConfidenceVariant,
    average_drop,
    drop_in_confidence,
    explanation_map,
    explanation_scores,
    increase_in_confidence,
    parse_variant,
)
from camrt.runtime.metrics.registry import FAMILIES, Measured, Metrics, family
from camrt.runtime.metrics.win import win_multiway, win_pairwise

__all__ = [
    "DEFAULT_VARIANTS", "FAMILIES", "CausalCurves", "CausalVariant", "ConfidenceValues", "ConfidenceVariant", "Family",
    "Measured", "MetricBatch", "MetricCache", "Metrics", "average_drop", "blur", "family",
    "causal_curves", "drop_in_confidence", "explanation_map", "explanation_scores", "get_variant",
    "increase_in_confidence", "parse_variant", "rise_auc", "rise_variant", "torchcam_variant", "trapezoid_auc",
    "win_multiway", "win_pairwise",
]
