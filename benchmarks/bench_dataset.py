"""Dataset benchmark: ``explain_dataset``'s throughput against the engine floor, and its memory over 1000 images.

Two parts, each in a fresh subprocess (so the peak RSS is its own and neither imports torch):

- throughput: resnet18 (random weights, layer4, K = 512) at 224 x 224 explains N real JPEG photos with Score-CAM
  (pytorch-grad-cam convention, which skips no channel), every pass run (``save_passes=False``: 512 masked passes
  + 1 clean pass per image), then again with pass saving. The bare engine (``runner.logits`` on batches of the
  same size, same threads) is timed in the same process before and after each run; the floor is engine images/s
  / passes per image, and the ratio is the dataset's images/s over it (target >= 0.90). The run's own engine
  calls are timed too: their share of the run is the same ratio, free of load changes between the timings.
- memory: a small random-weight CNN (16 channels at the cut, 128 x 128) explains 1000 synthetic JPEGs with pass
  saving on; VmRSS is sampled every 50 images from the ``on_record`` callback, and the engine's batch sizes are
  counted.

    python -m benchmarks.bench_dataset [--images 6] [--threads 2] [--memory-images 1000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.models import CACHE, MODELS, SEED, bundle_path
from benchmarks.worker import engine_seconds, machine, rss_mb

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BATCH = 64
SHARD_SIZE = 256  # explain_dataset's default: maps per .npz shard
SMALL_K = 16  # channels at the small CNN's cut: a batch of 64 masked inputs spans four images
FLAT_FRACTION = 0.5  # "flat": growth over the sampled span below half the float16 maps that span writes
Logits = Callable[[np.ndarray], Any]


# ---------------------------------------------------------------------------------------------------- inputs
def small_cnn(k: int = SMALL_K) -> Any:
    """A small random-weight CNN (seed 0): three convolutions to ``k`` channels at 1/4 size, pool, 10 classes."""
    from collections import OrderedDict

    import torch
    from torch import nn

    torch.manual_seed(SEED)
    features = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
                             nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                             nn.Conv2d(32, k, 3, padding=1), nn.ReLU())
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(k, 10))
    return nn.Sequential(OrderedDict(features=features, head=head)).eval()


def small_bundle(size: int, cache: Path = CACHE) -> Path:
    """The small CNN's bundle at ``size`` x ``size``, cut at ``features`` (K = 16), exported once into the cache."""
    root = cache / "bundles" / f"smallcnn-k{SMALL_K}-{size}-seed{SEED}"
    if (root / "manifest.json").is_file():
        return root
    import camrt

    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    camrt.export(small_cnn(), "features", tmp, input_shape=(3, size, size), model_name="smallcnn",
                 torch_programs=False)
    tmp.rename(root)
    return root


def write_photos(folder: Path, count: int, cache: Path = CACHE) -> Path:
    """``count`` real JPEG photos in ``folder`` (the six of examples.photos, cycled, chelsea first)."""
    from examples.photos import photo_paths

    paths = photo_paths(cache / "photos")
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        shutil.copyfile(paths[i % len(paths)], folder / f"photo-{i:05d}.jpg")
    return folder


def write_synthetic(folder: Path, count: int, size: int) -> Path:
    """``count`` synthetic JPEGs (smooth random colour fields, a little larger than ``size``) in ``folder``."""
    from PIL import Image

    rng = np.random.default_rng(SEED)
    folder.mkdir(parents=True, exist_ok=True)
    side = size + size // 4  # the bundle resizes and crops, as it would a real photo
    for i in range(count):
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        smooth = Image.fromarray(coarse).resize((side, side), Image.Resampling.BILINEAR)
        smooth.save(folder / f"synthetic-{i:05d}.jpg", quality=90)
    return folder


