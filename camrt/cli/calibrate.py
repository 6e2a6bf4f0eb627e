"""``camrt calibrate BUNDLE DATA [--engine openvino|onnxruntime]``: an INT8 graph, calibrated on DATA's masked images.

The engine's quantizer (NNCF for openvino, static QDQ for onnxruntime) quantizes the whole model on masked inputs
made from DATA's images (and, with --mix, the images themselves); the INT8 graph goes into the bundle with its
SHA-256, beside the other engine's (for ``--backend ENGINE --precision int8``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from camrt.cli.args import add_command, background, image_error, positive_int, warn
from camrt.errors import CamrtError, InputError
from camrt.runtime.bundle import Bundle
from camrt.runtime.calibrate import (
    DEFAULT_ENGINE,
    DEFAULT_IGNORE,
    DEFAULT_MIX,
    DEFAULT_PRESET,
    DEFAULT_SAMPLES,
    ENGINES,
    IGNORE,
    MASK_METHODS,
    MIXES,
    PRESETS,
    calibrate,
)
from camrt.runtime.dataset import discover
from camrt.runtime.preprocess import BACKGROUND, load_images

NAME = "calibrate"
BAD_IMAGES = 2  # some images were skipped (the INT8 graph is written from the others), as explain/evaluate do


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``calibrate`` to the CLI's subparsers."""
    p = add_command(subparsers, NAME, parents, "calibrate an INT8 graph for --backend openvino or onnxruntime",
                    __doc__)
    p.add_argument("data", metavar="DATA", help="calibration images: a folder, a CSV of path[,label], a file or a glob")
    p.add_argument("--engine", choices=ENGINES, default=DEFAULT_ENGINE,
                   help=f"the backend the INT8 graph is for (default: {DEFAULT_ENGINE}): openvino (NNCF, OpenVINO "
                        "IR) or onnxruntime (static QDQ, U8S8)")
    p.add_argument("--samples", type=positive_int, default=DEFAULT_SAMPLES, metavar="N",
                   help=f"calibration inputs, clean and masked (default: {DEFAULT_SAMPLES}); at most N images "
                        "of DATA are read, spread over it")
    p.add_argument("--mix", choices=MIXES, default=DEFAULT_MIX,
                   help=f"clean images, masked inputs, or both (default: {DEFAULT_MIX})")
    p.add_argument("--ignore", choices=IGNORE, default=DEFAULT_IGNORE,
                   help=f"layers left in floating point (default: {DEFAULT_IGNORE})")
    p.add_argument("--preset", choices=PRESETS, default=DEFAULT_PRESET,
                   help=f"NNCF's quantization preset, --engine openvino only (default: {DEFAULT_PRESET})")
    p.add_argument("--method", "-m", choices=list(MASK_METHODS), default="scorecam",
                   help="whose masks the masked inputs use (default: scorecam)")
    p.add_argument("--convention", "-c", default="paper", help="the method's convention (default: paper)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="which channels are masked (default: 0)")
    p.add_argument("--background", type=background, default=BACKGROUND, metavar="COLOUR",
                   help="what transparent pixels are composited on (default: white)")


def read_images(data: str, bundle: Bundle, most: int, colour: Any) -> tuple[np.ndarray, int]:
    """Up to ``most`` images of DATA spread over it, preprocessed; a bad one is skipped with one warning line.
    (images (n, 3, H, W), skipped); a one-line error when none can be read."""
    items = discover(data)
    chosen = [items[int(i)] for i in np.unique(np.linspace(0, len(items) - 1, min(most, len(items))).round())]
    good, skipped = [], 0
    for item in chosen:
        try:
            good.append(load_images([item.path], bundle, colour)[0])
        except (CamrtError, OSError, ValueError) as exc:
            warn(f"{image_error(item.path, exc)}; skipped")
            skipped += 1
    if not good:
        raise InputError(f"{data}: none of its {len(chosen)} image(s) could be read; nothing to calibrate on")
    return np.stack(good), skipped


def run(args: argparse.Namespace) -> int:
    """Calibrate, write the INT8 graph into BUNDLE, print what was written."""
    bundle = Bundle.load(args.bundle)
    x, skipped = read_images(args.data, bundle, args.samples, args.background)
    out = calibrate(bundle, x, samples=args.samples, mix=args.mix, ignore=args.ignore, preset=args.preset,
                    method=args.method, convention=args.convention, seed=args.seed, engine=args.engine)
    record = (out.manifest.int8 or {}).get(args.engine, {})
    facts = record.get("calibration", {})
    extra = " (and its .bin)" if record.get("weights") else ""
    print(f"{Path(out.root) / record.get('graph', '?')}: INT8 graph for {args.engine}{extra} written, calibrated on "
          f"{facts.get('images')} image(s): {facts.get('clean')} clean and {facts.get('masked')} masked inputs; "
          f"top-1 agrees with FP32 on {100 * facts.get('top1_agreement', 0):.0f} % of them")
    return BAD_IMAGES if skipped else 0
