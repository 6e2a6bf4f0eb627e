"""Tables from evaluation records: per-image CSV rows, the method x metric summary (Markdown and JSON)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from camrt.runtime.metrics.causal import CausalVariant
from camrt.runtime.metrics.confidence import ConfidenceVariant, average_drop, increase_in_confidence
from camrt.runtime.metrics.win import win_multiway, win_pairwise


def _o_and_y(records: Sequence[dict], labels: Sequence[str], variant: ConfidenceVariant) -> tuple[np.ndarray, ...]:
    y = np.array([r["score"][variant.score] for r in records], dtype=np.float64)
    o = np.array([[r["methods"][m]["confidence"][variant.name] for r in records] for m in labels], dtype=np.float64)
    return y, o.reshape(len(labels), len(records))


def _mean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


def summarize(
    records: Sequence[dict],
    labels: Sequence[str],
    confidence: Sequence[ConfidenceVariant],
    causal: Sequence[CausalVariant],
    pixels: int,
) -> dict[str, Any]:
    """The summary of the evaluated images (status ok): one row per metric and variant, one value per method.

    pixels: H * W of the model input (the curves' abscissa depends on it).
    """
    done = [r for r in records if r.get("status") == "ok"]
    rows: list[dict[str, Any]] = []
    pairwise: dict[str, dict[str, dict[str, float]]] = {}
    curves: dict[str, Any] = {}
    if done:
        for v in confidence:
            y, o = _o_and_y(done, labels, v)
            drop, increase = average_drop(y[None], o), increase_in_confidence(y[None], o)
            win = win_multiway(o)
            rows += [
                _row("Average Drop %", v.name, v.description, "lower", labels, [_mean(d) for d in drop],
                     skipped=[int(np.isnan(d).sum()) for d in drop]),
                _row("Increase in Confidence %", v.name, v.description, "higher", labels, [_mean(i) for i in increase]),
                _row("Win % (multi-way)", v.name, "each image to the method with the largest O (first wins ties)",
                     "higher", labels, [float(w) for w in win]),
            ]
            table = win_pairwise(o)
            pairwise[v.name] = {a: {b: float(table[i, j]) for j, b in enumerate(labels) if j != i}
                                for i, a in enumerate(labels)}
        for c in causal:
            per = {m: [r["methods"][m]["causal"][c.name] for r in done] for m in labels}
            for curve, better in (("deletion", "lower"), ("insertion", "higher")):
                values = [_mean(np.array([p[f"{curve}_auc"] for p in per[m]])) for m in labels]
                rows.append(_row(f"{curve.capitalize()} AUC", c.name, c.description, better, labels, values))
            curves[c.name] = {
                "x": c.x_axis(pixels).tolist(),
                **{curve: {m: np.mean([p[curve] for p in per[m]], axis=0).tolist() for m in labels}
                   for curve in ("deletion", "insertion")},
            }
    cost = {
        m: {
            "explain_passes_per_image": _mean(np.array([r["methods"][m]["passes_run"] for r in done])),
            "explain_passes_saved_per_image": _mean(np.array([r["methods"][m]["passes_saved"] for r in done])),
            "explain_seconds_per_image": _mean(np.array([r["methods"][m]["seconds"] for r in done])),
        }
        for m in labels
    }
    metric_passes = sorted({k for r in done for k in r.get("metric_passes", {})})
    return {
        "images": len(records),
        "evaluated": len(done),
        "skipped": len(records) - len(done),
        "methods": list(labels),
        "metrics": rows,
        "pairwise_win": pairwise,
        "cost": cost,
        "metric_passes_per_image": {k: _mean(np.array([r["metric_passes"].get(k, 0.0) for r in done]))
                                    for k in metric_passes},
        "curves": curves,
        "variants": {
            **{v.name: v.description for v in confidence},
            **{c.name: c.description for c in causal},
        },
    }


def _row(metric: str, variant: str, description: str, better: str, labels: Sequence[str],
         values: Sequence[float | None], skipped: Sequence[int] | None = None) -> dict[str, Any]:
    row = {"metric": metric, "variant": variant, "description": description, "better": better,
           "values": dict(zip(labels, values, strict=True))}
    if skipped and any(skipped):
        row["images_without_value"] = dict(zip(labels, skipped, strict=True))
    return row


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


def csv_rows(records: Sequence[dict], labels: Sequence[str], confidence: Sequence[ConfidenceVariant],
             causal: Sequence[CausalVariant]) -> list[dict[str, Any]]:
    """One row per (image, method), one per skipped image; the metric columns named after their variants."""
    rows = []
    for r in records:
        base = {k: r.get(k, "") for k in ("index", "file", "label", "status", "error")}
        if r.get("status") != "ok":
            rows.append(base)
            continue
        base.update({k: r.get(k, "") for k in ("target", "target_name", "predicted", "predicted_name")})
        base.update({"y_prob": r["score"]["prob"], "y_logit": r["score"]["logit"]})
        for m in labels:
            entry = r["methods"][m]
            row = {**base, "method": m}
            for v in confidence:
                y, o = r["score"][v.score], entry["confidence"][v.name]
                row[f"o_{v.name}"] = o
                row[f"average_drop_{v.name}"] = float(average_drop(np.array([y]), np.array([o]))[0])
                row[f"increase_{v.name}"] = float(increase_in_confidence(np.array([y]), np.array([o]))[0])
                row[f"change_{v.name}"] = o - y  # pytorch-grad-cam's CamMultImageConfidenceChange
            for c in causal:
                row[f"deletion_auc_{c.name}"] = entry["causal"][c.name]["deletion_auc"]
                row[f"insertion_auc_{c.name}"] = entry["causal"][c.name]["insertion_auc"]
            row.update({k: entry[k] for k in ("passes_run", "passes_saved", "seconds")})
            rows.append(row)
    return rows


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as CSV text, the columns in first-seen order."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