# ---------------------------------------------------------------------------------------------------- measuring
class EngineCalls:
    """Counts and times the engine's calls: masked passes (``runner.logits``), clean passes (``features``, ``head``).

    Wraps the runner's methods in place, so ``explain_dataset`` goes through them unchanged. The seconds spent in
    the engine during a run, divided by the run's seconds, say what the pipeline around the engine costs; both
    are taken at the same moments, so load from other processes falls on both alike.
    """

    def __init__(self, runner: Any) -> None:
        self.masked: Counter[int] = Counter()
        self.clean: Counter[int] = Counter()
        self.seconds = 0.0  # in the engine (masked and clean passes) since the last reset
        self.batch_rates: list[float] = []  # images/s of each masked batch: the machine's speed along the run
        self._logits: Logits = runner.logits
        self._features, self._head = runner.features, runner.head
        self._inside = False
        runner.logits, runner.features, runner.head = self.logits, self.features, self.head

    def logits(self, images: np.ndarray) -> Any:
        start = time.perf_counter()
        out = self.bare(images)
        seconds = time.perf_counter() - start
        self.masked[len(images)] += 1
        self.seconds += seconds
        self.batch_rates.append(round(len(images) / seconds, 2))
        return out

    def bare(self, images: np.ndarray) -> Any:
        """The whole model on ``images``, neither counted nor timed: the engine alone, for timing it apart."""
        self._inside = True
        try:
            return self._logits(images)
        finally:
            self._inside = False

    def features(self, images: np.ndarray) -> Any:
        if self._inside:  # a masked pass: counted and timed by logits
            return self._features(images)
        start = time.perf_counter()
        out = self._features(images)
        self.seconds += time.perf_counter() - start
        self.clean[len(images)] += 1
        return out

    def head(self, activations: np.ndarray) -> Any:
        if self._inside:
            return self._head(activations)
        start = time.perf_counter()
        out = self._head(activations)
        self.seconds += time.perf_counter() - start
        return out

    def reset(self) -> None:
        self.masked.clear()
        self.clean.clear()
        self.seconds = 0.0
        self.batch_rates = []

    def summary(self, batch_size: int) -> dict[str, Any]:
        """Masked batches: how many, how many full, mean fill; clean passes: calls and images per call."""
        batches = sum(self.masked.values())
        passes = sum(n * c for n, c in self.masked.items())
        clean_calls = sum(self.clean.values())
        clean_images = sum(n * c for n, c in self.clean.items())
        return {"masked_batches": batches, "masked_passes": passes, "full_batches": self.masked.get(batch_size, 0),
                "mean_fill": round(passes / (batches * batch_size), 4) if batches else None,
                "masked_batch_sizes": {str(n): c for n, c in sorted(self.masked.items())},
                "clean_calls": clean_calls, "clean_images": clean_images,
                "clean_images_per_call": round(clean_images / clean_calls, 3) if clean_calls else None,
                "engine_seconds": round(self.seconds, 3)}


def engine_rate(logits: Logits, image: np.ndarray, batch_size: int, batches: int) -> dict[str, float]:
    """Images/s of the bare engine over ``batches`` full batches of ``batch_size`` (``worker.engine_seconds``)."""
    timed = engine_seconds(logits, image, batches * batch_size, batch_size, 0)
    return {"images_per_second": timed["passes"] / timed["seconds"], "seconds": timed["seconds"],
            "passes": timed["passes"]}


