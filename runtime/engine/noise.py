"""SS-CAM's draws for a batch of jobs, written into a buffer: the same values for the host and the device scorers."""

from __future__ import annotations

import numpy as np

from camrt.errors import CamrtError
from camrt.runtime.methods.base import Convention
from camrt.runtime.noise import NoiseSource


def noise_buffer(conv: Convention, rows: int, shape: tuple[int, int, int]) -> np.ndarray | None:
    """A host buffer for ``rows`` draws: (rows, H, W) for mask noise, (rows, C, H, W) for input noise, else None."""
    if conv.noise == "mask":
        return np.empty((rows, *shape[1:]), np.float32)
    if conv.noise == "input-range":
        return np.empty((rows, *shape), np.float32)
    return None


def draw(noise: NoiseSource | None, conv: Convention, bi: np.ndarray, ki: np.ndarray, si: np.ndarray,
         out: np.ndarray) -> np.ndarray:
    """out[:n] = the draws of jobs (bi, ki, si) (mask noise already times its std); returns that view."""
    if noise is None:
        raise CamrtError(f"{conv.method} {conv.name}: needs a noise source (seed)")
    for j, (b, k, s) in enumerate(zip(bi.tolist(), ki.tolist(), si.tolist())):
        out[j] = noise.normal(b, s, k, out.shape[1:])
    view = out[: bi.size]
    if conv.noise == "mask":
        view *= np.float32(conv.noise_std)
    return view
