"""Scores from logits, and the one engine call every perturbed batch goes through (run, then check finiteness)."""

from __future__ import annotations

import numpy as np

from camrt.errors import CamrtError
from camrt.runtime.backends.base import Runner


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64 (the precision the references compare scores in)."""
    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def score_rows(kind: str, logits: np.ndarray, target: np.ndarray, base: np.ndarray) -> np.ndarray:
    """The target class's score per row (float64): softmax probability, logit, or logit minus the clean logit."""
    rows = np.arange(logits.shape[0])
    if kind == "prob":
        return softmax(logits)[rows, target]
    picked = logits[rows, target].astype(np.float64)
    return picked - base if kind == "logit-delta" else picked


def finite_rows(values: np.ndarray) -> np.ndarray:
    """(n,) bool: rows of (n, ...) whose values are all finite."""
    return np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1)


def non_finite(what: str) -> str:
    """The one wording of a non-finite engine output, for errors and per-image records."""
    return f"the model gave non-finite logits for {what}"


def checked_logits(runner: Runner, batch: np.ndarray, what: str = "a perturbed input") -> np.ndarray:
    """Logits of ``batch`` on the whole model; a one-line CamrtError when any is NaN or infinite."""
    out = np.asarray(runner.logits(batch))
    if not finite_rows(out).all():
        raise CamrtError(non_finite(what))
    return out
