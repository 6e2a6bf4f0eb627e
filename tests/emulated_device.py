"""The CUDA kernels compiled for the host (tools/cuda_emulation/), and device runners whose 'device' is the host:
the engine loop's device scorers run on the buffers the emulated kernels write (tests/test_cuda_emulation.py,
tests/test_head_methods.py)."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from camrt.kernels.gpu import NULL, CudaKernels

from tiny import SIZE

ROOT = Path(__file__).resolve().parents[1]
THREADS = 16  # threads per emulated block: small, since each is a std::thread


def _gxx_version() -> int:
    try:
        return int(subprocess.run(["g++", "-dumpversion"], capture_output=True, text=True).stdout.split(".")[0])
    except (OSError, ValueError):
        return 0


def emulated_kernels(folder: Path) -> CudaKernels:
    """kernels/cuda/*.cu compiled with g++ into ``folder`` (tools/cuda_emulation/harness.cpp), behind the
    CudaKernels wrapper with NumPy arrays; the test is skipped without g++ 11 or newer."""
    if shutil.which("g++") is None or _gxx_version() < 11:
        pytest.skip("the host emulation needs g++ 11 or newer (C++20 <barrier>)")
    lib_path = folder / "kernels.so"
    cmd = ["g++", "-std=c++20", "-O1", "-ffp-contract=off", "-fPIC", "-shared", "-pthread", "-DCAMRT_HOST_EMULATION",
           f"-I{ROOT / 'tools' / 'cuda_emulation'}", f"-I{ROOT / 'kernels' / 'cuda'}",
           str(ROOT / "tools" / "cuda_emulation" / "harness.cpp"), "-o", str(lib_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lib = ctypes.CDLL(str(lib_path))
    lib.emu_launch_kernel.restype = ctypes.c_int
    lib.emu_launch_kernel.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p]
    kinds = {np.int32: ctypes.c_int32, np.int64: ctypes.c_int64, np.float32: ctypes.c_float,
             np.float64: ctypes.c_double}

    def launch(name: str, grid: int, block: int, args: Any) -> None:
        values: list[Any] = []
        for a in args:
            if a is NULL:
                values.append(ctypes.c_void_p(None))
            elif isinstance(a, np.ndarray):
                values.append(ctypes.c_void_p(a.ctypes.data))
            else:
                values.append(kinds[type(a)](a.item()))
        argv = (ctypes.c_void_p * len(values))(*[ctypes.addressof(v) for v in values])
        assert lib.emu_launch_kernel(name.encode(), grid, block, argv) == 0, f"no kernel {name}"

    return CudaKernels(launch, np, threads=THREADS)


class EmulatedDeviceRunner:
    """ONNX Runtime (``runner``) on the masked-input buffer; NaN-filled so a row the kernels miss shows."""

    name = "emulated-device"

    def __init__(self, runner: Any, kernels: Any) -> None:
        self.inner, self.kernels, self._input = runner, kernels, None

    def features(self, x: np.ndarray) -> np.ndarray:
        return self.inner.features(x)

    def head(self, a: np.ndarray) -> np.ndarray:
        return self.inner.head(a)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.inner.logits(x)

    def input_buffer(self, rows: int) -> np.ndarray:
        self._input = np.full((rows, 3, SIZE, SIZE), np.nan, np.float32)
        return self._input

    def run_logits(self, n: int) -> np.ndarray:
        return self.inner.logits(self._input[:n])

    def stream_context(self) -> Any:
        return nullcontext()


class EmulatedDeviceHeadRunner(EmulatedDeviceRunner):
    """The same, with a head-input buffer: what a device head scorer needs."""

    def __init__(self, runner: Any, kernels: Any, activation_shape: tuple[int, int, int]) -> None:
        super().__init__(runner, kernels)
        self.activation_shape, self._head = activation_shape, None

    def head_input_buffer(self, rows: int) -> np.ndarray:
        self._head = np.full((rows, *self.activation_shape), np.nan, np.float32)
        return self._head

    def run_head(self, n: int) -> np.ndarray:
        return np.asarray(self.inner.head(self._head[:n]), np.float32)
