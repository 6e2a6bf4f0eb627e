"""A bundle on disk: ``manifest.json`` plus the feature and head ONNX graphs, validated on load.

Loading needs only the standard library: any bundle problem becomes a one-line :class:`BundleError`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from camrt._version import __version__
from camrt.errors import BundleError, InputError, missing
from camrt.runtime.atomic import write_bytes
from camrt.runtime.bundle_checks import EXTERNAL_SUFFIX, bundle_file, check_manifest
from camrt.runtime.quantizers import QUANTIZERS

FORMAT = "camrt-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
IMAGE, ACTIVATIONS, LOGITS = "image", "activations", "logits"  # stable tensor names in both graphs
FEATURES_FILE, HEAD_FILE = "features.onnx", "head.onnx"
INT8_PREFIX = "int8-"  # camrt calibrate's graphs: int8-<sha256 prefix>.xml/.bin (OpenVINO IR), .onnx (ONNX QDQ)


@dataclass
class Preprocessing:
    """How a photo becomes the model input: resize the short side, centre-crop, scale to [0, 1], normalise."""

    resize: int
    crop: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"


@dataclass
class Manifest:
    """Everything the runtime needs to know about a bundle, as written to ``manifest.json``."""

    model_name: str
    target_layer: str
    input_shape: tuple[int, int, int]
    activation_shape: tuple[int, int, int]
    num_classes: int
    preprocessing: Preprocessing
    opset: int
    files: dict[str, str]  # file name -> sha256
    verification: dict[str, float]
    class_names: list[str] | None = None
    engines: dict[str, Any] = field(default_factory=dict)
    random_weights: bool = False  # exported with --random-weights: the maps explain no trained model
    int8: dict[str, dict[str, Any]] | None = None  # camrt calibrate's INT8 graphs, one record per engine
    camrt_version: str = __version__
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> Manifest:
        if data.get("format") != FORMAT:
            raise BundleError(f"{where}: not a camrt bundle manifest (format {data.get('format')!r})")
        version = data.get("format_version")
        if not isinstance(version, int):
            raise BundleError(f"{where}: format_version is missing")
        if version > FORMAT_VERSION:
            raise BundleError(
                f"{where}: bundle format {version} is newer than this camrt ({__version__}) reads "
                f"(format {FORMAT_VERSION}); upgrade camrt or re-export the bundle"
            )
        try:
            pre = Preprocessing(**{**data["preprocessing"], "crop": tuple(data["preprocessing"]["crop"])})
            manifest = cls(
                model_name=str(data["model_name"]),
                target_layer=str(data["target_layer"]),
                input_shape=_triple(data["input_shape"]),
                activation_shape=_triple(data["activation_shape"]),
                num_classes=int(data["num_classes"]),
                preprocessing=pre,
                opset=int(data["opset"]),
                files=dict(data["files"]),
                verification=dict(data["verification"]),
                class_names=data.get("class_names"),
                engines=dict(data.get("engines") or {}),
                random_weights=data.get("random_weights") is True,  # absent before it was recorded
                int8=int8_records(data.get("int8")),  # absent before camrt calibrate; older camrts ignore it
                camrt_version=str(data.get("camrt_version", "?")),
                format_version=version,
            )
            crop = tuple(int(v) for v in pre.crop)
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{where}: manifest is incomplete or malformed ({type(exc).__name__}: {exc})") from None
        if crop != manifest.input_shape[1:]:  # a photo must preprocess to exactly the model's input
            raise BundleError(f"{where}: preprocessing crops to {' x '.join(map(str, crop))}, the model input is "
                              f"{manifest.input_shape[1]} x {manifest.input_shape[2]}")
        check_manifest(manifest, where)
        return manifest


def int8_records(value: Any) -> Any:
    """The manifest's ``int8`` as {engine: record}; a single record (the first camrt calibrate, OpenVINO only)
    becomes {its engine: it}. Anything else is left for check_int8 to refuse."""
    if isinstance(value, dict) and isinstance(value.get("engine"), str):
        return {value["engine"]: value}
    return value


def _referenced(manifest: Manifest, name: str) -> bool:
    """Whether a listed file still belongs to the bundle: anything but a superseded INT8 graph does."""
    used = {record.get(key) for engine, record in (manifest.int8 or {}).items()
            for key in (QUANTIZERS[engine].files if engine in QUANTIZERS else ())}
    return not name.startswith(INT8_PREFIX) or name in used


def _triple(value: Any) -> tuple[int, int, int]:
    a, b, c = (int(v) for v in value)
    return (a, b, c)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Bundle:
    """A validated bundle directory: manifest fields, and paths to the graphs."""

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = root
        self.manifest = manifest

    @classmethod
    def load(cls, path: str | Path, verify_hashes: bool = True) -> Bundle:
        """Read and check ``path/manifest.json`` and every file it lists (presence, SHA-256)."""
        root = Path(path)
        if not root.is_dir():
            raise BundleError(f"{root}: bundle directory {missing(root)}")
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise BundleError(f"{manifest_path}: missing; {root} is not a complete camrt bundle")
        try:
            data = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{manifest_path}: unreadable or corrupt JSON ({exc})") from None
        if not isinstance(data, dict):
            raise BundleError(f"{manifest_path}: manifest is not a JSON object")
        manifest = Manifest.from_dict(data, str(manifest_path))
        for required in (FEATURES_FILE, HEAD_FILE):
            if required not in manifest.files:
                raise BundleError(f"{manifest_path}: lists no {required}")
        for name, expected in manifest.files.items():
            file = bundle_file(root, name, str(manifest_path))
            if not file.is_file():
                raise BundleError(f"{file}: missing from the bundle")
            if verify_hashes and sha256_file(file) != expected:
                raise BundleError(f"{file}: SHA-256 does not match the manifest (corrupt or modified)")
        return cls(root, manifest)

    def read_verified(self, name: str) -> bytes:
        """The bytes of the listed file ``name``, read once and checked against the manifest's SHA-256: what the
        engines load, so a file swapped after ``load`` is refused, never run."""
        path = bundle_file(self.root, name, str(self.root / MANIFEST))
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BundleError(f"{path}: cannot read it ({exc.strerror or exc})") from None
        if hashlib.sha256(data).hexdigest() != self.manifest.files.get(name):
            raise BundleError(f"{path}: SHA-256 does not match the manifest (corrupt or modified)")
        return data

    def external_data(self) -> dict[str, bytes]:
        """The graphs' external data files (``*.onnx.data``) listed in the manifest, verified: name -> bytes."""
        return {name: self.read_verified(name) for name in self.manifest.files if name.endswith(EXTERNAL_SUFFIX)}

    def add_files(self, files: dict[str, bytes], **fields: Any) -> None:
        """Write ``files`` into the bundle, then the manifest listing them with their SHA-256 and ``fields`` set,
        each by one rename: a reader sees the old manifest with the old files or the new with the new. New names
        only (content-addressed by the caller), so no listed file is ever overwritten; the listed files the new
        manifest drops (those of the same field before) are deleted after it lands."""
        m = self.manifest
        digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
        taken = [name for name in files if m.files.get(name, digests[name]) != digests[name]]
        if taken:
            raise BundleError(f"{self.root}: {taken[0]} is listed with other contents; refusing to overwrite it")
        before = set(m.files)
        for name, data in files.items():
            if name not in m.files:  # a listed name with the same SHA-256 holds these bytes already
                write_bytes(bundle_file(self.root, name, str(self.root / MANIFEST)), data)
        m.files.update(digests)
        for key, value in fields.items():
            setattr(m, key, value)
        dropped = {name for name in before if not _referenced(m, name)} - {FEATURES_FILE, HEAD_FILE}
        for name in dropped:
            del m.files[name]
        check_manifest(m, str(self.root / MANIFEST))
        write_bytes(self.root / MANIFEST, (m.to_json() + "\n").encode("utf-8"))
        for name in dropped:
            (self.root / name).unlink(missing_ok=True)

    @property
    def features_path(self) -> Path:
        return self.root / FEATURES_FILE

    @property
    def head_path(self) -> Path:
        return self.root / HEAD_FILE

    def int8_record(self, engine: str) -> dict[str, Any]:
        """The INT8 record for ``engine`` (``camrt calibrate``); a one-line error naming the command that makes it."""
        record = (self.manifest.int8 or {}).get(engine)
        if not record:
            flag = "" if engine == "openvino" else f" --engine {engine}"
            raise InputError(f"--precision int8: {self.root} has no calibrated INT8 graph for {engine}; run "
                             f"'camrt calibrate {self.root} IMAGES{flag}' first")
        return record

    def class_name(self, index: int) -> str | None:
        names = self.manifest.class_names
        return names[index] if names and 0 <= index < len(names) else None

    def __repr__(self) -> str:
        m = self.manifest
        return (
            f"Bundle({str(self.root)!r}, model={m.model_name}, layer={m.target_layer}, "
            f"input={m.input_shape}, activations={m.activation_shape}, classes={m.num_classes})"
        )
