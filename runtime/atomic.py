"""Atomic file writes: a temporary file beside the target, then one rename, so a crash never leaves half a file."""

from __future__ import annotations

import errno
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

_TEMPORARY = re.compile(r"^\.(.+)\.\d+\.[0-9a-f]+\.tmp$")


def temporary_of(name: str) -> str | None:
    """The target name when ``name`` is one of atomic_write's temporary names, else None (not camrt's to delete)."""
    match = _TEMPORARY.match(name)
    return match.group(1) if match else None


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object], replace: bool = True) -> Path:
    """Call ``write`` on a temporary file beside ``path``, then rename it over ``path`` in one step; with
    ``replace=False`` publish it by a hard link instead, which fails (FileExistsError) rather than replace a file.
    An OSError (a full disk) names ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)  # umask applies
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            tmp.unlink()
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename == str(path):
            raise
        raise OSError(exc.errno or errno.EIO, exc.strerror or str(exc), str(path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    """``data`` to ``path`` atomically."""
    return atomic_write(path, lambda handle: handle.write(data))


def write_text(path: str | Path, text: str) -> Path:
    """``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))
