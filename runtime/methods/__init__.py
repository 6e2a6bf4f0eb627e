"""The Score-CAM family and the head-only methods (Ablation-CAM, Recipro-CAM): each method's named conventions,
looked up by (method, convention)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from camrt.errors import InputError
from camrt.runtime.methods import ablationcam, iscam, reciprocam, scorecam, scorecampp, sscam
from camrt.runtime.methods.base import Convention, Option

METHODS: dict[str, Callable[..., dict[str, Convention]]] = {
    "scorecam": scorecam.conventions,
    "sscam": sscam.conventions,
    "iscam": iscam.conventions,
    "scorecam++": scorecampp.conventions,
    "ablationcam": ablationcam.conventions,
    "reciprocam": reciprocam.conventions,
}
OPTIONS: dict[str, tuple[Option, ...]] = {
    "scorecam": scorecam.OPTIONS,
    "sscam": sscam.OPTIONS,
    "iscam": iscam.OPTIONS,
    "scorecam++": scorecampp.OPTIONS,
    "ablationcam": ablationcam.OPTIONS,
    "reciprocam": reciprocam.OPTIONS,
}


def get_convention(method: str, convention: str = "paper", **options: Any) -> Convention:
    """The Convention for ``method`` under ``convention``, with method options (num_samples, std, gate, ...)."""
    factory = METHODS.get(method)
    if factory is None:
        raise InputError(f"method: unknown method {method!r}; choose one of {', '.join(METHODS)}")
    table = factory(**convert_options(method, options))
    if convention not in table:
        raise InputError(f"convention: {method} has no convention {convention!r}; choose one of {', '.join(table)}")
    return table[convention]


def convert_options(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` typed and checked by ``method``'s declared OPTIONS; an unknown or bad one is a one-line error."""
    declared = {option.name: option for option in OPTIONS[method]}
    unknown = sorted(set(options) - set(declared))
    if unknown:
        raise InputError(f"{unknown[0]}: not an option of {method} (its options: {', '.join(declared) or 'none'})")
    return {key: None if value is None and declared[key].default is None else declared[key].convert(value, method)
            for key, value in options.items()}


def option_names(method: str) -> list[str]:
    """The options ``method`` takes, as its module's OPTIONS declares them."""
    return [option.name for option in OPTIONS[method]]


def list_conventions() -> dict[str, list[str]]:
    """Every method and the names of its conventions."""
    return {name: list(factory()) for name, factory in METHODS.items()}


__all__ = ["METHODS", "OPTIONS", "Convention", "Option", "convert_options", "get_convention", "list_conventions",
           "option_names"]
