"""Server benchmark: ``camrt serve`` under a closed-loop load of 1, 4, 8 and 16 concurrent clients on 127.0.0.1,
against ``camrt explain-dataset`` on the same bundle, backend and photos in the same run.

Each client (a thread with the standard library's HTTP client) posts a real JPEG photo (the six of examples.photos,
cycled) as the body of ``POST /v1/explain`` (Score-CAM, paper convention, the float16 map, no overlay) and posts
the next as soon as the answer is in. A level runs until ``--requests`` answers or ``--seconds`` have passed, after
a warm-up of two requests per client. It reports requests/s, p50/p90/p99 latency, and the mean engine batch fill
(masked inputs per engine batch over --max-batch, from /metrics). The reference is ``explain_dataset`` (the
command's code, in this process) over the same photos, run before the first level and after each one: a level's
ratio is its requests/s over the mean images/s of the runs just before and after it (the development machine is
shared, and its speed drifts). The targets: with 8 clients, at least 0.9x the reference; p99 at most 2x p50.

    python -m benchmarks.bench_serve [--model mobilenet_v3_small] [--clients 1 4 8 16] [--requests 160]
        [--seconds 40] [--max-batch 64] [--max-delay-ms 10] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_dataset import load_average, write_photos
from benchmarks.models import CACHE, ModelSpec, bundle_path
from benchmarks.worker import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CASES = {  # a small model so that a level takes seconds on a 2-core CPU
    "mobilenet_v3_small": ModelSpec("mobilenet_v3_small", "features.3"),  # K = 24 at 28 x 28, input 224
    "resnet18": ModelSpec("resnet18", "layer1"),  # K = 64 at 56 x 56
}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def batch_fill(text: str) -> tuple[float, float]:
    """(sum, count) of camrt_serve_batch_fill in a /metrics text."""
    from prometheus_client.parser import text_string_to_metric_families

    found = {"camrt_serve_batch_fill_sum": 0.0, "camrt_serve_batch_fill_count": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in found:
                found[sample.name] = float(sample.value)
    return found["camrt_serve_batch_fill_sum"], found["camrt_serve_batch_fill_count"]


def load_level(server: Any, photos: list[bytes], clients: int, requests: int, seconds: float) -> dict[str, Any]:
    """A closed loop of ``clients`` threads until ``requests`` answers or ``seconds``: throughput and latency."""
    fields = {"method": "scorecam"}
    for i in range(2 * clients):  # warm-up: the engine's and the threads' first calls
        server.explain(photos[i % len(photos)], fields)
    fill_before = batch_fill(server.metrics())
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    issued = [0]

    def client(c: int) -> None:
        while True:
            with lock:
                if issued[0] >= requests or time.monotonic() > stop:
                    return
                n = issued[0]
                issued[0] += 1
            started = time.perf_counter()
            reply = server.explain(photos[(n + c) % len(photos)], fields)
            elapsed = time.perf_counter() - started
            with lock:
                (latencies if reply.status == 200 else failures).append(
                    elapsed if reply.status == 200 else f"{reply.status}: {reply.body[:120]!r}")

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    fill_sum, fill_count = np.subtract(batch_fill(server.metrics()), fill_before)
    p50 = percentile(latencies, 50)
    return {
        "clients": clients, "answered": len(latencies), "failed": len(failures), "failures": failures[:3],
        "seconds": round(wall, 3), "requests_per_second": round(len(latencies) / wall, 3),
        "p50_s": round(p50, 4), "p90_s": round(percentile(latencies, 90), 4),
        "p99_s": round(percentile(latencies, 99), 4),
        "p99_over_p50": round(percentile(latencies, 99) / p50, 3) if latencies else None,
        "mean_batch_fill": round(float(fill_sum / fill_count), 4) if fill_count else None,
        "engine_batches": int(fill_count),
    }


def dataset_reference(bundle: Path, photos: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``explain_dataset`` (what ``camrt explain-dataset`` runs) over the photos: images/s."""
    from camrt.runtime.explain_dataset import explain_dataset
    from camrt.runtime.explainer import Explainer

    options = {"intra_op_threads": args.threads} if args.threads else {}
    with Explainer(bundle, **options) as explainer:
        explain_dataset(explainer, photos, work / "warm", "scorecam", batch_size=args.max_batch, progress=False,
                        limit=8)
        result = explain_dataset(explainer, photos, work / "run", "scorecam", batch_size=args.max_batch,
                                 progress=False)
    return {"images": result.explained, "seconds": round(result.seconds, 3),
            "images_per_second": round(result.images_per_second, 3)}


