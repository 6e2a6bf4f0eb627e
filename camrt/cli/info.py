"""``camrt info BUNDLE``: print a bundle's manifest, after checking it and its files' hashes."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from camrt.cli.args import add_command
from camrt.runtime.bundle import Bundle

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
    ])
    return 0


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
