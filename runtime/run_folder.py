"""A command's output folder: run.json (what made the results), the --resume checks, and refusing to mix runs.

``evaluate`` and ``explain-dataset`` both open their --out here: a new folder gets run.json (camrt version, record
version, command, bundle hash, settings); ``--resume`` continues only a folder made by the same command, settings and
record version. A folder that holds other files is never written to; one writer at a time holds the folder's lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from camrt._version import __version__
from camrt.errors import InputError
from camrt.runtime.atomic import write_text
from camrt.runtime.bundle import INT8_PREFIX, Bundle
from camrt.runtime.records import RECORD_VERSION

RUN = "run.json"
LOCK = ".camrt.lock"  # flock'ed by the one writer of a run folder


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt is, so the same cleanup commits the finished images."""

    exit_status = 143  # 128 + SIGTERM, as a shell reports a process ended by it


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (schedulers, containers, ``kill``) raises :class:`Terminated` in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated(f"terminated (signal {signum})")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def locked(out: str | Path) -> Iterator[Path]:
    """``out`` created, and held with an exclusive lock (``flock`` on its .camrt.lock) for the block: a second
    writer on the same folder gets a one-line error instead of mixing its rows with the first's."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise InputError(f"--out: {out} is in use by another camrt run; wait for it to end or choose another "
                         "folder") from None
    try:
        yield out
    finally:
        os.close(fd)  # releases the lock


def refuse_foreign(out: Path, command: str) -> None:
    """A one-line error when ``out`` holds files but no run.json: it is not a camrt folder, and nothing of it is
    replaced or deleted."""
    if out.is_dir() and not (out / RUN).exists() and any(p.name != LOCK for p in out.iterdir()):
        raise InputError(f"--out: {out} is not empty and is not a camrt {command} folder (it has no {RUN}); "
                         "choose a new or empty folder")


def open_output(out: str | Path, command: str) -> Path:
    """``out`` for a command that adds to its folder run after run (``explain``): new, empty, or made by the same
    command (its run.json says so); anything else is refused in one line."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: {out} exists and is not a directory")
    refuse_foreign(out, command)
    if (out / RUN).exists():
        _check_command(out, read_run(out), command)
        return out
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / RUN, json.dumps({"camrt_version": __version__, "command": command}, indent=2) + "\n")
    return out


def bundle_hash(bundle: Bundle | str | Path) -> str:
    """SHA-256 over the bundle's file hashes (its manifest's ``files``), its INT8 graphs left out: the same for a copy
    of the same bundle, and unchanged by ``camrt calibrate``, which changes no result of a run at another
    precision (a run at INT8 pins its own graph: :func:`run_config`)."""
    loaded = bundle if isinstance(bundle, Bundle) else Bundle.load(Path(bundle))
    files = {name: digest for name, digest in loaded.manifest.files.items() if not name.startswith(INT8_PREFIX)}
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def run_config(bundle: Bundle | str | Path, settings: dict[str, Any], engine: str | None = None,
               precision: str | None = None) -> dict[str, Any]:
    """What makes two runs' results comparable: the bundle hash, then the settings; below FP32 the precision too,
    and at INT8 the SHA-256 of the graph ``engine`` runs (so a resumed run never mixes two calibrations)."""
    loaded = bundle if isinstance(bundle, Bundle) else Bundle.load(Path(bundle))
    config: dict[str, Any] = {"bundle_sha256": bundle_hash(loaded), **settings}
    if precision and precision != "fp32":
        config["precision"] = precision
    if precision == "int8" and engine is not None:
        record = loaded.int8_record(engine)
        config["int8_sha256"] = {record[key]: loaded.manifest.files[record[key]] for key in ("graph", "weights")
                                 if key in record}
    return config


def open_run(out: str | Path, config: dict[str, Any], resume: bool, results: Sequence[str] = (),
             command: str = "run", extra: dict[str, Any] | None = None) -> Path:
    """Create ``out`` with its run.json (``extra``: facts recorded but not compared), or, on ``resume``, check it was
    made by ``command`` with ``config``; a folder with run.json or files matching the globs ``results`` is refused
    without ``resume``, one with other files always. Each refusal is one line."""
    out, config = Path(out), json.loads(json.dumps(config))  # compared as run.json gives them back
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: {out} exists and is not a directory")
    run_path = out / RUN
    has_results = run_path.exists() or any(next(out.glob(pattern), None) for pattern in results)
    if has_results and not resume:
        raise InputError(f"--out: {out} already has results; add --resume to continue them, or choose another folder")
    if has_results:
        _check(out, config, command)
        return out
    refuse_foreign(out, command)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"camrt_version": __version__, "record_version": RECORD_VERSION, "command": command, **config,
               **(extra or {})}
    write_text(run_path, json.dumps(payload, indent=2) + "\n")
    return out


def update_run(out: Path, changes: dict[str, Any]) -> None:
    """Rewrite run.json with ``changes`` (atomic): what ``--allow-new`` records about the grown listing."""
    write_text(out / RUN, json.dumps({**read_run(out), **changes}, indent=2) + "\n")


def read_run(out: Path) -> dict[str, Any]:
    """The run.json of run folder ``out`` (a one-line error when it is missing, not JSON, or not camrt's)."""
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
    return previous


def _check_command(out: Path, previous: dict[str, Any], command: str) -> None:
    made_by = previous.get("command", command)  # run.json had no command before this camrt
    if made_by != command:
        raise InputError(f"--out: {out} holds the results of camrt {made_by}, not {command}; choose another folder")


def _check(out: Path, config: dict[str, Any], command: str) -> None:
    """Refuse to resume a folder that is not a camrt run of this command, record version and these settings."""
    previous = read_run(out)
    _check_command(out, previous, command)
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
