"""A bench's results as Markdown (a fidelity table and a speed table) and the ``--min-correlation`` gate."""

from __future__ import annotations

from typing import Any


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _spread(stat: dict[str, Any], digits: int = 4) -> str:
    """``mean (min)`` of a fidelity summary."""
    return f"{_number(stat['mean'], digits)} ({_number(stat['min'], digits)})"


def _not_run(row: dict[str, Any], columns: int) -> str:
    cells = [row["configuration"], f"{row['status']}: {row['reason']}"] + [""] * (columns - 2)
    return "| " + " | ".join(cells) + " |"


def _label(row: dict[str, Any]) -> str:
    return row["configuration"] + (" (reference)" if row["reference"] else "")


def fidelity_table(result: dict[str, Any]) -> list[str]:
    """Per configuration: map r, top-20 % IoU and weights' Spearman rho (mean (min) over the images), the images
    whose predicted class is the reference's, and the first Average Drop and deletion AUC variants asked for."""
    settings = result["settings"]
    drop = f"average_drop_{settings['confidence'][0]}" if settings["confidence"] else None
    deletion = f"deletion_auc_{settings['causal'][0]}" if settings["causal"] else None
    head = ["configuration", "map r, mean (min)", "top-20 % IoU, mean (min)", "weights Spearman, mean (min)",
            "same class"]
    head += [f"Average Drop % ({settings['confidence'][0]}) ↓"] if drop else []
    head += [f"deletion AUC ({settings['causal'][0]}) ↓"] if deletion else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["configurations"]:
        if "fidelity" not in row:
            lines.append(_not_run(row, len(head)))
            continue
        f = row["fidelity"]
        cells = [_label(row), _spread(f["map_r"]), _spread(f["top20_iou"]), _spread(f["weights_spearman"]),
                 f"{f['same_class']['same']} of {f['same_class']['images']}"]
        cells += [_number(f["metrics"].get(drop), 2)] if drop else []
        cells += [_number(f["metrics"].get(deletion), 4)] if deletion else []
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def speed_table(result: dict[str, Any]) -> list[str]:
    """Per configuration: engine-alone images/s per batch size, one image's explanation (p50 / p90 / p99 s),
    images/s explaining every image, explanation over engine-alone seconds for the same passes, peak RSS."""
    sizes = [str(b) for b in result["settings"]["batch_sizes"]]
    head = ["configuration", *[f"engine images/s, batch {b}" for b in sizes], "1 image s, p50 / p90 / p99",
            f"images/s over {result['images']}", "explain / engine", "peak RSS MB (+ growth)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["configurations"]:
        if "latency" not in row:
            continue  # the fidelity table says why
        t, m = row["latency"], row["memory"]
        one = t["explain_one_image_s"]
        growth = "" if m["growth_mb"] is None else f" (+{m['growth_mb']:.0f})"
        cells = [_label(row), *[_number(t["engine_images_per_s"][b], 1) for b in sizes],
                 f"{one['p50']:.3f} / {one['p90']:.3f} / {one['p99']:.3f}", _number(t["throughput_images_per_s"], 3),
                 _number(t["explain_over_engine"], 2), f"{m['peak_rss_mb']:.0f}{growth}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(result: dict[str, Any]) -> str:
    """Both tables with a line saying what was run."""
    s = result["settings"]
    method = s["method"] + ("" if s["convention"] == "paper" else f":{s['convention']}")
    intro = (f"{result.get('model', 'model')} ({result.get('layer', '')}), {method}, {result['images']} images, "
             f"against {result['reference']} on its targets; metrics scored on the reference engine.")
    return "\n".join([intro, "", "Fidelity", "", *fidelity_table(result), "", "Speed", "", *speed_table(result), ""])


def gate(result: dict[str, Any], minimum: float) -> list[str]:
    """One line per configuration that fails ``--min-correlation``: a mean map r below ``minimum``, or a
    configuration asked for that could not be measured here (one its backend does not offer is not asked for)."""
    failed = []
    for row in result["configurations"]:
        if row["status"] == "unavailable":
            failed.append(f"{row['configuration']}: could not be measured ({row['reason']})")
        elif "fidelity" in row:
            r = row["fidelity"]["map_r"]
            if r["mean"] is None or r["mean"] < minimum:
                failed.append(f"{row['configuration']}: mean map r {_number(r['mean'], 4)} (min "
                              f"{_number(r['min'], 4)}) is below {minimum:g}")
    return failed

