"""TensorRT engines for a bundle: built from its ONNX graphs, cached in the bundle (Polygraphy's loader half).

An engine is specific to a GPU, a TensorRT version, a precision and its batch profile, so the manifest's
``engines`` field keys each file by all four (``engine_key``) with its SHA-256; a timing cache per GPU and version
makes rebuilds fast. FP16 comes from the builder flag where TensorRT still has it (10.x), else from an FP16
copy of the graph (11.x builds strongly typed networks only).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from camrt.errors import BundleError, CamrtError, first_line
from camrt.runtime.bundle import ACTIVATIONS, IMAGE, MANIFEST, Bundle, sha256_file
from camrt.runtime.bundle_checks import bundle_file

if TYPE_CHECKING:
    import tensorrt as trt

PRECISIONS = ("fp32", "fp16")
GRAPHS = ("features", "head")
ENGINE_DIR = "engines"


def import_tensorrt() -> Any:
    """The tensorrt module, or one CamrtError line saying how to get it."""
    try:
        import tensorrt
    except ImportError:
        raise CamrtError("backend 'tensorrt' needs TensorRT 10 or 11: pip install camrt[tensorrt]") from None
    except Exception as exc:  # the wheel loads libnvinfer at import: a missing CUDA library or driver shows here
        raise CamrtError(f"TensorRT cannot load ({type(exc).__name__}: {first_line(exc)})") from None
    if not hasattr(tensorrt, "Builder"):  # only tensorrt-stubs (a namespace folder of .pyi files) is installed
        raise CamrtError("backend 'tensorrt' needs TensorRT 10 or 11 (only its type stubs are installed): "
                         "pip install camrt[tensorrt]")
    return tensorrt


@dataclass(frozen=True)
class Profile:
    """The optimisation profile's batch sizes: the engine accepts any batch in [min_batch, max_batch]."""

    min_batch: int = 1
    opt_batch: int = 64
    max_batch: int = 256

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise CamrtError(f"engine profile: need 1 <= min <= opt <= max batch, got {self}")


def engine_key(graph: str, gpu_name: str, trt_version: str, precision: str, profile: Profile) -> str:
    """The manifest key (and file stem) of one engine: graph, GPU, TensorRT version, precision and batch profile
    (an engine built for a smaller max batch must not stand in for a larger one)."""
    return f"{_engine_prefix(graph, gpu_name, trt_version, precision)}{_profile_suffix(profile)}"


def _engine_prefix(graph: str, gpu_name: str, trt_version: str, precision: str) -> str:
    if precision not in PRECISIONS:
        raise CamrtError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    return f"{graph}-{slug(gpu_name)}-trt{trt_version}-{precision}"


def _profile_suffix(profile: Profile) -> str:
    return f"-b{profile.min_batch}-{profile.opt_batch}-{profile.max_batch}"


def cached_profiles(bundle: Bundle, gpu: str, trt_version: str, precision: str) -> list[Profile]:
    """The batch profiles of the bundle's engine pairs for this GPU, version and precision, largest max first."""
    prefix = _engine_prefix("features", gpu, trt_version, precision)
    found = []
    for key in bundle.manifest.engines:
        match = re.fullmatch(re.escape(prefix) + r"-b(\d+)-(\d+)-(\d+)", key)
        if match:
            profile = Profile(*(int(g) for g in match.groups()))
            if engine_key("head", gpu, trt_version, precision, profile) in bundle.manifest.engines:
                found.append(profile)
    return sorted(found, key=lambda p: (p.max_batch, p.opt_batch), reverse=True)


def slug(text: str) -> str:
    """``text`` lower-cased with runs of anything but letters, digits and dots as one '-' (file-name safe)."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "gpu"


def gpu_name(device_id: int = 0) -> str:
    """The CUDA device's name (e.g. 'NVIDIA H100 80GB HBM3'), through CuPy."""
    from camrt.kernels.gpu import import_cupy

    name = import_cupy().cuda.runtime.getDeviceProperties(device_id)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def find_engines(bundle: Bundle, gpu: str, trt_version: str, precision: str,
                 profile: Profile) -> dict[str, bytes] | None:
    """The bundle's cached engines for this GPU, version, precision and profile: each read once (inside the
    bundle) and hash-checked, so the bytes TensorRT deserializes are the bytes verified; None if absent."""
    found = {}
    for graph in GRAPHS:
        entry = bundle.manifest.engines.get(engine_key(graph, gpu, trt_version, precision, profile))
        if not isinstance(entry, dict):
            return None
        path = bundle_file(bundle.root, str(entry.get("file", "")), str(bundle.root / MANIFEST))
        if not path.is_file():
            return None
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            raise BundleError(f"{path}: SHA-256 does not match the manifest (corrupt engine; delete it to rebuild)")
        found[graph] = data
    return found


