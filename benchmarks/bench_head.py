"""Head-only methods against the whole-network ones, side by side in one run: ResNet-18 at 224 (layer4, K = 512,
7 x 7), one photo (chelsea), random weights of the fixed seed, the same target everywhere, every pass run.

- Recipro-CAM (``reciprocam:paper``, 49 head passes) against camrt's own Score-CAM (``scorecam:pytorch-grad-cam``,
  512 whole-network passes): target >= 100x;
- camrt's Ablation-CAM (``ablationcam:pytorch-grad-cam``, 512 head passes) against grad-cam 1.5.7's
  ``AblationCAM`` (512 whole-network passes, its batch of 32): target >= 10x, with the same map;
- Recipro-CAM's map against the authors' code (tests/reference_loops.py, after sybyun/ReciproCAM), timed too.

Seconds are medians over ``--repeats`` (the fast rows over at least 5). Presets: ``full`` (ResNet-18 at 224) and
``quick`` (the same network at 64 x 64, 2 x 2 at layer4: the smoke test's). Results JSON under benchmarks/results/.

    python -m benchmarks.bench_head [--preset full|quick] [--repeats 1] [--threads 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.models import CACHE, ModelSpec, build_model, bundle_path, images
from benchmarks.worker import machine

os.environ.setdefault("TQDM_DISABLE", "1")  # grad-cam draws a progress bar per image
ROOT = Path(__file__).resolve().parents[1]
PRESETS = {"full": ModelSpec("resnet18", "layer4"), "quick": ModelSpec("resnet18", "layer4", input_size=64)}
TARGETS = {"reciprocam_vs_scorecam": 100.0, "ablationcam_vs_grad_cam": 10.0}
FAST_REPEATS = 5


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times, result


def bench(spec: ModelSpec, repeats: int, threads: int, batch_size: int, cache: Path = CACHE) -> dict[str, Any]:
    """The rows (seconds per image, passes), the two speed ratios and the maps' differences."""
    import torch
    from pytorch_grad_cam import AblationCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    import camrt

    sys.path.insert(0, str(ROOT / "tests"))
    import reference_loops  # the authors' Recipro-CAM, as the parity tests run it

    torch.set_num_threads(threads)
    bundle = bundle_path(spec, cache)
    model, _ = build_model(spec)
    x = np.load(images(bundle, 1, cache))[:1]
    explainer = camrt.Explainer(bundle, intra_op_threads=threads)
    target = int(explainer.explain(x, "reciprocam", batch_size=batch_size).targets[0])
    fast = max(repeats, FAST_REPEATS)
    rows: dict[str, dict[str, Any]] = {}
    maps: dict[str, np.ndarray] = {}

    def camrt_row(name: str, method: str, convention: str, count: int) -> None:
        med, times, out = _timed(lambda: explainer.explain(x, method, convention, targets=target,
                                                           batch_size=batch_size, save_passes=False), count)
        rows[name] = {"seconds": med, "runs": times, "passes": out.passes_run, "graph": "head"
                      if method in ("reciprocam", "ablationcam") else "whole network"}
        maps[name] = out.saliency[0]

    camrt_row("camrt reciprocam[paper]", "reciprocam", "paper", fast)
    camrt_row("camrt ablationcam[pytorch-grad-cam]", "ablationcam", "pytorch-grad-cam", fast)
    camrt_row("camrt scorecam[pytorch-grad-cam]", "scorecam", "pytorch-grad-cam", repeats)

    def gradcam() -> np.ndarray:
        cam = AblationCAM(model=model, target_layers=[model.layer4])  # its default batch_size, 32
        return cam(input_tensor=torch.from_numpy(x), targets=[ClassifierOutputTarget(target)])[0]

    med, times, maps["grad-cam"] = _timed(gradcam, repeats)
    k = explainer.bundle.manifest.activation_shape[0]
    rows["grad-cam 1.5.7 AblationCAM (batch 32)"] = {"seconds": med, "runs": times, "passes": k,
                                                     "graph": "whole network"}
    features = torch.nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2,
                                   model.layer3, model.layer4)
    head = torch.nn.Sequential(model.avgpool, torch.nn.Flatten(), model.fc)
    med, times, authors = _timed(lambda: reference_loops.paper_reciprocam(
        model, features, head, torch.from_numpy(x), target), fast)
    h, w = explainer.bundle.manifest.activation_shape[1:]
    rows["authors' Recipro-CAM (torch, one batch of h*w)"] = {"seconds": med, "runs": times, "passes": h * w,
                                                              "graph": "head"}
    seconds = {name: row["seconds"] for name, row in rows.items()}
    return {
        "model": f"{spec.name} {spec.layer} at {spec.input_size} (K = {k}, {h} x {w}), random weights seed 0",
        "target": target, "batch_size": batch_size, "rows": rows,
        "ratios": {
            "reciprocam_vs_scorecam": seconds["camrt scorecam[pytorch-grad-cam]"] / seconds["camrt reciprocam[paper]"],
            "ablationcam_vs_grad_cam": seconds["grad-cam 1.5.7 AblationCAM (batch 32)"]
            / seconds["camrt ablationcam[pytorch-grad-cam]"],
        },
        "targets": TARGETS,
        "max_abs_map_diff": {
            "camrt ablationcam[pytorch-grad-cam] vs grad-cam AblationCAM": float(
                np.abs(maps["camrt ablationcam[pytorch-grad-cam]"] - maps["grad-cam"]).max()),
            "camrt reciprocam[paper] vs the authors' code": float(
                np.abs(maps["camrt reciprocam[paper]"] - authors[1]).max()),
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--repeats", type=int, default=1, help="runs of the slow rows (the fast ones: at least 5)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/cpu_head_<preset>.json")
    args = parser.parse_args(argv)
    result = {"machine": machine(args.threads), "preset": args.preset,
              **bench(PRESETS[args.preset], args.repeats, args.threads, args.batch_size, args.cache)}
    print(f"{result['model']}, target {result['target']}")
    print("| implementation | graph per pass | passes | s / image |")
    print("|---|---|---:|---:|")
    for name, row in result["rows"].items():
        print(f"| {name} | {row['graph']} | {row['passes']} | {row['seconds']:.4f} |")
    for name, ratio in result["ratios"].items():
        print(f"{name}: {ratio:.1f}x (target >= {TARGETS[name]:g}x)")
    for name, diff in result["max_abs_map_diff"].items():
        print(f"max |map difference| {name}: {diff:.2e}")
    out = args.out or ROOT / "benchmarks" / "results" / f"cpu_head_{args.preset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
