"""Names for the per-image metric columns in the page: ``average_drop_prob-full`` is Average Drop %, prob-full, ↓."""

from __future__ import annotations

# column prefix: the metric's name in the tables, its short name under the overlays, and which way is better (None:
# a raw value, not a score)
PREFIXES = (
    ("average_drop_", "Average Drop %", "drop", "lower"),
    ("increase_", "Increase in Confidence %", "increase", "higher"),
    ("deletion_auc_", "Deletion AUC", "deletion", "lower"),
    ("insertion_auc_", "Insertion AUC", "insertion", "higher"),
    ("change_", "Change O − Y", "change", None),
    ("o_", "O (score on E)", "O", None),
)
COSTS = {"passes_run": "explain passes", "passes_saved": "passes saved", "seconds": "explain seconds"}


def metric_label(key: str) -> tuple[str, str, str | None]:
    """(name, variant, better) of a per-image column: better is ``lower``, ``higher`` or None."""
    for prefix, name, _, better in PREFIXES:
        if key.startswith(prefix):
            return name, key[len(prefix):], better
    return COSTS.get(key, key), "", None


def short_label(key: str) -> str:
    """The column's few-word name for the values under each overlay: ``drop prob-full``, ``deletion rise``."""
    for prefix, _, short, _ in PREFIXES:
        if key.startswith(prefix):
            return f"{short} {key[len(prefix):]}"
    return COSTS.get(key, key)
