"""The host's numpy work between engine calls runs BLAS on one thread: the engine owns the cores.

numpy's OpenBLAS keeps its worker threads spinning for a while after each call, and the mask making's small
matrix products (kernels/upsample.py) are such calls: on a CPU engine those spinning threads take cores from
the engine's next batch (MobileNetV3-Small at features.3 on OpenVINO BF16, 2 cores: explain 1.86x the engine
alone; README "Backends and precisions"). Holding BLAS to one thread around the host work only (never around an engine
call, so a torch or other BLAS-backed engine keeps its threads) removes that, and leaves the user's setting as
it was in between. Without threadpoolctl this is a no-op.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _controller() -> Any:
    """threadpoolctl's view of the BLAS libraries loaded at first use (numpy's, imported before any of camrt runs;
    libraries loaded later, such as torch's, are an engine's and left alone), or None without threadpoolctl."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - a dependency; kept optional for vendored installs
        return None
    return ThreadpoolController()


def one_blas_thread() -> AbstractContextManager[Any]:
    """A context in which BLAS calls run on the calling thread only (about 15 us to enter and leave)."""
    controller = _controller()
    return nullcontext() if controller is None else controller.limit(limits=1, user_api="blas")
