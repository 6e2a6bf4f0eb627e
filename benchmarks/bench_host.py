"""What the host work between engine batches costs, and what hides it, on this machine's CPU engines.

For a bundle, a backend and a precision: batches of Score-CAM masked inputs (the NumPy op, kernels/masks.py) made
on the host and run through the engine, timed four ways in alternating rounds (medians): the engine alone on a
ready batch; mask then engine with numpy's BLAS at its default threads (camrt before runtime/engine/host_threads.py);
the same with BLAS held to one thread during the mask making (camrt now); and overlapped, the engine running a
batch in a second thread while the host makes the next one into a second buffer (BLAS on one thread too).

    PYTHONPATH=. python -m benchmarks.bench_host [--out benchmarks/results/cpu_host_overlap.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

CASES = (  # (model key, layer, backend, precision): a small early layer (host work shows) and ResNet-18's layer4
    ("mobilenet_v3_small", "features.3", "openvino", "bf16"),
    ("mobilenet_v3_small", "features.3", "onnxruntime", "fp32"),
    ("resnet18", "layer4", "openvino", "bf16"),
    ("resnet18", "layer4", "onnxruntime", "fp32"),
)


def measure(bundle: Path, backend: str, precision: str, batch: int, batches: int, rounds: int) -> dict[str, Any]:
    """Seconds per batch (medians over ``rounds``) of the four ways, and their ratios to the engine alone."""
    from threadpoolctl import threadpool_limits

    import camrt
    from camrt.kernels.masks import masked_inputs
    from camrt.runtime.bench.configs import engine_options
    from camrt.runtime.engine.host_threads import one_blas_thread
    from camrt.runtime.methods import get_convention

    explainer = camrt.Explainer(bundle, backend=backend, **engine_options(backend, precision, threads=2))
    runner, spec = explainer.runner, get_convention("scorecam", "pytorch-grad-cam").mask
    x = np.random.default_rng(0).standard_normal((4, *explainer.bundle.manifest.input_shape)).astype(np.float32)
    activations = np.asarray(runner.features(x))
    k = activations.shape[1]
    buffers = [np.empty((batch, *x.shape[1:]), np.float32) for _ in range(2)]
    scratch = np.empty((batch, *x.shape[2:]), np.float32)
    bi, ki = np.repeat(np.arange(4), batch // 4 + 1)[:batch], np.arange(batch) % k

    def masks(i: int, into: np.ndarray) -> np.ndarray:
        return masked_inputs(activations, x, bi, (ki + i) % k, spec, into, mask_buffer=scratch)

    def engine() -> None:
        for _ in range(batches):
            runner.logits(buffers[0])

    def sequential(limit: bool) -> None:
        for i in range(batches):
            if limit:
                with one_blas_thread():
                    masks(i, buffers[0])
            else:
                masks(i, buffers[0])
            runner.logits(buffers[0])

    pool = ThreadPoolExecutor(1)

    def overlapped() -> None:
        with one_blas_thread():
            masks(0, buffers[0])
        pending = pool.submit(runner.logits, buffers[0])
        for i in range(1, batches):
            with one_blas_thread():
                masks(i, buffers[i % 2])
            pending.result()
            pending = pool.submit(runner.logits, buffers[i % 2])
        pending.result()

    ways = {"engine alone": engine, "mask then engine, BLAS default threads": lambda: sequential(False),
            "mask then engine, BLAS one thread (camrt)": lambda: sequential(True),
            "overlapped (engine in a 2nd thread), BLAS one thread": overlapped}
    masks(0, buffers[0])
    runner.logits(buffers[0])  # warm-up at the batch size
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    with threadpool_limits(2, user_api="blas"):  # numpy's default here, pinned so every run starts alike
        for _ in range(rounds):
            for name, way in ways.items():
                start = time.perf_counter()
                way()
                seconds[name].append((time.perf_counter() - start) / batches)
    pool.shutdown()
    explainer.close()
    median = {name: statistics.median(values) for name, values in seconds.items()}
    alone = median["engine alone"]
    return {"seconds_per_batch": median, "over_engine": {n: v / alone for n, v in median.items()}, "k": k}


def main() -> None:
    from benchmarks.models import ModelSpec, bundle_path
    from benchmarks.worker import machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    for model, layer, backend, precision in CASES:
        bundle = bundle_path(ModelSpec(model, layer))
        row = {"model": model, "layer": layer, "backend": backend, "precision": precision,
               **measure(bundle, backend, precision, args.batch, args.batches, args.rounds)}
        rows.append(row)
        print(f"{model} {layer} {backend} {precision} (K {row['k']}): " + ", ".join(
            f"{name} {ratio:.2f}x" for name, ratio in row["over_engine"].items()), flush=True)
    result = {"machine": machine(2), "batch": args.batch, "batches": args.batches, "rounds": args.rounds,
              "rows": rows, "command": "PYTHONPATH=. python -m benchmarks.bench_host"}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"results: {args.out}")


if __name__ == "__main__":
    main()
