"""``camrt info BUNDLE``: print a bundle's manifest, after checking it and its files' hashes, and what a pass of
the head graph alone (Ablation-CAM, Recipro-CAM) costs against the whole network."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from camrt.cli.args import add_command
from camrt.runtime.bundle import FEATURES_FILE, HEAD_FILE, Bundle

NAME = "info"


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``info`` to the CLI's subparsers."""
    p = add_command(subparsers, NAME, parents, "print a bundle's manifest", __doc__)
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")


RANDOM_WEIGHTS = "random (exported with --random-weights: its maps explain no trained model)"


def run(args: argparse.Namespace) -> int:
    """Print the bundle's manifest (as JSON with --json)."""
    bundle = Bundle.load(args.bundle)
    m = bundle.manifest
    if args.json:
        print(m.to_json())
        return 0
    pre = m.preprocessing
    names = m.class_names or []
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    files = ", ".join(f"{name} ({_file_size(bundle.root / name)}, sha256 {digest[:12]})"
                      for name, digest in m.files.items())
    print_fields([
        ("bundle", str(bundle.root)),
        ("model", m.model_name),
        ("weights", RANDOM_WEIGHTS if m.random_weights else "as exported (not --random-weights)"),
        ("layer", m.target_layer),
        ("input", f"{dims(m.input_shape)} (resize {pre.resize}, crop {dims(pre.crop)}, {pre.interpolation}, "
                  f"mean {_floats(pre.mean)}, std {_floats(pre.std)})"),
        ("activations", dims(m.activation_shape)),
        ("classes", f"{m.num_classes}" + (f" ({shown})" if names else " (no names)")),
        ("opset", str(m.opset)),
        ("verification", verification(m.verification)),
        ("version", f"camrt {m.camrt_version}, format {m.format_version}"),
        ("files", files),
        *([("engines", ", ".join(sorted(m.engines)))] if m.engines else []),
        ("head cost", head_cost(bundle)),
    ])
    return 0


HEAVY_FLOPS, HEAVY_PARAMETERS = 0.10, 0.50  # a head above either share of the network is called heavy


def head_cost(bundle: Bundle) -> str:
    """The head graph's share of the network's FLOPs and parameters, and a note when the head is heavy."""
    try:
        head, features = (graph_cost(bundle.read_verified(name)) for name in (HEAD_FILE, FEATURES_FILE))
    except ImportError:
        return "not counted (counting FLOPs reads the ONNX graphs with the onnx package: pip install onnx)"
    flops, params = head[0] + features[0], head[1] + features[1]
    flop_share, param_share = head[0] / max(flops, 1), head[1] / max(params, 1)
    text = (f"{head[0] / 1e9:.3g} of {flops / 1e9:.3g} GFLOPs per image ({flop_share:.2%}), {head[1] / 1e6:.3g} M "
            f"of {params / 1e6:.3g} M parameters ({param_share:.1%}): what one Ablation-CAM or Recipro-CAM pass "
            "costs against a whole-network pass")
    if flop_share >= HEAVY_FLOPS:
        text += (f" -- a heavy head: a head pass is {flop_share:.0%} of a whole one, so head-only passes save "
                 "little (a layer nearer the output saves more)")
    elif param_share >= HEAVY_PARAMETERS:
        text += (f" -- a heavy head: it holds {param_share:.0%} of the weights (fully connected layers, as VGG's), "
                 "read by every head pass: at small batches a pass costs more than its FLOPs say")
    return text


COUNTED = ("Conv", "Gemm", "MatMul")


def graph_cost(data: bytes) -> tuple[int, int]:
    """(FLOPs per image, parameters) of one ONNX graph: 2 x the multiply-adds of Conv, Gemm and MatMul (batch 1),
    and the initializers' elements. Shapes from onnx's shape inference; where it cannot tell them (padding computed
    at run time, as EfficientNet's), from one ONNX Runtime run of the graph on zeros."""
    import onnx
    from onnx import shape_inference

    model = onnx.load_model_from_string(data)
    graph = shape_inference.infer_shapes(model).graph
    shapes: dict[str, list[int | None]] = {t.name: list(t.dims) for t in graph.initializer}
    for info in (*graph.input, *graph.value_info, *graph.output):
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    counted = [node for node in graph.node if node.op_type in COUNTED]
    if any(None in shapes.get(node.output[0], [None])[1:] for node in counted):
        shapes.update(_shapes_by_running(model, [node.output[0] for node in counted]))
    flops = 0
    for node in counted:
        out = [1 if d is None else d for d in shapes.get(node.output[0], [])]  # the batch: 1
        if node.op_type == "Conv":
            macs_per_output = _product(shapes.get(node.input[1], [])[1:])  # C_in / groups x kernel
        else:
            a = shapes.get(node.input[0], [])
            trans_a = any(att.name == "transA" and att.i for att in node.attribute)
            inner = (a[0] if trans_a else a[-1]) if a else None
            if inner is None:  # the weight's shape: B (K, N), or (N, K) under transB
                b = shapes.get(node.input[1], [])
                trans_b = any(att.name == "transB" and att.i for att in node.attribute)
                inner = (b[-1] if trans_b else b[-2]) if len(b) >= 2 else 0
            macs_per_output = inner or 0
        flops += 2 * _product(out) * macs_per_output
    return flops, sum(_product(list(t.dims)) for t in graph.initializer)


def _shapes_by_running(model: Any, names: list[str]) -> dict[str, list[int | None]]:
    """The shapes of ``names`` from one ONNX Runtime run of ``model`` on zeros (batch 1)."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                              for name in names)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
            for i in session.get_inputs()}
    return {name: list(out.shape) for name, out in zip(names, session.run(names, feed))}


def _product(values: Sequence[int | None]) -> int:
    total = 1
    for v in values:
        total *= int(v or 0)
    return total


def print_fields(rows: Sequence[tuple[str, str]]) -> None:
    """``key: value`` lines with the values aligned."""
    width = max(len(key) for key, _ in rows) + 1
    for key, value in rows:
        print(f"{key + ':':<{width}} {value}")


def dims(shape: Sequence[int]) -> str:
    """A shape as ``3 x 224 x 224``."""
    return " x ".join(str(int(v)) for v in shape)


def verification(values: dict[str, float]) -> str:
    """The manifest's verification numbers as ``key=value, ...`` (``none`` when empty)."""
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()) or "none"


def _floats(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def _file_size(path: Path) -> str:
    try:
        size = float(path.stat().st_size)
    except OSError:
        return "missing"
    for unit in ("bytes", "kB", "MB"):
        if size < 1000 or unit == "MB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"
