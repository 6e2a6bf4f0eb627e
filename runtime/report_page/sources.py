"""A run folder read for its report: the methods, one row per image (fields and per-method values) and the summary.

Works on a finished run and on one interrupted at any point: ``evaluate``'s records.jsonl (a torn last line is
skipped), ``explain-dataset``'s committed shard rows (``shards.read_index``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from camrt.errors import InputError
from camrt.runtime.records import FIELDS
from camrt.runtime.report import METHOD_KEYS

RECORDS = "records.jsonl"  # evaluate's per-image records (camrt/cli/evaluate.py)
IMAGE_KEYS = {*FIELDS, "index", "key", "label", "label_index", "shard", "row", "saliency", "overlay", "methods",
              "metric_passes", "metric_seconds", "metric_passes_by_metric", "metric_seconds_by_metric"}


@dataclass
class RunData:
    """What the page shows: ``rows`` hold the image's record fields and ``values``, one dict per method (None for a
    bad image); ``summary`` the method x metric table (``report.summarize``'s), or None."""

    folder: Path
    command: str
    methods: list[str]
    rows: list[dict[str, Any]]
    run: dict[str, Any]
    summary: dict[str, Any] | None = None
    curves: list[str] = field(default_factory=list)  # curve plots beside the page (file names)


def read_run_folder(folder: str | Path, summary: bool = True) -> RunData:
    """The report's data from an evaluate or explain-dataset run folder (``summary``: with the table); a one-line
    error for any other folder."""
    from camrt.runtime.run_folder import RUN

    folder = Path(folder)
    try:
        run = json.loads((folder / RUN).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"RUN_DIR: {folder} has no {RUN}: not a camrt evaluate or explain-dataset run "
                         "folder") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"RUN_DIR: {folder / RUN} cannot be read as JSON ({type(exc).__name__})") from None
    command = run.get("command") if isinstance(run, dict) else None
    if command == "evaluate":
        data = _evaluate(folder, run, summary)
    elif command == "explain-dataset":
        data = _explain_dataset(folder, run)
    else:
        raise InputError(f"RUN_DIR: {folder} holds a camrt {command or 'unknown'} run; the report is made for "
                         "evaluate and explain-dataset runs")
    data.curves = sorted(p.name for p in folder.glob("curves-*.png"))
    return data


def _evaluate(folder: Path, run: dict[str, Any], summary: bool) -> RunData:
    records: dict[str, dict[str, Any]] = {}
    path = folder / RECORDS
    if path.exists():
        for line in path.read_bytes().split(b"\n"):
            try:
                record = json.loads(line)
            except ValueError:
                continue  # an empty line, or one torn by a crash
            if isinstance(record, dict) and "index" in record:
                records[str(record.get("key", record["index"]))] = record
    methods = [str(m) for m in run.get("methods", [])]
    rows = []
    for record in sorted(records.values(), key=lambda r: int(r["index"])):
        entries = record.get("methods") or {}
        values = [_numbers({k: v for k, v in entries[m].items() if k not in METHOD_KEYS}) if m in entries else None
                  for m in methods]
        rows.append({**{k: v for k, v in record.items() if k != "methods"}, "values": values})
    data = RunData(folder, "evaluate", methods, rows, run)
    if summary:
        data.summary = _evaluate_summary(folder, run, list(records.values()), methods)
    return data


def _evaluate_summary(folder: Path, run: dict[str, Any], records: list[dict[str, Any]],
                      methods: list[str]) -> dict[str, Any] | None:
    """The table recomputed from the records (an interrupted run has no summary.json, or an older one), with the
    variants run.json names; summary.json when run.json does not name them (a folder from an older camrt)."""
    from camrt.runtime.metrics.registry import family
    from camrt.runtime.report import summarize

    facts = run.get("report")
    if isinstance(facts, dict) and records:
        crop = facts.get("crop") or [0, 0]
        variants = {"confidence": family("confidence").variants(run.get("confidence", []), facts.get("step")),
                    "causal": family("causal").variants(facts.get("causal", []), facts.get("step"))}
        try:
            return summarize(sorted(records, key=lambda r: int(r["index"])), methods, variants,
                             pixels=int(crop[0]) * int(crop[1]))
        except (KeyError, TypeError, ValueError):
            pass  # records of another shape: fall back to summary.json
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and "metrics" in summary else None


def _explain_dataset(folder: Path, run: dict[str, Any]) -> RunData:
    from camrt.runtime.evaluate import MethodSpec
    from camrt.runtime.shards import read_index

    options = run.get("options") or {}
    label = MethodSpec(str(run.get("method", "method")), str(run.get("convention", "paper")),
                       tuple(sorted(options.items())) if isinstance(options, dict) else ()).label
    rows = []
    for row in read_index(folder) if (folder / "shards").is_dir() else []:
        record: dict[str, Any] = {k: (None if v == "" else v) for k, v in row.items()}
        for key in ("index", "target", "predicted"):
            if record.get(key) is not None:
                record[key] = int(record[key])
        if record.get("probability") is not None:
            record["probability"] = float(record["probability"])
        values = _numbers({k: v for k, v in row.items() if k not in IMAGE_KEYS or k in ("passes_run",
                                                                                         "passes_saved", "seconds")})
        rows.append({**record, "values": [values if record.get("status") == "ok" else None]})
    return RunData(folder, "explain-dataset", [label], rows, run, summary=_means([label], rows))


def _numbers(values: dict[str, Any]) -> dict[str, float | None]:
    """The numeric values of a method's entry (CSV strings parsed); empty, NaN and infinite ones None."""
    out: dict[str, float | None] = {}
    for key, value in values.items():
        if isinstance(value, bool):
            value = float(value)
        try:
            number = float(value) if value is not None and value != "" else None
        except (TypeError, ValueError):
            continue  # not a number column
        out[key] = number if number is not None and math.isfinite(number) else None
    return out


def _means(methods: list[str], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A summary of a one-method run: the mean of each metric column over its explained images."""
    from camrt.runtime.report_page.labels import metric_label

    done = [r for r in rows if r.get("status") == "ok" and r["values"][0] is not None]
    keys = list(dict.fromkeys(k for r in done for k in r["values"][0]))
    metrics = []
    for key in keys:
        name, variant, better = metric_label(key)
        if better is None:
            continue
        numbers = [r["values"][0][key] for r in done if r["values"][0].get(key) is not None]
        value = sum(numbers) / len(numbers) if numbers else None
        metrics.append({"metric": name, "variant": variant, "better": better, "values": {methods[0]: value}})
    return {"images": len(rows), "evaluated": len(done), "skipped": len(rows) - len(done), "methods": methods,
            "metrics": metrics}