def load_average() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages: how shared it was while measuring."""
    return [round(v, 2) for v in os.getloadavg()]


def dataset_run(explainer: Any, data: Path, out: Path, job: dict[str, Any], save_passes: bool,
                on_record: Callable[[dict[str, Any]], None] | None = None) -> Any:
    """One ``explain_dataset`` call with the job's settings (Score-CAM, the job's convention, no progress bar)."""
    from camrt.runtime.explain_dataset import explain_dataset

    return explain_dataset(explainer, data, out, "scorecam", job["convention"], batch_size=job["batch_size"],
                           shard_size=job["shard_size"], workers=job["workers"], save_passes=save_passes,
                           progress=False, on_record=on_record)


# ---------------------------------------------------------------------------------------------------- the parts
def throughput_part(job: dict[str, Any]) -> dict[str, Any]:
    """Engine, dataset run (every pass), engine, [dataset run (passes saved), engine]: all in this process."""
    from camrt.runtime.explainer import Explainer
    from camrt.runtime.preprocess import preprocess

    explainer = Explainer(job["bundle"], intra_op_threads=job["threads"])
    calls = EngineCalls(explainer.runner)
    data, batch_size = Path(job["data"]), job["batch_size"]
    image = preprocess(sorted(data.iterdir())[0], explainer.bundle.manifest.preprocessing)
    calls.bare(np.repeat(image[None], 2, axis=0))  # load lazily-initialised kernels
    calls.bare(np.repeat(image[None], batch_size, axis=0))
    engine = [engine_rate(calls.bare, image, batch_size, job["engine_batches"])]
    runs = []
    for save_passes in job["save_passes"]:
        calls.reset()
        load = load_average()
        run = dataset_run(explainer, data, Path(job["out"]) / f"saved-{save_passes}", job, save_passes)
        in_run = calls.seconds
        engine.append(engine_rate(calls.bare, image, batch_size, job["engine_batches"]))
        row = _throughput_row(run, in_run, save_passes, engine[-2], engine[-1])
        runs.append({**row, "batches": calls.summary(batch_size), "masked_batch_images_per_second": calls.batch_rates,
                     "load_average_before": load, "load_average_after": load_average()})
    return {"rows": runs, "engine": engine, "rss_peak_mb": rss_mb(), "torch_imported": "torch" in sys.modules,
            "K": explainer.bundle.manifest.activation_shape[0]}


def _throughput_row(run: Any, in_run: float, save_passes: bool, before: dict[str, float],
                    after: dict[str, float]) -> dict[str, Any]:
    """One dataset run against the mean of the engine timed just before and after it, and against its own engine.

    in_run: the seconds the run spent inside the engine (its masked and clean passes).
    """
    dataset = run.images_per_second
    engine = (before["images_per_second"] + after["images_per_second"]) / 2
    masked = run.passes / max(run.explained, 1)
    passes_per_image = masked + 1  # + the clean pass
    floor = engine / passes_per_image
    during = (run.passes + run.explained) / in_run if in_run > 0 else None  # the run's own batches, timed
    return {"save_passes": save_passes, "images": run.explained, "failed": run.failed, "seconds": round(run.seconds, 3),
            "dataset_images_per_second": round(dataset, 5),
            "engine_images_per_second_before": round(before["images_per_second"], 2),
            "engine_images_per_second_after": round(after["images_per_second"], 2),
            "engine_images_per_second": round(engine, 2), "masked_passes_per_image": round(masked, 3),
            "passes_per_image": round(passes_per_image, 3), "floor_images_per_second": round(floor, 5),
            "ratio_to_floor": round(dataset / floor, 4), "engine_seconds_in_run": round(in_run, 3),
            "engine_images_per_second_in_run": None if during is None else round(during, 2),
            "ratio_to_floor_in_run": None if during is None else round(dataset / (during / passes_per_image), 4)}


def memory_part(job: dict[str, Any]) -> dict[str, Any]:
    """The small CNN over the synthetic dataset; VmRSS every ``every`` images from the on_record callback."""
    from camrt.runtime.explainer import Explainer

    explainer = Explainer(job["bundle"], intra_op_threads=job["threads"])
    calls = EngineCalls(explainer.runner)
    samples: list[tuple[int, float]] = []
    seen: list[bool] = []
    every = job["every"]

    def on_record(row: dict[str, Any]) -> None:
        if (len(seen) + 1) % every == 0:
            samples.append((len(seen) + 1, round(rss_mb("VmRSS"), 2)))
        seen.append(row["status"] == "ok")

    rss_start = rss_mb("VmRSS")
    load = load_average()
    run = dataset_run(explainer, Path(job["data"]), Path(job["out"]), job, True, on_record)
    peak = max(rss_mb(), *(rss for _, rss in samples))  # VmHWM is synced lazily: it may trail a VmRSS sample
    manifest = explainer.bundle.manifest
    return {"images": run.explained, "failed": run.failed, "seconds": round(run.seconds, 3),
            "images_per_second": round(run.images_per_second, 3), "passes": run.passes,
            "K": manifest.activation_shape[0], "activation_shape": list(manifest.activation_shape),
            "input_size": manifest.input_shape[1], "rss_start_mb": round(rss_start, 2), "rss_samples": samples,
            "rss_peak_mb": round(peak, 2), "batches": calls.summary(job["batch_size"]),
            "torch_imported": "torch" in sys.modules, "load_average_before": load, "load_average_after": load_average()}


def memory_figures(result: dict[str, Any], count: int, size: int, shard_size: int) -> dict[str, Any]:
    """RSS at 10 %, 50 % and 100 % of the images, the growth between the first and last, and the flat verdict.

    Also the growth from the first sample after the first shard is committed: until then the writer's buffer of
    ``shard_size`` float16 maps fills for the first time (later shards reuse the freed memory).
    """
    samples: dict[int, float] = {int(n): float(rss) for n, rss in result["rss_samples"]}
    after_shard = min((n for n in samples if n >= shard_size), default=count)
    marks = [max(count // 10, 1), count // 2, count]
    at = {m: _nearest(samples, m) for m in marks}
    first, last = marks[0], marks[-1]
    growth = at[last] - at[first]
    maps_mb = (last - first) * size * size * 2 / 2**20  # the float16 maps written between the two samples
    return {"rss_at": {str(m): at[m] for m in marks}, "growth_mb": round(growth, 2), "span": [first, last],
            "growth_mb_per_100_images": round(growth / (last - first) * 100, 3),
            "maps_written_mb_in_span": round(maps_mb, 2),
            "maps_written_mb_total": round(count * size * size * 2 / 2**20, 2),
            "steady_span": [after_shard, last], "steady_growth_mb": round(at[last] - _nearest(samples, after_shard), 2),
            "flat_limit_mb": round(FLAT_FRACTION * maps_mb, 2), "flat": bool(growth < FLAT_FRACTION * maps_mb)}


def _nearest(samples: dict[int, float], n: int) -> float:
    """The RSS sample taken at image ``n``, or at the image nearest to it."""
    return samples[min(samples, key=lambda m: abs(m - n))]


# ---------------------------------------------------------------------------------------------------- driver
def run_child(part: str, job: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Run one part in a fresh ``python -m benchmarks.bench_dataset --child`` process; its result dict."""
    job_file, result_file = folder / f"{part}-job.json", folder / f"{part}-result.json"
    job_file.write_text(json.dumps({**job, "part": part, "result": str(result_file)}))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "benchmarks.bench_dataset", "--child", str(job_file)], check=True,
                   cwd=ROOT, env={**os.environ, "TQDM_DISABLE": "1"})
    result = json.loads(result_file.read_text())
    result["part_seconds"] = round(time.perf_counter() - started, 1)
    return dict(result)


