"""PyTorch backend: the reference and fallback. torch is imported here only, when this backend is asked for."""

from __future__ import annotations

from typing import Any

import numpy as np

from camrt.errors import BundleError, CamrtError
from camrt.runtime.bundle import Bundle

FEATURES_PT2, HEAD_PT2 = "features.pt2", "head.pt2"


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise CamrtError("backend 'torch' needs PyTorch: pip install camrt[torch]") from None
    return torch


class TorchRunner:
    """Runs the feature and head modules in eager PyTorch (no_grad, eval) on host arrays."""

    name = "torch"

    def __init__(self, features: Any, head: Any, device: str = "cpu", threads: int | None = None) -> None:
        self.torch = _import_torch()
        if threads:
            self.torch.set_num_threads(int(threads))
        self.device = self.torch.device(device)
        self._features = self._prepare(features)
        self._head = self._prepare(head)

    def _prepare(self, module: Any) -> Any:
        """On the device, in eval mode (exported programs are traced in eval mode and refuse ``eval()``)."""
        module = module.to(self.device)
        try:
            module.eval()
        except NotImplementedError:
            pass
        return module

    @classmethod
    def from_bundle(cls, bundle: Bundle, **options: Any) -> TorchRunner:
        """Load the bundle's exported programs (features.pt2, head.pt2), written by the exporter beside the ONNX."""
        torch = _import_torch()
        modules = []
        for name in (FEATURES_PT2, HEAD_PT2):
            path = bundle.root / name
            if name not in bundle.manifest.files or not path.is_file():
                raise BundleError(f"{path}: missing; backend 'torch' needs the bundle's PyTorch programs (re-export)")
            try:
                modules.append(torch.export.load(str(path)).module())
            except Exception as exc:  # torch raises many types here
                raise BundleError(f"{path}: cannot be loaded by torch.export ({type(exc).__name__}: {exc})") from None
        return cls(modules[0], modules[1], **options)

    def _run(self, module: Any, array: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.no_grad():
            out = module(torch.from_numpy(np.ascontiguousarray(array)).to(self.device))
        return out.detach().cpu().numpy().astype(np.float32, copy=False)

    def features(self, images: np.ndarray) -> np.ndarray:
        return self._run(self._features, images)

    def head(self, activations: np.ndarray) -> np.ndarray:
        # a copy: an eager head may run in-place ops on its input (densenet's relu), which would write into ours
        return self._run(self._head, activations.copy())

    def logits(self, images: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
            out = self._head(self._features(x))
        return out.detach().cpu().numpy().astype(np.float32, copy=False)
