"""``report.html``: one self-contained page (inline CSS, JS and data; images as files beside it; no network) with the
method x metric table, the curve plots, the skipped images and why, and a gallery of every image: sortable by any
metric, filterable by class, status and name, paged on the client over the rows embedded as JSON.

Everything read from a run (file names, class names, errors) reaches the page as escaped text: ``html.escape`` in the
markup made here, JSON with ``<``, ``>`` and ``&`` escaped in the data block, and ``textContent`` in the script.
"""

from __future__ import annotations

import html
import json
import math
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from camrt._version import __version__
from camrt.errors import CamrtError
from camrt.runtime.atomic import write_text
from camrt.runtime.report_page.images import SIZES, image_name, preprocessing_of, write_image_files
from camrt.runtime.report_page.labels import metric_label, short_label
from camrt.runtime.report_page.sources import RunData, read_run_folder

PAGE = "report.html"
PAGE_SIZE = 200  # gallery rows per page: a thousand-image run stays quick to draw
SHOWN = ("average_drop_", "increase_", "deletion_auc_", "insertion_auc_")  # the values under each overlay


def build_report(folder: str | Path, summary: dict[str, Any] | None = None, regenerate: bool = True) -> Path:
    """Write ``folder``/report.html for an evaluate or explain-dataset run folder, finished or interrupted.

    summary: the table when the caller has it (``evaluate`` at its end), else recomputed from the records.
    regenerate: draw the image files that are missing where the maps are kept (explain-dataset's shards);
    evaluate keeps no maps, so it draws them as each image finishes, and a missing one is shown as missing."""
    data = read_run_folder(folder, summary=summary is None)
    if summary is not None:
        data.summary = summary
    if regenerate and data.command == "explain-dataset":
        _regenerate(data)
    if regenerate and data.summary:
        _plot_missing_curves(data)
    text = render(data)
    return write_text(data.folder / PAGE, text)


def _regenerate(data: RunData) -> int:
    """Draw the missing image files of an explain-dataset run from its shards, one shard in memory at a time;
    returns how many images were drawn. A photo that cannot be read again stays missing (one warning)."""
    pre = preprocessing_of(data.run)
    if pre is None:
        return 0
    wanted: dict[str, list[dict[str, Any]]] = {}
    for row in data.rows:
        if row.get("status") == "ok" and row.get("shard") and not _complete(data.folder, row["index"], 1):
            wanted.setdefault(str(row["shard"]), []).append(row)
    drawn, failed = 0, []
    for shard, rows in sorted(wanted.items()):
        path = data.folder / shard
        if path.parent.resolve() != (data.folder / "shards").resolve():
            continue  # a shard cell naming another place: only the run's own shards are read
        try:
            with np.load(path) as loaded:
                saliency = loaded["saliency"]
                for row in rows:
                    try:
                        write_image_files(data.folder, row["index"], row["path"], pre,
                                          [saliency[int(row["row"])]], data.run.get("background"))
                        drawn += 1
                    except (CamrtError, OSError, ValueError, IndexError) as exc:
                        failed.append(f"{row['path']}: {exc}")
        except (OSError, ValueError, KeyError):
            failed.append(f"{path}: cannot read its maps")
    if failed:
        print(f"camrt: warning: {len(failed)} image(s) of the report could not be drawn (first: {failed[0]}); "
              "they are shown as missing", file=sys.stderr)
    return drawn


def _plot_missing_curves(data: RunData) -> None:
    """The mean deletion / insertion curves of a summary whose plot is not beside the page (an interrupted run)."""
    from camrt.runtime.plots import plot_curves

    summary = data.summary or {}
    for variant in summary.get("curves") or {}:
        name = f"curves-{variant}.png"
        if re.fullmatch(r"curves-[\w.+-]+\.png", name) and not (data.folder / name).exists():
            try:
                plot_curves(summary, variant, data.folder / name)
            except CamrtError:
                return  # no matplotlib: the page goes without the plots
            data.curves = sorted({*data.curves, name})


def _complete(folder: Path, index: int, methods: int) -> bool:
    names = [image_name(index, w, s) for w in ("photo", *(f"m{k}" for k in range(methods))) for s in SIZES]
    return all((folder / name).exists() for name in names)


# ------------------------------------------------------------------------------------------ the page
def render(data: RunData) -> str:
    """The page's HTML text."""
    template = _asset("template.html")
    parts = {
        "title": html.escape(f"camrt {data.command}: {data.folder.name}"),
        "command": html.escape(data.command),
        "facts": _facts(data),
        "table": _table(data),
        "curves": "".join(f'<figure><img src="{html.escape(name)}" alt="{html.escape(name)}"></figure>'
                          for name in data.curves if re.fullmatch(r"curves-[\w.+-]+\.png", name)),
        "skipped": _skipped(data),
        "style": _asset("page.css"),
        "script": _asset("page.js"),
        "data": _json_for_script(_page_data(data)),
    }
    return re.sub(r"\{\{(\w+)\}\}", lambda match: parts[match.group(1)], template)  # one pass: no re-expansion


def _asset(name: str) -> str:
    return resources.files("camrt.runtime.report_page").joinpath(name).read_text(encoding="utf-8")


