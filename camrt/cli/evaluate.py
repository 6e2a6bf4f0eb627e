"""``camrt evaluate BUNDLE DATA``: explain a dataset with several methods and measure the maps.

Writes records.jsonl (one line per image, appended as each finishes: what --resume reads back), metrics.csv
(one row per image and method), summary.md / summary.json (method x metric), curves-<variant>.png,
side-by-side overlays of the methods for the first --overlays images, and report.html (every image's maps over its
original photo, drawn into report/ as each image finishes: the run keeps no maps to draw them from later).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from camrt._version import __version__
from camrt.cli.args import (
    add_command,
    add_metric_arguments,
    add_shared_arguments,
    image_error,
    image_target,
    make_explainer,
    metric_variants,
    parse_options,
    passes_postfix,
    progress_bar,
    resolve_target,
)
from camrt.errors import CamrtError, InputError
from camrt.runtime.listing import index_listing, listing_facts
from camrt.runtime.run_folder import locked, sigterm_as_interrupt

NAME = "evaluate"
RECORDS = "records.jsonl"


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``evaluate`` to the CLI's subparsers."""
    p = add_command(subparsers, NAME, parents, "explain a dataset with several methods and measure the maps", __doc__)
    p.add_argument("data", metavar="DATA",
                   help="a folder of images (subfolders: ImageFolder labels), a CSV of path,label, or a glob")
    add_shared_arguments(p, "the results", resume="skip the images already done in --out", several=True,
                         batch="perturbed inputs per forward pass")
    add_metric_arguments(p, optional=False)
    p.add_argument("--overlays", type=int, default=8, metavar="N",
                   help="side-by-side overlays for the first N images (default: 8)")


def run(args: argparse.Namespace) -> int:
    """Evaluate every image of DATA not done yet; write the tables and plots; 2 if any image was skipped."""
    from camrt.runtime.dataset import discover
    from camrt.runtime.evaluate import Evaluator, parse_methods

    started = time.perf_counter()
    specs = parse_methods(args.methods, parse_options(args.option))
    confidence, causal = metric_variants(args)
    if args.overlays < 0:
        raise InputError(f"--overlays: must be 0 or more, got {args.overlays}")
    explainer = make_explainer(args)
    args.target = resolve_target(args.target, explainer.bundle)
    evaluator = Evaluator(explainer, confidence, causal, args.step, args.batch_size)
    if args.allow_new and not args.resume:
        raise InputError("--allow-new: only with --resume (a new run takes every image anyway)")
    keyed, facts = listing_facts(args.data, discover(args.data)[: args.limit])
    with locked(args.out) as out, sigterm_as_interrupt():  # one writer; SIGTERM keeps the records written
        return _evaluate_all(out, keyed, facts, evaluator, specs, args, started)


def _evaluate_all(out: Path, keyed: list[tuple[str, Any]], facts: dict[str, Any], evaluator: Any, specs: list[Any],
                  args: argparse.Namespace, started: float) -> int:
    """Evaluate the images not in ``out``'s records yet (keyed by their path relative to DATA, indices kept as the
    run's listing.csv has them), appending a record per image, then write the reports."""
    from camrt.runtime.report_page import report_facts

    explainer = evaluator.explainer
    config = _config(args, specs, evaluator.metrics.variants)
    causal = [v.name for v in evaluator.metrics.variants.get("causal", [])]
    facts = {**facts, **report_facts(explainer.bundle.manifest.preprocessing, causal, args.step)}
    done = _load_done(out, explainer, config, args.resume, facts)
    entries = index_listing(out, keyed, facts, args.allow_new)
    with progress_bar(len(entries), args.quiet) as bar:
        for index, key, item in entries:
            if key not in done:
                record = {**_evaluate_one(evaluator, item, index, specs, args, out, bar), "key": key}
                if record["status"] != "ok":
                    bar.write(f"camrt: warning: {record['error']}; skipped", file=sys.stderr)
                _append(out / RECORDS, record)
                done[key] = record
            bar.update(1)
    records = [done[key] for _, key, _ in sorted(entries, key=lambda entry: entry[0])]
    return _write_reports(out, records, specs, evaluator.metrics.variants, explainer.bundle, started)


def _evaluate_one(evaluator: Any, item: Any, index: int, specs: list[Any], args: argparse.Namespace, out: Path,
                  bar: Any) -> dict[str, Any]:
    """One image's record (README "Per-image records") through every method and metric; a bad image's record
    has status ``error`` and the one-line reason naming its file."""
    from camrt.runtime.dataset import label_index
    from camrt.runtime.preprocess import decode_photo, normalize
    from camrt.runtime.records import error_record, ordered

    bundle = evaluator.explainer.bundle
    try:
        target = image_target(args.target, item.label, bundle, item.path)
        pre = bundle.manifest.preprocessing
        rgb, decoding = decode_photo(item.path, pre, args.background)
        evaluation = evaluator.evaluate(normalize(rgb, pre)[None], specs, targets=target, seed=args.seed,
                                        progress=passes_postfix(bar, item.path))
    except CamrtError as exc:
        return {"index": index, **error_record(item.path, image_error(item.path, exc)), "label": item.label}
    record = ordered({"index": index, **evaluation.records(bundle.class_name, [item.path])[0],
                      **decoding.fields(), "label": item.label}, first=("index",))
    if decoding.warning:
        bar.write(f"camrt: warning: {decoding.warning}", file=sys.stderr)
    if item.label is not None:
        record["label_index"] = label_index(item.label, bundle)
    if index < args.overlays:
        _panel(rgb, evaluation, record, out, index, item.path)
    _report_images(out, index, item.path, pre, evaluation, args.background, bar)
    return record


