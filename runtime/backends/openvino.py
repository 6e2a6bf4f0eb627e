"""OpenVINO backend on the CPU: FP32, BF16 and FP16 through OpenVINO's inference-precision hint, INT8 from the
bundle's calibrated graph (``camrt calibrate``).

The clean pass (``features`` and ``head``: the activations the masks and the map are made of, and the predicted
class) always runs at FP32; only the masked-input passes (``logits``, K per image, where the time goes) run at
the chosen precision, on the whole model compiled as one graph. Every graph is read from the bytes whose SHA-256
was checked (``Bundle.read_verified``), never reopened by path.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from camrt.errors import BundleError, CamrtError, InputError, first_line
from camrt.runtime.backends.base import Closing, Runner, require
from camrt.runtime.bundle import FEATURES_FILE, HEAD_FILE, Bundle
from camrt.runtime.bundle_checks import check_graph_shapes

MISSING = "backend 'openvino' needs the openvino package: pip install camrt[openvino]"
HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}  # INFERENCE_PRECISION_HINT per precision
CAPABILITY = {"bf16": "BF16", "fp16": "FP16", "int8": "INT8"}  # OPTIMIZATION_CAPABILITIES entry each one needs
PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT")
DEFAULT_HINT = "LATENCY"  # measured faster for the engine loop's synchronous batches (README "Backends and precisions")


def reason(exc: BaseException) -> str:
    """OpenVINO's message without its ``Exception from src/...`` location lines: the first line that says why."""
    lines = [line.strip() for line in str(exc).splitlines()]
    return next((line for line in lines if line and not line.startswith("Exception from")), first_line(exc))


def import_openvino() -> Any:
    """The openvino module, or a one-line error naming the extra that installs it."""
    return require("openvino", MISSING)


def capabilities(core: Any, device: str = "CPU") -> tuple[str, ...]:
    """What the device computes natively (``FP32``, ``BF16``, ``FP16``, ``INT8``, ...), as OpenVINO reports it."""
    return tuple(str(c) for c in core.get_property(device, "OPTIMIZATION_CAPABILITIES"))


def check_precision(core: Any, precision: str) -> None:
    """A one-line error for a precision this CPU lacks (OpenVINO would quietly run it at another one)."""
    if precision not in HINTS:
        raise InputError(f"--precision {precision}: backend openvino takes {', '.join(HINTS)}")
    need = CAPABILITY.get(precision)
    have = capabilities(core)
    if need is not None and need not in have:
        raise InputError(f"--precision {precision}: this CPU has no native {need} ({', '.join(have)}); "
                         "use --precision fp32" + ("" if precision == "int8" or "BF16" not in have else " or bf16"))


def read_onnx(ov: Any, core: Any, bundle: Bundle, name: str) -> Any:
    """The listed ONNX graph ``name`` as an OpenVINO model, from verified bytes; external data, where the graph
    has any, only from the manifest's verified files, written into a private temporary folder."""
    graph = bundle.read_verified(name)
    external = bundle.external_data()
    path = bundle.root / name
    try:
        if not external:
            return core.read_model(graph)
        with tempfile.TemporaryDirectory(prefix="camrt-openvino-") as folder:
            for file, data in ((name, graph), *external.items()):
                (Path(folder) / file).write_bytes(data)
            model = core.read_model(str(Path(folder) / name))
            return model.clone()  # weights copied out of the files before they go
    except Exception as exc:  # OpenVINO raises RuntimeError and its own types
        raise BundleError(f"{path}: OpenVINO cannot read it ({reason(exc)})") from None


def read_int8(ov: Any, core: Any, bundle: Bundle) -> Any:
    """The bundle's calibrated INT8 whole model (OpenVINO IR), from verified bytes; a one-line error naming
    ``camrt calibrate`` when it has none."""
    record = bundle.int8_record("openvino")
    xml, weights = bundle.read_verified(record["graph"]), bundle.read_verified(record["weights"])
    try:
        return core.read_model(xml.decode("utf-8"), ov.Tensor(np.frombuffer(weights, np.uint8).copy()))
    except Exception as exc:
        raise BundleError(f"{bundle.root / record['graph']}: OpenVINO cannot read it ({reason(exc)})") from None


