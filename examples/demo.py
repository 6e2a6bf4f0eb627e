"""The main job on a real model: export the pretrained EfficientNet-Lite0, explain real photos, write the results.

Score-CAM (paper) and ScoreCAM++ (paper) on ONNX Runtime: per photo a heat-map overlay of each method side by
side, the maps as .npy, and a summary table (Markdown and JSON). Run: ``python -m examples.demo --out demo-out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

METHODS = (("scorecam", "paper"), ("scorecam++", "paper"))


def _panel(images: list[np.ndarray], path: Path) -> None:
    """The photo and its overlays side by side, one PNG."""
    height = images[0].shape[0]
    Image.fromarray(np.concatenate([im[:height] for im in images], axis=1)).save(path)


def run(out: Path, photos: list[str] | None, batch_size: int) -> list[dict]:
    import camrt
    from camrt.exporter.models import load_model
    from camrt.runtime.overlay import overlay
    from camrt.runtime.preprocess import load_image, normalize, resize_and_crop
    from examples.photos import photo_paths

    out.mkdir(parents=True, exist_ok=True)
    bundle_dir = out / "bundle"
    started = time.perf_counter()
    if not (bundle_dir / "manifest.json").exists():
        model, info = load_model("efficientnet_lite0")
        camrt.export(model, None, bundle_dir, model_name=info["name"], class_names=info["class_names"],
                     mean=info["mean"], std=info["std"])
    print(f"bundle: {bundle_dir} ({time.perf_counter() - started:.1f} s)", flush=True)
    explainer = camrt.Explainer(bundle_dir)
    pre = explainer.bundle.manifest.preprocessing
    rows = []
    for path in photo_paths(out / "photos", photos):
        rgb = np.asarray(resize_and_crop(load_image(path), pre))  # decoded and resized once
        x = normalize(rgb, pre)[None]
        panels, row = [rgb], {"photo": path.name}
        for method, convention in METHODS:
            result = explainer.explain(x, method, convention, batch_size=batch_size)
            target = int(result.targets[0])
            np.save(out / f"{path.stem}.{method}.npy", result.saliency[0])
            panels.append(overlay(rgb, result.saliency[0]))
            row.update({"class": target, "name": explainer.bundle.class_name(target),
                        "probability": float(result.probabilities[0, target]),
                        f"{method} passes run": result.passes_run, f"{method} passes saved": result.passes_saved,
                        f"{method} s": round(result.seconds, 2)})
        _panel(panels, out / f"{path.stem}.png")
        rows.append(row)
        print(f"{path.name}: {row['name']} ({row['probability']:.2f})", flush=True)
    _write_tables(out, rows, time.perf_counter() - started)
    return rows


def _write_tables(out: Path, rows: list[dict], seconds: float) -> None:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]) for k in keys)
                     + " |")
    lines.append(f"\nTotal {seconds:.1f} s. Overlays: <photo>.png (photo | Score-CAM | ScoreCAM++).")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps({"rows": rows, "seconds": seconds}, indent=2))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-out"))
    parser.add_argument("--photos", nargs="*", default=None, help="a subset of examples.photos.PHOTOS")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    run(args.out, args.photos, args.batch_size)


if __name__ == "__main__":
    main()
