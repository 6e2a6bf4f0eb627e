"""The two graphs as torch.export programs (``.pt2``), so the PyTorch backend runs exactly what was split."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from camrt.errors import first_line
from camrt.runtime.backends.torch import FEATURES_PT2, HEAD_PT2


def save_programs(
    features: nn.Module, head: nn.Module, image: torch.Tensor, activations: torch.Tensor, root: Path
) -> list[str]:
    """Write features.pt2 and head.pt2 with a dynamic batch; on failure warn and write neither (ONNX still works)."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    written = []
    try:
        for module, example, name in ((features, image, FEATURES_PT2), (head, activations.clone(), HEAD_PT2)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
                torch.export.save(program, str(root / name))
            written.append(name)
    except Exception as exc:  # torch.export raises many kinds; the ONNX bundle is complete without these
        for name in written:
            (root / name).unlink(missing_ok=True)
        warnings.warn(f"no PyTorch programs in the bundle (torch.export failed: {first_line(exc)}); "
                      "backend 'torch' will not load it", stacklevel=3)
        return []
    return written