def _report_images(out: Path, index: int, path: Path, pre: Any, evaluation: Any, background: Any, bar: Any) -> None:
    """The report's tiles of this image (its photo, every method's map over it), drawn now: no maps are kept."""
    from camrt.runtime.report_page import write_image_files

    try:
        write_image_files(out, index, path, pre, [e.saliency[0] for e in evaluation.explanations], background)
    except (CamrtError, OSError, ValueError) as exc:  # the run goes on: the page shows them as missing
        bar.write(f"camrt: warning: {path}: {exc}; its report images are missing", file=sys.stderr)


def _panel(rgb: np.ndarray, evaluation: Any, record: dict[str, Any], out: Path, index: int, path: Path) -> None:
    from camrt.runtime.plots import method_panel

    causal = next(iter(evaluation.causal.values()), None)
    titles = []
    for mi, label in enumerate(record["methods"]):
        detail = f"del {causal.deletion_auc[mi, 0]:.2f} ins {causal.insertion_auc[mi, 0]:.2f}" if causal else ""
        titles.append(f"{label}\n{detail}".rstrip())
    name = f"{index:05d}-{path.stem}.png"
    (out / "overlays").mkdir(exist_ok=True)
    photo = f"{path.name}\n{record.get('target_name') or record['target']} ({record['probability']:.2f})"
    method_panel(rgb, [e.saliency[0] for e in evaluation.explanations], titles, out / "overlays" / name,
                 photo_title=photo)


def _config(args: argparse.Namespace, specs: list[Any], variants: dict[str, list[Any]]) -> dict[str, Any]:
    """The settings that make two runs' records comparable (with the bundle hash, run.json's; --resume checks them)."""
    return {
        "methods": [s.label for s in specs],
        "confidence": [v.name for v in variants.get("confidence", [])],
        "causal": [c.description for c in variants.get("causal", [])],
        "target": args.target,
        "seed": args.seed,
        "background": list(args.background),
    }


def _load_done(out: Path, explainer: Any, config: dict[str, Any], resume: bool,
               facts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Open --out as a run folder (``run_folder.open_run``, the listing's ``facts`` recorded); the records already in
    it (with --resume), keyed by their ``key``. A line torn by a crash is dropped, so that image is done again."""
    from camrt.runtime.atomic import write_bytes
    from camrt.runtime.run_folder import open_run, run_config

    runner = explainer.runner  # its engine and precision: a run below FP32 is pinned to them (run_folder.run_config)
    config = run_config(explainer.bundle, config, getattr(runner, "name", None), getattr(runner, "precision", None))
    open_run(out, config, resume, results=(RECORDS,), command=NAME, extra=facts)
    records_path = out / RECORDS
    done: dict[str, dict[str, Any]] = {}
    if not records_path.exists():
        return done
    lines = records_path.read_bytes().split(b"\n")
    good = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line torn by a crash mid-write: that image is done again
        done[record["key"]] = record
        good.append(line)
    if len(good) != len([line for line in lines if line.strip()]):  # rewrite without the torn line
        write_bytes(records_path, b"".join(g + b"\n" for g in good))
    return done


def _append(path: Path, record: dict[str, Any]) -> None:
    """One record as one line, flushed to disk before the next image starts."""
    with open(path, "ab") as handle:
        handle.write((json.dumps(record) + "\n").encode())
        handle.flush()
        os.fsync(handle.fileno())


def _write_reports(out: Path, records: list[dict[str, Any]], specs: list[Any], variants: dict[str, list[Any]],
                   bundle: Any, started: float) -> int:
    """metrics.csv, summary.md / summary.json and the curve plots from the records; 2 when an image was bad."""
    from camrt.runtime.atomic import write_text
    from camrt.runtime.plots import plot_curves
    from camrt.runtime.report import markdown, metrics_csv, summarize

    labels = [s.label for s in specs]
    height, width = bundle.manifest.input_shape[1:]
    summary = summarize(records, labels, variants, pixels=height * width)
    summary.update({"camrt_version": __version__, "bundle": str(bundle.root), "model": bundle.manifest.model_name,
                    "layer": bundle.manifest.target_layer, "seconds": round(time.perf_counter() - started, 3),
                    "skipped_images": [{"path": r["path"], "error": r["error"]}
                                       for r in records if r["status"] != "ok"]})
    table = markdown(summary)
    write_text(out / "metrics.csv", metrics_csv(records, labels))
    write_text(out / "summary.md", table)
    write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    if summary["evaluated"]:
        for variant in variants.get("causal", []):
            try:
                plot_curves(summary, variant.name, out / f"curves-{variant.name}.png")
            except CamrtError as exc:
                print(f"camrt: warning: {exc}; no curve plots", file=sys.stderr)
                break
    from camrt.runtime.report_page import build_report

    page = build_report(out, summary=summary)
    print(table, end="")
    print(f"results: {out} ({summary['seconds']:.1f} s)")
    print(f"camrt: report: {page}", file=sys.stderr)  # (stdout: the table and the results line, as before)
    return 2 if summary["skipped"] else 0
