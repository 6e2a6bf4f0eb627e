"""Session-wide fixture: tiny random CNNs exported once to real ONNX bundles, explained on ONNX Runtime."""

from __future__ import annotations

import pytest

from camrt.runtime.explainer import Explainer

from tiny import SIZE, Tiny


@pytest.fixture(scope="session")
def tiny_bundle_factory(tmp_path_factory):
    """export(model) -> Explainer on the ONNX bundle of that Tiny model (cached per model seed)."""
    import camrt

    cache: dict[int, Explainer] = {}

    def make(model: Tiny) -> Explainer:
        key = id(model)
        if key not in cache:
            out = tmp_path_factory.mktemp("tiny_bundle")
            camrt.export(model, "features", out, input_shape=(3, SIZE, SIZE), model_name="tiny")
            cache[key] = Explainer(out, intra_op_threads=1)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """The path of one exported Tiny bundle (seed 0)."""
    import camrt

    out = tmp_path_factory.mktemp("tiny")
    camrt.export(Tiny(seed=0).eval(), "features", out, input_shape=(3, SIZE, SIZE), model_name="tiny")
    return out
