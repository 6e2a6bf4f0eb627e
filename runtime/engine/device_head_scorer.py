"""The head-only methods' scorer on a GPU: perturbed activations made by the CUDA kernels of activations.cu
straight into the head's input buffer, the head run there, the scores accumulated there.

The same jobs, scores, weights and maps as :class:`~camrt.runtime.engine.head_scorer.HeadScorer`. It needs a
runner with a device head-input buffer (:class:`DeviceHeadRunner`: ``head_input_buffer`` and ``run_head`` beside
the DeviceRunner's ``input_buffer`` and ``run_logits``); a GPU runner without them takes HeadScorer, which runs
``runner.head`` on host arrays (one copy each way per batch).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

import numpy as np

from camrt.kernels.activations import GRADCAM_BATCH, ablation_fills, cuda_masked_activations, position_map
from camrt.runtime.backends.device import DeviceRunner, to_host
from camrt.runtime.engine.scorer import Slots, grown
from camrt.runtime.methods.base import Convention
from camrt.runtime.noise import NoiseSource


@runtime_checkable
class DeviceHeadRunner(DeviceRunner, Protocol):
    """A device runner that can also run the head graph alone on a device buffer of activations."""

    def head_input_buffer(self, rows: int) -> Any:
        """The head's input (rows, K, h, w) float32 C-contiguous on the device."""
        ...

    def run_head(self, n: int) -> Any:
        """Enqueue the head on head_input_buffer[:n]; logits (n, classes) float32 on the device, in stream order."""
        ...


def is_device_head_runner(runner: object) -> bool:
    """True for runners on which the head-only methods' passes stay on the device."""
    return isinstance(runner, DeviceHeadRunner)


class DeviceHeadScorer(Slots):
    """A :class:`~camrt.runtime.engine.scorer.Scorer` for the head-only methods on a :class:`DeviceHeadRunner`."""

    def __init__(self, runner: DeviceHeadRunner, conv: Convention, batch_size: int, shape: tuple[int, int, int],
                 activation_shape: tuple[int, int, int]) -> None:
        if conv.head is None:
            raise ValueError(f"{conv.method} runs the whole network, not the head alone")
        self.runner, self.conv, self.spec, self.shape, self.kernels = runner, conv, conv.head, shape, runner.kernels
        self.activation_shape = activation_shape
        super().__init__(runner.kernels.xp, shape, activation_shape, conv.jobs(activation_shape))
        xp = self.xp
        with self.context():
            self.buffer = runner.head_input_buffer(batch_size)
            self.fills = xp.zeros((0, GRADCAM_BATCH), xp.float32)
            self.period = xp.ones(0, xp.int64)

    def context(self) -> AbstractContextManager[Any]:
        return self.runner.stream_context()

    def reserve(self, slots: int) -> None:
        super().reserve(slots)
        with self.context():
            self.fills, self.period = grown(self.xp, self.fills, slots), grown(self.xp, self.period, slots)

    def load(self, slot: int, x: np.ndarray, activations: np.ndarray, target: int, base: float) -> None:
        super().load(slot, x, activations, target, base)
        if self.spec.op == "ablate":
            fills = ablation_fills(self.spec, activations)  # on the host: the activations are there already
            with self.context():
                self.fills[slot, : fills.size] = self.xp.asarray(fills)
                self.period[slot] = fills.size

    def run(self, bi: np.ndarray, ki: np.ndarray, si: np.ndarray, noise: NoiseSource | None) -> None:
        xp, m = self.xp, bi.size
        with self.context():
            bi_d, ki_d = xp.asarray(bi.astype(np.int32)), xp.asarray(ki.astype(np.int32))
            fill = self.fills[bi_d, ki_d % self.period[bi_d]] if self.spec.op == "ablate" else None
            cuda_masked_activations(self.kernels, self.activations, bi_d, ki_d, self.spec, self.buffer, fill)
            out = self.runner.run_head(m)
            self.kernels.accumulate_scores(out, bi_d, ki_d, self.target, self.base, self.conv.score, self.sums,
                                           self.bad)

    def take(self, slot: int) -> tuple[np.ndarray, bool]:
        with self.context():  # the one wait: this image's passes are all enqueued before it
            return to_host(self.sums[slot]).astype(np.float64), not int(to_host(self.bad[slot : slot + 1])[0])

    def combine(self, slot: int, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        xp, size = self.xp, self.shape[1:]
        with self.context():
            if self.spec.op == "keep":  # Recipro-CAM: its h·w scores normalised on the host in float64, as
                scores = np.asarray(weights, np.float64).reshape(self.activation_shape[1:])  # HeadScorer does
                native = position_map(np, scores, self.conv.combine)
                return to_host(self.kernels.resize(xp.asarray(native), size, False)), native
            else:
                saliency, native = self.kernels.combine(self.conv, self.activations[slot], xp.asarray(weights), size)
            return to_host(saliency), None if native is None else to_host(native)