def whole_model(ov: Any, features: Any, head: Any) -> Any:
    """features then head as one model (image -> logits), so the masked inputs run as one graph. Rewires
    ``head`` in place: pass freshly read models."""
    activations = features.get_results()[0].input_value(0)  # the producer's port (model.output is the Result's)
    for consumer in head.get_parameters()[0].output(0).get_target_inputs():
        consumer.replace_source_output(activations)
    return ov.Model(head.get_results(), features.get_parameters(), "camrt-logits")


class _Shape:
    """An OpenVINO port's shape as check_graph_shapes reads it: a list, dynamic dimensions as None."""

    def __init__(self, port: Any) -> None:
        self.shape = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]


def _shapes(ports: Any) -> list[_Shape]:
    return [_Shape(port) for port in ports]


class Compiled:
    """One compiled model and its infer requests (one per stream), reused for every batch."""

    def __init__(self, core: Any, model: Any, config: dict[str, Any], streams: bool) -> None:
        self.model = core.compile_model(model, "CPU", config)
        count = int(self.model.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")) if streams else 1
        self.requests = [self.model.create_infer_request() for _ in range(max(1, count))]

    def run(self, array: np.ndarray) -> np.ndarray:
        """The output for ``array``, split over the requests (streams) when there are several, else one call."""
        array = np.ascontiguousarray(array, dtype=np.float32)
        if len(self.requests) == 1 or array.shape[0] < 2 * len(self.requests):
            return np.array(self.requests[0].infer({0: array}, share_inputs=True)[0])
        parts = np.array_split(array, len(self.requests))
        for request, part in zip(self.requests, parts):
            request.start_async({0: part}, share_inputs=True)
        for request in self.requests:
            request.wait()
        return np.concatenate([np.array(request.get_output_tensor(0).data) for request in self.requests])


class OpenvinoRunner(Closing):
    """The bundle's graphs compiled by OpenVINO for the CPU: features and head at FP32 (the clean pass), the
    whole model at ``precision`` (the masked inputs)."""

    name = "openvino"

    def __init__(self, bundle: Bundle, precision: str = "fp32", threads: int | None = None,
                 hint: str = DEFAULT_HINT) -> None:
        """precision: fp32, bf16, fp16 or int8 (the bundle's calibrated graph); threads: INFERENCE_NUM_THREADS;
        hint: OpenVINO's PERFORMANCE_HINT, LATENCY (one stream) or THROUGHPUT (a batch split over its streams)."""
        ov = import_openvino()
        if hint not in PERFORMANCE_HINTS:
            raise InputError(f"hint: expected one of {', '.join(PERFORMANCE_HINTS)}, got {hint!r}")
        core = ov.Core()
        check_precision(core, precision)
        self.precision = precision
        self.bundle = bundle
        base: dict[str, Any] = {"PERFORMANCE_HINT": hint}
        if threads:
            base["INFERENCE_NUM_THREADS"] = int(threads)
        exact = {**base, "INFERENCE_PRECISION_HINT": "f32"}
        features, head = (read_onnx(ov, core, bundle, name) for name in (FEATURES_FILE, HEAD_FILE))
        for key, model, name in (("features", features, FEATURES_FILE), ("head", head, HEAD_FILE)):
            check_graph_shapes(bundle.manifest, key, _shapes(model.inputs), _shapes(model.outputs), bundle.root / name)
        fast = read_int8(ov, core, bundle) if precision == "int8" else whole_model(
            ov, read_onnx(ov, core, bundle, FEATURES_FILE), read_onnx(ov, core, bundle, HEAD_FILE))
        streams = hint == "THROUGHPUT"
        try:
            self._features = Compiled(core, features, exact, streams)
            self._head = Compiled(core, head, exact, streams)
            self._logits = Compiled(core, fast, {**base, "INFERENCE_PRECISION_HINT": HINTS[precision]}, streams)
        except Exception as exc:
            raise CamrtError(f"backend 'openvino': cannot compile {bundle.root} for the CPU ({reason(exc)})") \
                from None

    @classmethod
    def create(cls, bundle: Bundle, device: str = "cpu", **options: Any) -> Runner:
        """The registry's factory (the CPU only; the registry refuses other devices)."""
        return cls(bundle, **options)

    def _release(self) -> None:
        self._features = self._head = self._logits = None  # type: ignore[assignment]

    def features(self, images: np.ndarray) -> np.ndarray:
        self._check_open()
        return self._features.run(images)

    def head(self, activations: np.ndarray) -> np.ndarray:
        self._check_open()
        return self._head.run(activations)

    def logits(self, images: np.ndarray) -> np.ndarray:
        self._check_open()
        return self._logits.run(images)
