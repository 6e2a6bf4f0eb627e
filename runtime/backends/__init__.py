"""Backends behind one interface, in one registry; each runner module is imported only when asked for.

A backend is one runner module plus one line of :data:`BACKENDS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from camrt.errors import CamrtError, InputError
from camrt.runtime.backends.base import Runner, close_runner, device_id
from camrt.runtime.bundle import Bundle

DEFAULT_PRECISION = "fp32"


@dataclass(frozen=True)
class Backend:
    """What a backend is: its runner factory, the devices and precisions it takes, its CPU thread option."""

    name: str
    factory: str  # "module:callable", imported on first use; called (bundle, device=..., **defaults, **options)
    devices: tuple[str, ...] = ("cpu", "cuda")  # device kinds, the default first ("cuda" stands for cuda:N too)
    precisions: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: {DEFAULT_PRECISION: {}})
    threads: str | None = None  # the runner's keyword for a CPU thread count; None: it takes none
    defaults: Mapping[str, Any] = field(default_factory=dict)  # keyword arguments the factory always gets
    cpu_precisions: tuple[str, ...] = (DEFAULT_PRECISION,)  # the precisions it runs on the CPU (others: a GPU's)

    @property
    def gpu_only(self) -> bool:
        """True when the backend has no CPU device."""
        return "cpu" not in self.devices

    @property
    def default_device(self) -> str:
        """The device used when none is asked for."""
        return self.devices[0]

    def load(self) -> Callable[..., Runner]:
        """The runner factory, importing its module now (and its engine's packages with it)."""
        module, _, attr = self.factory.partition(":")
        target: Any = importlib.import_module(module)
        for part in attr.split("."):
            target = getattr(target, part)
        return target  # type: ignore[no-any-return]


_GPU = ("cuda",)
_ORT_CUDA = "camrt.runtime.backends.onnxruntime_cuda:OrtCudaRunner.create"
_OPENVINO = ("fp32", "bf16", "fp16", "int8")

BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("onnxruntime", "camrt.runtime.backends.onnxruntime:OnnxrtRunner.create",
            precisions={"fp32": {}, "int8": {"precision": "int8"}}, threads="intra_op_threads",
            cpu_precisions=("fp32", "int8")),
    Backend("torch", "camrt.runtime.backends.torch:TorchRunner.from_bundle", threads="threads",
            precisions={"fp32": {}, "fp16": {"precision": "fp16"}, "bf16": {"precision": "bf16"}}),
    Backend("onnxruntime-cuda", _ORT_CUDA, _GPU, defaults={"provider": "cuda"}),
    Backend("onnxruntime-tensorrt", _ORT_CUDA, _GPU, {"fp32": {}, "fp16": {"fp16": True}},
            defaults={"provider": "tensorrt"}),
    Backend("tensorrt", "camrt.runtime.backends.tensorrt:TrtRunner.create", _GPU,
            {"fp32": {}, "fp16": {"precision": "fp16"}}),
    Backend("openvino", "camrt.runtime.backends.openvino:OpenvinoRunner.create", ("cpu",),
            {p: {"precision": p} for p in _OPENVINO}, threads="threads", cpu_precisions=_OPENVINO),
)}
BACKEND_NAMES = tuple(BACKENDS)
GPU_BACKENDS = tuple(name for name, backend in BACKENDS.items() if backend.gpu_only)


PRECISION_ORDER = ("fp32", "fp16", "bf16", "int8")  # widest first: how choices and messages list them


def precisions() -> tuple[str, ...]:
    """Every precision some backend accepts, the default first, widest to narrowest (the --precision choices)."""
    offered = dict.fromkeys(p for backend in BACKENDS.values() for p in backend.precisions)
    return tuple(sorted(offered, key=lambda p: PRECISION_ORDER.index(p) if p in PRECISION_ORDER else len(offered)))


def get_backend(name: str) -> Backend:
    """The registry line of ``name``; a one-line error for unknown names."""
    check_backend(name)
    return BACKENDS[name]


def check_backend(name: str) -> None:
    """A one-line error unless ``name`` is one of BACKENDS."""
    if name not in BACKENDS:
        raise CamrtError(f"backend: unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def on_gpu(name: str, device: str | None) -> bool:
    """True when backend ``name`` with ``device`` (None: its default) runs on a GPU."""
    backend = BACKENDS.get(name)
    return (backend is not None and backend.gpu_only) or (device or "cpu") != "cpu"


def runner_options(
    backend: str, device: str | None = None, precision: str = DEFAULT_PRECISION, threads: int | None = None,
) -> dict[str, Any]:
    """--device, --precision and --threads as ``backend``'s keyword arguments; one-line errors naming the flag."""
    spec = get_backend(backend)
    gpu = on_gpu(backend, device)
    options: dict[str, Any] = {} if device is None else {"device": device}
    if threads:
        if gpu or spec.threads is None:
            raise InputError("--threads: a CPU option; the GPU backends have none")
        options[spec.threads] = threads
    if precision not in spec.cpu_precisions and not gpu and _gpu_precision(precision):
        raise InputError(f"--precision {precision}: a GPU option; add --device cuda")
    if precision not in spec.precisions:
        # the engines listed newest first, as this message always has
        offers = "; ".join(f"{p}: {', '.join(n for n in reversed(BACKENDS) if p in BACKENDS[n].precisions)}"
                           for p in precisions() if p != DEFAULT_PRECISION)
        raise InputError(f"--precision {precision}: not available on backend {backend} ({offers})")
    return {**options, **spec.precisions[precision]}


def _gpu_precision(precision: str) -> bool:
    """True when some backend runs ``precision`` on a GPU only (so a CPU run of it is told to add --device cuda)."""
    return any(precision in b.precisions and precision not in b.cpu_precisions for b in BACKENDS.values())


def visible_gpu_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Runner options for a process shown only its own GPU (CUDA_VISIBLE_DEVICES, as Ray does): cuda:N is cuda."""
    out = dict(options)
    if str(out.get("device") or "").startswith("cuda:"):
        out["device"] = "cuda"
    return out


def make_runner(name: str, bundle: Bundle, **options: Any) -> Runner:
    """The runner called ``name`` for ``bundle``; unknown names and missing packages give one-line errors.

    ``device="cuda"`` (or "cuda:N") puts onnxruntime and torch on the GPU; the GPU backends need no device option.
    """
    backend = get_backend(name)
    device = str(options.pop("device", None) or backend.default_device)
    if device != "cpu" and not device.startswith("cuda"):
        raise CamrtError(f"device: expected cpu, cuda or cuda:N, got {device!r}")
    if ("cpu" if device == "cpu" else "cuda") not in backend.devices:
        if device == "cpu":
            raise CamrtError(f"backend {name!r} runs on a GPU only; use --device cuda, or backend onnxruntime for "
                             "the CPU")
        raise CamrtError(f"backend {name!r} runs on the CPU only; drop --device {device}")
    return backend.load()(bundle, device=device, **backend.defaults, **options)


__all__ = [
    "BACKENDS", "BACKEND_NAMES", "GPU_BACKENDS", "Backend", "Runner", "check_backend", "close_runner", "device_id",
    "get_backend", "make_runner", "on_gpu", "precisions", "runner_options", "visible_gpu_options",
]