def _json_for_script(value: Any) -> str:
    """JSON that cannot end its <script> block or open a comment: <, > and & as \\u escapes."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _facts(data: RunData) -> str:
    ok = sum(1 for r in data.rows if r.get("status") == "ok")
    bad = len(data.rows) - ok
    total = data.run.get("images")
    done = f"{len(data.rows)} of {total}" if isinstance(total, int) and total != len(data.rows) else f"{len(data.rows)}"
    text = (f"{done} images done ({ok} ok, {bad} skipped); methods: {', '.join(data.methods)}; "
            f"data: {data.run.get('data_root', '?')}; written by camrt {__version__}")
    return html.escape(text)


def _table(data: RunData) -> str:
    """The method x metric table (best value bold, ↓ lower / ↑ higher is better) as escaped HTML."""
    summary = data.summary
    if not summary or not summary.get("metrics"):
        return "<p class=note>No metric values in this run" + (
            " (explain-dataset without --metrics)." if data.command == "explain-dataset" else ".") + "</p>"
    labels = list(summary.get("methods", data.methods))
    head = "".join(f"<th>{html.escape(m)}</th>" for m in labels)
    lines = [f"<table class=summary><thead><tr><th>metric</th><th>variant</th>{head}</tr></thead><tbody>"]
    for row in summary["metrics"]:
        values = [row["values"].get(m) for m in labels]
        finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        best = (min(finite) if row.get("better") == "lower" else max(finite)) if finite else None
        arrow = "↓" if row.get("better") == "lower" else "↑"
        cells = "".join(_cell(v, v == best and len(labels) > 1) for v in values)
        lines.append(f"<tr><td>{html.escape(str(row['metric']))} {arrow}</td>"
                     f"<td>{html.escape(str(row.get('variant', '')))}</td>{cells}</tr>")
    cost = summary.get("cost") or {}
    if cost:
        for key, name, digits in (("explain_passes_per_image", "explain passes per image", 0),
                                  ("explain_seconds_per_image", "explain seconds per image", 2)):
            cells = "".join(_cell((cost.get(m) or {}).get(key), False, digits) for m in labels)
            lines.append(f"<tr><td>{name}</td><td></td>{cells}</tr>")
    lines.append("</tbody></table>")
    caption = (f"<p class=note>Over the {summary.get('evaluated', 0)} images done"
               + (" (mean of each image's value)" if data.command == "explain-dataset" else "") + ".</p>")
    return "\n".join(lines) + caption


def _cell(value: Any, bold: bool, digits: int = 3) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "<td class=num>n/a</td>"
    text = f"{value:,.{digits}f}"
    return f"<td class=num><strong>{text}</strong></td>" if bold else f"<td class=num>{text}</td>"


def _skipped(data: RunData) -> str:
    bad = [r for r in data.rows if r.get("status") != "ok"]
    if not bad:
        return ""
    items = "".join(f"<li><code>{html.escape(str(r.get('path', '')))}</code>: {html.escape(str(r.get('error') or ''))}"
                    "</li>" for r in bad)
    return f"<h2>Skipped images ({len(bad)})</h2><ul class=skipped>{items}</ul>"


def _page_data(data: RunData) -> dict[str, Any]:
    """The gallery's JSON: methods, metric columns (key, name, variant, better) and one compact row per image."""
    keys = list(dict.fromkeys(k for r in data.rows for v in r["values"] if v for k in v))
    metrics = [{"key": k, "name": n, "variant": v, "better": b, "short": short_label(k), "shown": k.startswith(SHOWN)}
               for k in keys for n, v, b in [metric_label(k)]]
    default = next((m["key"] for m in metrics if m["key"].startswith("deletion_auc_")),
                   next((m["key"] for m in metrics if m["better"]), keys[0] if keys else ""))
    rows = []
    for r in data.rows:
        index = int(r["index"])
        ok = r.get("status") == "ok"
        name = Path(str(r.get("path") or "")).name
        row: dict[str, Any] = {
            "index": index, "name": name, "path": str(r.get("path") or ""), "status": str(r.get("status")),
            "error": r.get("error") or "", "label": r.get("label") or "",
            "cls": _class_of(r) if ok else "", "predicted": _name(r, "predicted") if ok else "",
            "probability": _finite(r.get("probability")),
            "photo": _files(data.folder, index, "photo") if ok else None,
            "methods": [_files(data.folder, index, f"m{k}") if ok and v is not None else None
                        for k, v in enumerate(r["values"])],
            "values": [v if v is None else {k: _finite(x) for k, x in v.items()} for v in r["values"]],
        }
        rows.append(row)
    return {"methods": data.methods, "metrics": metrics, "default_metric": default, "page_size": PAGE_SIZE,
            "rows": rows}


def _files(folder: Path, index: int, which: str) -> dict[str, str] | None:
    """The image's files of each size, or None when one is missing (shown as missing, never a broken image)."""
    names = {size: image_name(index, which, size) for size in SIZES}
    return names if all((folder / name).exists() for name in names.values()) else None


def _class_of(row: dict[str, Any]) -> str:
    return _name(row, "target")


def _name(row: dict[str, Any], key: str) -> str:
    name = row.get(f"{key}_name")
    return str(name) if name not in (None, "") else str(row.get(key, ""))


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
