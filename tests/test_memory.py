"""camrt's own peak memory is bounded by the batch size, not by K or by the number of samples.

Measured with tracemalloc, which sees numpy's buffers (the engine's memory is the engine's): counts of bytes,
not timings, so the assertion is stable on a noisy machine.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
from PIL import Image

from camrt.runtime.preprocess import preprocess

from tiny import SIZE, Tiny, images, torch_explainer


def _peak(explainer, method: str, **options) -> int:
    x = images(1, seed=0)
    explainer.explain(x, method, "torchcam", batch_size=8, **options)  # warm-up: lazy imports, caches
    tracemalloc.start()
    try:
        explainer.explain(x, method, "torchcam", batch_size=8, **options)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_flat_in_channels():
    small, large = Tiny(seed=0, k=16).eval(), Tiny(seed=0, k=512).eval()
    peak_small = _peak(torch_explainer(small), "scorecam")
    peak_large = _peak(torch_explainer(large), "scorecam")
    # one chunk is 8 x 3 x 32 x 32 floats (98 KB); K = 512 may add O(K) bookkeeping and the (K, h, w)
    # activations, never K masked inputs (512 x 12 KB = 6 MB)
    assert peak_large < peak_small + 1_000_000, (peak_small, peak_large)


def test_peak_memory_flat_in_samples():
    explainer = torch_explainer(Tiny(seed=0).eval())
    one, many = _peak(explainer, "sscam", num_samples=1), _peak(explainer, "sscam", num_samples=40)
    assert many < one + 200_000, (one, many)


def test_explain_images_applies_the_bundle_preprocessing(tmp_path):
    explainer = torch_explainer(Tiny(seed=1).eval())
    rgb = (np.random.default_rng(0).random((50, 40, 3)) * 255).astype(np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(rgb).save(path)
    by_path = explainer.explain_images([path, Image.fromarray(rgb)], method="scorecam")
    direct = explainer.explain(np.stack([preprocess(path, explainer.bundle.manifest.preprocessing)] * 2))
    np.testing.assert_array_equal(by_path.saliency, direct.saliency)
    assert by_path.saliency.shape == (2, SIZE, SIZE)
