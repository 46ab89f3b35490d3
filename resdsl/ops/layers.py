"""Layers beyond the ResNet core: normalisations, 1-D convolution, attention and learnable
tensors. Same conventions as ``table.py``: weights named as in PyTorch's state_dict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

from .core import (
    Attr,
    Attrs,
    Decomposition,
    Derived,
    Group,
    OpDef,
    OpShapeError,
    Receptive,
    Shape,
    Value,
    Weight,
    always,
    layer_weights,
    register,
    same_shape,
)
from .table import CONV2D, _spatial_1d, fmt_shape


def _affine(c: int) -> tuple[Weight, ...]:
    return (Weight("weight", (c,), init="ones"), Weight("bias", (c,), init="zeros"))


# --- normalisation -----------------------------------------------------------------------------

LAYERNORM = register(
    OpDef(
        "layernorm",
        "Layer normalisation over the last axis, with a learned scale and shift.",
        Group.LAYER,
        same_shape,
        attrs=(Attr("eps", "float", 1e-5, minimum=0),),
        weights=lambda a, i: _affine(i[0][-1]),
        receptive=always(Receptive.GLOBAL),
    )
)


def _feature_map(op: str, a: Attrs, inputs: Sequence[Shape]) -> Shape:
    (x,) = inputs
    if len(x) != 3:
        raise OpShapeError(f"`{op}` expects a (C, H, W) feature map, got {fmt_shape(x)}")
    return x


def _layernorm2d(d: Decomposition, a: Attrs) -> Value:
    """torchvision's LayerNorm2d: channels last, layernorm, channels first again."""
    y = d.op("permute", d.inputs[0], axes=(1, 2, 0))
    y = d.op("layernorm", y, eps=a["eps"], weights={"weight": "weight", "bias": "bias"})
    return d.op("permute", y, axes=(2, 0, 1))


LAYERNORM2D = register(
    OpDef(
        "layernorm2d",
        "Layer normalisation over the channels of a (C, H, W) map at each pixel, stored as "
        "torchvision's LayerNorm2d (ConvNeXt).",
        Group.LAYER,
        lambda a, i: _feature_map("layernorm2d", a, i),
        attrs=(Attr("eps", "float", 1e-6, minimum=0),),
        weights=lambda a, i: _affine(i[0][0]),
        decompose=_layernorm2d,
        receptive=always(Receptive.POINTWISE),
    )
)


def _groupnorm_shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    (x,), g = inputs, a["groups"]
    if len(x) < 2 or x[0] % g:
        raise OpShapeError(
            f"`groupnorm` groups={g} must divide the channels (axis 0) of {fmt_shape(x)}"
        )
    return x


GROUPNORM = register(
    OpDef(
        "groupnorm",
        "Group normalisation: the channels in `groups` groups, each normalised over its "
        "channels and positions, then a per-channel scale and shift.",
        Group.LAYER,
        _groupnorm_shape,
        attrs=(
            Attr("groups", "int", minimum=1),
            Attr("eps", "float", 1e-5, minimum=0),
            Attr("affine", "bool", True),
        ),
        weights=lambda a, i: _affine(i[0][0]) if a["affine"] else (),
        receptive=always(Receptive.GLOBAL),
    )
)

# --- 1-D convolution ---------------------------------------------------------------------------


def _conv1d_shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    (x,) = inputs
    if len(x) != 2:
        raise OpShapeError(
            f"`conv1d` expects a (C, L) sequence, got {fmt_shape(x)}",
            ["per-sample shapes leave out the batch: a sequence is (C, L)"],
        )
    c, g = x[0], a["groups"]
    if c % g or a["out_channels"] % g:
        raise OpShapeError(
            f"`conv1d` groups={g} must divide both the input channels ({c}) and "
            f"out_channels ({a['out_channels']})"
        )
    length = _spatial_1d("conv1d", x[1], a["kernel"], a["stride"], a["padding"], a["dilation"])
    return (a["out_channels"], length)


