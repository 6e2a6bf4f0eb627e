"""The masked-input op: a NumPy reference here; CuPy CUDA kernels that agree with it on a GPU."""

from camrt.kernels.masks import (
    GATES,
    MaskSpec,
    add_range_scaled_noise,
    apply_gate,
    channel_masks,
    masked_inputs,
    minmax,
    weighted_sum_upsampled,
)
from camrt.kernels.upsample import interpolation_matrix, resize_bilinear

__all__ = [
    "GATES",
    "add_range_scaled_noise",
    "MaskSpec",
    "apply_gate",
    "channel_masks",
    "interpolation_matrix",
    "masked_inputs",
    "minmax",
    "resize_bilinear",
    "weighted_sum_upsampled",
]
