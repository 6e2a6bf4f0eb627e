"""Masked inputs for a chunk of (image, channel, sample) jobs, made into one reused buffer and run on the engine.

Shared by ``Explainer`` (one call's images) and the dataset stream (a window of images): the same arithmetic,
so both give the same scores for the same jobs.
"""

from __future__ import annotations

import numpy as np

from camrt.kernels.masks import add_range_scaled_noise, masked_inputs
from camrt.runtime.backends.base import Runner
from camrt.runtime.methods.base import Convention
from camrt.runtime.noise import NoiseSource


class MaskedPasses:
    """Buffers for ``chunk`` masked inputs of shape (C, H, W), reused for every chunk of a run."""

    def __init__(self, runner: Runner, conv: Convention, chunk: int, shape: tuple[int, int, int]) -> None:
        c, height, width = shape
        self.runner, self.conv, self.shape = runner, conv, shape
        self.buffer = np.empty((chunk, c, height, width), dtype=np.float32)
        self.mask_buffer = np.empty((chunk, height, width), dtype=np.float32)
        self.mask_noise = np.empty((chunk, height, width), np.float32) if conv.noise == "mask" else None
        self.input_noise = np.empty((chunk, c, height, width), np.float32) if conv.noise == "input-range" else None
        self.coeffs = np.asarray(conv.coefficients, dtype=np.float32) if conv.coefficients else None

    def logits(
        self, activations: np.ndarray, x: np.ndarray, bi: np.ndarray, ki: np.ndarray, si: np.ndarray,
        noise: NoiseSource | None,
    ) -> np.ndarray:
        """Logits (n, classes) of the masked inputs of jobs (bi, ki, si); bi indexes activations and x."""
        conv = self.conv
        _, height, width = self.shape
        if self.mask_noise is not None and noise is not None:
            for j, (b, k, s) in enumerate(zip(bi.tolist(), ki.tolist(), si.tolist())):
                self.mask_noise[j] = noise.normal(b, s, k, (height, width))
            self.mask_noise[: bi.size] *= np.float32(conv.noise_std)
        view = masked_inputs(
            activations, x, bi, ki, conv.mask, self.buffer,
            scale=None if self.coeffs is None else self.coeffs[si],
            mask_noise=self.mask_noise, mask_buffer=self.mask_buffer,
        )
        if self.input_noise is not None and noise is not None:
            for j, (b, k, s) in enumerate(zip(bi.tolist(), ki.tolist(), si.tolist())):
                self.input_noise[j] = noise.normal(b, s, k, self.shape)
            add_range_scaled_noise(view, self.input_noise, conv.noise_std)
        return np.asarray(self.runner.logits(view))