def child(job_file: Path) -> None:
    """The subprocess side: run the part the job names and write its result."""
    job = json.loads(job_file.read_text())
    result = throughput_part(job) if job["part"] == "throughput" else memory_part(job)
    Path(job["result"]).write_text(json.dumps(result))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_dataset", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, help="photos for the throughput part (default 6; --quick 2)")
    parser.add_argument("--model", choices=("resnet18", "small"), default="resnet18",
                        help="the throughput part's model (small: the memory part's CNN at 224, for smoke tests)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="decode threads of explain_dataset (default 2)")
    parser.add_argument("--convention", default="pytorch-grad-cam",
                        help="Score-CAM convention (default pytorch-grad-cam: no channel skipped, so every pass run "
                        "is K passes per image; paper skips constant channels)")
    parser.add_argument("--engine-batches", type=int, help="batches per engine timing (default 8; --quick 2)")
    parser.add_argument("--no-saved", action="store_true", help="skip the throughput run with pass saving")
    parser.add_argument("--memory-images", type=int, help="synthetic images for the memory part (default 1000)")
    parser.add_argument("--memory-size", type=int, default=128, help="the small CNN's input size (default 128)")
    parser.add_argument("--every", type=int, help="images between RSS samples (default 50; --quick 10)")
    parser.add_argument("--skip", choices=("throughput", "memory"), help="leave one part out")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 photos, 100 synthetic images")
    parser.add_argument("--cache", type=Path, default=CACHE, help="bundles and photos (default benchmarks/.cache)")
    parser.add_argument("--out", type=Path, default=RESULTS / "cpu_dataset.json")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.images = args.images or (2 if args.quick else 6)
    args.engine_batches = args.engine_batches or (2 if args.quick else 8)
    args.memory_images = args.memory_images or (100 if args.quick else 1000)
    args.every = args.every or (10 if args.quick else 50)
    return args


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Prepare bundles and images here (the exporter needs torch), then run each part in its own process."""
    common = {"threads": args.threads, "workers": args.workers, "batch_size": BATCH, "shard_size": SHARD_SIZE,
              "convention": args.convention}
    report: dict[str, Any] = {"machine": machine(args.threads), "command": command, "batch_size": BATCH,
                              "method": f"Score-CAM, {args.convention} convention", "workers": args.workers,
                              "shard_size": SHARD_SIZE, "quick": args.quick}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="camrt-bench-dataset-") as tmp:
        folder = Path(tmp)
        if args.skip != "throughput":
            spec = MODELS["resnet18"]
            bundle = bundle_path(spec, args.cache) if args.model == "resnet18" else small_bundle(224, args.cache)
            photos = write_photos(folder / "photos", args.images, args.cache)
            job = {**common, "bundle": str(bundle), "data": str(photos),
                   "out": str(folder / "throughput-out"), "engine_batches": args.engine_batches,
                   "save_passes": [False] if args.no_saved else [False, True]}
            print(f"throughput: {args.model}, {args.images} photos ...", file=sys.stderr, flush=True)
            result = run_child("throughput", job, folder)
            model, layer = ((f"resnet18 (random weights, seed {SEED})", spec.layer) if args.model == "resnet18"
                            else (f"small CNN (K = {SMALL_K}) at 224", "features"))
            report["throughput"] = {"model": model, "layer": layer, "input_size": 224, **result}
        if args.skip != "memory":
            bundle = small_bundle(args.memory_size, args.cache)
            data = write_synthetic(folder / "synthetic", args.memory_images, args.memory_size)
            job = {**common, "bundle": str(bundle), "data": str(data), "out": str(folder / "memory-out"),
                   "every": args.every}
            print(f"memory: small CNN, {args.memory_images} synthetic images ...", file=sys.stderr, flush=True)
            result = run_child("memory", job, folder)
            report["memory"] = {"model": f"small CNN, random weights (seed {SEED}), 3 convolutions, K = {SMALL_K}",
                                "every": args.every, **result,
                                **memory_figures(result, args.memory_images, args.memory_size, SHARD_SIZE)}
    report["seconds_total"] = round(time.perf_counter() - started, 1)
    return report


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table's lines."""
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def _throughput_table(t: dict[str, Any]) -> list[str]:
    """One row per dataset run: its images/s, the engine's, the floor and the ratio (before / after, and in the run)."""
    head = ["passes", "images", "dataset images/s", "engine images/s (before / after)", "passes per image",
            "floor images/s", "ratio to floor", "engine images/s in the run", "ratio, engine in the run",
            "full batches", "seconds"]
    rows = [[("saved" if r["save_passes"] else "every pass"), str(r["images"]), f"{r['dataset_images_per_second']:.4f}",
             f"{r['engine_images_per_second']:.1f} ({r['engine_images_per_second_before']:.1f} / "
             f"{r['engine_images_per_second_after']:.1f})", f"{r['passes_per_image']:g}",
             f"{r['floor_images_per_second']:.4f}", f"{r['ratio_to_floor']:.3f}",
             _maybe(r["engine_images_per_second_in_run"], ".1f"), _maybe(r["ratio_to_floor_in_run"], ".3f"),
             f"{r['batches']['full_batches']} of {r['batches']['masked_batches']}", f"{r['seconds']:.1f}"]
            for r in t["rows"]]
    title = f"#### Throughput: {t['model']}, {t['layer']} (K = {t['K']}), {t['input_size']} x {t['input_size']}"
    return [title, "", *_table(head, rows), ""]


def _maybe(value: float | None, spec: str) -> str:
    """``value`` formatted, or a dash when it was not measured."""
    return "-" if value is None else format(value, spec)


def _memory_table(m: dict[str, Any]) -> list[str]:
    """RSS along the run, its growth, the flat verdict, the peak and how full the engine's batches were."""
    at, b = m["rss_at"], m["batches"]
    (first, last), (steady, _) = m["span"], m["steady_span"]
    head = [*(f"RSS MB at {k}" for k in at), f"growth MB {first} -> {last}", "per 100 images", "flat (limit MB)",
            f"growth MB {steady} -> {last}", "peak MB", "mean batch fill", "images/s"]
    row = [*(f"{v:.1f}" for v in at.values()), f"{m['growth_mb']:+.1f}", f"{m['growth_mb_per_100_images']:+.2f}",
           f"{'yes' if m['flat'] else 'no'} ({m['flat_limit_mb']:.1f})", f"{m['steady_growth_mb']:+.1f}",
           f"{m['rss_peak_mb']:.1f}", f"{b['mean_fill']:.3f} ({b['full_batches']} of {b['masked_batches']} full)",
           f"{m['images_per_second']:.1f}"]
    title = f"#### Memory: {m['model']}, {m['input_size']} x {m['input_size']}, {m['images']} synthetic images"
    return [title, "", *_table(head, [row]), ""]


def markdown(report: dict[str, Any]) -> str:
    """The report's tables in Markdown."""
    lines = [f"Machine: {report['machine']}. Batch {report['batch_size']}, {report['method']}.", ""]
    if "throughput" in report:
        lines += _throughput_table(report["throughput"])
    if "memory" in report:
        lines += _memory_table(report["memory"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        child(args.child)
        return 0
    command = " ".join(["python -m benchmarks.bench_dataset", *(argv if argv is not None else sys.argv[1:])])
    report = run(args, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    print(f"wrote {args.out} ({report['seconds_total'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
