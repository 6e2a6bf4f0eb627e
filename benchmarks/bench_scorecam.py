"""Seconds per image for one ResNet-18 Score-CAM: camrt (ONNX Runtime) vs grad-cam and torchcam, one run.

Same image (skimage's chelsea), same target, every pass run on every side; the maps are compared so that the
faster answer is shown to be the same answer. Then the passes camrt saves, exactly, on the real
EfficientNet-Lite0 photos. Run: ``python -m benchmarks.bench_scorecam`` (about 2 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")  # grad-cam draws a progress bar per batch; keep the output a table


def _photo(size: int = 224) -> np.ndarray:
    from skimage import data

    from camrt.runtime.bundle import Preprocessing
    from camrt.runtime.preprocess import preprocess

    pre = Preprocessing(resize=round(size / 0.875), crop=(size, size), mean=(0.485, 0.456, 0.406),
                        std=(0.229, 0.224, 0.225))
    from PIL import Image

    return preprocess(Image.fromarray(data.chelsea()), pre)[None]


def _timed(fn, repeats: int) -> tuple[float, list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def bench_resnet18(repeats: int, batch_size: int, threads: int) -> dict:
    """camrt vs grad-cam 1.5.7 vs torchcam 0.5.0 ScoreCAM on torchvision resnet18 (layer4, K=512) at 224."""
    import torch
    import torchcam.methods
    import torchvision
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    import camrt

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = _photo()
    with tempfile.TemporaryDirectory() as tmp:
        camrt.export(model, "layer4", tmp, model_name="resnet18")
        explainer = camrt.Explainer(tmp, intra_op_threads=threads)
        target = int(explainer.explain(x[:1], "scorecam", "paper", targets=0, batch_size=1).logits.argmax())
        rows = {}
        for convention in ("pytorch-grad-cam", "torchcam"):
            med, times, out = _timed(
                lambda c=convention: explainer.explain(x, "scorecam", c, targets=target, batch_size=batch_size,
                                                       save_passes=False), repeats)
            rows[f"camrt[{convention}]"] = {"seconds": med, "runs": times, "passes": out.passes_run,
                                            "saliency": out.saliency[0], "native": out.native[0]}
        saved = explainer.explain(x, "scorecam", "pytorch-grad-cam", targets=target, batch_size=batch_size)
        rows["camrt[pytorch-grad-cam], passes saved"] = {"seconds": saved.seconds, "runs": [saved.seconds],
                                                         "passes": saved.passes_run, "saliency": saved.saliency[0]}

    def gradcam():
        cam = ScoreCAM(model=model, target_layers=[model.layer4])
        cam.batch_size = 16
        return cam(input_tensor=torch.from_numpy(x), targets=[ClassifierOutputTarget(target)])[0]

    def torchcam_run():
        with torchcam.methods.ScoreCAM(model, "layer4", batch_size=32) as extractor:
            with torch.no_grad():
                model(torch.from_numpy(x))
            return extractor(class_idx=target)[0][0].numpy()

    med, times, gc_map = _timed(gradcam, repeats)
    rows["grad-cam 1.5.7 ScoreCAM"] = {"seconds": med, "runs": times, "passes": 512}
    med, times, tc_map = _timed(torchcam_run, repeats)
    rows["torchcam 0.5.0 ScoreCAM"] = {"seconds": med, "runs": times, "passes": 512}
    diffs = {
        "camrt[pytorch-grad-cam] vs grad-cam": float(
            np.abs(rows["camrt[pytorch-grad-cam]"]["saliency"] - gc_map).max()),
        "camrt[torchcam] vs torchcam": float(np.abs(rows["camrt[torchcam]"]["native"] - tc_map).max()),
        "camrt passes saved vs all passes": float(
            np.abs(rows["camrt[pytorch-grad-cam], passes saved"]["saliency"]
                   - rows["camrt[pytorch-grad-cam]"]["saliency"]).max()),
    }
    for row in rows.values():
        row.pop("saliency", None)
        row.pop("native", None)
    faster_peer = min(rows["grad-cam 1.5.7 ScoreCAM"]["seconds"], rows["torchcam 0.5.0 ScoreCAM"]["seconds"])
    return {"rows": rows, "max_abs_map_diff": diffs,
            "speedup_vs_faster_peer_all_passes": faster_peer / rows["camrt[pytorch-grad-cam]"]["seconds"],
            "target": target, "batch_size": batch_size}


def bench_passes_saved() -> dict:
    """Exact passes saved on the real EfficientNet-Lite0 photos: planned from the activations, nothing skipped."""
    import camrt
    from camrt.exporter.models import load_model
    from camrt.runtime.methods import get_convention
    from camrt.runtime.plan import plan_jobs
    from camrt.runtime.preprocess import load_batch
    from examples.photos import photo_paths

    model, info = load_model("efficientnet_lite0")
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        camrt.export(model, None, tmp, model_name="efficientnet_lite0", class_names=info["class_names"])
        explainer = camrt.Explainer(tmp)
        paths = photo_paths(Path(tmp) / "photos")
        x = load_batch(paths, explainer.bundle.manifest.preprocessing)
        acts = explainer.runner.features(x)
        for method, convention in (("scorecam", "paper"), ("scorecam", "pytorch-grad-cam"),
                                   ("scorecam", "torchcam"), ("scorecam++", "paper")):
            plan = plan_jobs(acts, get_convention(method, convention))
            per = plan.nominal_passes // len(paths)
            run = plan.jobs + int(plan.needs_zero_pass)
            out[f"{method}[{convention}]"] = {"reference_passes": plan.nominal_passes, "camrt_passes": run,
                                              "saved": plan.nominal_passes - run, "per_image_reference": per}
        out["photos"] = [p.name for p in paths]
        out["layer"] = explainer.bundle.manifest.target_layer
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--out", default="benchmarks/results/cpu_scorecam.json")
    args = parser.parse_args()
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
              "resnet18": bench_resnet18(args.repeats, args.batch_size, args.threads),
              "efficientnet_lite0_passes": bench_passes_saved()}
    print("| implementation (resnet18, 224x224, layer4) | s/image | passes | vs camrt |")
    print("|---|---|---|---|")
    base = result["resnet18"]["rows"]["camrt[pytorch-grad-cam]"]["seconds"]
    for name, row in result["resnet18"]["rows"].items():
        print(f"| {name} | {row['seconds']:.2f} | {row['passes']} | {row['seconds'] / base:.2f}x |")
    print(f"\ncamrt (every pass run) is {result['resnet18']['speedup_vs_faster_peer_all_passes']:.2f}x faster "
          "than the faster peer")
    for name, diff in result["resnet18"]["max_abs_map_diff"].items():
        print(f"max |map difference| {name}: {diff:.2e}")
    print("\n| EfficientNet-Lite0 photos | reference passes | camrt passes | saved |")
    print("|---|---|---|---|")
    for name, row in result["efficientnet_lite0_passes"].items():
        if isinstance(row, dict):
            print(f"| {name} | {row['reference_passes']} | {row['camrt_passes']} | {row['saved']} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
