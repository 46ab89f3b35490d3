"""The op table: every op's attributes, shape rule, parameter count and MACs, side by side.

MACs convention: multiply-accumulates of one sample through conv2d and linear (the
convention of torchvision's model table and fvcore). Normalisation, activations, pooling
and additions count 0: they are memory-bound and folded or fused at inference.

Parameters are declared as the weight tensors an op owns (named as in PyTorch's state_dict,
buffers marked not trainable); the parameter count is derived from them.

Adding an op: see docs/architecture.md, "Adding an op". A composite is one entry here with
its ``decompose``; a primitive is one entry and one emitter per backend (``resdsl/backends``).
The other modules of the table: ``elementwise.py``, ``tensors.py`` and ``layers.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .core import (
    Attr,
    Attrs,
    Group,
    OpDef,
    OpShapeError,
    Receptive,
    Shape,
    Weight,
    always,
    layer_weights,
    register,
    same_shape,
)


def _rank(name: str, shape: Shape, rank: int, what: str) -> None:
    if len(shape) != rank:
        raise OpShapeError(
            f"`{name}` expects a {what} of rank {rank}, got shape {fmt_shape(shape)}",
            ["per-sample shapes leave out the batch: a feature map is (C, H, W)"],
        )


def fmt_shape(shape: Shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _window(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool = False) -> int:
    span = size + 2 * p - d * (k - 1) - 1
    out = (math.ceil(span / s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:  # PyTorch: the last window must start inside
        out -= 1
    return out


def _spatial_1d(op: str, size: int, k: int, s: int, p: int, d: int) -> int:
    out = _window(size, k, s, p, d)
    if out <= 0:
        raise OpShapeError(
            f"`{op}` on length {size} with kernel {k}, stride {s}, padding {p} gives an "
            f"empty output",
            ["use a smaller kernel or stride, more padding, or a longer input"],
        )
    return out


def _window_detail(op: str):
    def detail(a: Attrs) -> str:
        kh, kw = a["kernel"]
        sh, sw = a["stride"] or a["kernel"]  # pools stride by their kernel by default
        stride = "" if (sh, sw) == (1, 1) else f" /{sh}" if sh == sw else f" /{sh}x{sw}"
        out = f" {a['out_channels']}," if op == "conv2d" else ""
        return f"{out} {kh}x{kw}{stride}"

    return detail


def _spatial(op: str, shape: Shape, k, s, p, d, ceil_mode=False) -> tuple[int, int]:
    h, w = (_window(shape[i + 1], k[i], s[i], p[i], d[i], ceil_mode) for i in range(2))
    if h <= 0 or w <= 0:
        raise OpShapeError(
            f"`{op}` on input {fmt_shape(shape)} with kernel {k}, stride {s}, padding {p} "
            f"gives an empty output ({h}x{w})",
            ["use a smaller kernel or stride, more padding, or a larger input"],
        )
    return h, w


# --- conv2d ------------------------------------------------------------------------------------


def _conv2d_shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    (x,) = inputs
    _rank("conv2d", x, 3, "feature map")
    c, g = x[0], a["groups"]
    if c % g or a["out_channels"] % g:
        raise OpShapeError(
            f"`conv2d` groups={g} must divide both the input channels ({c}) and "
            f"out_channels ({a['out_channels']})"
        )
    if a["padding"] == "same":
        if a["stride"] != (1, 1):
            raise OpShapeError('padding="same" needs stride 1', ["give the padding explicitly"])
        return (a["out_channels"], x[1], x[2])
    h, w = _spatial("conv2d", x, a["kernel"], a["stride"], a["padding"], a["dilation"])
    return (a["out_channels"], h, w)


def _conv2d_weights(a: Attrs, inputs: Sequence[Shape]) -> tuple[Weight, ...]:
    return layer_weights((a["out_channels"], inputs[0][0] // a["groups"], *a["kernel"]), a["bias"])


def _conv2d_macs(a: Attrs, inputs: Sequence[Shape], out: Shape) -> int:
    kh, kw = a["kernel"]
    return math.prod(out) * (inputs[0][0] // a["groups"]) * kh * kw


CONV2D = register(
    OpDef(
        "conv2d",
        "2-D convolution over a (C, H, W) feature map.",
        Group.LAYER,
        _conv2d_shape,
        attrs=(
            Attr("out_channels", "int", minimum=1),
            Attr("kernel", "pair", minimum=1),
            Attr("stride", "pair", (1, 1), minimum=1),
            Attr("padding", "padding", (0, 0), minimum=0),
            Attr("dilation", "pair", (1, 1), minimum=1),
            Attr("groups", "int", 1, minimum=1),
            Attr("bias", "bool", True),
        ),
        weights=_conv2d_weights,
        macs=_conv2d_macs,
        maps_zero=lambda a: not a["bias"],
        receptive=always(Receptive.WINDOW),
        depth=True,
        detail=_window_detail("conv2d"),
    )
)

# --- normalisation -----------------------------------------------------------------------------


def _bn_shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    _rank("batchnorm2d", inputs[0], 3, "feature map")
    return inputs[0]


def _bn_weights(a: Attrs, inputs: Sequence[Shape]) -> tuple[Weight, ...]:
    c = (inputs[0][0],)
    stats = (
        Weight("running_mean", c, trainable=False, init="zeros"),
        Weight("running_var", c, trainable=False, init="ones"),
        Weight("num_batches_tracked", (), False, "int64", init="zeros", required=False),
    )
    affine = (Weight("weight", c, init="ones"), Weight("bias", c, init="zeros"))
    return (affine if a["affine"] else ()) + stats


BATCHNORM2D = register(
    OpDef(
        "batchnorm2d",
        "Batch normalisation over the channels of a (C, H, W) feature map.",
        Group.LAYER,
        _bn_shape,
        attrs=(
            Attr("eps", "float", 1e-5, minimum=0),
            Attr("momentum", "float", 0.1, minimum=0),
            Attr("affine", "bool", True),
        ),
        weights=_bn_weights,
        receptive=always(Receptive.POINTWISE),
    )
)

# --- elementwise -------------------------------------------------------------------------------


RELU = register(
    OpDef(
        "relu",
        "max(x, 0), elementwise.",
        Group.ELEMENTWISE,
        same_shape,
        maps_zero=True,
        receptive=always(Receptive.POINTWISE),
    )
)
IDENTITY = register(
    OpDef("identity", "Returns its input.", Group.ELEMENTWISE, same_shape, inference_noop=True,
          maps_zero=True,
          receptive=always(Receptive.POINTWISE), scales=True)
)  # fmt: skip
ZERO = register(
    OpDef(
        "zero",
        "Zeros of its input's shape: a cut edge of a cell (NAS-Bench-201's `none`). Reads only "
        "the shape, so an infinite or NaN input still gives zeros (unlike `x * 0`).",
        Group.ELEMENTWISE,
        same_shape,
        maps_zero=True,
        receptive=always(Receptive.POINTWISE),
    )
)
DROPOUT = register(
    OpDef(
        "dropout",
        "Zeroes elements with probability p in training (scaled by 1/(1-p)); identity in eval.",
        Group.ELEMENTWISE,
        same_shape,
        attrs=(Attr("p", "float", 0.5, minimum=0, below=1),),
        inference_noop=True,
        maps_zero=True,
        receptive=always(Receptive.POINTWISE),
        scales=True,
    )
)

# --- pooling -----------------------------------------------------------------------------------


def _pool_shape(op: str):
    def shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
        (x,) = inputs
        _rank(op, x, 3, "feature map")
        k, p = a["kernel"], a["padding"]
        if p[0] > k[0] // 2 or p[1] > k[1] // 2:
            raise OpShapeError(f"`{op}` padding {p} must be at most half the kernel {k}")
        s = a["stride"] or k
        d = a.get("dilation", (1, 1))
        return (x[0], *_spatial(op, x, k, s, p, d, a["ceil_mode"]))

    return shape


_POOL_ATTRS = (
    Attr("kernel", "pair", minimum=1),
    Attr("stride", "optional_pair", None, minimum=1, doc="defaults to the kernel size"),
    Attr("padding", "pair", (0, 0), minimum=0),
)

MAXPOOL2D = register(
    OpDef(
        "maxpool2d",
        "Max pooling over (C, H, W).",
        Group.REDUCE,
        _pool_shape("maxpool2d"),
        attrs=(
            *_POOL_ATTRS,
            Attr("dilation", "pair", (1, 1), minimum=1),
            Attr("ceil_mode", "bool", False),
        ),
        maps_zero=True,
        receptive=always(Receptive.WINDOW),
        detail=_window_detail("maxpool2d"),
    )
)
AVGPOOL2D = register(
    OpDef(
        "avgpool2d",
        "Average pooling over (C, H, W).",
        Group.REDUCE,
        _pool_shape("avgpool2d"),
        attrs=(
            *_POOL_ATTRS,
            Attr("ceil_mode", "bool", False),
            Attr("count_include_pad", "bool", True),
        ),
        maps_zero=True,
        receptive=always(Receptive.WINDOW),
        detail=_window_detail("avgpool2d"),
    )
)


def _adaptive_shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    _rank("adaptive_avgpool2d", inputs[0], 3, "feature map")
    return (inputs[0][0], *a["output_size"])


ADAPTIVE_AVGPOOL2D = register(
    OpDef(
        "adaptive_avgpool2d",
        "Average pooling to a fixed (H, W) output size.",
        Group.REDUCE,
        _adaptive_shape,
        attrs=(Attr("output_size", "pair", minimum=1),),
        maps_zero=True,
        receptive=lambda a, i: Receptive.ADAPTIVE,
    )
)


def _global_shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    _rank("global_avgpool", inputs[0], 3, "feature map")
    return (inputs[0][0],)


GLOBAL_AVGPOOL = register(
    OpDef(
        "global_avgpool",
        "Average over H and W: (C, H, W) -> (C,).",
        Group.REDUCE,
        _global_shape,
        decompose=lambda d, a: d.op("mean", d.inputs[0], axis=(1, 2)),
        maps_zero=True,
        receptive=always(Receptive.GLOBAL),
    )
)

# --- reshaping and merging ---------------------------------------------------------------------


def _flatten_shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    (x,) = inputs
    start = a["start"]
    if start >= len(x):
        raise OpShapeError(f"`flatten` start={start} is past the last axis of {fmt_shape(x)}")
    return (*x[:start], math.prod(x[start:]))


FLATTEN = register(
    OpDef(
        "flatten",
        "Merge the per-sample axes from `start` on into one.",
        Group.MOVEMENT,
        _flatten_shape,
        attrs=(Attr("start", "int", 0, minimum=0),),
        maps_zero=True,
        receptive=always(Receptive.GLOBAL),
    )
)


def _linear_shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    (x,) = inputs
    if not x:
        raise OpShapeError("`linear` needs an input with at least one axis")
    return (*x[:-1], a["out_features"])


def _linear_weights(a: Attrs, inputs: Sequence[Shape]) -> tuple[Weight, ...]:
    return layer_weights((a["out_features"], inputs[0][-1]), a["bias"])


LINEAR = register(
    OpDef(
        "linear",
        "Affine map of the last axis: (..., F) -> (..., out_features).",
        Group.LAYER,
        _linear_shape,
        attrs=(Attr("out_features", "int", minimum=1), Attr("bias", "bool", True)),
        weights=_linear_weights,
        macs=lambda a, i, o: math.prod(i[0]) * a["out_features"],
        maps_zero=lambda a: not a["bias"],
        receptive=always(Receptive.GLOBAL),
        depth=True,
        detail=lambda a: f" {a['out_features']}",
    )
)


def projection_hint(source: Shape, target: Shape) -> str | None:
    """The projection that maps ``source`` to ``target``, as spec text, if one exists."""
    if len(source) == 1 and len(target) == 1:
        return f"linear({target[0]}, bias=false)"
    stride = projection_stride(source, target)
    if len(source) == 3 and len(target) == 3 and stride is not None:
        extra = f", stride={stride}" if stride != 1 else ""
        return f"conv2d({target[0]}, 1{extra}, bias=false) -> batchnorm2d"
    return None


def projection_stride(source: Shape, target: Shape) -> int | None:
    """The stride s with ceil(H/s) == H' and ceil(W/s) == W' (a 1x1 conv's output size)."""
    if len(source) != 3 or len(target) != 3 or target[1] <= 0 or target[2] <= 0:
        return None
    s = max(1, source[1] // target[1])
    for cand in (s, s + 1):
        if all(-(-source[i] // cand) == target[i] for i in (1, 2)):
            return cand
    return None


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


def _add_shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    """Equal shapes (the residual connection), or shapes that broadcast (attention's
    position bias and mask); a mismatch gets the projection a shortcut would need."""
    out = inputs[0]
    for other in inputs[1:]:
        try:
            out = broadcast(out, other)
        except OpShapeError:
            hints = []
            fix = projection_hint(other, out) or projection_hint(out, other)
            if fix:
                hints.append(f"project the shortcut: `shortcut(x, like=y)` inserts `{fix}`")
            raise OpShapeError(
                f"cannot add tensors of shape {fmt_shape(out)} and {fmt_shape(other)}", hints
            ) from None
    return out


ADD = register(
    OpDef(
        "add",
        "Elementwise sum of tensors of one shape (the residual connection), or of shapes "
        "that broadcast.",
        Group.MERGE,
        _add_shape,
        inputs=None,
        min_inputs=2,
        receptive=always(Receptive.POINTWISE),
        symbol="+",
    )
)


def _concat_shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    first, axis = inputs[0], a["axis"]
    if axis >= len(first):
        raise OpShapeError(f"`concat` axis {axis} is past the last axis of {fmt_shape(first)}")
    for other in inputs[1:]:
        if len(other) != len(first) or any(
            d != e for i, (d, e) in enumerate(zip(first, other, strict=True)) if i != axis
        ):
            raise OpShapeError(
                f"cannot concatenate {fmt_shape(first)} and {fmt_shape(other)} on axis {axis}",
                ["all axes but the concatenated one must match"],
            )
    return (*first[:axis], sum(s[axis] for s in inputs), *first[axis + 1 :])


CONCAT = register(
    OpDef(
        "concat",
        "Concatenate tensors along a per-sample axis (0: channels), as in DenseNet.",
        Group.MOVEMENT,
        _concat_shape,
        attrs=(Attr("axis", "int", 0, minimum=0),),
        inputs=None,
        min_inputs=1,
        receptive=lambda a, i: (
            Receptive.POINTWISE if a["axis"] == 0 and len(i[0]) == 3 else Receptive.REARRANGE
        ),
        symbol="concat",
    )
)


def _input_shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    return a["shape"]


INPUT = register(
    OpDef(
        "input",
        "A graph input with a per-sample shape.",
        Group.SOURCE,
        _input_shape,
        inputs=0,
        min_inputs=0,
    )
)
