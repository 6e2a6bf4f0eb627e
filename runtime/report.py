"""Tables from evaluation records: per-image CSV rows, the method x metric summary (Markdown and JSON)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from camrt.runtime.metrics.base import mean
from camrt.runtime.metrics.registry import summarize as summarize_metrics
from camrt.runtime.records import to_csv

METHOD_KEYS = ("method", "convention", "options", "curves")  # a method entry's keys that are not CSV columns


def _values(done: Sequence[dict], labels: Sequence[str]) -> Callable[[str], np.ndarray]:
    """Per-image values by column or curve name, (M, N) or (M, N, P), from the methods' entries of the records."""

    def values(name: str) -> np.ndarray:
        entries = [[r["methods"][m] for r in done] for m in labels]
        return np.array([[e[name] if name in e else e["curves"][name] for e in row] for row in entries],
                        dtype=np.float64)  # None (an image without a value) is NaN

    return values


def summarize(
    records: Sequence[dict],
    labels: Sequence[str],
    variants: Mapping[str, Sequence[Any]],
    pixels: int,
) -> dict[str, Any]:
    """The summary of the evaluated images (status ok) from their records' per-image values, nothing recomputed:
    one row per metric and variant (``variants`` by family), one value per method; pixels: H * W of the input."""
    done = [r for r in records if r.get("status") == "ok"]
    metrics = summarize_metrics(variants, _values(done, labels), labels, pixels)
    cost = {
        m: {
            "explain_passes_per_image": mean(np.array([r["methods"][m]["passes_run"] for r in done])),
            "explain_passes_saved_per_image": mean(np.array([r["methods"][m]["passes_saved"] for r in done])),
            "explain_seconds_per_image": mean(np.array([r["methods"][m]["seconds"] for r in done])),
        }
        for m in labels
    }
    by_metric = sorted({k for r in done for k in r.get("metric_passes_by_metric", {})})
    return {
        "images": len(records),
        "evaluated": len(done),
        "skipped": len(records) - len(done),
        "methods": list(labels),
        "metrics": metrics.pop("metrics"),
        "pairwise_win": {},
        "cost": cost,
        "metric_passes_per_image": {k: mean(np.array([r["metric_passes_by_metric"].get(k, 0.0) for r in done]))
                                    for k in by_metric},
        "curves": {},
        **metrics,
    }


def markdown(summary: dict[str, Any]) -> str:
    """The summary as Markdown: the method x metric table, the cost per image, the variants spelled out."""
    labels = summary["methods"]
    lines = [f"Evaluated {summary['evaluated']} of {summary['images']} images"
             + (f" ({summary['skipped']} skipped)" if summary["skipped"] else "") + ".", ""]
    lines += ["| metric | variant | " + " | ".join(labels) + " |", "|---|---|" + "---:|" * len(labels)]
    for row in summary["metrics"]:
        values = [row["values"][m] for m in labels]
        finite = [v for v in values if v is not None and math.isfinite(v)]
        best = (min(finite) if row["better"] == "lower" else max(finite)) if finite else None
        arrow = "↓" if row["better"] == "lower" else "↑"
        cells = [_cell(v, v == best and len(labels) > 1) for v in values]
        lines.append(f"| {row['metric']} {arrow} | {row['variant']} | " + " | ".join(cells) + " |")
    cost = summary["cost"]
    lines.append("| explain passes per image | | " + " | ".join(
        _count(cost[m]["explain_passes_per_image"]) + _saved(cost[m]) for m in labels) + " |")
    lines.append("| explain seconds per image | | " + " | ".join(
        _cell(cost[m]["explain_seconds_per_image"], False, 2) for m in labels) + " |")
    if summary["metric_passes_per_image"]:
        lines += ["", "Metric passes per image (all methods together): " + ", ".join(
            f"{k} {_count(v)}" for k, v in summary["metric_passes_per_image"].items()) + "."]
    lines += ["", "Variants:"] + [f"- `{name}`: {text}" for name, text in summary["variants"].items()]
    return "\n".join(lines) + "\n"


def _cell(value: float | None, bold: bool, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{value:.{digits}f}"
    return f"**{text}**" if bold else text


def _count(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}" if value == round(value) else f"{value:,.1f}"


def _saved(cost: dict[str, float | None]) -> str:
    saved = cost["explain_passes_saved_per_image"]
    return f" ({_count(saved)} saved)" if saved else ""


def csv_rows(records: Sequence[dict], labels: Sequence[str]) -> list[dict[str, Any]]:
    """metrics.csv: one row per (image, method), one per bad image: the record's image fields, then the method's
    passes, seconds and metric columns (the names index.csv uses), as the records hold them."""
    rows = []
    for r in records:
        image = {k: v for k, v in r.items() if k not in ("methods", "metric_passes_by_metric",
                                                          "metric_seconds_by_metric")}
        if r.get("status") != "ok":
            rows.append(image)
            continue
        for m in labels:
            entry = r["methods"][m]
            rows.append({"method": m, **{k: v for k, v in entry.items() if k not in METHOD_KEYS}, **image})
    return rows


def metrics_csv(records: Sequence[dict], labels: Sequence[str]) -> str:
    """metrics.csv's text: :func:`csv_rows` in the per-image record's column order."""
    return to_csv(csv_rows(records, labels), first=("index", "method"), last=("label",))
