"""Ops for the residual family beyond ResNet: gates and scales, normalisation and
activations of transformers, attention, learnable tensors, and token reshaping.

Same conventions as ``table.py``: per-sample shapes, weights named as in PyTorch's
state_dict, MACs for matrix work only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .core import Attr, Attrs, Group, OpDef, OpShapeError, Shape, Weight, register
from .table import fmt_shape


def _same(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    return inputs[0]


# --- elementwise arithmetic --------------------------------------------------------------------


def broadcast(left: Shape, right: Shape) -> Shape:
    """NumPy broadcasting of per-sample shapes (aligned on the last axis)."""
    out = []
    for i in range(1, max(len(left), len(right)) + 1):
        a = left[-i] if i <= len(left) else 1
        b = right[-i] if i <= len(right) else 1
        if a != b and 1 not in (a, b):
            raise OpShapeError(
                f"cannot broadcast {fmt_shape(left)} with {fmt_shape(right)}",
                ["each axis must match or be 1, e.g. a (C, 1, 1) gate scales a (C, H, W) map"],
            )
        out.append(max(a, b))
    return tuple(reversed(out))


def _mul_shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    return broadcast(inputs[0], inputs[1])


def _sub_shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    if inputs[0] != inputs[1]:
        raise OpShapeError(
            f"cannot subtract tensors of shape {fmt_shape(inputs[0])} and {fmt_shape(inputs[1])}"
        )
    return inputs[0]


MUL = register(
    OpDef(
        "mul",
        "Elementwise product with broadcasting: gates (highway, squeeze-and-excitation).",
        Group.MERGE,
        _mul_shape,
        inputs=2,
    )
)
SUB = register(OpDef("sub", "Elementwise difference of tensors of one shape.", Group.MERGE,
                     _sub_shape, inputs=2))  # fmt: skip
SCALE_SHIFT = register(
    OpDef(
        "scale_shift",
        "x * scale + shift with constants: `x / L`, `alpha * f`, `1 - t` in specs.",
        Group.ELEMENTWISE,
        _same,
        attrs=(Attr("scale", "float", 1.0), Attr("shift", "float", 0.0)),
    )
)
SIGMOID = register(OpDef("sigmoid", "1 / (1 + exp(-x)), elementwise.", Group.ELEMENTWISE, _same))
GELU = register(
    OpDef("gelu", "Gaussian error linear unit (exact, erf form).", Group.ELEMENTWISE, _same)
)
DROP_PATH = register(
    OpDef(
        "drop_path",
        "Stochastic depth: in training, zero the whole sample with probability p and scale "
        "the rest by 1/(1-p); identity at inference.",
        Group.ELEMENTWISE,
        _same,
        attrs=(Attr("p", "float", 0.0, minimum=0, below=1),),
    )
)

# --- transformers ------------------------------------------------------------------------------


def _layernorm_weights(a: Attrs, inputs: Sequence[Shape]) -> tuple[Weight, ...]:
    d = (inputs[0][-1],)
    return (Weight("weight", d, init="ones"), Weight("bias", d, init="zeros"))


LAYERNORM = register(
    OpDef(
        "layernorm",
        "Layer normalisation over the last axis, with a learned scale and shift.",
        Group.LAYER,
        _same,
        attrs=(Attr("eps", "float", 1e-5, minimum=0),),
        weights=_layernorm_weights,
    )
)


def _attention_shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    (x,) = inputs
    if len(x) != 2:
        raise OpShapeError(
            f"`attention` expects a token sequence (T, D), got {fmt_shape(x)}",
            ["turn a feature map into tokens: reshape to (C, H*W), then permute to (H*W, C)"],
        )
    if x[1] % a["heads"]:
        raise OpShapeError(f"`attention` heads={a['heads']} must divide the width D={x[1]}")
    return x


def _attention_weights(a: Attrs, inputs: Sequence[Shape]) -> tuple[Weight, ...]:
    d = inputs[0][1]
    return (
        Weight("in_proj_weight", (3 * d, d), fan_in=d),
        Weight("in_proj_bias", (3 * d,), init="zeros"),
        Weight("out_proj.weight", (d, d), fan_in=d),
        Weight("out_proj.bias", (d,), init="zeros"),
    )


def _attention_macs(a: Attrs, inputs: Sequence[Shape], out: Shape) -> int:
    t, d = inputs[0]
    return t * d * 3 * d + 2 * t * t * d + t * d * d  # projections, QK^T and AV, output


ATTENTION = register(
    OpDef(
        "attention",
        "Multi-head self-attention over a (T, D) token sequence (PyTorch's "
        "nn.MultiheadAttention weights).",
        Group.LAYER,
        _attention_shape,
        attrs=(Attr("heads", "int", minimum=1), Attr("dropout", "float", 0.0, minimum=0, below=1)),
        weights=_attention_weights,
        macs=_attention_macs,
    )
)


def _parameter_weights(a: Attrs, inputs: Sequence[Shape]) -> tuple[Weight, ...]:
    return (Weight("", (1, *a["shape"]), init=a["init"], std=a["std"]),)


PARAMETER = register(
    OpDef(
        "parameter",
        "A learnable tensor that is not a layer (ViT's class token and position "
        "embedding, layer-scale factors); the same for every sample.",
        Group.LAYER,
        lambda a, i: a["shape"],
        attrs=(
            Attr("shape", "ints", minimum=1),
            Attr("init", "str", "zeros", choices=("zeros", "ones", "normal")),
            Attr("std", "float", 0.02, minimum=0),
        ),
        inputs=0,
        min_inputs=0,
        weights=_parameter_weights,
    )
)

# --- reshaping ---------------------------------------------------------------------------------


def _reshape_shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    (x,), shape = inputs, list(a["shape"])
    if shape.count(-1) > 1 or any(d == 0 or d < -1 for d in shape):
        raise OpShapeError(f"`reshape` shape {fmt_shape(a['shape'])} needs positive sizes "
                           "and at most one -1")  # fmt: skip
    known = math.prod(d for d in shape if d != -1)
    total = math.prod(x)
    if -1 in shape:
        if total % known:
            raise OpShapeError(f"cannot reshape {fmt_shape(x)} to {fmt_shape(a['shape'])}")
        shape[shape.index(-1)] = total // known
    if math.prod(shape) != total:
        raise OpShapeError(
            f"cannot reshape {fmt_shape(x)} ({total} elements) to {fmt_shape(tuple(shape))}"
        )
    return tuple(shape)


def _permute_shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    (x,), axes = inputs, a["axes"]
    if sorted(axes) != list(range(len(x))):
        raise OpShapeError(
            f"`permute` axes {fmt_shape(axes)} must order the axes 0..{len(x) - 1} of "
            f"{fmt_shape(x)}"
        )
    return tuple(x[i] for i in axes)


def _select_shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    (x,), axis, index = inputs, a["axis"], a["index"]
    if axis >= len(x):
        raise OpShapeError(f"`select` axis {axis} is past the last axis of {fmt_shape(x)}")
    if not -x[axis] <= index < x[axis]:
        raise OpShapeError(f"`select` index {index} is out of range for size {x[axis]}")
    return x[:axis] + x[axis + 1 :]


RESHAPE = register(
    OpDef(
        "reshape",
        "View the per-sample tensor with another shape (one -1 is inferred).",
        Group.MOVEMENT,
        _reshape_shape,
        attrs=(Attr("shape", "ints"),),
    )
)
PERMUTE = register(
    OpDef(
        "permute",
        "Reorder the per-sample axes: (C, N) -> (N, C) is permute((1, 0)).",
        Group.MOVEMENT,
        _permute_shape,
        attrs=(Attr("axes", "ints", minimum=0),),
    )
)
SELECT = register(
    OpDef(
        "select",
        "Take one index of an axis, dropping it: `x[0]` is the first token.",
        Group.MOVEMENT,
        _select_shape,
        attrs=(Attr("axis", "int", 0, minimum=0), Attr("index", "int", 0)),
    )
)
