"""GPU benchmark for issue 4: resnet18 / resnet50 at 224 x 224, batch 64 and 256, one table, JSON in results/.

Per model and batch: the fused mask kernel's GB/s against the card's measured device-to-device copy bandwidth,
the engine alone (images/s over the same number of passes), seconds per Score-CAM (pytorch-grad-cam convention,
every pass run) and grad-cam's ScoreCAM on the same GPU. Needs a CUDA GPU, CuPy, torch with CUDA, and the
chosen backend's packages; without them it stops with one line.

    python -m benchmarks.bench_gpu [--backend tensorrt|onnxruntime-cuda|torch] [--precision fp32|fp16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
MODELS = {"resnet18": "layer4", "resnet50": "layer4"}


def _timed(fn: Any, sync: Any, repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs after one warm-up, with the device synchronised."""
    fn()
    sync()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        runs.append(time.perf_counter() - start)
    return float(np.median(runs))


def copy_bandwidth(cupy: Any, nbytes: int = 1 << 30) -> float:
    """Device-to-device copy bandwidth in GB/s (bytes read + written), the kernel's ceiling."""
    src = cupy.empty(nbytes // 4, dtype=cupy.float32)
    dst = cupy.empty_like(src)
    seconds = _timed(lambda: dst.__setitem__(Ellipsis, src), cupy.cuda.Device().synchronize, 10)
    return 2 * nbytes / seconds / 1e9


def kernel_bandwidth(cupy: Any, kernels: Any, batch: int, k: int, h: int, repeats: int) -> float:
    """GB/s of the fused masked-input kernel: images read + masked inputs written (activations are tiny)."""
    from camrt.kernels import MaskSpec

    acts = cupy.random.standard_normal((1, k, h, h), dtype=cupy.float32)
    imgs = cupy.random.standard_normal((1, 3, 224, 224), dtype=cupy.float32)
    out = cupy.empty((batch, 3, 224, 224), dtype=cupy.float32)
    bi, ki = cupy.zeros(batch, cupy.int32), cupy.arange(batch, dtype=cupy.int32) % k
    spec = MaskSpec(align_corners=True, eps=1e-8)
    seconds = _timed(lambda: kernels.masked_inputs(acts, imgs, bi, ki, spec, out), cupy.cuda.Device().synchronize,
                     repeats * 10)
    return 2 * out.nbytes / seconds / 1e9  # each output value reads one image value (cached for batch > 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="tensorrt", choices=("tensorrt", "onnxruntime-cuda", "torch"))
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", default="64,256")
    parser.add_argument("--skip-gradcam", action="store_true")
    args = parser.parse_args(argv)
    try:
        report = run(args)
    except Exception as exc:  # CamrtError for missing packages; anything else is one line too
        print(f"bench_gpu: error: {' '.join(str(exc).split()) or type(exc).__name__}", file=sys.stderr)
        return 2
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"gpu_scorecam_{args.backend}_{args.precision}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(_table(report["rows"]))
    print(f"written: {path}")
    return 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    from camrt.errors import CamrtError
    from camrt.kernels.gpu import cuda_kernels, import_cupy

    cupy = import_cupy()
    try:
        import torch
        import torchvision
    except ImportError:
        raise CamrtError("the benchmark needs torch and torchvision (pip install camrt[torch])") from None
    if not torch.cuda.is_available():
        raise CamrtError("torch sees no CUDA GPU (a CPU-only torch build?)")
    import camrt

    gpu = torch.cuda.get_device_name(0)
    copy_gbs = copy_bandwidth(cupy)
    kernels = cuda_kernels()
    rows = []
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    for model_name, layer in MODELS.items():
        model = getattr(torchvision.models, model_name)(weights=None).eval()
        with tempfile.TemporaryDirectory() as tmp:
            bundle = camrt.export(model, layer, tmp, input_shape=(3, 224, 224), model_name=model_name)
            k, h, _ = bundle.manifest.activation_shape
            for batch in (int(b) for b in args.batches.split(",")):
                options: dict[str, Any] = {"device": "cuda", "trust_pickles": True} if args.backend == "torch" else {}
                if args.precision != "fp32":
                    options["precision"] = args.precision
                explainer = camrt.Explainer(bundle, backend=args.backend, **options)
                runner: Any = explainer.runner
                sync = runner.stream.synchronize
                buffer = runner.input_buffer(batch)
                buffer[...] = cupy.asarray(np.repeat(x, batch, axis=0))

                def engine_alone(runner: Any = runner, batch: int = batch, k: int = k) -> None:
                    for _ in range(-(-k // batch)):
                        runner.run_logits(batch)

                engine_s = _timed(engine_alone, sync, args.repeats)
                explain_s = _timed(
                    lambda e=explainer, b=batch: e.explain(x, "scorecam", "pytorch-grad-cam", batch_size=b,
                                                           save_passes=False), sync, args.repeats)
                row = {
                    "model": model_name, "batch": batch, "K": k, "gpu": gpu, "backend": args.backend,
                    "precision": args.precision, "copy_GBps": round(copy_gbs, 1),
                    "kernel_GBps": round(kernel_bandwidth(cupy, kernels, batch, k, h, args.repeats), 1),
                    "engine_images_per_s": round(k / engine_s, 1), "engine_s": round(engine_s, 4),
                    "scorecam_s": round(explain_s, 4), "explain_over_engine": round(explain_s / engine_s, 3),
                }
                if not args.skip_gradcam:
                    row["gradcam_s"] = round(_gradcam_seconds(model, x, batch, layer, args.repeats), 4)
                    row["speedup_vs_gradcam"] = round(row["gradcam_s"] / explain_s, 1)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
    return {"gpu": gpu, "python": platform.python_version(), "torch": torch.__version__,
            "camrt": camrt.__version__, "rows": rows}


def _gradcam_seconds(model: Any, x: np.ndarray, batch: int, layer: str, repeats: int) -> float:
    """grad-cam 1.5.7 ScoreCAM on the same GPU and input, batch ``batch`` (its masked-input chunk)."""
    import torch
    from pytorch_grad_cam import ScoreCAM

    model = model.cuda().eval()
    cam = ScoreCAM(model=model, target_layers=[getattr(model, layer)])
    cam.batch_size = batch
    tensor = torch.from_numpy(x).cuda()
    return _timed(lambda: cam(input_tensor=tensor), torch.cuda.synchronize, max(1, repeats // 3))


def _table(rows: list[dict[str, Any]]) -> str:
    head = "| model | batch | kernel GB/s (copy) | engine img/s | Score-CAM s | explain / engine | grad-cam s | x |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch']} | {r['kernel_GBps']} ({r['copy_GBps']}) | "
                     f"{r['engine_images_per_s']} | {r['scorecam_s']} | {r['explain_over_engine']} | "
                     f"{r.get('gradcam_s', '-')} | {r.get('speedup_vs_gradcam', '-')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
