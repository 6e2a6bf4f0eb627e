"""A convention: every knob on which the public implementations of one method disagree, named and fixed."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

from camrt.errors import InputError
from camrt.kernels.activations import HeadSpec
from camrt.kernels.masks import MaskSpec

Score = Literal["prob", "logit", "logit-delta"]
Combine = Literal["paper", "pytorch-grad-cam", "torchcam", "gated", "recipro", "openvino-xai"]
Noise = Literal["none", "mask", "input-range"]


@dataclass(frozen=True)
class Convention:
    """What one reference implementation computes; docs/conventions.md tabulates every convention.

    score: softmax probability, raw logit, or logit minus the clean logit (torchcam) of the target class.
    samples / coefficients: passes per channel; IS-CAM scales the masked input by coefficients[s].
    noise: "mask" adds noise_std * z to the mask (torchcam SS-CAM); "input-range" adds
    (noise_std / range(x))**2 * z to the masked input x (SS-CAM paper).
    skip_constant: constant channels are skipped (weight 0, no pass), as the authors' code does.
    softmax_weights: weights = softmax over channels of the mean score, else the mean score itself.
    combine: how weights and activations make the map.
    head: None for passes through the whole network on masked images; a HeadSpec for the head-only methods
    (Ablation-CAM, Recipro-CAM), whose passes run the head graph on perturbed activations (``mask`` then only
    says how the map is upsampled).
    """

    method: str
    name: str
    mask: MaskSpec
    score: Score
    combine: Combine
    skip_constant: bool = False
    softmax_weights: bool = False
    samples: int = 1
    coefficients: tuple[float, ...] | None = None
    noise: Noise = "none"
    noise_std: float = 0.0
    head: HeadSpec | None = None

    @property
    def noisy(self) -> bool:
        return self.noise != "none"

    @property
    def graph(self) -> Literal["input", "head"]:
        """Which graph each pass runs: the whole network on a masked image, or the head on perturbed activations."""
        return "input" if self.head is None else "head"

    def jobs(self, activation_shape: tuple[int, int, int]) -> int:
        """Jobs per image and sample: one per channel, or one per position (Recipro-CAM)."""
        return activation_shape[0] if self.head is None else self.head.jobs(activation_shape)

    @property
    def zero_mask_skippable(self) -> bool:
        """An all-zero channel under this gate gives an all-zero mask and contributes nothing."""
        return self.mask.gate in ("tanh", "mish", "swish")


OptionKind = Literal["int", "float", "floats", "enum"]


@dataclass(frozen=True)
class Option:
    """One method option as declared in its module's OPTIONS: type, lower bound, choices, default and help.

    ``convert`` takes what the API or the CLI's ``-O`` gives (numbers, strings, ``0.1,0.5`` lists) and returns the
    typed value, or raises a one-line InputError naming the option and the value.
    """

    name: str
    kind: OptionKind
    default: Any
    help: str
    minimum: float | None = None  # inclusive lower bound of an int, a float or each float of a list
    choices: tuple[str, ...] = ()

    def convert(self, value: Any, method: str) -> Any:
        """``value`` as this option's type, checked against its range or choices."""
        if self.kind == "enum":
            text = str(value).strip().lower()
            if text not in self.choices:
                self._fail(method, value, f"one of {', '.join(self.choices)}")
            return text
        if self.kind == "floats":
            items = value.split(",") if isinstance(value, str) else value
            if isinstance(items, (int, float)):
                items = [items]
            try:
                numbers = tuple(self._number(item, method, value) for item in items)
            except TypeError:
                numbers = ()
            if not numbers:
                self._fail(method, value, "a non-empty comma-separated list of numbers")
            return numbers
        return self._number(value, method, value)

    def _number(self, item: Any, method: str, whole: Any) -> Any:
        """One int or finite float of this option, at least ``minimum``."""
        want = {"int": "an integer", "float": "a finite number"}.get(self.kind, "a list of finite numbers")
        bound = f" >= {self.minimum:g}" if self.minimum is not None else ""
        if isinstance(item, bool) or not isinstance(item, (numbers.Real, str)):  # numpy's numbers too
            self._fail(method, whole, want + bound)
        try:
            number = float(item.strip() if isinstance(item, str) else item)
        except ValueError:
            self._fail(method, whole, want + bound)
        if not math.isfinite(number) or (self.kind == "int" and not number.is_integer()):
            self._fail(method, whole, want + bound)
        if self.minimum is not None and number < self.minimum:
            self._fail(method, whole, want + bound)
        return int(number) if self.kind == "int" else number

    def _fail(self, method: str, value: Any, expected: str) -> NoReturn:
        raise InputError(f"{self.name}: {method}'s {self.name} must be {expected}, got {value!r}")
