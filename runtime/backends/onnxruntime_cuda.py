"""ONNX Runtime on the GPU: CUDA or TensorRT execution provider, IOBinding on CuPy buffers, one shared stream.

The sessions run on the stream the mask kernels use (``user_compute_stream``), and masked-input runs ask ONNX
Runtime not to synchronise at the end (``disable_synchronize_execution_providers``), so chunks queue up on
the device without host round trips. A provider that fails to load (ONNX Runtime then falls back silently, to
the CPU or from TensorRT to CUDA) is one error line. The TensorRT provider gets one explicit batch profile
(``trt_profile_*_shapes``), so no batch size rebuilds its engine mid-explain; its engine cache has one folder per
precision, ONNX Runtime and TensorRT version, GPU and profile; FP32 runs without TF32, as the CPU does.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from camrt.errors import CamrtError
from camrt.kernels.gpu import CudaKernels, cuda_kernels, import_cupy
from camrt.runtime.backends.device import EngineBuffers
from camrt.runtime.backends.ort_sessions import verified_sessions
from camrt.runtime.backends.tensorrt_build import Profile, gpu_name, slug
from camrt.runtime.bundle import ACTIVATIONS, IMAGE, Bundle

PROVIDERS = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
TRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu13-libs", "tensorrt-cu12-libs",
                     "tensorrt-libs")


def import_ort_gpu(provider: str) -> Any:
    """onnxruntime with the requested GPU execution provider, or one CamrtError line naming what is missing."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise CamrtError("backend 'onnxruntime-cuda' needs onnxruntime-gpu: pip install camrt[gpu]") from None
    wanted = [PROVIDERS[provider], PROVIDERS["cuda"]] if provider == "tensorrt" else [PROVIDERS["cuda"]]
    missing = [p for p in wanted if p not in ort.get_available_providers()]
    if missing:
        raise CamrtError(f"this onnxruntime has no {missing[0]} (it has {', '.join(ort.get_available_providers())}): "
                         "pip uninstall onnxruntime && pip install camrt[gpu]")
    return ort


def check_providers(sessions: Mapping[str, Any], provider: str) -> None:
    """One error line unless every session runs on the asked provider: ONNX Runtime falls back silently (to the
    CPU, or from TensorRT to CUDA) when a provider's libraries fail to load, and ``get_providers`` shows it."""
    wanted = PROVIDERS[provider]
    for graph, session in sessions.items():
        got = list(session.get_providers())
        if wanted not in got:
            raise CamrtError(f"ONNX Runtime could not load its {wanted} for the {graph} graph and fell back to "
                             f"{', '.join(got) or 'nothing'}: the CUDA{'/TensorRT' * (provider == 'tensorrt')} "
                             "libraries it needs are missing or do not match it (see its log, or run with "
                             "ORT_LOG_LEVEL=0)")


def tensorrt_version() -> str:
    """The installed TensorRT's version (the libraries ONNX Runtime's TensorRT provider loads), or 'unknown'."""
    for name in TRT_DISTRIBUTIONS:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def trt_cache_dir(base: Path, precision: str, ort_version: str, trt_version: str, gpu: str, profile: Profile) -> Path:
    """The engine cache folder of one precision, ONNX Runtime and TensorRT version, GPU and batch profile: ONNX
    Runtime's cache names leave precision and versions out, so a shared folder would serve the wrong engine."""
    return base / (f"{precision}-ort{ort_version}-trt{trt_version}-{slug(gpu)}"
                   f"-b{profile.min_batch}-{profile.opt_batch}-{profile.max_batch}")


def trt_profile_options(shapes: Mapping[str, tuple[int, ...]], profile: Profile) -> dict[str, str]:
    """``trt_profile_{min,opt,max}_shapes`` for every graph input (each session uses its own input's entry)."""
    def dims(batch: int) -> str:
        return ",".join(f"{name}:{'x'.join(str(d) for d in (batch, *shape))}" for name, shape in shapes.items())

    return {"trt_profile_min_shapes": dims(profile.min_batch), "trt_profile_opt_shapes": dims(profile.opt_batch),
            "trt_profile_max_shapes": dims(profile.max_batch)}


def disable_tf32() -> None:
    """TF32 off for TensorRT: its provider has no option for it, and TensorRT reads ``NVIDIA_TF32_OVERRIDE=0``
    (which overrides its TF32 builder flag) when it builds; set before the first session of the process."""
    os.environ["NVIDIA_TF32_OVERRIDE"] = "0"


class OrtCudaRunner(EngineBuffers):
    """Two ONNX Runtime sessions on one CUDA stream, bound to device buffers of up to ``rows`` inputs."""

    def __init__(self, bundle: Bundle, provider: str = "cuda", device_id: int = 0, fp16: bool = False,
                 cache_dir: str | Path | None = None, profile: Profile | None = None) -> None:
        if provider not in PROVIDERS:
            raise CamrtError(f"provider: expected one of {', '.join(PROVIDERS)}, got {provider!r}")
        ort = import_ort_gpu(provider)
        self.cupy = import_cupy()
        self.cupy.cuda.Device(device_id).use()
        self.name = "onnxruntime-cuda" if provider == "cuda" else "onnxruntime-tensorrt"
        self.precision = "fp16" if fp16 else "fp32"  # what a run below FP32 records (run_folder.run_config)
        self.device_id = device_id
        self.stream = self.cupy.cuda.Stream(non_blocking=True)
        self.kernels: CudaKernels = cuda_kernels(self.stream, device_id)
        # provider option values are strings (ONNX Runtime parses "0"/"1" for its booleans)
        stream = {"device_id": str(device_id), "has_user_compute_stream": "1",
                  "user_compute_stream": str(self.stream.ptr)}
        providers: list[tuple[str, dict[str, Any]]] = [(PROVIDERS["cuda"], {**stream, "use_tf32": "0"})]
        if provider == "tensorrt":
            profile = profile or Profile()
            self.max_batch = profile.max_batch
            precision = "fp16" if fp16 else "fp32"
            if not fp16:
                disable_tf32()
            base = Path(cache_dir) if cache_dir else bundle.root / "engines" / "onnxruntime-trt"
            cache = trt_cache_dir(base, precision, ort.__version__, tensorrt_version(), gpu_name(device_id), profile)
            cache.mkdir(parents=True, exist_ok=True)
            m = bundle.manifest
            shapes = {IMAGE: tuple(m.input_shape), ACTIVATIONS: tuple(m.activation_shape)}
            providers.insert(0, (PROVIDERS["tensorrt"], {
                **stream, "trt_fp16_enable": "1" if fp16 else "0", "trt_engine_cache_enable": "1",
                "trt_engine_cache_path": str(cache), "trt_timing_cache_enable": "1",
                "trt_timing_cache_path": str(cache), **trt_profile_options(shapes, profile),
            }))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self._sessions = verified_sessions(ort, bundle, options, providers, f"ONNX Runtime ({provider})")
        check_providers(self._sessions, provider)
        self._async = ort.RunOptions()
        self._async.add_run_config_entry("disable_synchronize_execution_providers", "1")
        self._init_buffers(bundle)

    def _drop_engines(self) -> None:
        self._sessions.clear()

    def _enqueue(self, graph: str, src: str, dst: str, n: int, for_host: bool) -> None:
        session = self._sessions[graph]
        binding = session.io_binding()
        for name, bind in ((src, binding.bind_input), (dst, binding.bind_output)):
            bind(name, "cuda", self.device_id, np.float32, [n, *self._shapes[name]], int(self._buffers[name].data.ptr))
        session.run_with_iobinding(binding, None if for_host else self._async)
