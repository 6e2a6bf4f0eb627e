"""The GPU path's parts that need no GPU: CUDA compilation, engine cache keys, the FP16 graph, one-line errors."""

from __future__ import annotations

import builtins
import shutil
import subprocess
import sys
import types
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest

from camrt.cli import main
from camrt.errors import CamrtError
from camrt.runtime.backends import make_runner
from camrt.runtime.backends.tensorrt_build import Profile, cached_profiles, engine_key, find_engines
from camrt.runtime.bundle import Bundle

from blocked_imports import run_without

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


@pytest.mark.skipif(_nvcc() is None, reason="nvcc not installed")
def test_the_one_translation_unit_cupy_compiles_has_every_kernel(tmp_path):
    """kernel_source() as NVRTC gets it (every .cu in one unit, CuPy's -ftz=true appended): no clashes between
    the files, and every kernel the Python launches is in it."""
    import re

    from camrt.kernels.gpu import SOURCE_DIR, kernel_source

    (tmp_path / "all.cu").write_text(kernel_source())
    result = subprocess.run([str(_nvcc()), "-ptx", "-std=c++17", "-arch=sm_90", f"-I{SOURCE_DIR}", "-ftz=true",
                             "-Werror", "all-warnings", "-o", str(tmp_path / "all.ptx"), str(tmp_path / "all.cu")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    entries = set(re.findall(r"\.entry (\w+)\(", (tmp_path / "all.ptx").read_text()))
    launched = set()
    for path in (ROOT / "kernels").glob("*.py"):
        launched |= set(re.findall(r'launch\(\s*"(\w+)"', path.read_text()))
        launched |= set(re.findall(r'"(masked_inputs_f(?:32|16))"', path.read_text()))
    assert launched and launched <= entries, launched - entries


def test_tensorrt_code_typechecks_against_the_stubs():
    site = Path(subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True).stdout.strip())
    if not (site / "tensorrt" / "__init__.pyi").is_file():
        pytest.skip("tensorrt-stubs not installed (pip install --no-deps tensorrt-stubs)")
    result = subprocess.run([str(ROOT / "tools" / "typecheck_tensorrt.sh")], capture_output=True, text=True,
                            timeout=600, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0 and "Success" in result.stdout, result.stdout[-3000:] + result.stderr


P = Profile()


def test_engine_keys_name_graph_gpu_version_precision_and_profile():
    key = engine_key("features", "NVIDIA H100 80GB HBM3", "10.13.0.35", "fp16", P)
    assert key == "features-nvidia-h100-80gb-hbm3-trt10.13.0.35-fp16-b1-64-256"
    assert engine_key("head", "NVIDIA H100 80GB HBM3", "10.13.0.35", "fp16", P) != key
    assert engine_key("features", "NVIDIA H200", "10.13.0.35", "fp16", P) != key
    assert engine_key("features", "NVIDIA H100 80GB HBM3", "11.4.0.106", "fp16", P) != key
    assert engine_key("features", "NVIDIA H100 80GB HBM3", "10.13.0.35", "fp32", P) != key
    # a larger --max-batch is another engine: a cached smaller one never stands in for it
    assert engine_key("features", "NVIDIA H100 80GB HBM3", "10.13.0.35", "fp16", Profile(1, 64, 512)) != key
    with pytest.raises(CamrtError, match="precision"):
        engine_key("features", "gpu", "10", "int8", P)
    with pytest.raises(CamrtError, match="min <= opt <= max"):
        Profile(1, 512, 256)


def test_cached_engines_are_found_and_hash_checked(tiny_bundle, tmp_path):
    import json

    shutil.copytree(tiny_bundle, tmp_path / "b")
    bundle = Bundle.load(tmp_path / "b")
    assert find_engines(bundle, "NVIDIA H100", "10.13", "fp32", P) is None
    (tmp_path / "b" / "engines").mkdir()
    for graph in ("features", "head"):
        key = engine_key(graph, "NVIDIA H100", "10.13", "fp32", P)
        (tmp_path / "b" / "engines" / f"{key}.plan").write_bytes(graph.encode())
        import hashlib

        digest = hashlib.sha256(graph.encode()).hexdigest()
        bundle.manifest.engines[key] = {"file": f"engines/{key}.plan", "sha256": digest}
    (tmp_path / "b" / "manifest.json").write_text(bundle.manifest.to_json())
    bundle = Bundle.load(tmp_path / "b")
    found = find_engines(bundle, "NVIDIA H100", "10.13", "fp32", P)
    assert found is not None and found["head"] == b"head"  # the verified bytes themselves
    assert find_engines(bundle, "NVIDIA H100", "10.13", "fp16", P) is None  # another precision: build anew
    assert find_engines(bundle, "NVIDIA H100", "10.13", "fp32", Profile(1, 64, 512)) is None  # a larger profile
    assert cached_profiles(bundle, "NVIDIA H100", "10.13", "fp32") == [P]
    assert cached_profiles(bundle, "NVIDIA H100", "10.13", "fp16") == []
    head = engine_key("head", "NVIDIA H100", "10.13", "fp32", P)
    (tmp_path / "b" / "engines" / f"{head}.plan").write_bytes(b"tampered")
    with pytest.raises(CamrtError, match="SHA-256"):
        find_engines(bundle, "NVIDIA H100", "10.13", "fp32", P)
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
        onnx.shape_inference.infer_shapes(half, check_type=True, strict_mode=True)  # strongly typed: no mismatch
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
    run_without("""
        import camrt, camrt.kernels.gpu, camrt.runtime.engine.device_scorer, camrt.runtime.backends.tensorrt
        import camrt.runtime.backends.onnxruntime_cuda, camrt.runtime.backends.tensorrt_build
    """, blocked=("torch", "cupy", "tensorrt"), timeout=120)


class _HostArray(np.ndarray):
    """A NumPy array with CuPy's set/get, so the engine runners' shared buffer logic runs on the host."""

    def set(self, values, stream=None):
        self[...] = values

    def get(self, stream=None):
        return np.array(self)


class _FakeCupy:
    float32 = np.float32
    cuda = types.SimpleNamespace(Device=lambda index: nullcontext())

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


# ---------------------------------------------------------------------------------------------- issue 16's fixes
def test_kernel_source_changes_with_any_kernel_file(tmp_path):
    """CuPy caches by source text: the text carries the files' digest, so an edited .cu or .cuh is recompiled."""
    from camrt.kernels.gpu import SOURCE_DIR, kernel_source

    folder = tmp_path / "cuda"
    shutil.copytree(SOURCE_DIR, folder)
    first = kernel_source(folder)
    assert first == kernel_source(folder)
    assert all(f'#include "{name}"' in first for name in ("masks.cu", "combine.cu"))
    for name in sorted(p.name for p in folder.iterdir() if p.suffix in (".cu", ".cuh")):
        original = (folder / name).read_text()
        (folder / name).write_text(original + "\n// edited\n")
        assert kernel_source(folder) != first, f"an edit of {name} must change the cached source"
        (folder / name).write_text(original)
    assert kernel_source(folder) == first


def _fake_cupy(compile_error=None):
    class Device:
        def __init__(self, index):
            self.index = index

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    class RawModule:
        def __init__(self, code, options):
            self.code, self.options = code, options

        def compile(self):
            if compile_error is not None:
                raise compile_error

    runtime = types.SimpleNamespace(getDeviceCount=lambda: 1)
    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime, Device=Device), RawModule=RawModule)