def build_engines(
    bundle: Bundle, precision: str = "fp32", profile: Profile | None = None, device_id: int = 0,
    workspace_bytes: int = 4 << 30,
) -> dict[str, Path]:
    """Build both graphs' engines for this GPU, write them into the bundle and record them in its manifest."""
    trt_mod = import_tensorrt()
    profile = profile or Profile()
    gpu = gpu_name(device_id)
    logger: trt.ILogger = trt_mod.Logger(trt_mod.Logger.WARNING)
    folder = bundle.root / ENGINE_DIR
    folder.mkdir(exist_ok=True)
    cache_path = folder / f"timing-{slug(gpu)}-trt{trt_mod.__version__}.cache"
    m = bundle.manifest
    shapes = {"features": (IMAGE, tuple(m.input_shape)), "head": (ACTIVATIONS, tuple(m.activation_shape))}
    written = {}
    for graph in GRAPHS:
        key = engine_key(graph, gpu, trt_mod.__version__, precision, profile)
        onnx_path = bundle.features_path if graph == "features" else bundle.head_path
        name, shape = shapes[graph]
        plan = _build_one(trt_mod, logger, onnx_path, bundle.read_verified(onnx_path.name), name, shape, precision,
                          profile, workspace_bytes, cache_path)
        path = folder / f"{key}.plan"
        _atomic_bytes(path, plan)
        m.engines[key] = {
            "file": f"{ENGINE_DIR}/{path.name}", "sha256": sha256_file(path), "graph": graph, "gpu": gpu,
            "tensorrt": trt_mod.__version__, "precision": precision, "min_batch": profile.min_batch,
            "opt_batch": profile.opt_batch, "max_batch": profile.max_batch,
        }
        written[graph] = path
    _atomic_bytes(bundle.root / MANIFEST, (m.to_json() + "\n").encode())
    return written


def _build_one(
    trt_mod: Any, logger: trt.ILogger, onnx_path: Path, onnx_bytes: bytes, input_name: str, shape: tuple[int, ...],
    precision: str,
    profile: Profile, workspace_bytes: int, cache_path: Path,
) -> bytes:
    """One serialized engine from one ONNX graph, with the batch profile and the shared timing cache."""
    builder: trt.Builder = trt_mod.Builder(logger)
    network = builder.create_network(0)  # explicit batch (10.x default); strongly typed is 11.x's only mode
    parser: trt.OnnxParser = trt_mod.OnnxParser(network, logger)
    fp16_flag = getattr(trt_mod.BuilderFlag, "FP16", None)
    if precision == "fp16" and fp16_flag is None:
        from camrt.runtime.backends.fp16_onnx import fp16_onnx_bytes

        ok = parser.parse(fp16_onnx_bytes(onnx_bytes), str(onnx_path))
    else:  # the verified bytes, not the path: a graph swapped after the bundle was loaded is never built
        ok = parser.parse(onnx_bytes, str(onnx_path))
    if not ok:
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BundleError(f"{onnx_path}: TensorRT cannot parse it ({errors or 'no details'})")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt_mod.MemoryPoolType.WORKSPACE, workspace_bytes)
    if precision == "fp16" and fp16_flag is not None:
        config.set_flag(fp16_flag)
    tf32_flag = getattr(trt_mod.BuilderFlag, "TF32", None)
    if precision == "fp32" and tf32_flag is not None:
        config.clear_flag(tf32_flag)  # TF32 is on by default; FP32 engines must match the CPU to ~1e-5
    opt = builder.create_optimization_profile()
    batches = (profile.min_batch, profile.opt_batch, profile.max_batch)
    low, mid, high = (trt_mod.Dims([batch, *shape]) for batch in batches)
    opt.set_shape(input_name, low, mid, high)
    config.add_optimization_profile(opt)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise CamrtError(f"{onnx_path}: TensorRT could not build an engine (see its log above)")
    _atomic_bytes(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(plan))


def _atomic_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def describe_engines(bundle: Bundle) -> str:
    """The bundle's engines, one per line (for messages and ``camrt info``)."""
    return "\n".join(f"{key}: {json.dumps(value, sort_keys=True)}" for key, value in bundle.manifest.engines.items())
