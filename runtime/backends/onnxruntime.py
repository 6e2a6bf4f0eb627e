"""ONNX Runtime backend: the default, CPU by default, with threads and graph optimisation exposed; INT8 from the
bundle's calibrated QDQ graph (``camrt calibrate --engine onnxruntime``) for the masked-input passes."""

from __future__ import annotations

from typing import Any

import numpy as np

from camrt.errors import BundleError, CamrtError, InputError, first_line
from camrt.runtime.backends.base import Closing, Runner, require
from camrt.runtime.backends.ort_sessions import verified_sessions
from camrt.runtime.bundle import ACTIVATIONS, IMAGE, LOGITS, Bundle

_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
           "all": "ORT_ENABLE_ALL"}


def _import_ort() -> Any:
    return require("onnxruntime", "backend 'onnxruntime' needs the onnxruntime package: pip install camrt[cpu]")


PRECISIONS = ("fp32", "int8")


class OnnxrtRunner(Closing):
    """Two ONNX Runtime sessions, features and head; masked inputs go through both in turn, or at ``int8``
    through the bundle's calibrated whole-model QDQ graph (the clean pass stays FP32, so the class never moves)."""

    name = "onnxruntime"

    def __init__(
        self,
        bundle: Bundle,
        providers: list[str] | None = None,
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        graph_optimization: str = "all",
        spinning: bool = False,
        precision: str = "fp32",
    ) -> None:
        """spinning: let ONNX Runtime's worker threads busy-wait after each run. Off by default: the engine loop
        makes the next batch's masked inputs on the host between runs, and spinning threads take its cores."""
        ort = _import_ort()
        if graph_optimization not in _LEVELS:
            raise CamrtError(f"graph_optimization must be one of {sorted(_LEVELS)}, got {graph_optimization!r}")
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[graph_optimization])
        if intra_op_threads:
            options.intra_op_num_threads = int(intra_op_threads)
        if inter_op_threads:
            options.inter_op_num_threads = int(inter_op_threads)
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.providers = providers or ["CPUExecutionProvider"]
        if precision not in PRECISIONS:
            raise InputError(f"--precision {precision}: backend onnxruntime takes {', '.join(PRECISIONS)} on the CPU")
        record = bundle.int8_record("onnxruntime") if precision == "int8" else None
        self.precision = precision
        self._sessions = verified_sessions(ort, bundle, options, self.providers, "ONNX Runtime")
        if record is not None:
            path = bundle.root / record["graph"]
            try:
                self._sessions["logits"] = ort.InferenceSession(bundle.read_verified(record["graph"]), options,
                                                                providers=self.providers)
            except Exception as exc:  # onnxruntime raises its own exception types
                raise BundleError(f"{path}: ONNX Runtime cannot load it ({first_line(exc)})") from None

    @classmethod
    def create(cls, bundle: Bundle, device: str = "cpu", **options: Any) -> Runner:
        """The registry's factory: this runner on the CPU, ONNX Runtime's CUDA runner on 'cuda' or 'cuda:N'."""
        if device == "cpu":
            return cls(bundle, **options)
        if options.pop("precision", "fp32") != "fp32":
            raise InputError("--precision int8: backend onnxruntime runs INT8 on the CPU only; drop --device")
        from camrt.runtime.backends.onnxruntime_cuda import OrtCudaRunner

        return OrtCudaRunner.create(bundle, device=device, provider="cuda", **options)

    def _release(self) -> None:
        self._sessions.clear()  # the sessions free their memory when the last reference goes

    def features(self, images: np.ndarray) -> np.ndarray:
        self._check_open()
        return self._sessions["features"].run([ACTIVATIONS], {IMAGE: images})[0]

    def head(self, activations: np.ndarray) -> np.ndarray:
        self._check_open()
        return self._sessions["head"].run([LOGITS], {ACTIVATIONS: activations})[0]

    def logits(self, images: np.ndarray) -> np.ndarray:
        self._check_open()
        if "logits" in self._sessions:
            return self._sessions["logits"].run([LOGITS], {IMAGE: images})[0]
        return self.head(self.features(images))