def test_nvrtc_failure_is_one_line_at_construction(monkeypatch):
    from camrt.kernels import gpu

    gpu._raw_module.cache_clear()
    error = RuntimeError("CuPy failed to load libnvrtc.so.12: OSError: libnvrtc.so.12: cannot open shared object\n"
                         "  more lines of the loader's story")
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(error))
    with pytest.raises(CamrtError, match=r"do not compile with NVRTC \(RuntimeError: CuPy failed to load libnvrtc") \
            as info:
        gpu.cuda_kernels()  # eager: before any launch
    assert "\n" not in str(info.value)
    gpu._raw_module.cache_clear()
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())
    assert gpu.cuda_kernels(threads=64).threads == 64
    gpu._raw_module.cache_clear()


class _Session:
    def __init__(self, providers):
        self.providers = providers

    def get_providers(self):
        return self.providers


@pytest.mark.parametrize("provider,got,ok", [
    ("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"], True),
    ("cuda", ["CPUExecutionProvider"], False),  # the CUDA provider failed to load: ONNX Runtime fell back to the CPU
    ("tensorrt", ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], True),
    ("tensorrt", ["CUDAExecutionProvider", "CPUExecutionProvider"], False),  # labelled TensorRT, running CUDA
])
def test_a_provider_that_did_not_load_is_one_line(provider, got, ok):
    from camrt.runtime.backends.onnxruntime_cuda import check_providers

    sessions = {"features": _Session(["TensorrtExecutionProvider", "CUDAExecutionProvider"]), "head": _Session(got)}
    if ok:
        check_providers(sessions, provider)
        return
    with pytest.raises(CamrtError, match="could not load its .*ExecutionProvider for the head graph") as info:
        check_providers(sessions, provider)
    assert "\n" not in str(info.value) and f"fell back to {got[0]}" in str(info.value)