def reference_line(reference: dict[str, Any]) -> dict[str, Any]:
    print(f"explain_dataset: {reference['images_per_second']:.2f} images/s", flush=True)
    return reference


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from camrt.runtime.serve.local import serving

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=list(CASES), default="mobilenet_v3_small")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--requests", type=int, default=160, help="answers per level at most (default: 160)")
    parser.add_argument("--seconds", type=float, default=40.0, help="seconds per level at most (default: 40)")
    parser.add_argument("--reference-images", type=int, default=48,
                        help="photos for each explain_dataset run, before, between and after the levels (default: 48)")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--max-delay-ms", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: its own)")
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--out", type=Path, default=RESULTS / "cpu_serve.json")
    args = parser.parse_args(argv)

    spec = CASES[args.model]
    bundle = bundle_path(spec, args.cache)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="camrt-bench-serve-") as tmp:
        work = Path(tmp)
        photos_dir = write_photos(work / "photos", args.reference_images, args.cache)
        photos = [path.read_bytes() for path in sorted(photos_dir.iterdir())[:6]]
        load = load_average()
        flags = ["--max-batch", args.max_batch, "--max-delay-ms", args.max_delay_ms, "--max-queue", 4096, "-q",
                 *(["--threads", args.threads] if args.threads else [])]
        references = [reference_line(dataset_reference(bundle, photos_dir, work / "ref-0", args))]
        levels = []
        with serving(bundle, flags) as server:  # each level between two explain_dataset runs: side by side
            for i, clients in enumerate(args.clients):
                level = load_level(server, photos, clients, args.requests, args.seconds)
                references.append(reference_line(dataset_reference(bundle, photos_dir, work / f"ref-{i + 1}", args)))
                around = float(np.mean([r["images_per_second"] for r in references[-2:]]))
                level["explain_dataset_images_per_second"] = round(around, 3)
                level["over_explain_dataset"] = round(level["requests_per_second"] / around, 3)
                levels.append(level)
                print(f"{clients:>3} clients: {level['requests_per_second']:.2f} requests/s "
                      f"({level['over_explain_dataset']:.2f}x explain_dataset's {around:.2f} around it), p50 "
                      f"{level['p50_s']:.3f} s, p90 {level['p90_s']:.3f} s, p99 {level['p99_s']:.3f} s, batch fill "
                      f"{level['mean_batch_fill']}", flush=True)
    eight = next((level for level in levels if level["clients"] == 8), None)
    result = {
        "benchmark": "bench_serve",
        "model": {"name": spec.name, "layer": spec.layer, "input": spec.input_size, "random_weights": True},
        "method": "scorecam (paper), float16 map, no overlay; photos: examples.photos JPEGs, cycled",
        "settings": {"max_batch": args.max_batch, "max_delay_ms": args.max_delay_ms, "threads": args.threads,
                     "requests_per_level": args.requests, "seconds_per_level": args.seconds},
        "explain_dataset": references,
        "levels": levels,
        "targets": None if eight is None else {
            "8_clients_over_explain_dataset": eight["over_explain_dataset"], "needs": 0.9,
            "8_clients_p99_over_p50": eight["p99_over_p50"], "p99_needs_at_most": 2.0},
        "machine": machine(args.threads or os.cpu_count() or 1),
        "load_average_before": load, "load_average_after": load_average(),
        "wall_seconds": round(time.time() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
