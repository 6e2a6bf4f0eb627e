"""GPU benchmark (issues 4 and 16): resnet18 / resnet50 at 224 x 224, batch 64 and 256, FP32 and FP16, one table.

Per model, precision and batch: the fused mask kernel's write rate against the card's fill rate (bytes written
per second by a plain fill of the same buffer: the kernel's ceiling, since its one source image stays in L2 and
only its writes reach memory), the engine alone (images/s over the same number of passes), seconds per
Score-CAM (pytorch-grad-cam convention, every pass run), and grad-cam's ScoreCAM on the same GPU with TF32 off
and on (pinned each time: torch's TF32 switches are process-wide and a torch backend run turns them off). Every
figure is the median of ``--repeats`` runs. Needs a CUDA GPU, CuPy, torch with CUDA, and the chosen backend's
packages; without them it stops with one line. A (backend, precision) pair the registry does not offer is
skipped with a note. JSON goes to ``--out`` (default benchmarks/results/), rewritten after every row.

    python -m benchmarks.bench_gpu [--backend tensorrt|onnxruntime-tensorrt|onnxruntime-cuda|torch]
                                   [--precisions fp32,fp16] [--repeats 5] [--models resnet18,resnet50] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
MODELS = {"resnet18": "layer4", "resnet50": "layer4"}
BACKENDS = ("tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda", "torch")


def _timed(fn: Callable[[], Any], sync: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs after one warm-up, with the device synchronised."""
    fn()
    sync()
    runs = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        sync()
        runs.append(time.perf_counter() - start)
    return float(np.median(runs))


def fill_rate(cupy: Any, out: Any, repeats: int) -> float:
    """GB/s written by a plain fill of ``out`` (a non-zero value: a kernel's stores, not a memset)."""
    seconds = _timed(lambda: out.fill(1.0), cupy.cuda.Device().synchronize, repeats * 10)
    return out.nbytes / seconds / 1e9