def test_ort_tensorrt_cache_folder_and_profile(tmp_path):
    from camrt.runtime.backends.onnxruntime_cuda import trt_cache_dir, trt_profile_options

    folder = trt_cache_dir(tmp_path, "fp32", "1.23.0", "10.13.0.35", "NVIDIA H100 80GB HBM3", P)
    assert folder.parent == tmp_path
    others = [trt_cache_dir(tmp_path, "fp16", "1.23.0", "10.13.0.35", "NVIDIA H100 80GB HBM3", P),
              trt_cache_dir(tmp_path, "fp32", "1.24.0", "10.13.0.35", "NVIDIA H100 80GB HBM3", P),
              trt_cache_dir(tmp_path, "fp32", "1.23.0", "10.14.0", "NVIDIA H100 80GB HBM3", P),
              trt_cache_dir(tmp_path, "fp32", "1.23.0", "10.13.0.35", "NVIDIA H200", P),
              trt_cache_dir(tmp_path, "fp32", "1.23.0", "10.13.0.35", "NVIDIA H100 80GB HBM3", Profile(1, 8, 512))]
    assert len({folder, *others}) == 6, "precision, versions, GPU and profile each get their own engines"
    options = trt_profile_options({"image": (3, 224, 224), "activations": (512, 7, 7)}, Profile(1, 64, 256))
    assert options == {"trt_profile_min_shapes": "image:1x3x224x224,activations:1x512x7x7",
                       "trt_profile_opt_shapes": "image:64x3x224x224,activations:64x512x7x7",
                       "trt_profile_max_shapes": "image:256x3x224x224,activations:256x512x7x7"}


def test_ort_tensorrt_runner_asks_for_the_profile_no_tf32_and_checks_providers(tiny_bundle, tmp_path, monkeypatch):
    """OrtCudaRunner's session options with stubs for onnxruntime and CuPy: one explicit batch profile, the cache
    folder keyed by precision, TF32 off for fp32, and a provider check that sees the TensorRT provider missing."""
    from camrt.runtime.backends import onnxruntime_cuda as oc

    made = []

    class FakeOrt:
        __version__ = "1.23.0"

        @staticmethod
        def get_available_providers():
            return ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]

        SessionOptions = RunOptions = type("Options", (), {"add_run_config_entry": lambda *a: None})

    def sessions(ort, bundle, options, providers, engine):
        made.append(providers)
        return {"features": _Session(["CUDAExecutionProvider"]), "head": _Session(["CUDAExecutionProvider"])}

    cupy = types.SimpleNamespace(cuda=types.SimpleNamespace(
        Device=lambda i: types.SimpleNamespace(use=lambda: None), Stream=lambda non_blocking: types.SimpleNamespace(
            ptr=1234)))
    monkeypatch.setattr(oc, "import_ort_gpu", lambda provider: FakeOrt)
    monkeypatch.setattr(oc, "import_cupy", lambda: cupy)
    monkeypatch.setattr(oc, "cuda_kernels", lambda stream, device: None)
    monkeypatch.setattr(oc, "gpu_name", lambda device: "NVIDIA H100")
    monkeypatch.setattr(oc, "verified_sessions", sessions)
    monkeypatch.delenv("NVIDIA_TF32_OVERRIDE", raising=False)
    bundle = Bundle.load(tiny_bundle)
    with pytest.raises(CamrtError, match="could not load its TensorrtExecutionProvider for the features graph"):
        oc.OrtCudaRunner(bundle, provider="tensorrt", cache_dir=tmp_path, profile=Profile(1, 8, 32))
    import os

    assert os.environ["NVIDIA_TF32_OVERRIDE"] == "0"
    name, trt = made[0][0]
    assert name == "TensorrtExecutionProvider" and trt["trt_fp16_enable"] == "0"
    c, h, w = bundle.manifest.input_shape
    assert trt["trt_profile_max_shapes"].startswith(f"image:32x{c}x{h}x{w},activations:32x")
    assert Path(trt["trt_engine_cache_path"]).name.startswith("fp32-ort1.23.0-trt")
    assert made[0][1][1]["use_tf32"] == "0"  # the CUDA provider: no TF32 either


