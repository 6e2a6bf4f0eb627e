"""One implementation, one case, in its own process: ``python -m benchmarks.worker job.json``.

Runs the explanation ``repeats`` times (after a warm-up: one engine batch at the run's batch size and one clean
forward), reads the process's peak RSS (VmHWM, /proc/self/status) right after, times the bare engine on pre-built
inputs at the same batch size, and writes ``result.json`` and the maps (``saliency.npy``, ``native.npy``) into the
job's ``out`` folder. A fresh process per implementation is what makes the peak RSS that implementation's own:
camrt on ONNX Runtime never imports torch; the peers do.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")  # grad-cam draws a progress bar per image

Logits = Callable[[np.ndarray], Any]


def rss_mb(field: str = "VmHWM") -> float:
    """This process's peak (VmHWM) or current (VmRSS) resident set size in MB, from /proc/self/status."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def machine(threads: int) -> str:
    """One line: architecture, cores, threads used, Python and the installed torch, onnxruntime and camrt versions
    (read from the package metadata, so torch is not imported)."""
    versions = []
    for package in ("torch", "onnxruntime", "camrt"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pass
    return (f"{platform.machine()}, {os.cpu_count()} cores ({threads} threads used), Python "
            f"{platform.python_version()}, {', '.join(versions)}")


def engine_seconds(logits: Logits, image: np.ndarray, passes: int, batch_size: int, max_batches: int) -> dict:
    """Seconds for ``passes`` forward passes through the bare engine, in batches of ``batch_size`` as explain runs.

    Inputs are built before the clock starts. With ``max_batches`` > 0 only that many full batches are timed and
    their mean is scaled to the full-batch count (the tail batch, if any, is always timed).
    """
    full, tail = divmod(passes, batch_size)
    timed = full if max_batches <= 0 else min(full, max_batches)
    batch = np.ascontiguousarray(np.repeat(image[None] * np.float32(0.5), batch_size if full else tail, axis=0))
    seconds = 0.0
    if timed:
        start = time.perf_counter()
        for _ in range(timed):
            logits(batch)
        seconds += (time.perf_counter() - start) / timed * full
    if tail:
        part = np.ascontiguousarray(batch[:tail])
        start = time.perf_counter()
        logits(part)
        seconds += time.perf_counter() - start
    return {"seconds": seconds, "passes_timed": timed * batch_size + tail, "passes": passes}


def warm_up(logits: Logits, x: np.ndarray, batch_size: int) -> None:
    """One engine batch at the run's batch size before the clock starts, for every implementation: engines that
    compile kernels per input shape (OpenVINO's CPU plugin, oneDNN) pay that once, as a warm server does."""
    logits(np.ascontiguousarray(np.repeat(x[:1], batch_size, axis=0)))


def _camrt(job: dict, x: np.ndarray, targets: np.ndarray) -> dict:
    import camrt
    from camrt.runtime.bench.configs import engine_options
    from camrt.runtime.noise import ArrayNoise

    backend = job["backend"]
    options = engine_options(backend, job.get("precision", "fp32"), threads=job["threads"],
                             trust_pickles=True)  # the benchmark's own export
    explainer = camrt.Explainer(job["bundle"], backend=backend, **options)
    method_options = {"num_samples": job["samples"]} if job.get("samples") else {}
    batch_size = job["batch_size"]
    warm_up(explainer.runner.logits, x, batch_size)
    explainer.runner.head(explainer.runner.features(x))  # the clean pass's shapes too
    rss_before = rss_mb("VmRSS")

    def run(**extra: Any) -> Any:
        return explainer.explain(x, job["method"], job["convention"], targets=targets, batch_size=batch_size,
                                 save_passes=job["save_passes"], **method_options, **extra)

    times, out = [], None
    for _ in range(job["repeats"]):
        start = time.perf_counter()
        out = run(seed=job["seed"])
        times.append(time.perf_counter() - start)
    peak = rss_mb()
    engine = engine_seconds(explainer.runner.logits, x[0], out.passes_run, batch_size, job["engine_batches"]) \
        if job.get("measure_engine", True) else None
    result = {"seconds": times, "passes_run": out.passes_run, "passes_saved": out.passes_saved,
              "rss_before_mb": rss_before, "rss_peak_mb": peak, "engine": engine,
              "torch_imported": "torch" in sys.modules, "maps_from": "timed run"}
    if job.get("noise_file"):  # SS-CAM against torchcam: one more run on torchcam's own draws, not timed
        start = time.perf_counter()
        out = run(noise=ArrayNoise(np.load(job["noise_file"], mmap_mode="r")))
        result["maps_from"] = f"a run on torchcam's noise ({time.perf_counter() - start:.1f} s, not in the times)"
    _save_maps(job, out.saliency, out.native)
    return result


def _peer(job: dict, x: np.ndarray, targets: np.ndarray) -> dict:
    """grad-cam 1.5.7 or torchcam 0.5.0 on the same model (same seed), layer and targets."""
    import torch

    from benchmarks.models import ModelSpec, build_model

    torch.set_num_threads(job["threads"])
    model, _ = build_model(ModelSpec(**job["spec"]))
    layer = job["layer"]
    tensor = torch.from_numpy(x)
    batch_size = job["batch_size"]

    def logits(batch: np.ndarray) -> Any:
        with torch.no_grad():
            return model(torch.from_numpy(batch))

    warm_up(logits, x, batch_size)
    logits(x)  # the clean pass's shape too
    rss_before = rss_mb("VmRSS")
    if job["impl"] == "grad-cam":
        from pytorch_grad_cam import ScoreCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        target = _last_call(model, layer, tensor[:1])

        def run() -> tuple[np.ndarray, np.ndarray | None]:
            cam = ScoreCAM(model=model, target_layers=[target])
            cam.batch_size = batch_size
            saliency = cam(input_tensor=tensor, targets=[ClassifierOutputTarget(int(t)) for t in targets])
            cam.activations_and_grads.release()
            return np.asarray(saliency), None
    else:
        import torchcam.methods as tc

        cls = {"scorecam": tc.ScoreCAM, "sscam": tc.SSCAM, "iscam": tc.ISCAM}[job["method"]]
        kwargs = {"num_samples": job["samples"]} if job.get("samples") else {}

        def run() -> tuple[np.ndarray, np.ndarray | None]:
            torch.manual_seed(job["seed"])  # SS-CAM's noise: the stream camrt replays for the map difference
            with cls(model, layer, batch_size=batch_size, input_shape=tuple(x.shape[1:]), **kwargs) as extractor:
                with torch.no_grad():
                    model(tensor)
                native = extractor(class_idx=[int(t) for t in targets])[0].numpy()
            return np.empty((0,)), native

    times, maps = [], (np.empty(0), None)
    for _ in range(job["repeats"]):
        start = time.perf_counter()
        maps = run()
        times.append(time.perf_counter() - start)
    peak = rss_mb()
    passes = int(job["channels"]) * x.shape[0] * int(job.get("samples") or 1)
    engine = engine_seconds(logits, x[0], passes, batch_size, job["engine_batches"]) \
        if job.get("measure_engine", True) else None
    _save_maps(job, maps[0] if maps[0].size else None, maps[1])
    return {"seconds": times, "passes_run": passes, "passes_saved": 0, "rss_before_mb": rss_before,
            "rss_peak_mb": peak, "engine": engine, "torch_imported": True, "maps_from": "timed run"}


def _last_call(model: Any, layer: str, x: Any) -> Any:
    """The module grad-cam should hook to see ``layer``'s output of its LAST call in a forward pass.

    grad-cam keeps the activations of a module's first call; a module called several times (EfficientNet-Lite's
    shared ``_swish``, stem and head) would give it the stem's. camrt and torchcam use the last call. The module is
    wrapped so that its last call's output also passes through an identity module, which grad-cam hooks:
    the model computes exactly what it did.
    """
    import torch
    from torch import nn

    module = model.get_submodule(layer)
    calls = [0]
    handle = module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    with torch.no_grad():
        model(x)
    handle.remove()
    if calls[0] <= 1:
        return module

    class LastCall(nn.Module):
        def __init__(self, inner: nn.Module, per_forward: int) -> None:
            super().__init__()
            self.inner, self.per_forward, self.seen, self.tap = inner, per_forward, 0, nn.Identity()

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            out = self.inner(*args, **kwargs)
            self.seen += 1
            if self.seen < self.per_forward:
                return out
            self.seen = 0
            return self.tap(out)

    parent_name, _, child = layer.rpartition(".")
    wrapper = LastCall(module, calls[0])
    setattr(model.get_submodule(parent_name) if parent_name else model, child, wrapper)
    return wrapper.tap


def _save_maps(job: dict, saliency: np.ndarray | None, native: np.ndarray | None) -> None:
    out = Path(job["out"])
    if saliency is not None:
        np.save(out / "saliency.npy", saliency)
    if native is not None:
        np.save(out / "native.npy", native)


def run_job(job: dict) -> dict:
    """Run one job in this process and write its result.json; returns the result."""
    x = np.load(job["images"])
    targets = np.asarray(job["targets"], dtype=np.int64)
    result = _camrt(job, x, targets) if job["impl"] == "camrt" else _peer(job, x, targets)
    Path(job["out"], "result.json").write_text(json.dumps(result, indent=2))
    return result


def main() -> None:
    run_job(json.loads(Path(sys.argv[1]).read_text()))


if __name__ == "__main__":
    main()
