"""The explain loop on a GPU: masked inputs made by the CUDA kernels straight into the engine's input buffer.

Same jobs, scores, weights and maps as the host loop in explainer.py; the differences are where things live.
Jobs are decoded on the device from a table uploaded once, scores accumulate in a device array, and the host
waits once per call, when the weights are complete. SS-CAM's noise is drawn on the host from the same source
as the host loop (so results match it) and copied per chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from camrt.errors import CamrtError
from camrt.runtime.backends.device import DeviceRunner, to_host
from camrt.runtime.methods.base import Convention
from camrt.runtime.noise import NoiseSource
from camrt.runtime.plan import ZERO, Plan

Progress = Callable[[int, int], None]
ScoreRows = Callable[[str, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
WeightsOf = Callable[[Convention, Plan, np.ndarray], np.ndarray]


def explain_on_device(
    runner: DeviceRunner,
    conv: Convention,
    plan: Plan,
    activations: np.ndarray,
    x: np.ndarray,
    logits: np.ndarray,
    target: np.ndarray,
    batch_size: int,
    noise: NoiseSource | None,
    progress: Progress | None,
    score_rows: ScoreRows,
    weights_of: WeightsOf,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(weights (N, K) float64, saliency (N, H, W), native maps or None) for the clean pass's outputs."""
    with runner.stream_context():
        acts = runner.kernels.xp.asarray(activations)
        scores = _scores(runner, conv, plan, acts, x, logits, target, batch_size, noise, progress, score_rows)
        weights = weights_of(conv, plan, scores)
        return (weights, *_maps(runner, conv, acts, weights, (x.shape[2], x.shape[3])))


def _scores(
    runner: DeviceRunner, conv: Convention, plan: Plan, acts: Any, x: np.ndarray, logits: np.ndarray,
    target: np.ndarray, batch_size: int, noise: NoiseSource | None, progress: Progress | None, score_rows: ScoreRows,
) -> np.ndarray:
    """Mean score over samples (N, K) float64, as Explainer._score computes it on the host."""
    kernels, xp = runner.kernels, runner.kernels.xp
    n, k = acts.shape[:2]
    _, c, height, width = x.shape
    base = logits[np.arange(n), target].astype(np.float64)
    total = plan.jobs + int(plan.needs_zero_pass)
    zero_sums = np.zeros((n, k), dtype=np.float64)
    done = 0
    if plan.needs_zero_pass:  # X * 0 is the zero image for every image: one pass for all of them
        zero_logits = np.asarray(runner.logits(np.zeros((1, c, height, width), np.float32)))
        zero_scores = score_rows(conv.score, np.repeat(zero_logits, n, axis=0), target, base)
        for b in range(n):
            zero_sums[b, plan.rep[b] == ZERO] = zero_scores[b] * conv.samples
        done += 1
    sums = xp.zeros((n, k), dtype=xp.float64)
    bad = xp.zeros(1, dtype=xp.int32)
    chunk = min(batch_size, max(plan.jobs, 1))
    if plan.jobs:
        images = xp.asarray(x)
        table = kernels.job_table(plan.unique, plan.samples)
        buffer = runner.input_buffer(chunk)
        bi, ki, si = (xp.empty(chunk, dtype=xp.int32) for _ in range(3))
        target_d, base_d = xp.asarray(target.astype(np.int32)), xp.asarray(base)
        coeffs = xp.asarray(np.asarray(conv.coefficients, np.float32)) if conv.coefficients else None
        noise_host = _noise_buffer(conv, chunk, c, height, width)
        noise_dev = None if noise_host is None else xp.empty(noise_host.shape, dtype=xp.float32)
        host_chunks = plan.chunks(chunk) if noise_host is not None else None
        for start in range(0, plan.jobs, chunk):
            m = min(chunk, plan.jobs - start)
            kernels.decode_jobs(table, start, m, bi, ki, si)
            scale = None if coeffs is None else xp.take(coeffs, si[:m])
            mask_noise = input_noise = None
            if noise_host is not None and noise_dev is not None and host_chunks is not None:
                _draw(noise, conv, next(host_chunks), noise_host)
                noise_dev[:m] = xp.asarray(noise_host[:m])
                if conv.noise == "mask":
                    mask_noise = noise_dev[:m]
                else:
                    input_noise = noise_dev[:m]
            kernels.masked_inputs(
                acts, images, bi[:m], ki[:m], conv.mask, buffer, scale=scale, mask_noise=mask_noise,
                input_noise=input_noise, range_noise=conv.noise_std if input_noise is not None else None,
            )
            out = runner.run_logits(m)
            kernels.accumulate_scores(out, bi[:m], ki[:m], target_d, base_d, conv.score, sums, bad)
            done += m
            if progress is not None:
                progress(done, total)  # passes enqueued; the device may still be working on them
    host_sums = to_host(sums) + zero_sums  # the one wait: all of this call's scores are complete
    if int(to_host(bad)[0]):
        raise CamrtError("the model gave non-finite logits for a masked input")
    for b in range(n):  # duplicates take their representative's scores
        dup = np.flatnonzero((plan.rep[b] >= 0) & (plan.rep[b] != np.arange(k)))
        host_sums[b, dup] = host_sums[b, plan.rep[b, dup]]
    return host_sums / conv.samples


def _noise_buffer(conv: Convention, chunk: int, c: int, height: int, width: int) -> np.ndarray | None:
    if conv.noise == "mask":
        return np.empty((chunk, height, width), np.float32)
    if conv.noise == "input-range":
        return np.empty((chunk, c, height, width), np.float32)
    return None


def _draw(noise: NoiseSource | None, conv: Convention, jobs: tuple[np.ndarray, ...], out: np.ndarray) -> None:
    """The host loop's draws for these jobs (mask noise already times its std, as the host loop does)."""
    if noise is None:
        raise CamrtError(f"{conv.method} {conv.name}: needs a noise source (seed)")
    bi, ki, si = jobs
    for j, (b, kk, s) in enumerate(zip(bi.tolist(), ki.tolist(), si.tolist())):
        out[j] = noise.normal(b, s, kk, out.shape[1:])
    if conv.noise == "mask":
        out[: bi.size] *= np.float32(conv.noise_std)


def _maps(runner: DeviceRunner, conv: Convention, acts: Any, weights: np.ndarray,
          size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Saliency (N, H, W) and native maps, combined on the device and copied back together."""
    kernels, xp = runner.kernels, runner.kernels.xp
    n = acts.shape[0]
    saliency = xp.empty((n, *size), dtype=xp.float32)
    natives = []
    for b in range(n):
        sal, native = kernels.combine(conv, acts[b], xp.asarray(weights[b]), size)
        saliency[b] = sal
        if native is not None:
            natives.append(native)
    return to_host(saliency), to_host(xp.stack(natives)) if natives else None