def kernel_rates(cupy: Any, kernels: Any, batch: int, k: int, h: int, repeats: int) -> dict[str, float]:
    """The fused masked-input kernel's GB/s written, and the fill ceiling of the same (batch, 3, 224, 224) buffer.

    Bytes read are not counted: the one source image (600 KB) and the activations stay in L2 across the batch,
    so counting them once per output (as the first version did) doubled the rate."""
    from camrt.kernels import MaskSpec

    acts = cupy.random.standard_normal((1, k, h, h), dtype=cupy.float32)
    imgs = cupy.random.standard_normal((1, 3, 224, 224), dtype=cupy.float32)
    out = cupy.empty((batch, 3, 224, 224), dtype=cupy.float32)
    bi, ki = cupy.zeros(batch, cupy.int32), cupy.arange(batch, dtype=cupy.int32) % k
    spec = MaskSpec(align_corners=True, eps=1e-8)
    seconds = _timed(lambda: kernels.masked_inputs(acts, imgs, bi, ki, spec, out), cupy.cuda.Device().synchronize,
                     repeats * 10)
    written = out.nbytes / seconds / 1e9
    ceiling = fill_rate(cupy, out, repeats)
    return {"kernel_write_GBps": round(written, 1), "fill_GBps": round(ceiling, 1),
            "kernel_of_fill": round(written / ceiling, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backend", default="tensorrt", choices=BACKENDS)
    parser.add_argument("--precisions", default="fp32,fp16", help="comma-separated (default fp32,fp16)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", default="64,256")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--skip-gradcam", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON (default benchmarks/results)")
    args = parser.parse_args(argv)
    path = args.out / f"gpu_scorecam_{args.backend}.json"
    try:
        report = run(args, path)
    except Exception as exc:  # CamrtError for missing packages; anything else is one line too
        print(f"bench_gpu: error: {' '.join(str(exc).split()) or type(exc).__name__}", file=sys.stderr)
        return 2
    print(_table(report["rows"]))
    print(f"written: {path}")
    return 0


def _write(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def run(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    from camrt.errors import CamrtError
    from camrt.kernels.gpu import cuda_kernels, import_cupy
    from camrt.runtime.backends import runner_options

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
    kernels = cuda_kernels()
    report: dict[str, Any] = {"gpu": gpu, "python": platform.python_version(), "torch": torch.__version__,
                              "camrt": camrt.__version__, "backend": args.backend, "repeats": args.repeats,
                              "rows": [], "skipped": []}
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    batches = [int(b) for b in args.batches.split(",")]
    for model_name in args.models.split(","):
        layer = MODELS[model_name]
        model = getattr(torchvision.models, model_name)(weights=None).eval()
        with tempfile.TemporaryDirectory() as tmp:
            bundle = camrt.export(model, layer, tmp, input_shape=(3, 224, 224), model_name=model_name)
            k, h, _ = bundle.manifest.activation_shape
            for precision in args.precisions.split(","):
                try:
                    options = runner_options(args.backend, "cuda" if args.backend == "torch" else None, precision)
                except CamrtError as exc:  # e.g. onnxruntime-cuda has no fp16: say so, go on
                    report["skipped"].append(f"{model_name} {precision}: {exc}")
                    print(f"bench_gpu: skipped {model_name} {precision}: {exc}", file=sys.stderr)
                    continue
                if args.backend == "torch":
                    options["trust_pickles"] = True
                for batch in batches:
                    row = _row(cupy, kernels, camrt, bundle, args, options, model_name, precision, batch, k, h, x)
                    if not args.skip_gradcam:
                        row.update(_gradcam(model, x, batch, layer, args.repeats, row["scorecam_s"]))
                    row["gpu"] = gpu
                    report["rows"].append(row)
                    _write(path, report)
                    print(json.dumps(row), file=sys.stderr)
    # "0" (onnxruntime-tensorrt fp32 sets it) turns TF32 off process-wide, grad-cam's "tf32" runs included
    report["NVIDIA_TF32_OVERRIDE"] = os.environ.get("NVIDIA_TF32_OVERRIDE")
    _write(path, report)
    return report


def _row(cupy: Any, kernels: Any, camrt: Any, bundle: Any, args: argparse.Namespace, options: dict[str, Any],
         model_name: str, precision: str, batch: int, k: int, h: int, x: np.ndarray) -> dict[str, Any]:
    """One (model, precision, batch) row: kernel rates, the engine alone, and camrt's Score-CAM."""
    with camrt.Explainer(bundle, backend=args.backend, **options) as explainer:
        runner: Any = explainer.runner
        sync = runner.stream.synchronize
        buffer = runner.input_buffer(batch)
        with runner.stream_context():  # on the runner's stream: the engine's first run is ordered after the fill
            buffer[...] = cupy.asarray(np.repeat(x, batch, axis=0))
        sync()

        def engine_alone() -> None:
            for _ in range(-(-k // batch)):
                runner.run_logits(batch)

        engine_s = _timed(engine_alone, sync, args.repeats)
        explain_s = _timed(lambda: explainer.explain(x, "scorecam", "pytorch-grad-cam", batch_size=batch,
                                                     save_passes=False), sync, args.repeats)
    return {"model": model_name, "batch": batch, "K": k, "backend": args.backend, "precision": precision,
            **kernel_rates(cupy, kernels, batch, k, h, args.repeats),
            "engine_images_per_s": round(k / engine_s, 1), "engine_s": round(engine_s, 4),
            "scorecam_s": round(explain_s, 4), "explain_over_engine": round(explain_s / engine_s, 3)}


def _gradcam(model: Any, x: np.ndarray, batch: int, layer: str, repeats: int, camrt_s: float) -> dict[str, Any]:
    """grad-cam 1.5.7 ScoreCAM on the same GPU and input, batch ``batch``, with TF32 off (FP32 as camrt's fp32
    rows compute it) and on (torch's default for convolutions); both switches restored afterwards."""
    import torch
    from pytorch_grad_cam import ScoreCAM

    model = model.cuda().eval()
    cam = ScoreCAM(model=model, target_layers=[getattr(model, layer)])
    cam.batch_size = batch
    tensor = torch.from_numpy(x).cuda()
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    out: dict[str, Any] = {}
    try:
        for name, tf32 in (("fp32", False), ("tf32", True)):
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
            seconds = _timed(lambda: cam(input_tensor=tensor), torch.cuda.synchronize, repeats)
            out[f"gradcam_{name}_s"] = round(seconds, 4)
            out[f"speedup_vs_gradcam_{name}"] = round(seconds / camrt_s, 1)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
        model.cpu()
    return out


def _table(rows: list[dict[str, Any]]) -> str:
    head = ("| model | precision | batch | kernel GB/s written (fill) | of fill | engine img/s | Score-CAM s | "
            "explain / engine | grad-cam s fp32 / tf32 | x fp32 / tf32 |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['precision']} | {r['batch']} | {r['kernel_write_GBps']} ({r['fill_GBps']}) "
                     f"| {r['kernel_of_fill']} | {r['engine_images_per_s']} | {r['scorecam_s']} | "
                     f"{r['explain_over_engine']} | {r.get('gradcam_fp32_s', '-')} / {r.get('gradcam_tf32_s', '-')} "
                     f"| {r.get('speedup_vs_gradcam_fp32', '-')} / {r.get('speedup_vs_gradcam_tf32', '-')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
