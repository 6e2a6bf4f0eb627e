"""``explain_stream``: explain a stream of images with masked inputs batched across images (the engine's window).

The loop itself is runtime/engine/window.py, the same one ``Explainer.explain`` drains; this module is the
function the commands call and the names they use (``Image`` in, ``Explained`` out).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from camrt.runtime.engine.window import Explained, Image, OnBatch

if TYPE_CHECKING:
    from camrt.runtime.explainer import Explainer


def explain_stream(explainer: Explainer, images: Iterable[Image], *args: Any, **kwargs: Any) -> Iterator[Explained]:
    """``explainer.stream(images, ...)`` (same arguments): one ``Explained`` per image, roughly in order; bad
    images give status ``error`` and the stream goes on."""
    return explainer.stream(images, *args, **kwargs)


__all__ = ["Explained", "Image", "OnBatch", "explain_stream"]
