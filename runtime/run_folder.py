"""A command's output folder: run.json (what made the results), the --resume checks, and refusing to mix runs.

``evaluate`` and ``explain-dataset`` both open their --out here: a new folder gets run.json (camrt version, record
version, bundle hash, settings); ``--resume`` continues only a folder made by the same settings and record version.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from camrt._version import __version__
from camrt.errors import InputError
from camrt.runtime.atomic import write_text
from camrt.runtime.bundle import Bundle
from camrt.runtime.records import RECORD_VERSION

RUN = "run.json"


def bundle_hash(bundle: Bundle | str | Path) -> str:
    """SHA-256 over the bundle's file hashes (its manifest's ``files``): the same for a copy of the same bundle."""
    loaded = bundle if isinstance(bundle, Bundle) else Bundle.load(Path(bundle))
    return hashlib.sha256(json.dumps(loaded.manifest.files, sort_keys=True).encode()).hexdigest()


def run_config(bundle: Bundle | str | Path, settings: dict[str, Any]) -> dict[str, Any]:
    """What makes two runs' results comparable: the bundle hash, then the settings."""
    return {"bundle_sha256": bundle_hash(bundle), **settings}


def open_run(out: str | Path, config: dict[str, Any], resume: bool, results: Sequence[str] = ()) -> Path:
    """Create ``out`` with its run.json, or, on ``resume``, check it was made with ``config``; a folder with run.json
    or files matching the globs ``results`` is refused without ``resume``. Each refusal is one line."""
    out, config = Path(out), json.loads(json.dumps(config))  # compared as run.json gives them back
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: {out} exists and is not a directory")
    run_path = out / RUN
    has_results = run_path.exists() or any(next(out.glob(pattern), None) for pattern in results)
    if has_results and not resume:
        raise InputError(f"--out: {out} already has results; add --resume to continue them, or choose another folder")
    if has_results:
        _check(out, config)
        return out
    out.mkdir(parents=True, exist_ok=True)
    payload = {"camrt_version": __version__, "record_version": RECORD_VERSION, **config}
    write_text(run_path, json.dumps(payload, indent=2) + "\n")
    return out


def _check(out: Path, config: dict[str, Any]) -> None:
    """Refuse to resume a folder that is not a camrt run of this record version and these settings."""
    run_path = out / RUN
    try:
        previous = json.loads(run_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"--resume: {out} has results but no {RUN}: not a camrt run folder; "
                         "choose another --out") from None
    except (OSError, ValueError):
        raise InputError(f"--resume: {run_path} is not valid JSON: not a camrt run folder; "
                         "choose another --out") from None
    if not isinstance(previous, dict) or "camrt_version" not in previous:
        raise InputError(f"--resume: {run_path} was not written by camrt; choose another --out")
    version = previous.get("record_version", 1)  # run.json had no record_version before version 2
    if version != RECORD_VERSION:
        age = "an older" if isinstance(version, int) and version < RECORD_VERSION else "another"
        raise InputError(f"--resume: {out} was written by {age} camrt ({previous['camrt_version']}, record version "
                         f"{version}; this one writes {RECORD_VERSION}) whose per-image records have other keys; "
                         "start a new --out, or resume it with the camrt that wrote it")
    changed = [key for key in config if previous.get(key) != config[key]]
    if changed:
        raise InputError(f"--resume: {out} was made with other settings ({', '.join(changed)}); "
                         "use the same ones or another --out")
