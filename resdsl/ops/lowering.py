"""What more than one backend (or a pass and a backend) needs to lower an op, written once.

Shapes are per sample, as everywhere in the table; a backend's tensors have the batch in
front, which :func:`batch_axis` and :func:`aligned` account for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .core import Shape

if TYPE_CHECKING:
    import numpy as np


def conv_padding(attrs: Mapping[str, Any], spatial: int = 2) -> tuple[int, ...]:
    """A convolution's padding as (begin..., end...) per spatial axis; "same" pads like
    PyTorch, the odd extra at the end. ``(top, left, bottom, right)`` for conv2d."""
    padding = attrs["padding"]
    kernel, dilation = attrs["kernel"], attrs["dilation"]
    if spatial == 1:
        padding, kernel, dilation = (padding,), (kernel,), (dilation,)
    if padding != "same":
        return (*padding, *padding)
    total = [d * (k - 1) for d, k in zip(dilation, kernel, strict=True)]
    return (*(t // 2 for t in total), *(t - t // 2 for t in total))


def batch_axis(axis: int, rank: int) -> int:
    """A per-sample axis of a rank-``rank`` tensor as an axis of the batched tensor."""
    return axis % rank + 1


def aligned(shapes: Sequence[Shape]) -> list[Shape | None]:
    """For broadcasting operands: the batched shape each one must be viewed as, with unit
    axes after its batch axis (per-sample shapes align on the last axis, the batch on the
    first), or None where it already has the full rank. The batch is written 0."""
    rank = max(len(s) for s in shapes)
    return [None if len(s) == rank else (0, *(1,) * (rank - len(s)), *s) for s in shapes]


def batchnorm_affine(
    weights: Mapping[str, Any], key: Any, eps: float, channels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Inference batch norm as ``x * scale + shift`` per channel, in float64 (a trained
    network's statistics can make the scale large or tiny). ``key(name)`` is the state_dict
    key of the node's weight ``name``; a norm without affine weights has gamma 1, beta 0."""
    import numpy as np

    def get(name: str, default: float) -> np.ndarray:
        k = key(name)
        if k in weights:
            return np.asarray(weights[k], dtype=np.float64)
        return np.full(channels, default)

    scale = get("weight", 1.0) / np.sqrt(get("running_var", 1.0) + eps)
    return scale, get("bias", 0.0) - get("running_mean", 0.0) * scale


def standardised(weight: np.ndarray, gain: np.ndarray, gamma: float, eps: float) -> np.ndarray:
    """A weight-standardised convolution's effective weight, as timm's ScaledStdConv2d: each
    output channel's filter normalised to mean 0 and (biased) variance 1 over its fan-in,
    times ``gain * gamma / sqrt(fan_in)``. In float64, returned in the weight's dtype."""
    import numpy as np

    w = np.asarray(weight, dtype=np.float64).reshape(weight.shape[0], -1)
    fan_in = w.shape[1]
    mean, var = w.mean(axis=1, keepdims=True), w.var(axis=1, keepdims=True)
    scale = np.asarray(gain, dtype=np.float64).reshape(-1, 1) * gamma * fan_in**-0.5
    return ((w - mean) / np.sqrt(var + eps) * scale).reshape(weight.shape).astype(weight.dtype)
