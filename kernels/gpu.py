"""The masked-input op and the final combination on an NVIDIA GPU: the CUDA C in kernels/cuda/, run by CuPy.

:class:`CudaKernels` takes the NumPy reference's arguments (kernels.masks.masked_inputs, runtime.combine.combine)
and gives the same numbers. It is written against an array module and a launcher, so the same Python drives
CuPy on a GPU and, in the tests, NumPy with the kernels compiled for the host (tools/cuda_emulation).
CuPy is imported only by :func:`cuda_kernels`; a missing package, GPU, driver or NVRTC is one CamrtError line
(the kernels compile eagerly). CuPy caches compiled kernels by their source text, so that text carries the
SHA-256 of every file in kernels/cuda/ (:func:`kernel_source`): an edited kernel or header is compiled anew.

Denormals: CuPy appends ``-ftz=true`` to every NVRTC compile (cupy/cuda/compiler.py, after the caller's
options, so it cannot be turned off through RawModule), so fp32 subnormals (|x| < 1.18e-38) are flushed to 0
on the GPU: activations that small give a zero mask there and a tiny nonzero one on the host. Trained CNNs do
not produce such activations; the host emulation (tools/cuda_emulation) keeps them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from camrt.errors import CamrtError, first_line
from camrt.kernels.activations import position_map
from camrt.kernels.masks import GATES, MaskSpec

SOURCE_DIR = Path(__file__).parent / "cuda"
SOURCES = ("masks.cu", "combine.cu", "activations.cu")
NULL = object()  # a null pointer argument; each launcher passes it its own way

_NORMALIZE = {("none", "input"): 0, ("none", "feature"): 0, ("minmax", "feature"): 1, ("minmax", "input"): 2}
# gate codes of common.cuh: tanh 1, sigmoid-relu 2, mish 3, swish 4
_GATE_CODES: dict[str | None, int] = {None: 0, **{g: i + 1 for i, g in enumerate(GATES)}}
_SCORE_CODES = {"prob": 0, "logit": 1, "logit-delta": 2}
_RELU, _MINMAX, _CLIP = 1, 2, 4
_NOISE_NONE, _NOISE_GIVEN, _NOISE_RANGE = 0, 1, 2  # masks.cu's noise modes
_ITEM_PARAMS = 5  # masks.cu's per-item params: feature min, span, input min, span, noise std

Launch = Callable[[str, int, int, Sequence[Any]], None]


class HasCombine(Protocol):
    """What :meth:`CudaKernels.combine` reads of a convention (runtime.methods.base.Convention)."""

    @property
    def combine(self) -> str: ...

    @property
    def mask(self) -> MaskSpec: ...


def resize_scale(in_size: int, out_size: int, align_corners: bool) -> float:
    """The fp32 source step that kernels/upsample.py (torch) uses for one axis."""
    if align_corners:
        return float(np.float32((in_size - 1) / (out_size - 1))) if out_size > 1 else 0.0
    return float(np.float32(in_size / out_size))


class CudaKernels:
    """The kernels bound to one array module (cupy or numpy) and one launcher; ``threads`` per block (2^k)."""

    def __init__(self, launch: Launch, xp: Any, threads: int = 256) -> None:
        if threads < 1 or threads & (threads - 1) or threads > 1024:
            raise ValueError(f"threads must be a power of two <= 1024, got {threads}")
        self.launch, self.xp, self.threads = launch, xp, threads

    # ------------------------------------------------------------------ the masked-input op
    def masked_inputs(
        self,
        activations: Any,
        images: Any,
        image_idx: Any,
        channel_idx: Any,
        spec: MaskSpec,
        out: Any,
        *,
        scale: Any | None = None,
        mask_noise: Any | None = None,
        input_noise: Any | None = None,
        input_noise_std: Any | None = None,
        range_noise: float | None = None,
    ) -> Any:
        """Write n masked inputs into ``out[:n]`` (float32 or float16; NCHW or channels-last) and return that view.

        As kernels.masks.masked_inputs; ``range_noise=m`` fuses the SS-CAM paper's noise (add_range_scaled_noise):
        input_noise gets std (m / (max x - min x))**2 per item instead of input_noise_std (m = 0: no noise, as the
        host). Two launches: the per-item min/max pass where one is needed, then items x pixel tiles.
        """
        xp = self.xp
        acts = xp.ascontiguousarray(activations, dtype=xp.float32)
        imgs = xp.ascontiguousarray(images, dtype=xp.float32)
        bi = xp.ascontiguousarray(image_idx, dtype=xp.int32)
        ki = xp.ascontiguousarray(channel_idx, dtype=xp.int32)
        n = int(bi.shape[0])
        _, k, h, w = acts.shape
        _, c, height, width = imgs.shape
        if out.shape[0] < n or tuple(out.shape[1:]) != (c, height, width):
            raise ValueError(f"out must have shape (>={n}, {c}, {height}, {width}), got {tuple(out.shape)}")
        if out.dtype not in (np.float32, np.float16):
            raise ValueError(f"out must be float32 or float16, got {out.dtype}")
        channels_last = _layout(out)
        view = out[:n]
        if n == 0:
            return view
        opt = [None if a is None else xp.ascontiguousarray(a, dtype=xp.float32)
               for a in (scale, mask_noise, input_noise, input_noise_std)]
        normalize = _NORMALIZE[(spec.normalize, spec.normalize_at)]
        ranged = range_noise is not None and input_noise is not None
        noise_mode = _NOISE_NONE if input_noise is None else _NOISE_RANGE if ranged else _NOISE_GIVEN
        args = [
            acts, np.int32(k), np.int32(h), np.int32(w), imgs, np.int32(c), np.int32(height), np.int32(width), bi, ki,
            np.float32(resize_scale(h, height, spec.align_corners)),
            np.float32(resize_scale(w, width, spec.align_corners)), np.int32(spec.align_corners),
            np.int32(normalize), np.float32(spec.eps), np.int32(_GATE_CODES[spec.gate]),
            *(NULL if a is None else a for a in opt), np.int32(noise_mode),
            np.float32(range_noise if ranged else 0.0), np.int32(channels_last),
        ]
        params: Any = NULL
        if normalize or noise_mode == _NOISE_RANGE:  # the per-item reductions: one block per item
            params = xp.empty((n, _ITEM_PARAMS), dtype=xp.float32)
            self.launch("mask_item_ranges", n, self.threads, [*args, params])
        tiles = -(-height * width // self.threads)
        name = "masked_inputs_f32" if out.dtype == np.float32 else "masked_inputs_f16"
        self.launch(name, n * tiles, self.threads, [*args, params, np.int32(tiles), out])
        return view

    # ------------------------------------------------------------------ scores, on the device
    def accumulate_scores(self, logits: Any, image_idx: Any, channel_idx: Any, target: Any, base: Any, kind: str,
                          sums: Any, bad: Any) -> None:
        """sums[b, k] += each row's score (softmax probability, logit or logit - clean logit); bad[b] = 1 on NaN/inf."""
        n, classes = logits.shape
        if n == 0:
            return
        self.launch("accumulate_scores", int(n), self.threads, [
            self.xp.ascontiguousarray(logits, dtype=self.xp.float32), np.int32(classes), image_idx, channel_idx,
            target, base, np.int32(_SCORE_CODES[kind]), np.int32(sums.shape[1]), sums, bad,
        ])

    # ------------------------------------------------------------------ the final combination
    def combine(self, conv: HasCombine, activations: Any, weights: Any, size: tuple[int, int]) -> tuple[Any, Any]:
        """(saliency (H, W) in [0, 1], native map or None) for one image's activations (K, h, w), as runtime.combine."""
        xp = self.xp
        acts = xp.ascontiguousarray(activations, dtype=xp.float32)
        wts = xp.ascontiguousarray(weights, dtype=xp.float64)
        k, h, w = acts.shape
        height, width = size
        spec = conv.mask
        if conv.combine == "gated":
            if spec.normalize != "none":
                raise ValueError("the gated combination takes masks without min-max (ScoreCAM++)")
            nz = xp.flatnonzero(wts).astype(xp.int32)
            total = xp.empty((height, width), dtype=xp.float32)
            self.launch("gated_weighted_sum", -(-height * width // self.threads), self.threads, [
                acts, wts, nz if nz.size else NULL, np.int32(nz.size), np.int32(h), np.int32(w), np.int32(height),
                np.int32(width), np.float32(resize_scale(h, height, spec.align_corners)),
                np.float32(resize_scale(w, width, spec.align_corners)), np.int32(spec.align_corners),
                np.int32(_GATE_CODES[spec.gate]), total,
            ])
            return self._finish(total, 0.0, _RELU | _MINMAX), None
        low = xp.empty((h, w), dtype=xp.float32)
        self.launch("weighted_sum", -(-h * w // self.threads), self.threads,
                    [acts, wts, np.int32(k), np.int32(h * w), low])
        if conv.combine == "paper":  # sum_k a_k Up(A_k) == Up(sum_k a_k A_k): combine at h x w, then resize
            return self._finish(self.resize(low, size, spec.align_corners), 0.0, _RELU | _MINMAX), None
        if conv.combine == "pytorch-grad-cam":
            native = self._finish(low, 1e-7, _RELU | _MINMAX)
            return self._finish(self.resize(native, size, False), 1e-7, _MINMAX), native
        if conv.combine in ("recipro", "openvino-xai"):  # Recipro-CAM's score map: kernels/activations.py
            native = position_map(xp, low, conv.combine)
            return self.resize(native, size, False), native
        if conv.combine == "torchcam":
            native = self._finish(low, 1e-8, _RELU | _MINMAX)
            return self._finish(self.resize(native, size, False), 0.0, _CLIP), native
        raise ValueError(f"unknown combine {conv.combine!r}")

    def resize(self, maps: Any, size: tuple[int, int], align_corners: bool) -> Any:
        """Bilinear resize of (..., h, w) float32 maps to (..., H, W), as kernels.upsample.resize_bilinear."""
        xp = self.xp
        src = xp.ascontiguousarray(maps, dtype=xp.float32)
        h, w = src.shape[-2:]
        height, width = size
        count = int(np.prod(src.shape[:-2], dtype=np.int64))
        out = xp.empty((*src.shape[:-2], height, width), dtype=xp.float32)
        self.launch("resize_maps", -(-count * height * width // self.threads), self.threads, [
            src, np.int32(count), np.int32(h), np.int32(w), np.int32(height), np.int32(width),
            np.float32(resize_scale(h, height, align_corners)), np.float32(resize_scale(w, width, align_corners)),
            np.int32(align_corners), out,
        ])
        return out

    def _finish(self, maps: Any, eps: float, flags: int) -> Any:
        """In place on a contiguous (H, W) map: ReLU, min-max (+eps), clip to [0, 1], as ``flags`` says."""
        size = int(maps.shape[-2] * maps.shape[-1])
        count = int(maps.size // size)
        self.launch("finish_maps", count, self.threads, [maps, np.int32(size), np.float32(eps), np.int32(flags)])
        return maps


def _layout(out: Any) -> int:
    """0 for a C-contiguous (n, C, H, W) buffer, 1 for channels-last (an (n, H, W, C) buffer seen as NCHW).

    A size-1 dimension's stride is never used to address anything, so it may be any value (torch gives batch-1
    and sliced buffers such strides)."""
    item = out.dtype.itemsize
    n, c, h, w = out.shape
    nchw = (c * h * w * item, h * w * item, w * item, item)
    nhwc = (h * w * c * item, item, w * c * item, c * item)
    for code, strides in ((0, nchw), (1, nhwc)):
        if all(size == 1 or got == want for size, got, want in zip(out.shape, out.strides, strides)):
            return code
    raise ValueError("out must be C-contiguous (n, C, H, W) or channels-last")


# ---------------------------------------------------------------------------------------------- CuPy
def import_cupy() -> Any:
    """cupy, with a working GPU behind it; else one CamrtError line naming what is missing."""
    try:
        import cupy
    except ImportError:
        raise CamrtError("the GPU path needs CuPy: pip install camrt[gpu] (cupy-cuda12x or cupy-cuda13x)") from None
    except Exception as exc:  # a broken CUDA install raises at import
        raise CamrtError(f"CuPy cannot load CUDA ({type(exc).__name__}: {first_line(exc)})") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError: no driver, driver too old, no device
        raise CamrtError(f"no usable CUDA GPU: the NVIDIA driver or device is missing ({first_line(exc)})") from None
    if count < 1:
        raise CamrtError("no CUDA GPU found (CuPy sees 0 devices)")
    return cupy


def sources_digest(source_dir: Path = SOURCE_DIR) -> str:
    """SHA-256 over the name and bytes of every .cu and .cuh file in ``source_dir`` (what the includes read)."""
    digest = hashlib.sha256()
    for path in sorted(source_dir.iterdir()):
        if path.suffix in (".cu", ".cuh") and path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def kernel_source(source_dir: Path = SOURCE_DIR, names: Sequence[str] = SOURCES) -> str:
    """The CUDA C of every kernel, as one translation unit (includes resolved from ``source_dir``), headed by the
    files' digest: CuPy keys its kernel cache on this text, so a changed file is never served its old binary."""
    includes = "".join(f'#include "{name}"\n' for name in names)
    return f"// camrt kernels, sources sha256 {sources_digest(source_dir)}\n{includes}"


@lru_cache(maxsize=4)
def _raw_module(device_id: int, source: str) -> Any:
    """The module compiled now (not at the first launch), so a missing or broken NVRTC is one line here."""
    cupy = import_cupy()
    with cupy.cuda.Device(device_id):
        module = cupy.RawModule(code=source, options=("-std=c++17", f"-I{SOURCE_DIR}"))
        try:
            module.compile()
        except Exception as exc:  # CompileException, a missing libnvrtc (RuntimeError/OSError), CUDA errors
            raise CamrtError(f"the CUDA kernels (kernels/cuda/) do not compile with NVRTC ({type(exc).__name__}: "
                             f"{first_line(exc)}); install the CuPy wheel of your CUDA (cupy-cuda12x or "
                             "cupy-cuda13x)") from None
    return module


def cuda_kernels(stream: Any = None, device_id: int = 0, threads: int = 256) -> CudaKernels:
    """The kernels on GPU ``device_id``, launched on ``stream`` (a cupy Stream; None: the current stream)."""
    cupy = import_cupy()
    module = _raw_module(device_id, kernel_source())
    functions: dict[str, Any] = {}
    device = cupy.cuda.Device(device_id)

    def launch(name: str, grid: int, block: int, args: Sequence[Any]) -> None:
        values = tuple(np.uint64(0) if a is NULL else a for a in args)
        with device:  # the module's functions and the stream belong to this GPU, whichever is current
            fn = functions.get(name)
            if fn is None:
                fn = functions[name] = module.get_function(name)
            if stream is None:
                fn((grid,), (block,), values)
            else:
                with stream:
                    fn((grid,), (block,), values)

    return CudaKernels(launch, cupy, threads)
