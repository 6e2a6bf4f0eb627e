"""``camrt evaluate BUNDLE DATA``: explain a dataset with several methods and measure the maps.

Writes records.jsonl (one line per image, appended as each finishes: what --resume reads back), metrics.csv
(one row per image and method), summary.md / summary.json (method x metric), curves-<variant>.png, and
side-by-side overlays of the methods for the first --overlays images.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from camrt._version import __version__
from camrt.errors import CamrtError, InputError
from camrt.runtime.metrics.confidence import DEFAULT_VARIANTS

RECORDS = "records.jsonl"
RUN = "run.json"


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``evaluate`` on the CLI's subparsers."""
    from camrt.cli import _positive_int, add_backend_arguments

    p = sub.add_parser(
        "evaluate", parents=parents, help="explain a dataset with several methods and measure the maps",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
    )
    p.add_argument("bundle", metavar="BUNDLE", type=Path, help="a bundle folder (from camrt export)")
    p.add_argument("data", metavar="DATA",
                   help="a folder of images (subfolders: ImageFolder labels), a CSV of path,label, or a glob")
    p.add_argument("--methods", "-m", default="scorecam,scorecam++",
                   help="comma-separated METHOD[:CONVENTION] (default: scorecam,scorecam++)")
    p.add_argument("--out", "-o", required=True, type=Path, help="the folder to write the results to")
    p.add_argument("--confidence", default=",".join(DEFAULT_VARIANTS),
                   help="Average Drop / Increase in Confidence variants: prob-full, prob-topP, logit-full, "
                        "logit-topP (default: %(default)s)")
    p.add_argument("--causal", default="rise",
                   help="deletion/insertion variants: rise, torchcam, or none (default: rise)")
    p.add_argument("--step", type=_positive_int, default=None, metavar="PIXELS",
                   help="RISE pixels per step (default: H*W/28, 1792 at 224x224)")
    p.add_argument("--target", choices=("predicted", "label"), default="predicted",
                   help="explain the predicted class, or the label the data gives (default: predicted)")
    p.add_argument("--overlays", type=int, default=8, metavar="N",
                   help="side-by-side overlays for the first N images (default: 8)")
    p.add_argument("--resume", action="store_true", help="skip the images already done in --out")
    add_backend_arguments(p)
    p.add_argument("--batch-size", "-b", type=_positive_int, default=64, metavar="N",
                   help="perturbed inputs per forward pass (default: 64)")
    p.add_argument("--option", "-O", action="append", default=[], metavar="[METHOD.]KEY=VALUE",
                   help="a method option, e.g. iscam.num_samples=5 or num_samples=5 for every method taking it")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="noise seed for sscam (default: 0)")
    p.add_argument("--limit", type=_positive_int, default=None, metavar="N", help="only the first N images")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _variants(args: argparse.Namespace) -> tuple[list[Any], list[Any]]:
    from camrt.runtime.metrics.causal import get_variant
    from camrt.runtime.metrics.confidence import parse_variant

    confidence = [parse_variant(v) for v in args.confidence.split(",") if v.strip()]
    names = [c.strip() for c in args.causal.split(",") if c.strip()]
    causal = [] if names == ["none"] else [get_variant(c, args.step) for c in dict.fromkeys(names)]
    return list({v.name: v for v in confidence}.values()), causal


def run(args: argparse.Namespace) -> int:
    """Evaluate every image of DATA not done yet; write the tables and plots; 2 if any image was skipped."""
    from tqdm import tqdm

    from camrt.cli import _parse_options, _prepare_out, make_explainer
    from camrt.runtime.dataset import discover
    from camrt.runtime.evaluate import Evaluator, parse_methods

    started = time.perf_counter()
    specs = parse_methods(args.methods, _parse_options(args.option))
    confidence, causal = _variants(args)
    if args.overlays < 0:
        raise InputError(f"--overlays: must be 0 or more, got {args.overlays}")
    explainer = make_explainer(args)
    evaluator = Evaluator(explainer, [v.name for v in confidence], [c.name for c in causal], args.step,
                          args.batch_size)
    items = discover(args.data)[: args.limit]
    out = _prepare_out(args.out)
    done = _load_done(out, _config(args, explainer.bundle, specs, confidence, causal), args.resume)

    with tqdm(total=len(items), unit="image", file=sys.stderr, disable=True if args.quiet else None,
              dynamic_ncols=True) as bar:
        for index, item in enumerate(items):
            key = _key(item.path)
            if key not in done:
                record = _evaluate_one(evaluator, item, index, specs, args, out, bar)
                if record["status"] != "ok":
                    bar.write(f"camrt: warning: {record['error']}; skipped", file=sys.stderr)
                _append(out / RECORDS, record)
                done[key] = record
            bar.update(1)
    records = [done[_key(item.path)] for item in items]
    return _write_reports(out, records, specs, confidence, causal, explainer.bundle, started)


def _key(path: Path) -> str:
    return os.path.abspath(path)


