"""PyTorch backend: the reference and fallback. torch is imported here only, when this backend is asked for."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from camrt.errors import BundleError, CamrtError
from camrt.runtime.backends.base import Closing, require
from camrt.runtime.bundle import Bundle

FEATURES_PT2, HEAD_PT2 = "features.pt2", "head.pt2"


def _import_torch() -> Any:
    return require("torch", "backend 'torch' needs PyTorch: pip install camrt[torch]")


class TorchRunner(Closing):
    """Runs the feature and head modules in eager PyTorch (no_grad, eval) on host arrays."""

    name = "torch"

    def __init__(self, features: Any, head: Any, device: str = "cpu", threads: int | None = None) -> None:
        self.torch = _import_torch()
        if threads:
            self.torch.set_num_threads(int(threads))
        self.device = self.torch.device(device)
        self._features = self._prepare(features)
        self._head = self._prepare(head)

    def _prepare(self, module: Any) -> Any:
        """On the device, in eval mode (exported programs are traced in eval mode and refuse ``eval()``)."""
        module = module.to(self.device)
        try:
            module.eval()
        except NotImplementedError:
            pass
        return module

    @classmethod
    def from_bundle(cls, bundle: Bundle, trust_pickles: bool = False, **options: Any) -> TorchRunner:
        """Load the bundle's exported programs (features.pt2, head.pt2), written by the exporter beside the ONNX.

        ``torch.export.load`` unpickles, which can run any code a bundle's author put there, so the programs load
        only with ``trust_pickles=True`` (``--trust-bundle``): README "Trust and safety"."""
        modules = []
        for name in (FEATURES_PT2, HEAD_PT2):
            path = bundle.root / name
            if name not in bundle.manifest.files or not path.is_file():
                raise BundleError(f"{path}: missing; backend 'torch' needs the bundle's PyTorch programs (re-export)")
            if not trust_pickles:
                raise BundleError(f"{path}: a torch.export program holds pickles, which can run code when loaded; "
                                  "load it only from a bundle you trust, with --trust-bundle (trust_pickles=True)")
            program = io.BytesIO(bundle.read_verified(name))  # the bytes whose hash was checked
            torch = _import_torch()
            try:
                modules.append(torch.export.load(program).module())
            except Exception as exc:  # torch raises many types here
                raise BundleError(f"{path}: cannot be loaded by torch.export ({type(exc).__name__}: {exc})") from None
        if str(options.get("device", "cpu")).startswith("cuda"):
            return TorchCudaRunner(modules[0], modules[1], bundle.manifest.input_shape, **options)
        for gpu_only in ("precision", "channels_last", "cuda_graphs"):
            if gpu_only in options:
                raise CamrtError(f"{gpu_only}: a GPU option of backend 'torch'; add device='cuda' (--device cuda)")
        return cls(modules[0], modules[1], **options)

    def _release(self) -> None:
        self._features = self._head = None  # the programs' weights go with them

    def _run(self, module: Any, array: np.ndarray) -> np.ndarray:
        self._check_open()
        torch = self.torch
        with torch.no_grad():
            out = module(torch.from_numpy(np.ascontiguousarray(array)).to(self.device))
        return out.detach().cpu().numpy().astype(np.float32, copy=False)

    def features(self, images: np.ndarray) -> np.ndarray:
        return self._run(self._features, images)

    def head(self, activations: np.ndarray) -> np.ndarray:
        # a copy: an eager head may run in-place ops on its input (densenet's relu), which would write into ours
        return self._run(self._head, activations.copy())

    def logits(self, images: np.ndarray) -> np.ndarray:
        self._check_open()
        torch = self.torch
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
            out = self._head(self._features(x))
        return out.detach().cpu().numpy().astype(np.float32, copy=False)


class TorchCudaRunner(TorchRunner):
    """PyTorch on a CUDA GPU, the device reference: channels_last, optional FP16/BF16 autocast, and CUDA graphs
    for the full chunk size. Masked inputs are written by the CUDA kernels into a torch tensor (via DLPack) on
    the runner's stream, which CuPy and torch share; CuPy work runs with the runner's GPU current (cuda:N)."""

    name = "torch"

    def __init__(self, features: Any, head: Any, input_shape: tuple[int, int, int], device: str = "cuda",
                 threads: int | None = None, precision: str = "fp32", channels_last: bool = True,
                 cuda_graphs: bool = True) -> None:
        torch = _import_torch()
        if not torch.cuda.is_available():
            raise CamrtError(f"backend 'torch' on {device}: PyTorch sees no CUDA GPU (no GPU or driver, or a "
                             f"CPU-only torch {torch.__version__})")
        if precision not in AUTOCAST:
            raise CamrtError(f"precision: expected one of {', '.join(AUTOCAST)}, got {precision!r}")
        from camrt.kernels.gpu import cuda_kernels, import_cupy

        super().__init__(features, head, device=device, threads=threads)
        self.cupy = import_cupy()
        dtype_name = AUTOCAST[precision]
        self.precision = precision  # what a run below FP32 records (run_folder.run_config)
        self.autocast = getattr(torch, dtype_name) if dtype_name else None
        if self.autocast is None:  # FP32 means FP32: no TF32 convolutions or matmuls (exact to ~1e-5)
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.channels_last = channels_last
        if channels_last:
            self._features = self._features.to(memory_format=torch.channels_last)
        self.device_index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        self._torch_stream = torch.cuda.Stream(self.device)
        self.stream = self.cupy.cuda.ExternalStream(self._torch_stream.cuda_stream, self.device_index)
        self.kernels = cuda_kernels(self.stream, self.device_index)
        self.input_shape = tuple(input_shape)
        self.cuda_graphs = cuda_graphs
        self._input: Any = None
        self._graph: tuple[Any, Any] | None = None

    def _forward(self, x: Any, capturing: bool = False) -> Any:
        """The model under autocast; ``capturing``: for a CUDA graph, whose capture autocast's weight cache breaks
        (a cached cast made during capture is freed when autocast exits, under the graph's feet)."""
        torch = self.torch
        with torch.no_grad(), torch.autocast("cuda", dtype=self.autocast, enabled=self.autocast is not None,
                                             cache_enabled=not capturing):
            return self._head(self._features(x)).float()

    def _release(self) -> None:
        self._torch_stream.synchronize()  # queued passes finish before their buffers and graph go
        self._graph = self._input = None
        super()._release()

    def _run(self, module: Any, array: np.ndarray) -> np.ndarray:
        self._check_open()
        torch = self.torch
        with torch.no_grad(), torch.autocast("cuda", dtype=self.autocast, enabled=self.autocast is not None):
            out = module(torch.from_numpy(np.ascontiguousarray(array)).to(self.device))
        return out.detach().float().cpu().numpy()

    def logits(self, images: np.ndarray) -> np.ndarray:
        self._check_open()
        x = self.torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        return self._forward(x).cpu().numpy()

    def input_buffer(self, rows: int) -> Any:
        self._check_open()
        torch = self.torch
        if self._input is None or self._input.shape[0] < rows:
            c, h, w = self.input_shape
            with torch.cuda.device(self.device), torch.cuda.stream(self._torch_stream):
                if self.channels_last:
                    self._input = torch.empty((rows, h, w, c), device=self.device).permute(0, 3, 1, 2)
                else:
                    self._input = torch.empty((rows, c, h, w), device=self.device)
            self._graph = None
        with self.stream_context():
            return self.cupy.from_dlpack(self._input[:rows])

    def run_logits(self, n: int) -> Any:
        self._check_open()
        torch = self.torch
        with torch.cuda.device(self.device), torch.cuda.stream(self._torch_stream):
            if self.cuda_graphs and n == self._input.shape[0]:
                if self._graph is None:
                    self._graph = self._capture()
                graph, out = self._graph
                graph.replay()
            else:
                out = self._forward(self._input[:n])
        with self.stream_context():
            return self.cupy.from_dlpack(out)

    def _capture(self) -> tuple[Any, Any]:
        """A CUDA graph of the whole model on the full input buffer (after two warm-up runs), and its output."""
        torch = self.torch
        for _ in range(2):
            self._forward(self._input, capturing=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self._torch_stream):
            out = self._forward(self._input, capturing=True)
        return graph, out

    @contextmanager
    def stream_context(self) -> Iterator[Any]:
        """The runner's GPU current for CuPy (its stream belongs to that device; on cuda:N, N >= 1, CuPy would
        otherwise raise, or allocate on GPU 0), then its stream."""
        with self.cupy.cuda.Device(self.device_index), self.stream:
            yield self.stream


AUTOCAST = {"fp32": None, "fp16": "float16", "bf16": "bfloat16"}
