"""The scorer on a GPU: masked inputs made by the CUDA kernels straight into the engine's input buffer.

The same jobs, scores, weights and maps as :class:`~camrt.runtime.engine.scorer.HostScorer`; the differences are
where things live. Slots, score sums and non-finite flags are device arrays; a batch is enqueued on the runner's
stream (kernels, engine, score accumulation) without waiting, and the host waits only when it takes a finished
image's sums. SS-CAM's noise is drawn on the host from the same source as the host scorer and copied per batch.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from camrt.runtime.backends.device import DeviceRunner, to_host
from camrt.runtime.engine.noise import draw, noise_buffer
from camrt.runtime.engine.scorer import Slots
from camrt.runtime.methods.base import Convention
from camrt.runtime.noise import NoiseSource


class DeviceScorer(Slots):
    """A :class:`~camrt.runtime.engine.scorer.Scorer` for runners with device buffers (runtime/backends/device.py)."""

    def __init__(self, runner: DeviceRunner, conv: Convention, batch_size: int, shape: tuple[int, int, int],
                 activation_shape: tuple[int, int, int]) -> None:
        self.runner, self.conv, self.shape, self.kernels = runner, conv, shape, runner.kernels
        super().__init__(runner.kernels.xp, shape, activation_shape)
        xp = self.xp
        with self.context():
            self.buffer = runner.input_buffer(batch_size)
            self.coefficients = xp.asarray(np.asarray(conv.coefficients, np.float32)) if conv.coefficients else None
        self.noise_host = noise_buffer(conv, batch_size, shape)
        self.noise = None if self.noise_host is None else xp.empty(self.noise_host.shape, xp.float32)

    def context(self) -> AbstractContextManager[Any]:
        return self.runner.stream_context()

    def run(self, bi: np.ndarray, ki: np.ndarray, si: np.ndarray, noise: NoiseSource | None) -> None:
        xp, conv, m = self.xp, self.conv, bi.size
        with self.context():
            bi_d, ki_d = xp.asarray(bi.astype(np.int32)), xp.asarray(ki.astype(np.int32))
            scale = None if self.coefficients is None else xp.take(self.coefficients, xp.asarray(si))
            drawn = None
            if self.noise_host is not None and self.noise is not None:
                self.noise[:m] = xp.asarray(draw(noise, conv, bi, ki, si, self.noise_host))
                drawn = self.noise[:m]
            self.kernels.masked_inputs(
                self.activations, self.x, bi_d, ki_d, conv.mask, self.buffer, scale=scale,
                mask_noise=drawn if conv.noise == "mask" else None,
                input_noise=drawn if conv.noise == "input-range" else None,
                range_noise=conv.noise_std if conv.noise == "input-range" else None,
            )
            out = self.runner.run_logits(m)
            self.kernels.accumulate_scores(out, bi_d, ki_d, self.target, self.base, conv.score, self.sums, self.bad)

    def take(self, slot: int) -> tuple[np.ndarray, bool]:
        with self.context():  # the one wait: this image's passes are all enqueued before it
            return to_host(self.sums[slot]).astype(np.float64), not int(to_host(self.bad[slot : slot + 1])[0])

    def combine(self, slot: int, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        with self.context():
            saliency, native = self.kernels.combine(self.conv, self.activations[slot], self.xp.asarray(weights),
                                                    self.shape[1:])
            return to_host(saliency), None if native is None else to_host(native)

