"""``camrt explain BUNDLE INPUTS``: explain photos into ``<stem>.npy`` maps, ``<stem>.png`` overlays and summary.json.

Decoding runs ahead in threads and the stream fills each engine batch across images, so many photos go fast."""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from camrt._version import __version__
from camrt.cli import args as flags
from camrt.errors import CamrtError, InputError
from camrt.runtime.atomic import atomic_write, write_text
from camrt.runtime.dataset import Item, discover
from camrt.runtime.methods import get_convention, list_conventions
from camrt.runtime.records import cost_fields, error_record, ok_record, ordered
from camrt.runtime.run_folder import locked

NAME = "explain"
SUMMARY = "summary.json"
WRITE_AHEAD = 8  # explained images waiting for the writer at most: memory stays bounded
OVERLAYS = ("original", "input")  # --overlay: on the photo as the user has it, or on the crop the model saw


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``explain`` to the CLI's subparsers."""
    conventions = "; ".join(f"{m}: {', '.join(c)}" for m, c in list_conventions().items())
    p = flags.add_command(subparsers, NAME, parents, "explain photos with a bundle: a .npy map, a .png overlay, "
                          "summary.json", __doc__, epilog=f"conventions per method: {conventions}")
    p.add_argument("inputs", metavar="INPUTS", nargs="+", type=Path,
                   help="image files, or folders (their images and their subfolders' images, by path)")
    flags.add_shared_arguments(p, "the maps, overlays and summary.json")
    p.add_argument("--overwrite", action="store_true",
                   help="replace <stem>.npy / <stem>.png left in --out by an earlier run (never an input)")
    p.add_argument("--alpha", type=float, default=0.5, help="heat-map weight in the overlay (default: 0.5)")
    p.add_argument("--overlay", choices=OVERLAYS, default="original",
                   help="draw <stem>.png on the original photo at its own resolution, the crop the model saw "
                        "outlined (original, the default), or on the model's input crop (input)")


def run(args: argparse.Namespace) -> int:
    """Explain every input image; write <stem>.npy, <stem>.png and summary.json; 2 if any image failed."""
    from camrt.runtime.prefetch import decode_ahead
    from camrt.runtime.stream import Image, explain_stream

    started = time.perf_counter()
    options = flags.parse_options(args.option, args.method)
    get_convention(args.method, args.convention, **options)  # a bad method, convention or option fails first
    if not 0.0 <= args.alpha <= 1.0:
        raise InputError(f"--alpha: must be in [0, 1], got {args.alpha}")
    explainer = flags.make_explainer(args)
    bundle = explainer.bundle
    target = flags.resolve_target(args.target, bundle)
    items = collect_images(args.inputs, warn=flags.warn)[: args.limit]
    stems = output_stems([item.path for item in items])
    out = claim_outputs(args.out, [item.path for item in items], stems, args.overwrite)
    with locked(out):  # one writer per folder: a second explain into it gets a one-line error
        records: dict[int, dict[str, Any]] = {}
        photos: dict[int, tuple[np.ndarray, Any]] = {}  # the photos in flight and what decoding did, for the writer

        with flags.progress_bar(len(items), args.quiet) as bar:
            def fail(index: int, error: str | BaseException) -> None:
                message = flags.image_error(items[index].path, error)
                bar.write(f"camrt: warning: {message}; skipped", file=sys.stderr)
                records[index] = error_record(items[index].path, message)
                bar.update(1)

            def images() -> Iterator[Image]:
                entries = ((i, item.path, item.label) for i, item in enumerate(items))
                for decoded in decode_ahead(entries, bundle.manifest.preprocessing, keep_rgb=True,
                                            background=args.background):
                    try:
                        if decoded.x is None:
                            raise InputError(decoded.error or "cannot read this image")
                        chosen = flags.image_target(target, decoded.label, bundle, decoded.path)
                        photos[decoded.index] = (decoded.rgb, decoded.decoding)  # type: ignore[assignment]
                        if decoded.decoding is not None and decoded.decoding.warning:
                            bar.write(f"camrt: warning: {decoded.decoding.warning}", file=sys.stderr)
                        yield Image(decoded.index, decoded.x, chosen)
                    except InputError as exc:
                        fail(decoded.index, exc)

            def written(index: int, future: Future[dict[str, Any]]) -> None:
                try:
                    records[index] = future.result()
                except CamrtError as exc:
                    fail(index, exc)
                    return
                bar.update(1)

            # one writer thread: decoding the photo for its overlay, PNG encoding and the .npy overlap the engine
            pending: deque[tuple[int, Future[dict[str, Any]]]] = deque()
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="camrt-writer") as writer:
                for result in explain_stream(explainer, images(), args.method, args.convention,
                                             batch_size=args.batch_size, seed=args.seed, **options):
                    if result.status != "ok":
                        photos.pop(result.index, None)
                        fail(result.index, result.error or "not explained")
                        continue
                    item, stem = items[result.index].path, stems[result.index]
                    rgb, decoding = photos.pop(result.index)
                    pending.append((result.index, writer.submit(_write, result, rgb, item, stem, out, args, bundle,
                                                                decoding)))
                    while pending and (len(pending) > WRITE_AHEAD or pending[0][1].done()):
                        written(*pending.popleft())
                while pending:
                    written(*pending.popleft())

        ordered_records = [records[i] for i in sorted(records)]
        summary = _summary(args, bundle, options, target, ordered_records, time.perf_counter() - started)
        write_text(out / SUMMARY, json.dumps(summary, indent=2) + "\n")
        totals = summary["totals"]
        skipped = f" ({totals['skipped']} skipped)" if totals["skipped"] else ""
        print(f"explained {totals['explained']} of {totals['images']} images{skipped}: {out / SUMMARY}")
        return 2 if totals["skipped"] else 0


