"""The backend registry: its lines, runner_options (the CLI's flag translation), make_runner's errors, close()."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from camrt.errors import CamrtError, InputError
from camrt.runtime.backends import (
    BACKEND_NAMES,
    BACKENDS,
    GPU_BACKENDS,
    Backend,
    check_backend,
    close_runner,
    make_runner,
    on_gpu,
    precisions,
    runner_options,
    visible_gpu_options,
)
from camrt.runtime.backends.base import Closing
from camrt.runtime.backends.onnxruntime import OnnxrtRunner
from camrt.runtime.bundle import Bundle

from tiny import SIZE

OFFERS = "(fp16: openvino, tensorrt, onnxruntime-tensorrt, torch; bf16: openvino, torch; int8: openvino, onnxruntime)"


def _images(n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 3, SIZE, SIZE)).astype(np.float32)


def test_registry_lists_each_backend_once_with_its_properties():
    assert BACKEND_NAMES == ("onnxruntime", "torch", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt", "openvino")
    assert all(isinstance(b, Backend) and b.name == name for name, b in BACKENDS.items())
    assert GPU_BACKENDS == ("onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt")
    table = {name: (b.gpu_only, b.default_device, b.devices, tuple(b.precisions), b.threads)
             for name, b in BACKENDS.items()}
    assert table == {
        "onnxruntime": (False, "cpu", ("cpu", "cuda"), ("fp32", "int8"), "intra_op_threads"),
        "torch": (False, "cpu", ("cpu", "cuda"), ("fp32", "fp16", "bf16"), "threads"),
        "onnxruntime-cuda": (True, "cuda", ("cuda",), ("fp32",), None),
        "onnxruntime-tensorrt": (True, "cuda", ("cuda",), ("fp32", "fp16"), None),
        "tensorrt": (True, "cuda", ("cuda",), ("fp32", "fp16"), None),
        "openvino": (False, "cpu", ("cpu",), ("fp32", "bf16", "fp16", "int8"), "threads"),
    }
    assert precisions() == ("fp32", "fp16", "bf16", "int8")
    assert BACKENDS["onnxruntime-tensorrt"].precisions["fp16"] == {"fp16": True}
    assert BACKENDS["tensorrt"].precisions["fp16"] == {"precision": "fp16"}
    assert BACKENDS["onnxruntime"].load() == OnnxrtRunner.create
    with pytest.raises(AttributeError):
        BACKENDS["torch"].name = "other"  # type: ignore[misc]  # frozen


def test_on_gpu_and_check_backend():
    assert not on_gpu("onnxruntime", None) and not on_gpu("torch", "cpu")
    assert on_gpu("onnxruntime", "cuda:1") and on_gpu("tensorrt", None) and on_gpu("onnxruntime-cuda", "cpu")
    with pytest.raises(CamrtError, match="^backend: unknown backend 'tf'; choose one of onnxruntime, torch, "):
        check_backend("tf")
    assert visible_gpu_options({"device": "cuda:3", "fp16": True}) == {"device": "cuda", "fp16": True}
    assert visible_gpu_options({"device": "cpu"}) == {"device": "cpu"}


# (backend, device, precision, threads) -> keyword arguments, as the CLI's _backend_options gave them
@pytest.mark.parametrize("args,expected", [
    (("onnxruntime", None, "fp32", None), {}),
    (("onnxruntime", None, "fp32", 2), {"intra_op_threads": 2}),
    (("onnxruntime", "cpu", "fp32", 2), {"device": "cpu", "intra_op_threads": 2}),
    (("onnxruntime", "cuda:1", "fp32", None), {"device": "cuda:1"}),
    (("torch", None, "fp32", 2), {"threads": 2}),
    (("torch", "cpu", "fp32", 0), {"device": "cpu"}),
    (("torch", "cuda", "fp16", None), {"device": "cuda", "precision": "fp16"}),
    (("torch", "cuda:1", "bf16", None), {"device": "cuda:1", "precision": "bf16"}),
    (("onnxruntime-cuda", None, "fp32", None), {}),
    (("onnxruntime-cuda", "cpu", "fp32", None), {"device": "cpu"}),  # make_runner refuses it, with its own line
    (("onnxruntime-tensorrt", None, "fp16", None), {"fp16": True}),
    (("onnxruntime-tensorrt", "cuda", "fp16", None), {"device": "cuda", "fp16": True}),
    (("tensorrt", None, "fp16", None), {"precision": "fp16"}),
    (("tensorrt", "cuda:1", "fp32", None), {"device": "cuda:1"}),
])
def test_runner_options(args, expected):
    assert runner_options(*args) == expected


@pytest.mark.parametrize("args,message", [
    (("onnxruntime", "cuda", "fp32", 2), "--threads: a CPU option; the GPU backends have none"),
    (("torch", "cuda:1", "fp16", 4), "--threads: a CPU option; the GPU backends have none"),
    (("tensorrt", None, "fp32", 2), "--threads: a CPU option; the GPU backends have none"),
    (("onnxruntime", None, "fp16", None), "--precision fp16: a GPU option; add --device cuda"),
    (("torch", "cpu", "bf16", None), "--precision bf16: a GPU option; add --device cuda"),
    (("onnxruntime", "cuda", "fp16", None), f"--precision fp16: not available on backend onnxruntime {OFFERS}"),
    (("onnxruntime-cuda", None, "fp16", None),
     f"--precision fp16: not available on backend onnxruntime-cuda {OFFERS}"),
    (("onnxruntime-tensorrt", "cuda", "bf16", None),
     f"--precision bf16: not available on backend onnxruntime-tensorrt {OFFERS}"),
    (("tensorrt", "cuda", "bf16", None), f"--precision bf16: not available on backend tensorrt {OFFERS}"),
])
def test_runner_options_errors(args, message):
    with pytest.raises(InputError) as info:
        runner_options(*args)
    assert str(info.value) == message


@pytest.mark.parametrize("name,options,message", [
    ("tensorflow", {}, "^backend: unknown backend 'tensorflow'; choose one of onnxruntime, torch, "),
    ("tensorrt", {"device": "cpu"}, "^backend 'tensorrt' runs on a GPU only; use --device cuda, or backend "),
    ("onnxruntime-cuda", {"device": "cpu"}, "^backend 'onnxruntime-cuda' runs on a GPU only"),
    ("torch", {"device": "tpu"}, r"^device: expected cpu, cuda or cuda:N, got 'tpu'$"),
    ("onnxruntime", {"device": "cpu:0"}, r"^device: expected cpu, cuda or cuda:N, got 'cpu:0'$"),
])
def test_make_runner_errors(tiny_bundle, name, options, message):
    with pytest.raises(CamrtError, match=message) as info:
        make_runner(name, Bundle.load(tiny_bundle), **options)
    assert "\n" not in str(info.value)


def test_onnxruntime_runner_closes_once_and_then_refuses_to_run(tiny_bundle):
    runner = make_runner("onnxruntime", Bundle.load(tiny_bundle), intra_op_threads=1)
    assert isinstance(runner, OnnxrtRunner)
    x = _images()
    assert runner.logits(x).shape == (2, Bundle.load(tiny_bundle).manifest.num_classes)
    runner.close()
    runner.close()  # idempotent
    assert runner._sessions == {}
    for call in (runner.features, runner.logits):
        with pytest.raises(CamrtError, match=r"^backend 'onnxruntime': this runner is closed; make a new one$"):
            call(x)


def test_runners_are_context_managers(tiny_bundle):
    bundle = Bundle.load(tiny_bundle)
    x = _images()
    with OnnxrtRunner(bundle, intra_op_threads=1) as runner:
        expected = runner.logits(x)
    with pytest.raises(CamrtError, match="closed"):
        runner.head(np.zeros((1, 16, 1, 1), np.float32))
    with make_runner("torch", bundle, threads=1, trust_pickles=True) as torch_runner:
        np.testing.assert_allclose(torch_runner.logits(x), expected, rtol=1e-4, atol=1e-4)
    assert torch_runner._features is None and torch_runner._head is None
    with pytest.raises(CamrtError, match="^backend 'torch': this runner is closed"):
        torch_runner.features(x)


def test_close_runner_closes_what_can_close():
    class Fake:
        name = "fake"

    class Counting(Closing):
        name = "counting"
        released = 0

        def _release(self):
            self.released += 1

    close_runner(Fake())  # nothing to close: no error
    counting = Counting()
    close_runner(counting)
    close_runner(counting)
    assert counting.released == 1


def test_engine_buffers_close_waits_then_drops_engines_and_buffers(tiny_bundle):
    from camrt.runtime.backends.device import EngineBuffers

    events = []

    class Stream:
        def synchronize(self):
            events.append("synchronize")

    class Engine(EngineBuffers):
        name = "engine"
        cupy, stream = None, Stream()

        def _drop_engines(self):
            events.append(("engines", len(self._buffers)))

    engine = Engine()
    engine._init_buffers(Bundle.load(tiny_bundle))
    engine._buffers = {"x": np.zeros(1)}
    with engine:
        pass
    engine.close()
    assert events == ["synchronize", ("engines", 1)]
    assert engine._buffers == {} and engine.stream is None
    for call in (lambda: engine.input_buffer(1), lambda: engine.run_logits(1)):
        with pytest.raises(CamrtError, match="^backend 'engine': this runner is closed"):
            call()


def test_importing_the_backends_imports_no_gpu_or_torch_package():
    script = (
        "import sys\n"
        "import camrt.runtime.backends as b\n"
        "b.runner_options('torch', 'cuda', 'bf16'); b.on_gpu('tensorrt', None); b.precisions()\n"
        "print(sorted(m for m in ('torch', 'cupy', 'tensorrt') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
