"""Backends behind one interface; each is imported only when asked for."""

from __future__ import annotations

from typing import Any

from camrt.errors import CamrtError
from camrt.runtime.backends.base import Runner
from camrt.runtime.bundle import Bundle

BACKENDS = ("onnxruntime", "torch", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt")
GPU_BACKENDS = ("onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt")


def device_id(device: str) -> int:
    """The CUDA device index of 'cuda' or 'cuda:N'; a one-line error for anything else."""
    name, _, index = device.partition(":")
    if name != "cuda" or (index and not index.isdigit()):
        raise CamrtError(f"device: expected cpu, cuda or cuda:N, got {device!r}")
    return int(index or 0)


def check_backend(name: str) -> None:
    """A one-line error unless ``name`` is one of BACKENDS."""
    if name not in BACKENDS:
        raise CamrtError(f"backend: unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def on_gpu(name: str, device: str | None) -> bool:
    """True when backend ``name`` with ``device`` (None: its default) runs on a GPU."""
    return name in GPU_BACKENDS or (device or "cpu") != "cpu"


def make_runner(name: str, bundle: Bundle, **options: Any) -> Runner:
    """The runner called ``name`` for ``bundle``; unknown names and missing packages give one-line errors.

    ``device="cuda"`` (or "cuda:N") puts onnxruntime and torch on the GPU; the GPU backends need no device option.
    """
    check_backend(name)
    device = str(options.pop("device", None) or ("cuda" if name in GPU_BACKENDS else "cpu"))
    if device != "cpu" and not device.startswith("cuda"):
        raise CamrtError(f"device: expected cpu, cuda or cuda:N, got {device!r}")
    if name in GPU_BACKENDS and device == "cpu":
        raise CamrtError(f"backend {name!r} runs on a GPU only; use --device cuda, or backend onnxruntime for the CPU")
    if name == "onnxruntime" and device == "cpu":
        from camrt.runtime.backends.onnxruntime import OnnxrtRunner

        return OnnxrtRunner(bundle, **options)
    if name in ("onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt"):
        from camrt.runtime.backends.onnxruntime_cuda import OrtCudaRunner

        provider = "tensorrt" if name == "onnxruntime-tensorrt" else "cuda"
        return OrtCudaRunner(bundle, provider=provider, device_id=device_id(device), **options)
    if name == "tensorrt":
        from camrt.runtime.backends.tensorrt import TrtRunner

        return TrtRunner(bundle, device_id=device_id(device), **options)
    if name == "torch":
        from camrt.runtime.backends.torch import TorchRunner

        return TorchRunner.from_bundle(bundle, device=device, **options)
    raise AssertionError(name)  # check_backend let through a name no branch handles


__all__ = ["BACKENDS", "GPU_BACKENDS", "Runner", "check_backend", "device_id", "make_runner", "on_gpu"]
