"""The loop's host work runs BLAS on one thread and the engine call does not (runtime/engine/host_threads.py)."""

from __future__ import annotations

import numpy as np
import pytest

threadpoolctl = pytest.importorskip("threadpoolctl")

from camrt.runtime.engine import scorer as scorer_module  # noqa: E402
from camrt.runtime.engine.host_threads import one_blas_thread  # noqa: E402


def blas_threads() -> set[int]:
    """Thread counts of numpy's own BLAS (a pip wheel's, under numpy.libs; the mask making's matrix products);
    other BLAS libraries loaded later by other tests (torch's) are not the host work's."""
    libs = [lib for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas" and "numpy" in lib["filepath"]]
    if not libs:
        pytest.skip("numpy's BLAS is not a library of its own here")
    return {lib["num_threads"] for lib in libs}


def test_one_blas_thread_limits_then_restores() -> None:
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        if blas_threads() != {2}:
            pytest.skip("this numpy's BLAS cannot run two threads")
        with one_blas_thread():
            assert blas_threads() == {1}
        assert blas_threads() == {2}


def test_mask_making_and_combine_on_one_thread_engine_untouched(tiny_bundle, monkeypatch) -> None:
    import camrt

    seen: dict[str, set[int]] = {"masks": set(), "engine": set(), "combine": set()}
    masked_inputs, combine = scorer_module.masked_inputs, scorer_module.HostScorer.combine

    def recording_masks(*args, **kwargs):
        seen["masks"] |= blas_threads()
        return masked_inputs(*args, **kwargs)

    def recording_combine(self, *args, **kwargs):
        seen["combine"] |= blas_threads()
        return combine(self, *args, **kwargs)

    monkeypatch.setattr(scorer_module, "masked_inputs", recording_masks)
    monkeypatch.setattr(scorer_module.HostScorer, "combine", recording_combine)
    explainer = camrt.Explainer(tiny_bundle)
    logits = explainer.runner.logits

    def recording_logits(images: np.ndarray) -> np.ndarray:
        seen["engine"] |= blas_threads()
        return logits(images)

    monkeypatch.setattr(explainer.runner, "logits", recording_logits)
    x = np.random.default_rng().standard_normal((2, 3, 32, 32)).astype(np.float32)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        if blas_threads() != {2}:
            pytest.skip("this numpy's BLAS cannot run two threads")
        out = explainer.explain(x, "scorecam", batch_size=4)
        assert blas_threads() == {2}
    assert out.saliency.shape == (2, 32, 32)
    assert seen == {"masks": {1}, "engine": {2}, "combine": {1}}
