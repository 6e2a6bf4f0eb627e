"""The checks a bundle passes before anything runs it: manifest types and bounds, file names confined to the
bundle folder, and the graphs' own input and output shapes against the manifest (README "Trust and safety")."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from camrt.errors import BundleError
from camrt.runtime.quantizers import QUANTIZERS

MAX_SIDE = 8192  # largest model input side (pixels) a manifest may declare
MAX_CHANNELS = 65536  # largest activation channel count K
MAX_CLASSES = 1_000_000
EXTERNAL_SUFFIX = ".data"  # ONNX external data files (``head.onnx.data``): listed and hashed like the graphs
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class Manifest(Protocol):
    """The fields of runtime/bundle.py's ``Manifest`` these checks read (a protocol, so bundle.py imports this
    module and not the other way round)."""

    input_shape: tuple[int, int, int]
    activation_shape: tuple[int, int, int]
    num_classes: int
    preprocessing: Any
    class_names: list[str] | None
    files: dict[str, str]
    int8: dict[str, dict[str, Any]] | None


def check_manifest(manifest: Manifest, where: str) -> None:
    """Types, lengths and bounds of a parsed manifest; a one-line BundleError naming the field."""
    c, height, width = manifest.input_shape
    k, h, w = manifest.activation_shape
    _bounded(where, "input_shape", (height, width), MAX_SIDE)
    if c != 3:
        raise BundleError(f"{where}: input_shape has {c} channels; camrt bundles take RGB images (3)")
    _bounded(where, "activation_shape", (k,), MAX_CHANNELS)
    _bounded(where, "activation_shape", (h, w), max(height, width))
    _bounded(where, "num_classes", (manifest.num_classes,), MAX_CLASSES)
    pre = manifest.preprocessing
    _bounded(where, "preprocessing.resize", (pre.resize,), 4 * MAX_SIDE)
    for name, values, positive in (("mean", pre.mean, False), ("std", pre.std, True)):
        if (not isinstance(values, (list, tuple)) or len(values) != 3
                or not all(isinstance(v, (int, float)) and math.isfinite(v) and (v > 0 or not positive)
                           for v in values)):
            raise BundleError(f"{where}: preprocessing.{name} must be three {'positive' if positive else 'finite'} "
                              f"numbers, got {values!r}")
    names = manifest.class_names
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise BundleError(f"{where}: class_names must be a list of strings")
    if names is not None and len(names) != manifest.num_classes:
        raise BundleError(f"{where}: class_names has {len(names)} names for {manifest.num_classes} classes")
    for name, digest in manifest.files.items():
        plain_name(name, where)
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise BundleError(f"{where}: files[{name!r}] is not a SHA-256 hex digest")
    check_int8(manifest.int8, manifest.files, where)


def check_int8(records: Any, files: dict[str, str], where: str) -> None:
    """The INT8 records (``camrt calibrate``): None, or {engine: record} for the engines in QUANTIZERS, each
    naming files listed in ``files`` (so hashed): an OpenVINO graph and weights, an ONNX Runtime QDQ graph."""
    if records is None:
        return
    if not isinstance(records, dict) or not all(isinstance(r, dict) for r in records.values()):
        raise BundleError(f"{where}: int8 must map an engine ({', '.join(QUANTIZERS)}) to its record")
    for engine, record in records.items():
        if engine not in QUANTIZERS or record.get("engine") != engine:
            raise BundleError(f"{where}: int8.{engine}: not an INT8 record of {', '.join(QUANTIZERS)}")
        for key in QUANTIZERS[engine].files:
            if not isinstance(record.get(key), str) or record[key] not in files:
                raise BundleError(f"{where}: int8.{engine}.{key} must name a file listed in files, "
                                  f"got {record.get(key)!r}")


def _bounded(where: str, field: str, values: Sequence[Any], most: int) -> None:
    if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= most for v in values):
        raise BundleError(f"{where}: {field} must hold integers in [1, {most}], got {list(values)}")


def plain_name(name: Any, where: str) -> str:
    """A manifest file name: a relative path with no ``..``, no absolute or drive part, no backslash."""
    if (not isinstance(name, str) or not name or name.startswith(("/", "\\")) or "\\" in name or ":" in name
            or any(part in ("", ".", "..") for part in name.split("/"))):
        raise BundleError(f"{where}: file name {name!r} is not a plain relative name inside the bundle")
    return name


def bundle_file(root: Path, name: str, where: str) -> Path:
    """``root/name`` for a plain ``name``, refused when it or a symlink on its way leads out of the bundle."""
    path = root / plain_name(name, where)
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
        raise BundleError(f"{where}: {name!r} leads out of the bundle folder (a symlink); refused")
    return path


def check_graph_shapes(manifest: Manifest, graph: str, inputs: Sequence[Any], outputs: Sequence[Any],
                       path: Path) -> None:
    """The ONNX graph's own input and output shapes (ONNX Runtime's NodeArg ``shape``; symbolic dims pass)
    against the manifest's: ``graph`` is ``features`` (image -> activations) or ``head`` (-> logits)."""
    c, height, width = manifest.input_shape
    expected = {"features": ((c, height, width), manifest.activation_shape),
                "head": (manifest.activation_shape, (manifest.num_classes,))}[graph]
    for what, args, want in (("input", inputs, expected[0]), ("output", outputs, expected[1])):
        if len(args) != 1:
            raise BundleError(f"{path}: has {len(args)} {what}s, a camrt {graph} graph has one")
        shape = list(args[0].shape)[1:]
        if len(shape) != len(want) or any(isinstance(g, int) and g != m for g, m in zip(shape, want)):
            raise BundleError(f"{path}: its {what} is {list(args[0].shape)}, the manifest says [batch, "
                              f"{', '.join(map(str, want))}]")
