"""ONNX Runtime on the GPU: CUDA or TensorRT execution provider, IOBinding on CuPy buffers, one shared stream.

The sessions run on the stream the mask kernels use (``user_compute_stream``), and masked-input runs ask ONNX
Runtime not to synchronise at the end (``disable_synchronize_execution_providers``), so chunks queue up on
the device without host round trips.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from camrt.errors import CamrtError
from camrt.kernels.gpu import CudaKernels, cuda_kernels, import_cupy
from camrt.runtime.backends.device import EngineBuffers
from camrt.runtime.backends.ort_sessions import verified_sessions
from camrt.runtime.bundle import Bundle

PROVIDERS = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


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


class OrtCudaRunner(EngineBuffers):
    """Two ONNX Runtime sessions on one CUDA stream, bound to device buffers of up to ``rows`` inputs."""

    def __init__(self, bundle: Bundle, provider: str = "cuda", device_id: int = 0, fp16: bool = False,
                 cache_dir: str | Path | None = None) -> None:
        if provider not in PROVIDERS:
            raise CamrtError(f"provider: expected one of {', '.join(PROVIDERS)}, got {provider!r}")
        ort = import_ort_gpu(provider)
        self.cupy = import_cupy()
        self.cupy.cuda.Device(device_id).use()
        self.name = "onnxruntime-cuda" if provider == "cuda" else "onnxruntime-tensorrt"
        self.device_id = device_id
        self.stream = self.cupy.cuda.Stream(non_blocking=True)
        self.kernels: CudaKernels = cuda_kernels(self.stream, device_id)
        stream = {"device_id": device_id, "user_compute_stream": str(self.stream.ptr)}
        providers: list[tuple[str, dict[str, Any]]] = [(PROVIDERS["cuda"], {**stream, "use_tf32": "0"})]
        if provider == "tensorrt":
            cache = Path(cache_dir) if cache_dir else bundle.root / "engines" / "onnxruntime-trt"
            cache.mkdir(parents=True, exist_ok=True)
            providers.insert(0, (PROVIDERS["tensorrt"], {
                **stream, "trt_fp16_enable": fp16, "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache), "trt_timing_cache_enable": True,
                "trt_timing_cache_path": str(cache),
            }))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self._sessions = verified_sessions(ort, bundle, options, providers, f"ONNX Runtime ({provider})")
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
