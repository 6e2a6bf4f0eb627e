"""The ``camrt`` command: ``export`` a model to a bundle, ``explain`` photos with it, ``evaluate`` the maps, ``info``.

Bad input ends in one line, ``camrt: error: <message>``, and exit status 2 (``--debug`` shows the traceback).
torch is imported only on the ``export`` path, so ``explain`` and ``info`` run where only onnxruntime is installed.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from camrt._version import __version__
from camrt.errors import BundleError, CamrtError, InputError
from camrt.runtime.backends import BACKENDS, on_gpu
from camrt.runtime.bundle import Bundle
from camrt.runtime.dataset import images_in
from camrt.runtime.methods import METHODS, get_convention, list_conventions

USAGE_ERROR = 2
SUMMARY = "summary.json"


class _UsageError(Exception):
    """An argparse error, raised instead of printed so :func:`main` reports it on one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see '{self.prog} --help')")


# ---------------------------------------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand (exposed for the docs and the tests)."""
    debug = _Parser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
    parser = _Parser(prog="camrt", description="Exact, fast Score-CAM-family explanations on ONNX Runtime.")
    parser.add_argument("--version", action="version", version=f"camrt {__version__}")
    parser.add_argument("--debug", action="store_true", default=False, help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    export = sub.add_parser("export", parents=[debug], help="split a torch model at a layer and write a bundle")
    export.add_argument("model", metavar="MODEL",
                        help="a torchvision model name, efficientnet_lite0, or package.module:factory")
    export.add_argument("--layer", "-l", default=None,
                        help="the target layer's module name (default: the last layer with a spatial map)")
    export.add_argument("--out", "-o", required=True, type=Path, help="the bundle folder to write")
    export.add_argument("--weights", default=None, help="a state_dict file to load (default: the model's own)")
    export.add_argument("--input-size", type=_size, default=None, metavar="S",
                        help="the crop size S or HxW (default: the model's)")
    export.add_argument("--resize", type=_positive_int, default=None, metavar="R",
                        help="resize the short side to R before the crop (default: the model's, else crop / 0.875)")
    export.add_argument("--opset", type=_positive_int, default=18, metavar="N", help="ONNX opset (default: 18)")
    export.add_argument("--tensorrt", action="store_true",
                        help="also build TensorRT engines for this GPU into the bundle (needs camrt[tensorrt])")
    export.add_argument("--fp16", action="store_true", help="with --tensorrt: FP16 engines (default: FP32)")
    export.add_argument("--max-batch", type=_positive_int, default=256, metavar="N",
                        help="with --tensorrt: the engines' largest batch (default: 256)")
    export.set_defaults(func=_cmd_export)

    conventions = "; ".join(f"{m}: {', '.join(c)}" for m, c in list_conventions().items())
    explain = sub.add_parser(
        "explain", parents=[debug], help="explain photos with a bundle: a .npy map, a .png overlay, summary.json",
        epilog=f"conventions per method: {conventions}",
    )
    explain.add_argument("bundle", metavar="BUNDLE", type=Path, help="a bundle folder (from camrt export)")
    explain.add_argument("inputs", metavar="INPUTS", nargs="+", type=Path,
                         help="image files, or folders (their images, sorted by name)")
    explain.add_argument("--method", "-m", choices=list(METHODS), default="scorecam", help="default: scorecam")
    explain.add_argument("--convention", "-c", default="paper",
                         help="whose implementation to match exactly (default: paper)")
    explain.add_argument("--out", "-o", required=True, type=Path, help="the folder to write the results to")
    add_backend_arguments(explain)
    explain.add_argument("--batch-size", "-b", type=_positive_int, default=64, metavar="N",
                         help="masked inputs per forward pass (default: 64)")
    explain.add_argument("--target", "-t", default=None, metavar="CLASS",
                         help="explain this class index or name (default: each image's predicted class)")
    explain.add_argument("--seed", type=int, default=None, metavar="S", help="noise seed for sscam")
    explain.add_argument("--option", "-O", action="append", default=[], metavar="KEY=VALUE",
                         help="a method option, e.g. num_samples=10 or std=2.0 (repeatable)")
    explain.add_argument("--alpha", type=float, default=0.5, help="heat-map weight in the overlay (default: 0.5)")
    explain.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    explain.set_defaults(func=_cmd_explain)

    info = sub.add_parser("info", parents=[debug], help="print a bundle's manifest")
    info.add_argument("bundle", metavar="BUNDLE", type=Path, help="a bundle folder")
    info.add_argument("--json", action="store_true", help="print the manifest as JSON")
    info.set_defaults(func=_cmd_info)

    from camrt import cli_dataset, cli_evaluate  # imported here: they use this module's helpers

    cli_evaluate.add_parser(sub, [debug])
    cli_dataset.add_parser(sub, [debug])
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _size(text: str) -> tuple[int, int]:
    """``224`` or ``224x192`` as (H, W)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected S or HxW in pixels, got {text!r}")
    return (values[0], values[-1])


def _option_value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _parse_options(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as method keyword arguments (ints, floats, else strings)."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--option: expected KEY=VALUE, got {item!r}")
        options[key.strip().replace("-", "_")] = _option_value(value.strip())
    return options


# ---------------------------------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(f"camrt: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    try:
        return int(args.func(args))
    except (CamrtError, OSError, ValueError) as exc:
        if args.debug:
            raise
        print(f"camrt: error: {_one_line(exc)}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("camrt: interrupted", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# ---------------------------------------------------------------------------------------------- export
def _cmd_export(args: argparse.Namespace) -> int:
    """Load MODEL, split it at --layer, write the bundle to --out and print what was written."""
    started = time.perf_counter()
    if (args.fp16 or args.max_batch != 256) and not args.tensorrt:
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
    model, info = load_model(args.model, weights=args.weights)
    height, width = args.input_size or _info_size(info.get("input_size"))
    resize = args.resize if args.resize is not None or args.input_size is not None else info.get("resize")
    given = {key: info[key] for key in ("mean", "std", "class_names") if info.get(key) is not None}
    bundle = export(
        model, args.layer, args.out, input_shape=(3, height, width), model_name=info.get("name") or args.model,
        resize=resize, opset=args.opset, **given,
    )
    engines: list[tuple[str, str]] = []
    if args.tensorrt:
        from camrt.runtime.backends.tensorrt_build import Profile, build_engines

        profile = Profile(1, min(64, args.max_batch), args.max_batch)
        built = build_engines(bundle, "fp16" if args.fp16 else "fp32", profile)
        engines = [("engines", ", ".join(str(path.relative_to(bundle.root)) for path in built.values()))]
    m = bundle.manifest
    _print_fields([
        ("bundle", str(bundle.root)),
        ("model", m.model_name),
        ("layer", m.target_layer),
        ("input", _dims(m.input_shape)),
        ("activations", _dims(m.activation_shape)),
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


# ---------------------------------------------------------------------------------------------- info
def _cmd_info(args: argparse.Namespace) -> int:
    """Print the bundle's manifest, after checking it and its files' hashes."""
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
    _print_fields([
        ("bundle", str(bundle.root)),
        ("model", m.model_name),
        ("layer", m.target_layer),
        ("input", f"{_dims(m.input_shape)} (resize {pre.resize}, crop {_dims(pre.crop)}, {pre.interpolation}, "
                  f"mean {_floats(pre.mean)}, std {_floats(pre.std)})"),
        ("activations", _dims(m.activation_shape)),
        ("classes", f"{m.num_classes}" + (f" ({shown})" if names else " (no names)")),
        ("opset", str(m.opset)),
        ("verification", _verification(m.verification)),
        ("version", f"camrt {m.camrt_version}, format {m.format_version}"),
        ("files", files),
        *([("engines", ", ".join(sorted(m.engines)))] if m.engines else []),
    ])
    return 0


def _print_fields(rows: Sequence[tuple[str, str]]) -> None:
    width = max(len(key) for key, _ in rows) + 1
    for key, value in rows:
        print(f"{key + ':':<{width}} {value}")


def _dims(shape: Sequence[int]) -> str:
    return " x ".join(str(int(v)) for v in shape)


def _floats(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def _verification(values: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()) or "none"


def _worst_error(values: dict[str, float]) -> str:
    """The largest measured difference (keys with diff or error) of ONNX Runtime against torch."""
    errors = [float(v) for k, v in values.items() if ("diff" in k or "error" in k) and isinstance(v, (int, float))]
    return f"max abs error {max(errors):.3g} (ONNX Runtime vs torch)" if errors else _verification(values)


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


# ---------------------------------------------------------------------------------------------- explain
def _cmd_explain(args: argparse.Namespace) -> int:
    """Explain every input image; write <stem>.npy, <stem>.png and summary.json; 2 if any image failed."""
    from tqdm import tqdm

    from camrt.runtime.overlay import atomic_write

    started = time.perf_counter()
    options = _parse_options(args.option)
    get_convention(args.method, args.convention, **options)  # a bad method, convention or option fails first
    if not 0.0 <= args.alpha <= 1.0:
        raise InputError(f"--alpha: must be in [0, 1], got {args.alpha}")
    explainer = make_explainer(args)
    bundle = explainer.bundle
    target = _resolve_target(args.target, bundle)
    files = collect_images(args.inputs, warn=_warn)
    out = _prepare_out(args.out)

    records: list[dict[str, Any]] = []
    with tqdm(total=len(files), unit="image", file=sys.stderr, disable=True if args.quiet else None,
              dynamic_ncols=True) as bar:
        for path, stem in zip(files, output_stems(files), strict=True):
            try:
                records.append(_explain_one(explainer, path, stem, out, args, options, target, _postfix(bar, path)))
            except CamrtError as exc:  # this photo only: report it, go on with the others
                message = _one_line(exc)
                message = message if message.startswith(str(path)) else f"{path}: {message}"
                bar.write(f"camrt: warning: {message}; skipped", file=sys.stderr)
                records.append({"file": str(path), "status": "skipped", "error": message})
            bar.update(1)

    summary = _summary(args, bundle, records, time.perf_counter() - started)
    atomic_write(out / SUMMARY, lambda handle: handle.write((json.dumps(summary, indent=2) + "\n").encode()))
    totals = summary["totals"]
    skipped = f" ({totals['skipped']} skipped)" if totals["skipped"] else ""
    print(f"explained {totals['explained']} of {totals['images']} images{skipped}: {out / SUMMARY}")
    return USAGE_ERROR if totals["skipped"] else 0


def make_explainer(args: argparse.Namespace) -> Any:
    """The Explainer for BUNDLE on --backend with --device, --precision and --threads (explain and evaluate)."""
    from camrt.runtime.explainer import Explainer

    backend_options = _backend_options(args)
    try:
        return Explainer(args.bundle, backend=args.backend, **backend_options)
    except (BundleError, InputError):
        raise
    except CamrtError as exc:  # a missing GPU, driver or package: say which flag asked for it
        raise CamrtError(f"--backend {args.backend}: {exc}") from None


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """--backend, --device, --precision and --threads, shared by explain and evaluate."""
    parser.add_argument("--backend", choices=BACKENDS, default="onnxruntime", help="default: onnxruntime")
    parser.add_argument("--device", default=None, metavar="DEV",
                        help="cpu, cuda or cuda:N (default: cpu; cuda for the GPU-only backends)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                        help="GPU backends: engine precision (bf16: torch only; default: fp32)")
    parser.add_argument("--threads", type=_positive_int, default=None, metavar="T", help="CPU threads of the backend")


def _backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """--threads, --device and --precision as the chosen backend's keyword arguments."""
    gpu = on_gpu(args.backend, args.device)
    options: dict[str, Any] = {} if args.device is None else {"device": args.device}
    if args.threads:
        if gpu:
            raise InputError("--threads: a CPU option; the GPU backends have none")
        options["intra_op_threads" if args.backend == "onnxruntime" else "threads"] = args.threads
    if args.precision == "fp32":
        return options
    if not gpu:
        raise InputError(f"--precision {args.precision}: a GPU option; add --device cuda")
    if args.backend in ("torch", "tensorrt") and (args.precision == "fp16" or args.backend == "torch"):
        return {**options, "precision": args.precision}
    if args.backend == "onnxruntime-tensorrt" and args.precision == "fp16":
        return {**options, "fp16": True}
    raise InputError(f"--precision {args.precision}: not available on backend {args.backend} "
                     "(fp16: tensorrt, onnxruntime-tensorrt, torch; bf16: torch)")


def _explain_one(
    explainer: Any, path: Path, stem: str, out: Path, args: argparse.Namespace, options: dict[str, Any],
    target: int | None, progress: Callable[[int, int], None],
) -> dict[str, Any]:
    """Explain one photo, write <stem>.npy and <stem>.png, and return its summary record."""
    from camrt.runtime.overlay import atomic_write, save_overlay
    from camrt.runtime.preprocess import load_image, normalize, resize_and_crop

    pre = explainer.bundle.manifest.preprocessing
    rgb = np.asarray(resize_and_crop(load_image(path), pre))
    result = explainer.explain(
        normalize(rgb, pre)[None], method=args.method, convention=args.convention, targets=target,
        batch_size=args.batch_size, seed=args.seed, progress=progress, **options,
    )
    saliency = np.ascontiguousarray(result.saliency[0], dtype=np.float32)
    atomic_write(out / f"{stem}.npy", lambda handle: np.save(handle, saliency))
    save_overlay(rgb, saliency, out / f"{stem}.png", alpha=args.alpha)
    return _record(path, stem, result, explainer.bundle)


def _postfix(bar: Any, path: Path, every: float = 0.1) -> Callable[[int, int], None]:
    """A progress callback showing the passes done on this photo in the bar, redrawn at most every 0.1 s."""
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= every:
            last[0] = now
            bar.set_postfix_str(f"{path.name}: {done}/{total} passes", refresh=True)

    return progress


def collect_images(inputs: Sequence[Path], warn: Callable[[str], None] | None = None) -> list[Path]:
    """Files as given (bad ones fail later, per image) and each folder's images by name (not recursive)."""
    files: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            found = images_in(item)
            if not found and warn is not None:
                warn(f"{item}: no images in this folder")
            files.extend(found)
        else:
            files.append(item)
    if not files:
        raise InputError(f"INPUTS: no images found in {', '.join(str(p) for p in inputs)}")
    return files


def output_stems(files: Sequence[Path]) -> list[str]:
    """One output name per input: its stem, with -2, -3, ... where two inputs share one (case-insensitively)."""
    seen: set[str] = set()
    stems = []
    for path in files:
        stem, n = path.stem or "image", 1
        while (candidate := stem if n == 1 else f"{stem}-{n}").lower() in seen or candidate.lower() == "summary":
            n += 1
        seen.add(candidate.lower())
        stems.append(candidate)
    return stems


def _resolve_target(value: str | None, bundle: Bundle) -> int | None:
    """--target as a class index in range: an integer, or one of the bundle's class names."""
    if value is None:
        return None
    classes = bundle.manifest.num_classes
    try:
        index = int(value)
    except ValueError:
        names = bundle.manifest.class_names or []
        if value in names:
            return names.index(value)
        if not names:
            raise InputError(f"--target: expected a class index in [0, {classes}), got {value!r}") from None
        close = difflib.get_close_matches(value, names, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise InputError(f"--target: no class named {value!r} in this bundle{hint}") from None
    if not 0 <= index < classes:
        raise InputError(f"--target: class index {index} out of range [0, {classes})")
    return index


def _prepare_out(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _record(path: Path, stem: str, result: Any, bundle: Bundle) -> dict[str, Any]:
    """One explained image's line in summary.json."""
    probs = result.probabilities[0]
    predicted = int(np.argmax(result.logits[0]))
    target = int(result.targets[0])
    return {
        "file": str(path),
        "status": "ok",
        "saliency": f"{stem}.npy",
        "overlay": f"{stem}.png",
        "predicted": predicted,
        "predicted_name": bundle.class_name(predicted),
        "probability": float(probs[predicted]),
        "target": target,
        "target_name": bundle.class_name(target),
        "target_probability": float(probs[target]),
        "passes_run": int(result.passes_run),
        "passes_saved": int(result.passes_saved),
        "seconds": round(float(result.seconds), 4),
        **({"seed": int(result.seed)} if result.seed is not None else {}),
    }


def _summary(args: argparse.Namespace, bundle: Bundle, records: list[dict[str, Any]], seconds: float) -> dict:
    done = [r for r in records if r["status"] == "ok"]
    m = bundle.manifest
    return {
        "camrt_version": __version__,
        "bundle": str(bundle.root),
        "model": m.model_name,
        "layer": m.target_layer,
        "input_shape": list(m.input_shape),
        "method": args.method,
        "convention": args.convention,
        "options": _parse_options(args.option),
        "backend": args.backend,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "images": records,
        "totals": {
            "images": len(records),
            "explained": len(done),
            "skipped": len(records) - len(done),
            "passes_run": sum(r["passes_run"] for r in done),
            "passes_saved": sum(r["passes_saved"] for r in done),
            "explain_seconds": round(sum(r["seconds"] for r in done), 4),
            "seconds": round(seconds, 4),
        },
    }


def _warn(message: str) -> None:
    print(f"camrt: warning: {message}", file=sys.stderr)
