"""Class names to indices: the one matching of a class index or name, used by --target, ``targets=`` and labels.

A name matches case-insensitively (spaces, ``_`` and ``-`` alike) against a class's whole name and against each of
its synonyms, the comma-separated parts of names such as ``"tabby, tabby cat"``; a miss gets "did you mean" hints.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from camrt.errors import InputError


def _key(text: str) -> str:
    """A name as compared: lower case, runs of spaces, ``_`` and ``-`` as one space."""
    return " ".join(text.replace("_", " ").replace("-", " ").lower().split())


def synonyms(name: str) -> list[str]:
    """A class name's keys: the whole name, then each comma-separated synonym."""
    parts = [_key(name), *(_key(part) for part in name.split(",") if "," in name)]
    return list(dict.fromkeys(part for part in parts if part))


def match_class(name: str, names: Sequence[str] | None) -> int | None:
    """The index of the class called ``name`` (exact, then whole names, then synonyms, each case-insensitive)."""
    names = list(names or [])
    if name in names:
        return names.index(name)
    key = _key(name)
    whole = [_key(n) for n in names]
    if key in whole:
        return whole.index(key)
    return next((i for i, n in enumerate(names) if key in synonyms(n)), None)


def class_index(value: str | int, names: Sequence[str] | None, num_classes: int, what: str = "--target") -> int:
    """``value`` (a class index, a digit string or a class name) as an index in range, or a one-line error naming
    ``what`` with the closest names."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < num_classes:
            raise InputError(f"{what}: class index {value} out of range [0, {num_classes})")
        return value
    if not isinstance(value, str):
        raise InputError(f"{what}: expected a class index or name, got {value!r}")
    found = match_class(value, names)
    if found is not None:
        return found
    if not names:
        raise InputError(f"{what}: this bundle has no class names; give a class index in [0, {num_classes}), "
                         f"got {value!r}")
    raise InputError(f"{what}: no class named {value!r} in this bundle{did_you_mean(value, names)}")


def did_you_mean(value: str, names: Sequence[str]) -> str:
    """``; did you mean 'a', 'b'?`` with up to three class names close to ``value`` (by name or synonym), or ''."""
    owner: dict[str, str] = {}
    for name in names:
        for key in synonyms(name):
            owner.setdefault(key, name)
    close = difflib.get_close_matches(_key(value), list(owner), n=6, cutoff=0.6)
    found = list(dict.fromkeys(owner[key] for key in close))[:3]
    return f"; did you mean {', '.join(map(repr, found))}?" if found else ""