def test_native_tensorrt_checks_shape_and_address_returns():
    from camrt.runtime.backends.tensorrt import TrtRunner

    class Context:
        def __init__(self, shape_ok, address_ok):
            self.shape_ok, self.address_ok = shape_ok, address_ok

        def set_input_shape(self, name, shape):
            return self.shape_ok

        def set_tensor_address(self, name, pointer):
            return self.address_ok

        def execute_async_v3(self, stream):
            return True

    runner = TrtRunner.__new__(TrtRunner)
    runner.max_batch, runner.stream = 8, types.SimpleNamespace(ptr=0)
    runner._shapes = {"image": (3, 4, 4), "activations": (2, 1, 1)}
    buffer = types.SimpleNamespace(data=types.SimpleNamespace(ptr=0))
    runner._buffers = {"image": buffer, "activations": buffer}
    for shape_ok, address_ok, message in ((False, True, "refuses input image of shape"), (True, False, "no tensor")):
        runner._contexts = {"features": Context(shape_ok, address_ok)}
        with pytest.raises(CamrtError, match=message):
            runner._enqueue("features", "image", "activations", 4, for_host=False)
    runner._contexts = {"features": Context(True, True)}
    runner._enqueue("features", "image", "activations", 4, for_host=False)


class _FakeTorch:
    """Just enough torch for TorchCudaRunner's capture and stream logic: records autocast's arguments."""

    float16 = "float16"

    def __init__(self):
        self.autocasts, self.capturing = [], False
        torch = self

        class Graph:
            def replay(self):
                pass

        class GraphContext:
            def __init__(self, graph, stream=None):
                pass

            def __enter__(self):
                torch.capturing = True

            def __exit__(self, *exc):
                torch.capturing = False

        self.cuda = types.SimpleNamespace(CUDAGraph=Graph, graph=GraphContext)

    def no_grad(self):
        return nullcontext()

    def autocast(self, device, dtype=None, enabled=True, cache_enabled=True):
        self.autocasts.append((self.capturing, enabled, cache_enabled))
        return nullcontext()


def test_cuda_graph_capture_runs_autocast_without_its_weight_cache():
    from camrt.runtime.backends.torch import TorchCudaRunner

    runner = TorchCudaRunner.__new__(TorchCudaRunner)
    runner.torch, runner.autocast, runner._torch_stream, runner._input = _FakeTorch(), "float16", None, object()
    out = types.SimpleNamespace(float=lambda: "logits")
    runner._features, runner._head = (lambda x: x), (lambda x: out)
    graph, result = runner._capture()
    assert result == "logits"
    captured = [call for call in runner.torch.autocasts if call[0]]
    assert captured == [(True, True, False)], "the capture itself runs autocast with cache_enabled=False"
    runner.torch.autocasts.clear()
    runner._forward(object())
    assert runner.torch.autocasts == [(False, True, True)]  # eager runs keep the cache


def test_cupy_work_runs_on_the_runners_gpu():
    """cuda:1: CuPy's current device is switched to 1 around the runner's stream (it once stayed on GPU 0)."""
    from camrt.runtime.backends.device import EngineBuffers
    from camrt.runtime.backends.torch import TorchCudaRunner

    entered = []

    class Device:
        def __init__(self, index):
            self.index = index

        def __enter__(self):
            entered.append(("device", self.index))

        def __exit__(self, *exc):
            entered.append(("device-exit", self.index))

    class Stream:
        def __enter__(self):
            entered.append(("stream",))

        def __exit__(self, *exc):
            entered.append(("stream-exit",))

    cupy = types.SimpleNamespace(cuda=types.SimpleNamespace(Device=Device))
    for runner in (TorchCudaRunner.__new__(TorchCudaRunner), EngineBuffers()):
        entered.clear()
        runner.cupy, runner.stream = cupy, Stream()
        runner.device_index = runner.device_id = 1
        with runner.stream_context():
            assert entered == [("device", 1), ("stream",)]
        assert entered[2:] == [("stream-exit",), ("device-exit", 1)]


