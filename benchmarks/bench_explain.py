"""``camrt explain`` on many photos: the stream (masked inputs batched across images) against one image at a time.

Before the one engine loop, ``camrt explain`` explained a folder image by image: per image a clean pass, a pass
on the zero image where the convention needs one, and K masked inputs in batches that a layer with few channels
never fills. Now it decodes ahead and streams, so every engine batch is full. Both run here side by side, in
alternating rounds in one process (load from other processes falls on both alike), on the same photos, model,
threads and outputs (a .npy map and a .png overlay per photo): ``per-image`` is the old command's loop, kept
here verbatim in spirit (load, preprocess, ``Explainer.explain`` on one image, write); ``stream`` is ``camrt
explain`` itself. The target is ratio >= 1.5 for a layer of at most 64 channels.

    python -m benchmarks.bench_explain [--model mobilenet_v3_small] [--layer features.3] [--images 32]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_dataset import load_average, write_photos
from benchmarks.models import CACHE, ModelSpec, bundle_path
from benchmarks.worker import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def per_image(bundle: Path, photos: list[Path], out: Path, method: str, batch_size: int, threads: int) -> None:
    """The old ``camrt explain`` loop: each photo decoded, explained alone, its map and overlay written."""
    import camrt
    from camrt.runtime.atomic import atomic_write
    from camrt.runtime.overlay import save_overlay
    from camrt.runtime.preprocess import load_image, normalize, resize_and_crop

    explainer = camrt.Explainer(bundle, intra_op_threads=threads)
    pre = explainer.bundle.manifest.preprocessing
    out.mkdir(parents=True, exist_ok=True)
    for path in photos:
        rgb = np.asarray(resize_and_crop(load_image(path), pre))
        result = explainer.explain(normalize(rgb, pre)[None], method, batch_size=batch_size, seed=0)
        saliency = np.ascontiguousarray(result.saliency[0], dtype=np.float32)
        atomic_write(out / f"{path.stem}.npy", lambda handle, s=saliency: np.save(handle, s))
        save_overlay(rgb, saliency, out / f"{path.stem}.png")


def stream(bundle: Path, folder: Path, out: Path, method: str, batch_size: int, threads: int) -> None:
    """``camrt explain BUNDLE FOLDER``, as a user runs it."""
    from camrt.cli import main

    with contextlib.redirect_stdout(io.StringIO()):  # its one closing line
        code = main(["explain", str(bundle), str(folder), "--out", str(out), "--method", method, "--batch-size",
                     str(batch_size), "--threads", str(threads), "--quiet"])
    if code != 0:
        raise RuntimeError(f"camrt explain exited {code}")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Rounds of (per-image, stream), alternating; the median images/s of each and their ratio."""
    spec = ModelSpec(args.model, args.layer, input_size=args.size)
    bundle = bundle_path(spec, args.cache)
    from camrt.runtime.bundle import Bundle

    manifest = Bundle.load(bundle).manifest
    work = Path(tempfile.mkdtemp(prefix="bench_explain-"))
    try:
        folder = write_photos(work / "photos", args.images, args.cache)
        photos = sorted(folder.iterdir())
        rates: dict[str, list[float]] = {"per_image": [], "stream": []}
        for round_ in range(args.rounds):
            for name in ("per_image", "stream"):
                out = work / f"{name}-{round_}"
                started = time.perf_counter()
                if name == "per_image":
                    per_image(bundle, photos, out, args.method, args.batch_size, args.threads)
                else:
                    stream(bundle, folder, out, args.method, args.batch_size, args.threads)
                rates[name].append(len(photos) / (time.perf_counter() - started))
        diff = max(float(np.abs(np.load(work / f"per_image-0/{p.stem}.npy") - np.load(work / f"stream-0/{p.stem}.npy"))
                             .max()) for p in photos)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    old, new = statistics.median(rates["per_image"]), statistics.median(rates["stream"])
    return {
        "command": "python -m benchmarks.bench_explain " + " ".join(args.argv),
        "machine": machine(args.threads), "load_average": load_average(),
        "model": args.model, "layer": args.layer, "channels": manifest.activation_shape[0],
        "activation_shape": list(manifest.activation_shape), "input_size": args.size, "method": args.method,
        "images": len(photos), "batch_size": args.batch_size, "rounds": args.rounds,
        "per_image_images_per_second": round(old, 3), "stream_images_per_second": round(new, 3),
        "ratio": round(new / old, 3), "rates": {k: [round(v, 3) for v in vs] for k, vs in rates.items()},
        "max_map_difference": diff,  # engine batches differ (one image vs across images): rounding only
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_explain", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mobilenet_v3_small", help="a model of the exporter's zoo (random weights)")
    p.add_argument("--layer", default="features.3", help="the target layer (default: 24 channels at 28 x 28)")
    p.add_argument("--size", type=int, default=224, help="input size")
    p.add_argument("--method", default="scorecam")
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cache", type=Path, default=CACHE)
    p.add_argument("--out", type=Path, default=RESULTS / "cpu_explain.json")
    args = p.parse_args(argv)
    args.argv = list(argv) if argv is not None else []
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = measure(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['model']} {result['layer']} (K = {result['channels']}), {result['images']} photos, "
          f"{result['method']}: per-image {result['per_image_images_per_second']:.2f} images/s, stream "
          f"{result['stream_images_per_second']:.2f} images/s, ratio {result['ratio']:.2f} "
          f"(target >= 1.5); maps differ by at most {result['max_map_difference']:.2g}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
