"""Errors camrt raises for bad input: one line each, naming the file or argument at fault."""

from __future__ import annotations

import errno
import os


class CamrtError(Exception):
    """Base class: the CLI prints ``str(error)`` on one line and exits non-zero."""


class BundleError(CamrtError):
    """A bundle is missing, incomplete, corrupt, or from another format version."""


class ExportError(CamrtError):
    """A model cannot be split or exported (bad layer name, skip connection, verification failed)."""


class InputError(CamrtError):
    """Bad user input: an unreadable image, a wrong shape, a class index out of range, NaNs."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): what one-line errors quote."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def one_line(exc: BaseException) -> str:
    """An exception's whole message on one line (whitespace runs collapsed): what the CLI prints."""
    return " ".join(str(exc).split()) or type(exc).__name__


def missing(path: str | os.PathLike[str]) -> str:
    """Why ``path`` cannot be found, for a one-line error: a symlink loop, a broken symlink, or not found."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symlink loop"
        if os.path.lexists(path):
            return "a broken symlink" if os.path.islink(path) else f"not readable ({exc.strerror})"
    return "not found"
