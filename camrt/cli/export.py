"""``camrt export MODEL --out DIR``: split a torch model at a layer and write a bundle (the one command with torch)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from camrt.cli.args import positive_int
from camrt.cli.info import dims, print_fields, verification
from camrt.errors import CamrtError, InputError

NAME = "export"
MAX_BATCH = 256


def register(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``export`` to the CLI's subparsers."""
    p = subparsers.add_parser(NAME, parents=parents, help="split a torch model at a layer and write a bundle")
    p.add_argument("model", metavar="MODEL",
                   help="a torchvision model name, efficientnet_lite0, or package.module:factory")
    p.add_argument("--layer", "-l", default=None,
                   help="the target layer's module name (default: the last layer with a spatial map)")
    p.add_argument("--out", "-o", required=True, type=Path, help="the bundle folder to write")
    p.add_argument("--weights", default=None, metavar="NAME|FILE",
                   help="torchvision weights (DEFAULT, IMAGENET1K_V1, ...; from torch's cache or downloaded) or a "
                        "state_dict file (default: DEFAULT for torchvision names, the model's own otherwise)")
    p.add_argument("--random-weights", action="store_true",
                   help="export untrained, randomly initialised weights (recorded in the bundle; commands warn)")
    p.add_argument("--input-size", type=size, default=None, metavar="S",
                   help="the crop size S or HxW (default: the model's)")
    p.add_argument("--resize", type=positive_int, default=None, metavar="R",
                   help="resize the short side to R before the crop (default: the model's, else crop / 0.875)")
    p.add_argument("--opset", type=positive_int, default=18, metavar="N", help="ONNX opset (default: 18)")
    p.add_argument("--tensorrt", action="store_true",
                   help="also build TensorRT engines for this GPU into the bundle (needs camrt[tensorrt])")
    p.add_argument("--fp16", action="store_true", help="with --tensorrt: FP16 engines (default: FP32)")
    p.add_argument("--max-batch", type=positive_int, default=MAX_BATCH, metavar="N",
                   help=f"with --tensorrt: the engines' largest batch (default: {MAX_BATCH})")


def size(text: str) -> tuple[int, int]:
    """An argparse type: ``224`` or ``224x192`` as (H, W)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected S or HxW in pixels, got {text!r}")
    return (values[0], values[-1])


def run(args: argparse.Namespace) -> int:
    """Load MODEL, split it at --layer, write the bundle to --out and print what was written."""
    started = time.perf_counter()
    if (args.fp16 or args.max_batch != MAX_BATCH) and not args.tensorrt:
        raise InputError("--fp16 and --max-batch apply to TensorRT engines: add --tensorrt")
    if args.tensorrt:  # a missing GPU package fails before the export, not after it
        from camrt.kernels.gpu import import_cupy
        from camrt.runtime.backends.tensorrt_build import import_tensorrt

        import_tensorrt()
        import_cupy()
    try:  # the one place the CLI imports torch
        from camrt.exporter import export
        from camrt.exporter.models import load_model
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("torch", "torchvision", "onnx", "onnxscript"):
            raise CamrtError(f"export needs {exc.name}: pip install camrt[torch]") from None
        raise
    if os.getcwd() not in sys.path:  # the console script does not put the working folder on the path
        sys.path.insert(0, os.getcwd())  # ... but pkg.module:factory specs are meant to be found there
    model, info = load_model(args.model, weights=args.weights, random_weights=args.random_weights)
    height, width = args.input_size or _info_size(info.get("input_size"))
    resize = args.resize if args.resize is not None or args.input_size is not None else info.get("resize")
    given = {key: info[key] for key in ("mean", "std", "class_names") if info.get(key) is not None}
    bundle = export(
        model, args.layer, args.out, input_shape=(3, height, width), model_name=info.get("name") or args.model,
        resize=resize, opset=args.opset, random_weights=info["random_weights"], **given,
    )
    engines: list[tuple[str, str]] = []
    if args.tensorrt:
        from camrt.runtime.backends.tensorrt_build import Profile, build_engines

        profile = Profile(1, min(64, args.max_batch), args.max_batch)
        built = build_engines(bundle, "fp16" if args.fp16 else "fp32", profile)
        engines = [("engines", ", ".join(str(path.relative_to(bundle.root)) for path in built.values()))]
    m = bundle.manifest
    print_fields([
        ("bundle", str(bundle.root)),
        ("model", m.model_name),
        ("layer", m.target_layer),
        ("input", dims(m.input_shape)),
        ("activations", dims(m.activation_shape)),
        ("classes", str(m.num_classes)),
        ("verification", _worst_error(m.verification)),
        *engines,
        ("seconds", f"{time.perf_counter() - started:.1f}"),
    ])
    return 0


def _info_size(value: Any) -> tuple[int, int]:
    """load_model's input_size (S, (H, W) or (C, H, W)) as (H, W); 224 when it gives none."""
    if value is None:
        return (224, 224)
    if isinstance(value, int):
        return (value, value)
    values = [int(v) for v in value]
    return (values[-2], values[-1]) if len(values) >= 2 else (values[0], values[0])


def _worst_error(values: dict[str, float]) -> str:
    """The largest measured difference (keys with diff or error) of ONNX Runtime against torch."""
    errors = [float(v) for k, v in values.items() if ("diff" in k or "error" in k) and isinstance(v, (int, float))]
    return f"max abs error {max(errors):.3g} (ONNX Runtime vs torch)" if errors else verification(values)
