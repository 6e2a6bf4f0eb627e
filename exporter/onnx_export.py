"""Write a torch graph as one self-contained ONNX file, and verify the exported pair with ONNX Runtime.

Exporter choice: the TorchScript exporter (``dynamo=False``) is used up to its maximum opset (20): on resnet18 it
exports in ~0.4 s against ~5 s for the dynamo exporter, with equal accuracy.  It is deprecated, so any failure
of it (or an opset above 20) falls back to the dynamo exporter, whose side ``.onnx.data`` file is inlined.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from camrt.errors import ExportError, first_line
from camrt.exporter.split import example_input

MIN_OPSET = 13
MAX_OPSET = 23  # the newest opset the dynamo exporter writes (torch 2.9+)
TORCHSCRIPT_MAX_OPSET = 20
# Tolerance: max_abs_diff <= RTOL * max(1, max|reference|).  Both sides are fp32, but ONNX Runtime fuses conv+bn
# and picks other conv algorithms, so rounding differs and grows with depth and with the output magnitude; seen:
# ~1e-6 relative (resnet50 activations 9e-5 at magnitude 77, EfficientNet-Lite0 2e-5 at 6).  1e-4 leaves ~100x
# headroom, while a wrong op or constant shows up at 1e-2 relative or more.
RTOL = 1e-4
VERIFY_BATCHES = (2, 3)  # the traced batch size and another one: proves the batch axis is dynamic


def check_opset(opset: int) -> int:
    """Validate the ONNX opset: ops Score-CAM needs are stable from 13; torch writes up to 23."""
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset: expected an integer from {MIN_OPSET} to {MAX_OPSET}, got {opset!r}")
    return opset


def export_graph(
    module: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str, opset: int
) -> str:
    """Export ``module`` (one input, one output, dynamic batch) to ``path``; return the exporter used."""
    if opset <= TORCHSCRIPT_MAX_OPSET:
        try:
            _quietly(_export, module, example, path, input_name, output_name, opset, False)
            return "torchscript"
        except Exception:  # deprecated exporter: on any failure try the dynamo one before giving up
            path.unlink(missing_ok=True)
    try:
        _quietly(_export, module, example, path, input_name, output_name, opset, True)
    except Exception as exc:
        raise ExportError(f"{path.name}: ONNX export failed ({type(exc).__name__}: {first_line(exc)})") from None
    _inline_external_data(path)
    return "dynamo"


def _quietly(function: Callable[..., object], *args: object) -> None:
    """Call ``function(*args)`` with the exporters' warnings and prints silenced, C++ ones included."""
    with _silenced_fds(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            function(*args)


@contextlib.contextmanager
def _silenced_fds() -> Iterator[None]:
    """Point file descriptors 1 and 2 at /dev/null (the TorchScript exporter prints graphs from C++)."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = (os.dup(1), os.dup(2))
    except (OSError, ValueError):  # no usable descriptors: Python-level silencing must do
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def _export(
    module: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str, opset: int, dynamo: bool
) -> None:
    """torch.onnx.export with a dynamic batch axis: dynamic_axes for TorchScript, dynamic_shapes for dynamo."""
    batch: dict[str, Any] = (
        {"external_data": False, "dynamic_shapes": {input_name: {0: torch.export.Dim("batch", min=1, max=4096)}}}
        if dynamo
        else {"dynamic_axes": {input_name: {0: "batch"}, output_name: {0: "batch"}}}
    )
    torch.onnx.export(
        module,
        (example,),
        str(path),
        dynamo=dynamo,
        opset_version=opset,
        input_names=[input_name],
        output_names=[output_name],
        verbose=False,
        **batch,
    )


def _inline_external_data(path: Path) -> None:
    """If the exporter wrote weights to a side ``<name>.data`` file, fold them back into ``path``."""
    side = path.with_name(path.name + ".data")
    if side.exists():
        model = onnx.load(str(path), load_external_data=True)
        onnx.save(model, str(path), save_as_external_data=False)
        side.unlink()


def check_model(path: Path) -> None:
    """Run the ONNX checker on ``path`` (by path, so large graphs are fine)."""
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise ExportError(f"{path.name}: the exported graph fails the ONNX checker ({first_line(exc)})") from None


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # no busy-waiting threads: verification shares the CPU with torch (and, on a 2-core box, with everything)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def verify_onnx(
    model: nn.Module, features: nn.Module, features_path: Path, head_path: Path, input_shape: tuple[int, int, int]
) -> dict[str, float]:
    """Compare ONNX Runtime (CPU) with torch on fresh random batches; fail above tolerance.

    Checks the feature graph (activations), the head alone on torch activations (logits), and the
    composition head(features(x)) against ``model(x)``; returns max abs diffs and the tolerances used.
    """
    features_session, head_session = _session(features_path), _session(head_path)
    where = {
        "activations": features_path.name,
        "head_logits": head_path.name,
        "composed_logits": f"{features_path.name} + {head_path.name}",
    }
    diffs = dict.fromkeys(where, 0.0)
    scale = dict.fromkeys(where, 1.0)
    for seed, batch in enumerate(VERIFY_BATCHES, start=1):
        image = example_input(input_shape, batch=batch, seed=seed)
        with torch.no_grad():
            reference = model(image).numpy()
            activations = features(image).numpy()
        onnx_activations = features_session.run(None, {features_session.get_inputs()[0].name: image.numpy()})[0]
        head_name = head_session.get_inputs()[0].name
        head_logits = head_session.run(None, {head_name: activations})[0]
        composed = head_session.run(None, {head_name: onnx_activations})[0]
        for key, got, ref in (
            ("activations", onnx_activations, activations),
            ("head_logits", head_logits, reference),
            ("composed_logits", composed, reference),
        ):
            if got.shape != ref.shape:
                raise ExportError(
                    f"{where[key]}: ONNX Runtime gives {key} of shape {got.shape} for batch {batch}, torch {ref.shape}"
                )
            diff = float(np.abs(got - ref).max())
            diffs[key] = max(diffs[key], float("inf") if np.isnan(diff) else diff)
            scale[key] = max(scale[key], float(np.abs(ref).max()))
    report: dict[str, float] = {"rtol": RTOL}
    for key, diff in diffs.items():
        tolerance = RTOL * scale[key]
        report[f"{key}_max_abs_diff"] = diff
        report[f"{key}_tolerance"] = tolerance
        if not diff <= tolerance:
            raise ExportError(
                f"{where[key]}: ONNX Runtime {key} differ from torch by {diff:.3g} (tolerance {tolerance:.3g}); "
                "the exported graph is not faithful"
            )
    return report
