"""``camrt explain`` on many photos, now against before this change, side by side in one process.

Before the one engine loop, ``camrt explain`` explained a folder image by image (per image a clean pass, a pass on
the zero image where the convention needs one, K masked inputs in batches a layer with few channels never
fills), decoded and wrote in the main thread, and ONNX Runtime's worker threads spun between runs, taking the
cores from the host-side mask making. Now it decodes ahead, streams masked inputs across images so every batch
is full, writes in a writer thread, and the runner's threads sleep between runs. Three runs per case, in
alternating rounds (load from other processes falls on all alike), same photos, model, threads and outputs:

- ``before``: the old loop (load, preprocess, ``Explainer.explain`` on one image, write .npy and .png) on the
  old runner settings (``spinning=True``);
- ``per_image``: the same loop on today's runner, to show what streaming alone adds;
- ``stream``: ``camrt explain`` as it is now.

``ratio`` is stream / before (target >= 1.5 for a layer of at most 64 channels); ``ratio_batching`` is
stream / per_image.

    python -m benchmarks.bench_explain [--cases smallcnn mobilenet_v3_small resnet18] [--images 32] [--rounds 3]
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_dataset import load_average, small_bundle, write_photos
from benchmarks.models import CACHE, ModelSpec, bundle_path
from benchmarks.worker import machine

ROOT = Path(__file__).resolve().parent.parent
# before: the old loop on the old runner settings (ONNX Runtime's threads spin between runs); per_image: the old
# loop on today's runner; stream: camrt explain as it is now
RUNS = ("before", "per_image", "stream")
RESULTS = ROOT / "benchmarks" / "results"


def per_image(bundle: Path, photos: list[Path], out: Path, method: str, batch_size: int, threads: int,
              spinning: bool = False) -> None:
    """The old ``camrt explain`` loop: each photo decoded, explained alone, its map and overlay written.
    spinning=True is ONNX Runtime's default, which the runner used before this change."""
    import camrt
    from camrt.runtime.atomic import atomic_write
    from camrt.runtime.overlay import save_overlay
    from camrt.runtime.preprocess import load_image, normalize, resize_and_crop

    explainer = camrt.Explainer(bundle, intra_op_threads=threads, spinning=spinning)
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


CASES: dict[str, tuple[str, Callable[[Path], Path]]] = {
    "smallcnn": ("a small CNN (random weights), K = 16 at 32 x 32, input 128", lambda cache: small_bundle(128, cache)),
    "mobilenet_v3_small": ("mobilenet_v3_small (random weights) features.3, K = 24 at 28 x 28, input 224",
                           lambda cache: bundle_path(ModelSpec("mobilenet_v3_small", "features.3"), cache)),
    "resnet18": ("resnet18 (random weights) layer1, K = 64 at 56 x 56, input 224",
                 lambda cache: bundle_path(ModelSpec("resnet18", "layer1"), cache)),
}


def measure(case: str, args: argparse.Namespace, folder: Path, work: Path) -> dict[str, Any]:
    """Rounds of (per-image, stream), alternating, for one case: the median images/s of each and their ratio."""
    from camrt.runtime.bundle import Bundle

    description, make = CASES[case]
    bundle = make(args.cache)
    manifest = Bundle.load(bundle).manifest
    photos = sorted(folder.iterdir())
    rates: dict[str, list[float]] = {name: [] for name in RUNS}
    for round_ in range(args.rounds):
        for name in RUNS:
            out = work / f"{case}-{name}-{round_}"
            started = time.perf_counter()
            if name == "stream":
                stream(bundle, folder, out, args.method, args.batch_size, args.threads)
            else:
                per_image(bundle, photos, out, args.method, args.batch_size, args.threads, name == "before")
            rates[name].append(len(photos) / (time.perf_counter() - started))
    diff = max(float(np.abs(np.load(work / f"{case}-per_image-0/{p.stem}.npy")
                            - np.load(work / f"{case}-stream-0/{p.stem}.npy")).max()) for p in photos)
    median = {name: statistics.median(values) for name, values in rates.items()}
    return {
        "case": case, "description": description, "channels": manifest.activation_shape[0],
        "activation_shape": list(manifest.activation_shape), "input_shape": list(manifest.input_shape),
        **{f"{name}_images_per_second": round(value, 3) for name, value in median.items()},
        "ratio": round(median["stream"] / median["before"], 3),  # camrt explain now / before this change
        "ratio_batching": round(median["stream"] / median["per_image"], 3),  # the stream alone, same runner
        "rates": {k: [round(v, 3) for v in vs] for k, vs in rates.items()},
        "max_map_difference": diff,  # engine batches differ (one image vs across images): rounding only
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every case on the same photos; the report with the machine and its load."""
    work = Path(tempfile.mkdtemp(prefix="bench_explain-"))
    try:
        folder = write_photos(work / "photos", args.images, args.cache)
        rows = [measure(case, args, folder, work) for case in args.cases]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"command": "python -m benchmarks.bench_explain " + " ".join(args.argv), "machine": machine(args.threads),
            "load_average": load_average(), "method": args.method, "images": args.images,
            "batch_size": args.batch_size, "rounds": args.rounds, "rows": rows}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_explain", description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), help="default: all")
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
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for row in result["rows"]:
        print(f"{row['description']}: images/s before {row['before_images_per_second']:.2f}, per-image "
              f"{row['per_image_images_per_second']:.2f}, stream {row['stream_images_per_second']:.2f}; now / before "
              f"{row['ratio']:.2f} (target >= 1.5), stream / per-image {row['ratio_batching']:.2f}; maps differ by at "
              f"most {row['max_map_difference']:.2g}")
    print(f"{result['images']} photos, {result['method']}, batch {result['batch_size']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
