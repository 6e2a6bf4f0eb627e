"""camrt: exact, fast Score-CAM-family explanations on inference engines.

The runtime (``Explainer``, ``Evaluator``, ``Bundle``) needs only numpy and onnxruntime; ``export`` imports
torch lazily.
"""

from __future__ import annotations

from typing import Any

from camrt._version import __version__
from camrt.errors import BundleError, CamrtError, ExportError, InputError
from camrt.runtime.bundle import Bundle
from camrt.runtime.calibrate import calibrate
from camrt.runtime.evaluate import Evaluation, Evaluator, MethodSpec, parse_methods
from camrt.runtime.explain_dataset import DatasetRun, explain_dataset
from camrt.runtime.explainer import Explainer, Explanation
from camrt.runtime.preprocess import load_images
from camrt.runtime.shards import load_maps, read_index

__all__ = [
    "Bundle",
    "BundleError",
    "CamrtError",
    "DatasetRun",
    "Evaluation",
    "Evaluator",
    "Explainer",
    "Explanation",
    "ExportError",
    "InputError",
    "MethodSpec",
    "__version__",
    "calibrate",
    "explain_dataset",
    "export",
    "load_images",
    "load_maps",
    "parse_methods",
    "read_index",
]


def export(*args: Any, **kwargs: Any) -> Bundle:
    """Split a torch model at a layer and write a bundle; see :func:`camrt.exporter.export`."""
    from camrt.exporter import export as _export

    return _export(*args, **kwargs)
