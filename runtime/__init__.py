"""The runtime: bundles, backends, the Score-CAM-family methods. Needs numpy (+ onnxruntime), never torch."""

from camrt.runtime.bundle import Bundle, Manifest, Preprocessing
from camrt.runtime.explainer import Explainer, Explanation
from camrt.runtime.methods import get_convention, list_conventions

__all__ = ["Bundle", "Explainer", "Explanation", "Manifest", "Preprocessing", "get_convention", "list_conventions"]
