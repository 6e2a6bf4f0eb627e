"""The Score-CAM family: each method's named conventions, looked up by (method, convention)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from camrt.errors import InputError
from camrt.runtime.methods import iscam, scorecam, scorecampp, sscam
from camrt.runtime.methods.base import Convention

METHODS: dict[str, Callable[..., dict[str, Convention]]] = {
    "scorecam": scorecam.conventions,
    "sscam": sscam.conventions,
    "iscam": iscam.conventions,
    "scorecam++": scorecampp.conventions,
}


def get_convention(method: str, convention: str = "paper", **options: Any) -> Convention:
    """The Convention for ``method`` under ``convention``, with method options (num_samples, std, gate, ...)."""
    factory = METHODS.get(method)
    if factory is None:
        raise InputError(f"method: unknown method {method!r}; choose one of {', '.join(METHODS)}")
    accepted = option_names(method)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InputError(f"{unknown[0]}: not an option of {method} (its options: {', '.join(accepted) or 'none'})")
    for key in ("num_samples",):
        if key in options and (not isinstance(options[key], int) or options[key] < 1):
            raise InputError(f"{key}: must be a positive integer, got {options[key]!r}")
    table = factory(**options)
    if convention not in table:
        raise InputError(f"convention: {method} has no convention {convention!r}; choose one of {', '.join(table)}")
    return table[convention]


def option_names(method: str) -> list[str]:
    """The options ``method`` takes (its conventions factory's keyword arguments)."""
    return list(inspect.signature(METHODS[method]).parameters)


def list_conventions() -> dict[str, list[str]]:
    """Every method and the names of its conventions."""
    return {name: list(factory()) for name, factory in METHODS.items()}


__all__ = ["METHODS", "Convention", "get_convention", "list_conventions", "option_names"]