def _write(result: Any, rgb: np.ndarray, path: Path, stem: str, out: Path, args: argparse.Namespace,
           bundle: Any, decoding: Any = None) -> dict[str, Any]:
    """Write one explained image's <stem>.npy and <stem>.png overlay (on the original photo, decoded again here in
    the writer thread at its own resolution, or on the input crop ``rgb``: --overlay); return its summary record."""
    from camrt.runtime.overlay import save_overlay, save_overlay_on_original
    from camrt.runtime.preprocess import crop_box, load_image

    saliency = np.ascontiguousarray(result.saliency, dtype=np.float32)
    atomic_write(out / f"{stem}.npy", lambda handle: np.save(handle, saliency))
    if args.overlay == "original":
        photo = load_image(path, args.background)
        box = crop_box(photo.size, bundle.manifest.preprocessing)
        save_overlay_on_original(np.asarray(photo), saliency, box, out / f"{stem}.png", alpha=args.alpha)
    else:
        save_overlay(rgb, saliency, out / f"{stem}.png", alpha=args.alpha)
    costs = cost_fields(int(result.passes_run), int(result.passes_saved), result.seconds)
    facts = decoding.fields() if decoding is not None else {}
    return ordered(ok_record(path, result.target, result.logits, bundle.class_name, **costs, **facts,
                             saliency=f"{stem}.npy", overlay=f"{stem}.png"))


def claim_outputs(out: Path, inputs: Sequence[Path], stems: Sequence[str], overwrite: bool) -> Path:
    """--out opened for ``explain`` (new, empty, or an earlier explain's: ``run_folder.open_output``), after checking
    that no name it will write is an input, nor (without ``overwrite``) an earlier run's map or overlay."""
    from camrt.runtime.run_folder import RUN, open_output

    sources = {os.path.realpath(path) for path in inputs}
    names = [SUMMARY, RUN, *(f"{stem}{suffix}" for stem in stems for suffix in (".npy", ".png"))]
    for name in names:
        target = out / name
        if os.path.realpath(target) in sources:
            raise InputError(f"--out: {target} is an input image, and an output would replace it; choose another "
                             "folder")
        if not overwrite and name not in (SUMMARY, RUN) and os.path.lexists(target):
            raise InputError(f"--out: {target} exists (an earlier run's output); add --overwrite to replace it, "
                             "or choose another folder")
    return open_output(out, NAME)


def collect_images(inputs: Sequence[Path], warn: Callable[[str], None] | None = None) -> list[Item]:
    """Files as given (bad ones fail later, per image); folders (with their subfolders, labelled by name), CSVs
    and globs as ``camrt.runtime.dataset.discover`` lists them; an empty folder is a warning."""
    items: list[Item] = []
    for given in inputs:
        path = Path(given)
        listed = path.is_dir() or (path.is_file() and path.suffix.lower() == ".csv")
        if not (listed or (not path.exists() and glob.has_magic(str(path)))):
            items.append(Item(path))
            continue
        try:
            items.extend(discover(path))
        except InputError:
            if warn is None or not path.is_dir():
                raise
            warn(f"{path}: no images in this folder")
    if not items:
        raise InputError(f"INPUTS: no images found in {', '.join(str(p) for p in inputs)}")
    return items


def output_stems(files: Sequence[Path]) -> list[str]:
    """One output name per input: its stem, with -2, -3, ... where two inputs share one (case-insensitively)."""
    seen: set[str] = set()
    stems = []
    for path in files:
        stem, n = path.stem or "image", 1
        while (candidate := stem if n == 1 else f"{stem}-{n}").lower() in seen or candidate.lower() == "summary":
            n += 1
        seen.add(candidate.lower())
        stems.append(candidate)
    return stems


def _summary(args: argparse.Namespace, bundle: Any, options: dict[str, Any], target: str | int,
             records: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """summary.json: the run's settings, one record per image (input order), and the totals."""
    done = [r for r in records if r["status"] == "ok"]
    m = bundle.manifest
    return {
        "camrt_version": __version__,
        "bundle": str(bundle.root),
        "model": m.model_name,
        "layer": m.target_layer,
        "input_shape": list(m.input_shape),
        "method": args.method,
        "convention": args.convention,
        "options": options,
        "target": target,
        "backend": args.backend,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "images": records,
        "totals": {
            "images": len(records),
            "explained": len(done),
            "skipped": len(records) - len(done),
            "passes_run": sum(r["passes_run"] for r in done),
            "passes_saved": sum(r["passes_saved"] for r in done),
            "explain_seconds": round(sum(r["seconds"] for r in done), 4),
            "seconds": round(seconds, 4),
        },
    }
