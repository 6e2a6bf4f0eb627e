"""Native TensorRT backend (Polygraphy's runner half): the bundle's engines run with execute_async_v3 on CuPy buffers.

Both engines (features, head) run on one CUDA stream, the one the mask kernels use; activations stay in a device
buffer between them. Engines come from the bundle's cache, built on first use where none matches this GPU. A
``profile`` asks for engines of that batch profile (built when the bundle has none); without one, the cached
engines with the largest max batch are used (``camrt export --tensorrt --max-batch``), else the default profile's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from camrt.errors import CamrtError
from camrt.kernels.gpu import CudaKernels, cuda_kernels, import_cupy
from camrt.runtime.backends.device import EngineBuffers
from camrt.runtime.backends.tensorrt_build import (
    Profile,
    build_engines,
    cached_profiles,
    find_engines,
    gpu_name,
    import_tensorrt,
)
from camrt.runtime.bundle import IMAGE, Bundle

if TYPE_CHECKING:
    import tensorrt as trt


class TrtRunner(EngineBuffers):
    """Two TensorRT engines on one stream, with device buffers sized for up to ``max_batch`` inputs."""

    name = "tensorrt"

    def __init__(self, bundle: Bundle, precision: str = "fp32", device_id: int = 0, build: bool = True,
                 profile: Profile | None = None) -> None:
        trt_mod = import_tensorrt()
        self.cupy = import_cupy()
        self.device_id = device_id
        self.precision = precision  # what a run below FP32 records (run_folder.run_config)
        self.device = self.cupy.cuda.Device(device_id)
        self.device.use()
        gpu = gpu_name(device_id)
        if profile is None:
            profile = next(iter(cached_profiles(bundle, gpu, trt_mod.__version__, precision)), Profile())
        engines = find_engines(bundle, gpu, trt_mod.__version__, precision, profile)
        if engines is None:
            if not build:
                raise CamrtError(f"{bundle.root}: no {precision} TensorRT {trt_mod.__version__} engine for {gpu} "
                                 f"with batch profile {profile.min_batch}-{profile.opt_batch}-{profile.max_batch}; "
                                 "build one with 'camrt export ... --tensorrt'")
            build_engines(bundle, precision, profile, device_id)
            engines = find_engines(bundle, gpu, trt_mod.__version__, precision, profile)
            if engines is None:
                raise CamrtError(f"{bundle.root}: the TensorRT engines just built are not in the manifest")
        self.stream = self.cupy.cuda.Stream(non_blocking=True)
        self.kernels: CudaKernels = cuda_kernels(self.stream, device_id)
        runtime: trt.Runtime = trt_mod.Runtime(trt_mod.Logger(trt_mod.Logger.WARNING))
        self._engines: dict[str, trt.ICudaEngine] = {}
        self._contexts: dict[str, trt.IExecutionContext] = {}
        for graph, plan in engines.items():
            engine = runtime.deserialize_cuda_engine(plan)
            if engine is None:
                raise CamrtError(f"{bundle.root}: TensorRT cannot load its {graph} engine (built by another version "
                                 "or GPU?)")
            self._engines[graph] = engine
            self._contexts[graph] = engine.create_execution_context()
        self.max_batch = int(self._engines["features"].get_tensor_profile_shape(IMAGE, 0)[2][0])
        self._init_buffers(bundle)

    def _drop_engines(self) -> None:
        self._contexts.clear()  # contexts before the engines they were made from
        self._engines.clear()

    def _enqueue(self, graph: str, src: str, dst: str, n: int, for_host: bool) -> None:
        context = self._contexts[graph]
        if not context.set_input_shape(src, (n, *self._shapes[src])):
            raise CamrtError(f"TensorRT's {graph} engine refuses input {src} of shape {(n, *self._shapes[src])} "
                             f"(its profile takes batches up to {self.max_batch})")
        for name in (src, dst):
            if not context.set_tensor_address(name, int(self._buffers[name].data.ptr)):
                raise CamrtError(f"TensorRT's {graph} engine has no tensor {name!r} to bind")
        if not context.execute_async_v3(self.stream.ptr):
            raise CamrtError(f"TensorRT failed to run the {graph} engine")
