"""Which INT8 calibration keeps Score-CAM-family maps closest to FP32, on the real EfficientNet-Lite0; and what BF16
and INT8 gain on ResNet-18 Score-CAM (every pass run), side by side with ONNX Runtime FP32 in one run.

Fidelity: the bundle is exported as ``make demo`` does; the maps of the evaluation photos (the demo's six and
scikit-learn's flower) on OpenVINO BF16 and on INT8 graphs calibrated several ways (on held-out images: skimage's
and the stereo motorcycle) are compared with ONNX Runtime FP32: per-image Pearson r of the maps (mean, min),
IoU of the 20 % most salient pixels, and the share of photos whose top-1 class the low-precision whole model
changes (camrt's clean pass runs at FP32, so the class explained never changes). Speed: resnet18 (random
weights, layer4, K = 512) Score-CAM on one photo, ``save_passes=False``, explain seconds and the bare engine's
seconds for the same passes, alternating rounds.

    PYTHONPATH=. python -m benchmarks.bench_calibration [--samples 100] [--speed] [--out DIR]   # BF16, 3 mixes
    PYTHONPATH=. python -m benchmarks.bench_calibration --study      # ignored scopes, preset, 300 samples
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HELD_OUT = ("stereo_motorcycle", "camera", "clock", "coins", "moon", "hubble_deep_field", "immunohistochemistry",
            "retina", "colorwheel", "page")
# (mix, ignore, preset, samples): the default recipe first; --study runs the others
RECIPES = [("masked", "none", "performance", None), ("mixed", "none", "performance", None),
           ("clean", "none", "performance", None)]
STUDY = [("masked", "first-conv", "performance", None), ("masked", "head", "performance", None),
         ("masked", "first-conv+head", "performance", None), ("masked", "none", "mixed", None),
         ("masked", "none", "performance", 300)]
METHODS = (("scorecam", "paper"), ("scorecam++", "paper"))


def held_out_photos(folder: Path) -> list[Path]:
    """Calibration images that are not the evaluation photos, written as JPEG files once."""
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in HELD_OUT:
        path = folder / f"{name}.jpg"
        if not path.exists():
            array = getattr(data, name)()
            array = array[0] if isinstance(array, tuple) else array
            Image.fromarray(np.asarray(array, np.uint8)).convert("RGB").save(path, quality=95)
        paths.append(path)
    return paths


def evaluation_photos(folder: Path) -> list[Path]:
    """The demo's six photos and scikit-learn's flower."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    from examples.photos import photo_paths

    paths = photo_paths(folder)
    flower = folder / "flower.jpg"
    if not flower.exists():
        sample = load_sample_images()
        index = [Path(f).name for f in sample.filenames].index("flower.jpg")
        Image.fromarray(sample.images[index]).save(flower, quality=95)
    return [*paths, flower]


def lite0_bundle(out: Path) -> Path:
    """The real EfficientNet-Lite0, exported as examples/demo.py does (once)."""
    import camrt
    from camrt.exporter.models import load_model

    path = out / "lite0"
    if not (path / "manifest.json").exists():
        model, info = load_model("efficientnet_lite0")
        camrt.export(model, None, path, model_name=info["name"], class_names=info["class_names"],
                     mean=info["mean"], std=info["std"])
    return path


