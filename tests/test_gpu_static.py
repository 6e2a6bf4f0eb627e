"""The GPU path's parts that need no GPU: CUDA compilation, engine cache keys, the FP16 graph, one-line errors."""

from __future__ import annotations

import builtins
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from camrt.cli import main
from camrt.errors import CamrtError
from camrt.runtime.backends import make_runner
from camrt.runtime.backends.tensorrt_build import Profile, engine_key, find_engines
from camrt.runtime.bundle import Bundle

ROOT = Path(__file__).resolve().parents[1]


def _nvcc() -> str | None:
    return shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)


@pytest.mark.skipif(_nvcc() is None, reason="nvcc not installed")
def test_every_kernel_compiles_to_ptx_for_sm80_and_sm90():
    result = subprocess.run([str(ROOT / "tools" / "compile_cuda.sh")], capture_output=True, text=True, timeout=300,
                            env={"CAMRT_REQUIRE_NVCC": "1", "PATH": f"{Path(_nvcc()).parent}:/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    sources = len(list((ROOT / "kernels" / "cuda").glob("*.cu")))
    assert f"{2 * sources} PTX builds OK" in result.stdout


def test_tensorrt_code_typechecks_against_the_stubs():
    site = Path(subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True).stdout.strip())
    if not (site / "tensorrt" / "__init__.pyi").is_file():
        pytest.skip("tensorrt-stubs not installed (pip install --no-deps tensorrt-stubs)")
    result = subprocess.run([str(ROOT / "tools" / "typecheck_tensorrt.sh")], capture_output=True, text=True,
                            timeout=600, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0 and "Success" in result.stdout, result.stdout[-3000:] + result.stderr


def test_engine_keys_name_graph_gpu_version_and_precision():
    key = engine_key("features", "NVIDIA H100 80GB HBM3", "10.13.0.35", "fp16")
    assert key == "features-nvidia-h100-80gb-hbm3-trt10.13.0.35-fp16"
    assert engine_key("head", "NVIDIA H100 80GB HBM3", "10.13.0.35", "fp16") != key
    assert engine_key("features", "NVIDIA H200", "10.13.0.35", "fp16") != key
    assert engine_key("features", "NVIDIA H100 80GB HBM3", "11.4.0.106", "fp16") != key
    assert engine_key("features", "NVIDIA H100 80GB HBM3", "10.13.0.35", "fp32") != key
    with pytest.raises(CamrtError, match="precision"):
        engine_key("features", "gpu", "10", "int8")
    with pytest.raises(CamrtError, match="min <= opt <= max"):
        Profile(1, 512, 256)


def test_cached_engines_are_found_and_hash_checked(tiny_bundle, tmp_path):
    import json

    shutil.copytree(tiny_bundle, tmp_path / "b")
    bundle = Bundle.load(tmp_path / "b")
    assert find_engines(bundle, "NVIDIA H100", "10.13", "fp32") is None
    (tmp_path / "b" / "engines").mkdir()
    for graph in ("features", "head"):
        key = engine_key(graph, "NVIDIA H100", "10.13", "fp32")
        (tmp_path / "b" / "engines" / f"{key}.plan").write_bytes(graph.encode())
        import hashlib

        digest = hashlib.sha256(graph.encode()).hexdigest()
        bundle.manifest.engines[key] = {"file": f"engines/{key}.plan", "sha256": digest}
    (tmp_path / "b" / "manifest.json").write_text(bundle.manifest.to_json())
    bundle = Bundle.load(tmp_path / "b")
    found = find_engines(bundle, "NVIDIA H100", "10.13", "fp32")
    assert found is not None and found["head"] == b"head"  # the verified bytes themselves
    assert find_engines(bundle, "NVIDIA H100", "10.13", "fp16") is None  # another precision: build anew
    head = engine_key("head", "NVIDIA H100", "10.13", "fp32")
    (tmp_path / "b" / "engines" / f"{head}.plan").write_bytes(b"tampered")
    with pytest.raises(CamrtError, match="SHA-256"):
        find_engines(bundle, "NVIDIA H100", "10.13", "fp32")
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["engines"]


def test_fp16_graph_runs_on_onnxruntime_and_agrees_with_fp32(tiny_bundle):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from camrt.runtime.backends.fp16_onnx import convert_to_fp16

    bundle = Bundle.load(tiny_bundle)
    rng = np.random.default_rng()
    feed = {"features": ("image", (3, *bundle.manifest.input_shape)),
            "head": ("activations", (3, *bundle.manifest.activation_shape))}
    for graph, (name, shape) in feed.items():
        model = onnx.load(str(tiny_bundle / f"{graph}.onnx"))
        half = convert_to_fp16(model)
        onnx.checker.check_model(half)
        assert all(init.data_type == onnx.TensorProto.FLOAT16 for init in half.graph.initializer)
        x = rng.standard_normal(shape).astype(np.float32)
        ref, got = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {name: x})[0] for m in (model, half))
        assert got.dtype == np.float32, "inputs and outputs stay float32"
        np.testing.assert_allclose(got, ref, rtol=1e-2, atol=2e-3 * max(1.0, float(np.abs(ref).max())))