def _shape_arithmetic_graph(onnx, rng):
    """A float graph with shape arithmetic in float32 (Shape -> Cast(to=FLOAT) -> Mul by a Constant value_float ->
    Floor -> Cast(to=INT64) -> Resize sizes), a Constant value_floats on the data path, and Resize scales."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    inits = [nh.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32), "w"),
             nh.from_array(np.array([1, 1, 2, 2], np.float32), "scales"), nh.from_array(np.array([2, 3]), "idx"),
             nh.from_array(np.array([0]), "starts"), nh.from_array(np.array([2]), "ends")]
    nodes = [
        h.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
        h.make_node("Shape", ["y"], ["s"]),
        h.make_node("Gather", ["s", "idx"], ["hw"]),
        h.make_node("Cast", ["hw"], ["hwf"], to=T.FLOAT),
        h.make_node("Constant", [], ["two"], value_float=2.0),
        h.make_node("Mul", ["hwf", "two"], ["hw2"]),
        h.make_node("Floor", ["hw2"], ["hw2f"]),
        h.make_node("Cast", ["hw2f"], ["hw2i"], to=T.INT64),
        h.make_node("Slice", ["s", "starts", "ends"], ["nc"]),
        h.make_node("Concat", ["nc", "hw2i"], ["sizes"], axis=0),
        h.make_node("Resize", ["y", "", "", "sizes"], ["up"], mode="nearest"),
        h.make_node("Constant", [], ["halfc"], value_floats=[0.5]),
        h.make_node("Mul", ["up", "halfc"], ["scaled"]),
        h.make_node("Resize", ["y", "", "scales"], ["up2"], mode="nearest"),
        h.make_node("Add", ["scaled", "up2"], ["sum"]),
        h.make_node("Cast", ["sum"], ["sum32"], to=T.FLOAT),  # a float -> float Cast on the data path
        h.make_node("ReduceMean", ["sum32"], ["out"], axes=[2, 3], keepdims=0),
    ]
    graph = h.make_graph(nodes, "shape-arithmetic", [h.make_tensor_value_info("x", T.FLOAT, ["n", 3, 8, 8])],
                         [h.make_tensor_value_info("out", T.FLOAT, ["n", 4])], inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


def test_fp16_graph_is_strongly_typed_with_float32_shape_arithmetic():
    """TensorRT 11 builds strongly typed networks: every node's inputs must agree in type, with no implicit cast.
    onnx's checker and type-checking inference (check_type) apply the same rule to the converted graph."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from camrt.runtime.backends.fp16_onnx import convert_to_fp16

    rng = np.random.default_rng(int(np.random.SeedSequence().entropy % 2**32))
    model = _shape_arithmetic_graph(onnx, rng)
    half = convert_to_fp16(model)
    onnx.checker.check_model(half, full_check=True)
    onnx.shape_inference.infer_shapes(half, check_type=True, strict_mode=True)  # raises on any type mismatch
    inferred = onnx.shape_inference.infer_shapes(half)
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.output)}
    FLOAT, HALF = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert types["hwf"] == types["hw2"] == types["hw2f"] == FLOAT, "shape arithmetic stays float32"
    assert types["y"] == types["up"] == types["scaled"] == types["sum32"] == HALF, "the data path is float16"
    assert types["out"] == FLOAT, "outputs stay float32"
    assert not any(a.name in ("value_float", "value_floats") and n.output[0] != "two"
                   for n in half.graph.node for a in n.attribute)
    assert {i.name: i.data_type for i in half.graph.initializer}["scales"] == FLOAT  # ONNX fixes Resize's scales
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    ref, got = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
                for m in (model, half))
    np.testing.assert_allclose(got, ref, rtol=1e-2, atol=2e-3 * max(1.0, float(np.abs(ref).max())))


def test_bench_gpu_without_a_gpu_is_one_line_and_skips_what_a_backend_lacks(tmp_path, capsys, monkeypatch):
    from benchmarks import bench_gpu
    from camrt.runtime.backends import runner_options

    _block(monkeypatch, "cupy")
    assert bench_gpu.main(["--backend", "onnxruntime-cuda", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench_gpu: error:") and "CuPy" in err and err.count("\n") == 1
    # --precision fp16 with onnxruntime-cuda once reached the runner as a keyword it lacks (TypeError); the
    # benchmark now asks the registry, which refuses it in one line, and skips that pair
    with pytest.raises(CamrtError, match="--precision fp16: not available on backend onnxruntime-cuda"):
        runner_options("onnxruntime-cuda", None, "fp16")
    assert runner_options("tensorrt", None, "fp16") == {"precision": "fp16"}
    assert runner_options("torch", "cuda", "fp16") == {"device": "cuda", "precision": "fp16"}
    row = {"model": "resnet18", "precision": "fp32", "batch": 64, "kernel_write_GBps": 1.0, "fill_GBps": 2.0,
           "kernel_of_fill": 0.5, "engine_images_per_s": 3.0, "scorecam_s": 4.0, "explain_over_engine": 1.1}
    assert "| resnet18 | fp32 | 64 | 1.0 (2.0) | 0.5 |" in bench_gpu._table([row])