def fresh_copy(bundle: Path, to: Path) -> Path:
    """A copy of the FP32 bundle's manifest and ONNX graphs, to calibrate without touching the original."""
    shutil.rmtree(to, ignore_errors=True)
    to.mkdir(parents=True)
    for name in ("manifest.json", "features.onnx", "head.onnx"):
        shutil.copy2(bundle / name, to / name)
    manifest = json.loads((to / "manifest.json").read_text())
    manifest["files"] = {k: v for k, v in manifest["files"].items() if k.endswith(".onnx")}
    (to / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return to


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator else float("nan")


def top_iou(a: np.ndarray, b: np.ndarray, share: float = 0.2) -> float:
    n = int(round(a.size * share))
    top_a, top_b = set(np.argsort(a.ravel())[-n:]), set(np.argsort(b.ravel())[-n:])
    return len(top_a & top_b) / len(top_a | top_b)


def compare(explainer: Any, x: np.ndarray, reference: dict[str, Any]) -> dict[str, Any]:
    """Map fidelity of ``explainer`` against the FP32 reference, per method, and its top-1 changes."""
    row: dict[str, Any] = {}
    top1 = np.argmax(explainer.runner.logits(x), 1)
    row["class_changed"] = float(np.mean(top1 != np.argmax(reference["logits"], 1)))
    for method, convention in METHODS:
        started = time.perf_counter()
        out = explainer.explain(x, method, convention, targets=reference["targets"], batch_size=64)
        ref = reference[method]
        r = [pearson(a, b) for a, b in zip(out.saliency, ref)]
        iou = [top_iou(a, b) for a, b in zip(out.saliency, ref)]
        row[method] = {"r_mean": float(np.mean(r)), "r_min": float(np.min(r)), "iou_mean": float(np.mean(iou)),
                       "iou_min": float(np.min(iou)), "seconds": time.perf_counter() - started}
    return row


def fidelity(out: Path, samples: int, study: bool) -> dict[str, Any]:
    import camrt
    from camrt.runtime.calibrate import calibrate

    bundle = lite0_bundle(out)
    x = camrt.load_images(evaluation_photos(out / "photos"), bundle)
    calibration = camrt.load_images(held_out_photos(out / "held-out"), bundle)
    results: dict[str, Any] = {"model": "efficientnet_lite0", "photos": int(x.shape[0]),
                               "calibration_images": int(calibration.shape[0])}
    cached = out / "reference.npz"  # the FP32 maps, kept between runs of this script
    if cached.exists():
        with np.load(cached) as held:
            reference: dict[str, Any] = dict(held)
    else:
        with camrt.Explainer(bundle) as ort:
            reference = {"logits": ort.runner.logits(x)}
            reference["targets"] = np.argmax(reference["logits"], 1)
            for method, convention in METHODS:
                reference[method] = ort.explain(x, method, convention, targets=reference["targets"]).saliency
        np.savez(cached, **reference)
    rows: dict[str, Any] = {}
    if not study:
        with camrt.Explainer(bundle, backend="openvino", precision="bf16") as bf16:
            rows["bf16"] = compare(bf16, x, reference)
        print_row("bf16", rows["bf16"])
    for mix, ignore, preset, n in STUDY if study else RECIPES:
        name = f"int8 {mix} ignore={ignore} preset={preset} samples={n or samples}"
        copy = fresh_copy(bundle, out / "int8")
        started = time.perf_counter()
        calibrated = calibrate(copy, calibration, samples=n or samples, mix=mix, ignore=ignore, preset=preset)
        seconds = time.perf_counter() - started
        with camrt.Explainer(calibrated, backend="openvino", precision="int8") as int8:
            rows[name] = {**compare(int8, x, reference), "calibration_seconds": seconds}
        print_row(name, rows[name])
    results["rows"] = rows
    return results


def print_row(name: str, row: dict[str, Any]) -> None:
    cells = "  ".join(f"{m}: r {row[m]['r_mean']:.4f} (min {row[m]['r_min']:.4f}) IoU {row[m]['iou_mean']:.3f}"
                      for m, _ in METHODS)
    print(f"{name:<58} {cells}  class changed {row['class_changed']:.2f}", flush=True)


def speed(out: Path, rounds: int, samples: int) -> dict[str, Any]:
    """ResNet-18 Score-CAM (every pass run) on ONNX Runtime FP32 and OpenVINO FP32/BF16/INT8, alternating rounds:
    explain seconds and the bare engine's seconds for the same passes (medians)."""
    import camrt
    from camrt.cli import main as camrt_main
    from camrt.runtime.calibrate import calibrate

    bundle = out / "resnet18"
    if not (bundle / "manifest.json").exists():
        camrt_main(["export", "resnet18", "--layer", "layer4", "--random-weights", "--out", str(bundle)])
    if not camrt.Bundle.load(bundle).manifest.int8:
        calibrate(bundle, camrt.load_images(held_out_photos(out / "held-out"), bundle), samples=samples)
    x = camrt.load_images(evaluation_photos(out / "photos")[:1], bundle)
    configs = {"onnxruntime fp32": ("onnxruntime", {}),
               "openvino fp32": ("openvino", {"precision": "fp32"}),
               "openvino bf16": ("openvino", {"precision": "bf16"}),
               "openvino bf16 THROUGHPUT": ("openvino", {"precision": "bf16", "hint": "THROUGHPUT"}),
               "openvino int8": ("openvino", {"precision": "int8"}),
               "openvino int8 THROUGHPUT": ("openvino", {"precision": "int8", "hint": "THROUGHPUT"})}
    explainers = {name: camrt.Explainer(bundle, backend=backend, **options)
                  for name, (backend, options) in configs.items()}
    times: dict[str, dict[str, list[float]]] = {name: {"explain": [], "engine": []} for name in configs}
    maps: dict[str, np.ndarray] = {}
    batch = np.repeat(x, 64, axis=0)
    for _ in range(rounds):
        for name, explainer in explainers.items():
            explainer.runner.logits(batch)  # warm
            out_ = explainer.explain(x, "scorecam", "pytorch-grad-cam", batch_size=64, save_passes=False)
            times[name]["explain"].append(out_.seconds)
            maps[name] = out_.saliency[0]
            passes = out_.passes_run
            started = time.perf_counter()
            for start in range(0, passes, 64):
                explainer.runner.logits(batch[: min(64, passes - start)])
            times[name]["engine"].append(time.perf_counter() - started)
        print(" ".join(f"{n}: {t['explain'][-1]:.2f}s" for n, t in times.items()), flush=True)
    base = float(np.median(times["onnxruntime fp32"]["explain"]))
    table = {}
    for name, t in times.items():
        explain, engine = float(np.median(t["explain"])), float(np.median(t["engine"]))
        table[name] = {"explain_s": explain, "engine_s": engine, "explain_over_engine": explain / engine,
                       "speedup_vs_ort_fp32": base / explain,
                       "map_r_vs_ort_fp32": pearson(maps[name], maps["onnxruntime fp32"])}
        print(f"{name:<26} explain {explain:6.2f} s  engine {engine:6.2f} s  explain/engine {explain / engine:.3f}  "
              f"x{base / explain:.2f} vs ORT FP32  map r {table[name]['map_r_vs_ort_fp32']:.4f}")
    for explainer in explainers.values():
        explainer.close()
    return {"model": "resnet18 layer4 (random weights)", "method": "scorecam pytorch-grad-cam, save_passes=False",
            "rounds": rounds, "table": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/camrt-bench-calibration"))
    parser.add_argument("--samples", type=int, default=100, help="calibration inputs (default 100; camrt's is 300)")
    parser.add_argument("--study", action="store_true", help="instead: ignored scopes, the mixed preset, 300 samples")
    parser.add_argument("--speed", action="store_true", help="also ResNet-18 Score-CAM speed")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-fidelity", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {}
    if not args.no_fidelity:
        report["fidelity"] = fidelity(args.out, args.samples, args.study)
    if args.speed:
        report["speed"] = speed(args.out, args.rounds, args.samples)
    (args.out / "calibration.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out / 'calibration.json'}")


if __name__ == "__main__":
    main()
