"""The main job on a real model: export the pretrained EfficientNet-Lite0, explain real photos, measure the maps.

``camrt evaluate`` on six photos that ship in PyPI packages: Score-CAM, SS-CAM, IS-CAM and ScoreCAM++ (paper
conventions; SS-CAM and IS-CAM with fewer noise/integration samples than their papers, to fit a 2-core CPU), side by
side overlays of every method, deletion/insertion curves, and the metrics table it ends with.
Run: ``python -m examples.demo --out demo-out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

METHODS = "scorecam,sscam,iscam,scorecam++,ablationcam,reciprocam"  # the last two: head passes only
SAMPLES = 3  # SS-CAM's paper uses 35 noisy copies and IS-CAM's 10 integration steps; on a GPU, use those


def run(out: Path, photos: list[str] | None, batch_size: int, samples: int = SAMPLES) -> int:
    """Export the bundle once into out/bundle, write the photos to out/photos, evaluate into out/evaluate."""
    import camrt
    from camrt.cli import main as camrt_main
    from camrt.exporter.models import load_model
    from examples.photos import photo_paths

    out.mkdir(parents=True, exist_ok=True)
    bundle_dir = out / "bundle"
    started = time.perf_counter()
    if not (bundle_dir / "manifest.json").exists():
        model, info = load_model("efficientnet_lite0")
        camrt.export(model, None, bundle_dir, model_name=info["name"], class_names=info["class_names"],
                     mean=info["mean"], std=info["std"])
    print(f"bundle: {bundle_dir} ({time.perf_counter() - started:.1f} s)", flush=True)
    photo_paths(out / "photos", photos)
    evaluate = out / "evaluate"
    argv = ["evaluate", str(bundle_dir), str(out / "photos"), "--methods", METHODS, "--out", str(evaluate),
            "--option", f"sscam.num_samples={samples}", "--option", f"iscam.num_samples={samples}",
            "--batch-size", str(batch_size), "--overlays", "6"]
    if (evaluate / "records.jsonl").exists():
        argv.append("--resume")  # a second run reuses the photos already done
    print("$ camrt " + " ".join(argv), flush=True)
    code = camrt_main(argv)
    print(f"total {time.perf_counter() - started:.1f} s; overlays in {evaluate / 'overlays'}", flush=True)
    print(f"report: {(evaluate / 'report.html').resolve()}", flush=True)  # open it in a browser
    return code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-out"))
    parser.add_argument("--photos", nargs="*", default=None, help="a subset of examples.photos.PHOTOS")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=SAMPLES, help="SS-CAM and IS-CAM samples (default: 3)")
    args = parser.parse_args()
    raise SystemExit(run(args.out, args.photos, args.batch_size, args.samples))


if __name__ == "__main__":
    main()