def _conv1d_weights(a: Attrs, inputs: Sequence[Shape]) -> tuple[Weight, ...]:
    return layer_weights((a["out_channels"], inputs[0][0] // a["groups"], a["kernel"]), a["bias"])


CONV1D = register(
    OpDef(
        "conv1d",
        "1-D convolution over a (C, L) sequence (ECA's channel gate).",
        Group.LAYER,
        _conv1d_shape,
        attrs=(
            Attr("out_channels", "int", minimum=1),
            Attr("kernel", "int", minimum=1),
            Attr("stride", "int", 1, minimum=1),
            Attr("padding", "int", 0, minimum=0),
            Attr("dilation", "int", 1, minimum=1),
            Attr("groups", "int", 1, minimum=1),
            Attr("bias", "bool", True),
        ),
        weights=_conv1d_weights,
        macs=lambda a, i, out: math.prod(out) * (i[0][0] // a["groups"]) * a["kernel"],
        receptive=always(Receptive.GLOBAL),
        depth=True,
        detail=lambda a: f" {a['out_channels']}, {a['kernel']}",
    )
)

# --- weight-standardised convolution -----------------------------------------------------------


def _std_conv2d_weights(a: Attrs, inputs: Sequence[Shape]) -> tuple[Weight, ...]:
    conv = CONV2D.weights(a, inputs)
    return (*conv, Weight("gain", (a["out_channels"], 1, 1, 1), init="ones"))


def _std_conv2d(d: Decomposition, a: Attrs) -> Value:
    """A conv2d whose weight is standardised from ``weight`` and ``gain`` when lowered."""
    from . import lowering

    gamma, eps = a["gamma"], a["eps"]
    weight = Derived("standardised", ("weight", "gain"),
                     lambda w, g: lowering.standardised(w, g, gamma, eps))  # fmt: skip
    conv = {k: a[k] for k in ("out_channels", "kernel", "stride", "padding", "dilation",
                              "groups", "bias")}  # fmt: skip
    keys = {"weight": weight, **({"bias": "bias"} if a["bias"] else {})}
    return d.op("conv2d", d.inputs[0], label="conv", weights=keys, **conv)


STD_CONV2D = register(
    OpDef(
        "std_conv2d",
        "Weight-standardised 2-D convolution with a learned per-filter `gain`, stored as "
        "timm's ScaledStdConv2d (NF-ResNets): each filter normalised over its fan-in, "
        "times gain * gamma / sqrt(fan_in).",
        Group.LAYER,
        CONV2D.shape,
        attrs=(*CONV2D.attrs, Attr("gamma", "float", 1.0), Attr("eps", "float", 1e-6, minimum=0)),
        weights=_std_conv2d_weights,
        decompose=_std_conv2d,
        receptive=always(Receptive.WINDOW),
        depth=True,
        detail=CONV2D.detail,
    )
)

# --- attention ---------------------------------------------------------------------------------


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


def _attention(d: Decomposition, a: Attrs) -> Value:
    """nn.MultiheadAttention (eval mode, self-attention) from linear, slice, reshape,
    permute, matmul and softmax. Its packed input projection is one linear; each head
    attends over its (T, D / heads) slice of q, k and v."""
    (x,), heads = d.inputs, a["heads"]
    t, width = x.shape
    hd = width // heads
    proj = {"weight": "in_proj_weight", "bias": "in_proj_bias"}
    qkv = d.op("linear", x, label="in_proj", out_features=3 * width, weights=proj)
    q, k, v = (
        d.op("permute", d.op("reshape", d.op("slice", qkv, label=f"{n}", axis=1, start=i * width,
                                             end=(i + 1) * width),
                             label=f"{n}_heads", shape=(t, heads, hd)),
             label=f"{n}_t", axes=order)
        for i, (n, order) in enumerate((("q", (1, 0, 2)), ("k", (1, 2, 0)), ("v", (1, 0, 2))))
    )  # fmt: skip
    scores = d.op("matmul", q, k, label="scores")  # (heads, T, T)
    scores = d.op("scale_shift", scores, label="scaled", scale=1 / math.sqrt(hd))
    probs = d.op("softmax", scores, label="probs", axis=-1)
    if a["dropout"]:
        probs = d.op("dropout", probs, label="probs_dropout", p=a["dropout"])
    y = d.op("matmul", probs, v, label="context")  # (heads, T, hd)
    y = d.op("permute", y, label="context_t", axes=(1, 0, 2))
    y = d.op("reshape", y, label="merged", shape=(t, width))
    out = {"weight": "out_proj.weight", "bias": "out_proj.bias"}
    return d.op("linear", y, label="out_proj", out_features=width, weights=out)


ATTENTION = register(
    OpDef(
        "attention",
        "Multi-head self-attention over a (T, D) token sequence, stored as PyTorch's "
        "nn.MultiheadAttention (std.transformer has timm's qkv/proj layout as a block).",
        Group.LAYER,
        _attention_shape,
        attrs=(Attr("heads", "int", minimum=1), Attr("dropout", "float", 0.0, minimum=0, below=1)),
        weights=_attention_weights,
        decompose=_attention,
        receptive=always(Receptive.GLOBAL),
        depth=True,
    )
)

# --- learnable tensors -------------------------------------------------------------------------


def _parameter_shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    stored = a["stored"]
    if stored is not None and math.prod(stored) != math.prod(a["shape"]):
        raise OpShapeError(
            f"`parameter` stored shape {fmt_shape(stored)} does not hold the "
            f"{math.prod(a['shape'])} elements of {fmt_shape(a['shape'])}"
        )
    return a["shape"]


def _tensor_weights(trainable: bool):
    def weights(a: Attrs, inputs: Sequence[Shape]) -> tuple[Weight, ...]:
        if not a.get("persistent", True):
            return ()  # not in the state_dict: a constant (tensor_value gives it)
        stored = a["stored"] if a["stored"] is not None else (1, *a["shape"])
        dtype = a.get("dtype", "float32")
        if a.get("values") is not None:
            return (Weight("", stored, trainable, dtype, init="values", values=a["values"]),)
        if a["init"] == "kaiming":  # PyTorch's layers' own: kaiming_uniform_(a=sqrt(5))
            fan_in = math.prod(stored[1:]) if len(stored) > 1 else 1
            return (Weight("", stored, trainable, init="uniform", fan_in=fan_in),)
        value = a["value"] if a["init"] in ("constant", "uniform") else None
        return (Weight("", stored, trainable, dtype, init=a["init"], std=a["std"], value=value),)

    return weights


def _buffer_shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    shape = _parameter_shape(a, inputs)
    if a["values"] is not None and len(a["values"]) != math.prod(shape):
        raise OpShapeError(
            f"`buffer` of shape {fmt_shape(shape)} holds {math.prod(shape)} elements, "
            f"`values` has {len(a['values'])}"
        )
    if a["dtype"] == "int64" and a["values"] is None and a["init"] not in ("zeros", "ones"):
        raise OpShapeError('an int64 `buffer` takes `values` (or init="zeros" or "ones")')
    if a["dtype"] == "int64" and any(type(v) is not int for v in a["values"] or ()):
        raise OpShapeError("an int64 `buffer` holds ints")
    if (
        not a["persistent"]
        and a["values"] is None
        and a["init"] in ("normal", "uniform", "kaiming")
    ):
        raise OpShapeError(
            "a `buffer` with persistent=false is a constant: give `values` or a fixed init"
        )
    return shape


_INITS = ("zeros", "ones", "normal", "constant", "uniform", "kaiming")
PARAMETER = register(
    OpDef(
        "parameter",
        "A learnable tensor that is not a layer (ViT's class token and position "
        "embedding, layer-scale factors); the same for every sample. Stored with a leading "
        "1 unless `stored` gives the state_dict shape (ConvNeXt's layer scale: (C, 1, 1)).",
        Group.LAYER,
        _parameter_shape,
        attrs=(
            Attr("shape", "ints", minimum=1),
            Attr("init", "str", "zeros", choices=_INITS),
            Attr("std", "float", 0.02, minimum=0, doc='for init="normal"'),
            Attr("value", "float", 0.0, doc="the constant, or the bound of uniform"),
            Attr("stored", "optional_ints", None, minimum=1),
        ),
        inputs=0,
        min_inputs=0,
        weights=_tensor_weights(True),
        receptive=lambda a, i: Receptive.POINTWISE,
    )
)

BUFFER = register(
    OpDef(
        "buffer",
        "A tensor that is not learned, the same for every sample: saved in the state_dict "
        "(a persistent buffer) unless persistent=false. Attributes as `parameter`, and "
        "`values` (its elements, row-major: a relative position index) and `dtype`.",
        Group.LAYER,
        _buffer_shape,
        attrs=(
            *PARAMETER.attrs,
            Attr("values", "optional_numbers", None, doc="the elements, row-major"),
            Attr("dtype", "str", "float32", choices=("float32", "int64")),
            Attr("persistent", "bool", True, doc="false: not in the state_dict"),
        ),
        inputs=0,
        min_inputs=0,
        weights=_tensor_weights(False),
        receptive=always(Receptive.POINTWISE),
    )
)


def tensor_value(attrs: Attrs) -> np.ndarray:
    """A buffer's initial value when it is fixed (``values``, zeros, ones, a constant), as
    stored (with its leading 1 unless ``stored`` says otherwise)."""
    import numpy as np

    stored = attrs["stored"] if attrs["stored"] is not None else (1, *attrs["shape"])
    dtype = attrs.get("dtype", "float32")
    if attrs.get("values") is not None:
        return np.asarray(attrs["values"], dtype=dtype).reshape(stored)
    if attrs["init"] == "constant":
        return np.full(stored, attrs["value"], dtype=dtype)
    return (np.ones if attrs["init"] == "ones" else np.zeros)(stored, dtype=dtype)