def _evaluate_one(evaluator: Any, item: Any, index: int, specs: list[Any], args: argparse.Namespace, out: Path,
                  bar: Any) -> dict[str, Any]:
    """One image through every method and metric; a bad image becomes a skipped record naming its file."""
    from camrt.cli import _one_line, _postfix
    from camrt.runtime.dataset import label_index
    from camrt.runtime.preprocess import load_image, normalize, resize_and_crop

    bundle = evaluator.explainer.bundle
    base = {"index": index, "file": str(item.path), "label": item.label}
    try:
        target = label_index(item.label, bundle) if args.target == "label" else None
        if args.target == "label" and target is None:
            raise InputError(f"{item.path}: label {item.label!r} is not a class of this bundle"
                             if item.label is not None else f"{item.path}: no label (--target label)")
        pre = bundle.manifest.preprocessing
        rgb = np.asarray(resize_and_crop(load_image(item.path), pre))
        evaluation = evaluator.evaluate(normalize(rgb, pre)[None], specs, targets=target, seed=args.seed,
                                        progress=_postfix(bar, item.path))
    except CamrtError as exc:
        message = _one_line(exc)
        message = message if message.startswith(str(item.path)) else f"{item.path}: {message}"
        return {**base, "status": "skipped", "error": message}
    record = {**base, **evaluation.records(bundle.class_name)[0]}
    if item.label is not None:
        record["label_index"] = label_index(item.label, bundle)
    if index < args.overlays:
        _panel(rgb, evaluation, record, out, index, item.path)
    return record


def _panel(rgb: np.ndarray, evaluation: Any, record: dict[str, Any], out: Path, index: int, path: Path) -> None:
    from camrt.runtime.plots import method_panel

    titles = []
    for label, entry in record["methods"].items():
        causal = next(iter(entry["causal"].values()), None)
        detail = f"del {causal['deletion_auc']:.2f} ins {causal['insertion_auc']:.2f}" if causal else ""
        titles.append(f"{label}\n{detail}".rstrip())
    name = f"{index:05d}-{path.stem}.png"
    (out / "overlays").mkdir(exist_ok=True)
    photo = f"{path.name}\n{record.get('target_name') or record['target']} ({record['score']['prob']:.2f})"
    method_panel(rgb, [e.saliency[0] for e in evaluation.explanations], titles, out / "overlays" / name,
                 photo_title=photo)


def _config(args: argparse.Namespace, bundle: Any, specs: list[Any], confidence: list[Any],
            causal: list[Any]) -> dict[str, Any]:
    """What makes two runs' records comparable: the bundle's files, the methods, the variants, the targets."""
    files = json.dumps(bundle.manifest.files, sort_keys=True).encode()
    return {
        "bundle_sha256": hashlib.sha256(files).hexdigest(),
        "methods": [s.label for s in specs],
        "confidence": [v.name for v in confidence],
        "causal": [c.description for c in causal],
        "target": args.target,
        "seed": args.seed,
    }


def _load_done(out: Path, config: dict[str, Any], resume: bool) -> dict[str, dict[str, Any]]:
    """Records already in --out (with --resume), keyed by absolute path; a torn last line is dropped."""
    from camrt.runtime.overlay import atomic_write

    records_path, run_path = out / RECORDS, out / RUN
    if not resume and records_path.exists():
        raise InputError(f"--out: {out} already has results ({RECORDS}); add --resume to continue them, "
                         "or choose another folder")
    if resume and run_path.exists():
        previous = json.loads(run_path.read_text())
        changed = [k for k in config if previous.get(k) != config[k]]
        if changed:
            raise InputError(f"--resume: {out} was made with other settings ({', '.join(changed)}); "
                             "use the same ones or another --out")
    else:
        payload = json.dumps({"camrt_version": __version__, **config}, indent=2) + "\n"
        atomic_write(run_path, lambda handle: handle.write(payload.encode()))
    done: dict[str, dict[str, Any]] = {}
    if not resume or not records_path.exists():
        return done
    lines = records_path.read_bytes().split(b"\n")
    good = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line torn by a crash mid-write: that image is done again
        done[_key(Path(record["file"]))] = record
        good.append(line)
    if len(good) != len([line for line in lines if line.strip()]):  # rewrite without the torn line
        atomic_write(records_path, lambda handle: handle.write(b"".join(g + b"\n" for g in good)))
    return done


def _append(path: Path, record: dict[str, Any]) -> None:
    """One record as one line, flushed to disk before the next image starts."""
    with open(path, "ab") as handle:
        handle.write((json.dumps(record) + "\n").encode())
        handle.flush()
        os.fsync(handle.fileno())


def _write_reports(out: Path, records: list[dict[str, Any]], specs: list[Any], confidence: list[Any],
                   causal: list[Any], bundle: Any, started: float) -> int:
    from camrt.runtime.overlay import atomic_write
    from camrt.runtime.plots import plot_curves
    from camrt.runtime.report import csv_rows, markdown, summarize, to_csv

    labels = [s.label for s in specs]
    height, width = bundle.manifest.input_shape[1:]
    summary = summarize(records, labels, confidence, causal, pixels=height * width)
    summary.update({"camrt_version": __version__, "bundle": str(bundle.root), "model": bundle.manifest.model_name,
                    "layer": bundle.manifest.target_layer, "seconds": round(time.perf_counter() - started, 3),
                    "skipped_images": [{"file": r["file"], "error": r["error"]}
                                       for r in records if r["status"] != "ok"]})
    table = markdown(summary)
    text = to_csv(csv_rows(records, labels, confidence, causal))
    atomic_write(out / "metrics.csv", lambda handle: handle.write(text.encode()))
    atomic_write(out / "summary.md", lambda handle: handle.write(table.encode()))
    atomic_write(out / "summary.json", lambda handle: handle.write((json.dumps(summary, indent=2) + "\n").encode()))
    if summary["evaluated"]:
        for variant in causal:
            try:
                plot_curves(summary, variant.name, out / f"curves-{variant.name}.png")
            except CamrtError as exc:
                print(f"camrt: warning: {exc}; no curve plots", file=sys.stderr)
                break
    print(table, end="")
    print(f"results: {out} ({summary['seconds']:.1f} s)")
    return 2 if summary["skipped"] else 0