def _block(monkeypatch, *names):
    real = builtins.__import__

    def guarded(name, *args, **kwargs):
        if name.split(".")[0] in names:
            raise ImportError(f"{name} blocked")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", guarded)
    for name in list(sys.modules):
        if name.split(".")[0] in names:
            monkeypatch.delitem(sys.modules, name)


@pytest.mark.parametrize("backend,missing,message", [
    ("tensorrt", ("tensorrt",), "needs TensorRT 10 or 11"),
    ("onnxruntime-tensorrt", ("onnxruntime",), "needs onnxruntime-gpu"),
])
def test_missing_packages_give_one_line_errors(tiny_bundle, monkeypatch, backend, missing, message):
    bundle = Bundle.load(tiny_bundle)
    _block(monkeypatch, *missing)
    with pytest.raises(CamrtError, match=message) as info:
        make_runner(backend, bundle)
    assert "\n" not in str(info.value)


def test_cupy_without_a_gpu_or_onnxruntime_without_cuda(tiny_bundle, monkeypatch):
    import types

    from camrt.kernels import gpu

    def no_device():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    _block(monkeypatch, "cupy")
    with pytest.raises(CamrtError, match=r"needs CuPy: pip install camrt\[gpu\]"):
        gpu.import_cupy()
    monkeypatch.undo()
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_device)))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.raises(CamrtError, match="no usable CUDA GPU.*cudaErrorNoDevice"):
        gpu.import_cupy()
    # this machine's onnxruntime is the CPU build: the CUDA provider is what is missing, before any GPU question
    with pytest.raises(CamrtError, match="no CUDAExecutionProvider"):
        make_runner("onnxruntime-cuda", Bundle.load(tiny_bundle))


@pytest.mark.parametrize("argv,message", [
    (["--backend", "tensorrt", "--device", "cpu"], "runs on a GPU only"),
    (["--backend", "onnxruntime", "--precision", "fp16"], "a GPU option"),
    (["--backend", "tensorrt", "--precision", "bf16"], "not available on backend tensorrt"),
    (["--backend", "tensorrt", "--threads", "2"], "--threads: a CPU option"),
    (["--backend", "torch", "--device", "tpu"], "expected cpu, cuda or cuda:N"),
])
def test_cli_gpu_flag_errors(tiny_bundle, tmp_path, capsys, argv, message):
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (40, 40)).save(image)
    assert main(["explain", str(tiny_bundle), str(image), "-o", str(tmp_path / "out"), "-q", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_export_fp16_needs_tensorrt(tmp_path, capsys):
    assert main(["export", "resnet18", "-o", str(tmp_path / "b"), "--fp16"]) == 2
    assert "add --tensorrt" in capsys.readouterr().err


def test_runtime_imports_without_cupy_tensorrt_or_torch():
    script = (
        "import builtins, sys\n"
        "real = builtins.__import__\n"
        "def guarded(name, *a, **k):\n"
        "    if name.split('.')[0] in ('torch', 'cupy', 'tensorrt'):\n"
        "        raise ImportError(name + ' blocked')\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = guarded\n"
        "import camrt, camrt.kernels.gpu, camrt.runtime.engine.device_scorer, camrt.runtime.backends.tensorrt\n"
        "import camrt.runtime.backends.onnxruntime_cuda, camrt.runtime.backends.tensorrt_build\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


class _HostArray(np.ndarray):
    """A NumPy array with CuPy's set/get, so the engine runners' shared buffer logic runs on the host."""

    def set(self, values, stream=None):
        self[...] = values

    def get(self, stream=None):
        return np.array(self)


class _FakeCupy:
    float32 = np.float32

    @staticmethod
    def empty(shape, dtype):
        return np.empty(shape, dtype).view(_HostArray)


class _Stream:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self):
        pass


def test_engine_buffers_grow_once_and_run_the_graphs_in_order(tiny_bundle):
    """EngineBuffers (shared by the ONNX Runtime GPU and TensorRT runners), with a host engine behind it."""
    from camrt.runtime.backends.device import EngineBuffers
    from camrt.runtime.backends.onnxruntime import OnnxrtRunner

    reference = OnnxrtRunner(Bundle.load(tiny_bundle))
    calls = []

    class HostEngine(EngineBuffers):
        cupy, stream = _FakeCupy(), _Stream()

        def _enqueue(self, graph, src, dst, n, for_host):
            calls.append((graph, n, for_host))
            run = reference.features if graph == "features" else reference.head
            self._buffers[dst][:n] = run(np.asarray(self._buffers[src][:n]))

    runner = HostEngine()
    runner._init_buffers(Bundle.load(tiny_bundle))
    x = np.random.default_rng(int(np.random.SeedSequence().entropy % 2**32)).standard_normal(
        (3, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(runner.logits(x), reference.logits(x), rtol=1e-6, atol=1e-6)
    first = runner._buffers
    runner.input_buffer(2)[...] = x[:2]
    np.testing.assert_allclose(np.asarray(runner.run_logits(2)), reference.logits(x[:2]), rtol=1e-6, atol=1e-6)
    assert runner._buffers is first  # a smaller batch reuses the buffers
    assert calls == [("features", 3, True), ("head", 3, True), ("features", 2, False), ("head", 2, False)]
    runner.max_batch = 2
    with pytest.raises(CamrtError, match="exceeds the TensorRT engine's profile maximum 2"):
        runner.input_buffer(3)
