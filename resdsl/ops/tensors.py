"""Tensor ops: reshaping, slicing, padding, shifting, reductions and the batched matmul.

Axes are per-sample (the batch axis is implicit): 0 is the first per-sample axis and a
negative axis counts from the last, as in NumPy. Same conventions as ``table.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .core import (
    Attr,
    Attrs,
    Decomposition,
    Group,
    OpDef,
    OpShapeError,
    Receptive,
    Shape,
    Value,
    always,
    register,
)
from .table import broadcast, fmt_shape


def axis_of(op: str, axis: int, shape: Shape) -> int:
    """``axis`` of ``shape`` as a non-negative index; an OpShapeError if there is none."""
    if not -len(shape) <= axis < len(shape):
        raise OpShapeError(f"`{op}` axis {axis} is not an axis of {fmt_shape(shape)}")
    return axis % len(shape)


# --- reshaping ---------------------------------------------------------------------------------


def reshaped(shape: Shape, target: Sequence[int]) -> Shape:
    """``target`` with its -1 resolved for a tensor of ``shape`` (checked)."""
    out = list(target)
    if out.count(-1) > 1 or any(d == 0 or d < -1 for d in out):
        raise OpShapeError(f"`reshape` shape {fmt_shape(tuple(target))} needs positive sizes "
                           "and at most one -1")  # fmt: skip
    known, total = math.prod(d for d in out if d != -1), math.prod(shape)
    if -1 in out:
        if total % known:
            raise OpShapeError(f"cannot reshape {fmt_shape(shape)} to {fmt_shape(tuple(target))}")
        out[out.index(-1)] = total // known
    if math.prod(out) != total:
        raise OpShapeError(
            f"cannot reshape {fmt_shape(shape)} ({total} elements) to {fmt_shape(tuple(out))}"
        )
    return tuple(out)


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
        lambda a, i: reshaped(i[0], a["shape"]),
        attrs=(Attr("shape", "ints"),),
        receptive=always(Receptive.REARRANGE),
    )
)
PERMUTE = register(
    OpDef(
        "permute",
        "Reorder the per-sample axes: (C, N) -> (N, C) is permute((1, 0)).",
        Group.MOVEMENT,
        _permute_shape,
        attrs=(Attr("axes", "ints", minimum=0),),
        receptive=always(Receptive.REARRANGE),
    )
)
SELECT = register(
    OpDef(
        "select",
        "Take one index of an axis, dropping it: `x[0]` is the first token.",
        Group.MOVEMENT,
        _select_shape,
        attrs=(Attr("axis", "int", 0, minimum=0), Attr("index", "int", 0)),
        receptive=always(Receptive.REARRANGE),
    )
)

# --- slicing, padding, shifting ----------------------------------------------------------------


def slice_bounds(a: Attrs, shape: Shape) -> tuple[int, int, int, int]:
    """(axis, start, stop, step) of a ``slice`` node, with Python's rules for negative and
    out-of-range bounds resolved against ``shape``."""
    axis = axis_of("slice", a["axis"], shape)
    start, stop, step = slice(a["start"], a["end"], a["step"]).indices(shape[axis])
    return axis, start, max(start, stop), step


def _slice_shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    (x,) = inputs
    axis, start, stop, step = slice_bounds(a, x)
    size = len(range(start, stop, step))
    if size == 0:
        raise OpShapeError(
            f"`slice` {a['start']}:{'' if a['end'] is None else a['end']}:{a['step']} of axis "
            f"{a['axis']} of {fmt_shape(x)} is empty"
        )
    return (*x[:axis], size, *x[axis + 1 :])


SLICE = register(
    OpDef(
        "slice",
        "Elements start:end:step of one axis (Python's rules: negative bounds count from the "
        "end): a channel split, or option-A's subsampling with step=2.",
        Group.MOVEMENT,
        _slice_shape,
        attrs=(
            Attr("axis", "int", 0),
            Attr("start", "int", 0),
            Attr("end", "optional_int", None, doc="defaults to the end of the axis"),
            Attr("step", "int", 1, minimum=1),
        ),
        receptive=lambda a, i: (
            Receptive.POINTWISE if a["axis"] in (0, -3) and len(i[0]) == 3 else Receptive.REARRANGE
        ),
    )
)


def pad_widths(a: Attrs, shape: Shape) -> list[tuple[int, int]]:
    """(before, after) for every per-sample axis, from ``pads`` in PyTorch's ``F.pad`` order
    (the last axis first: left, right, then top, bottom, then front, back)."""
    pads = a["pads"]
    widths = [(0, 0)] * len(shape)
    for i in range(len(pads) // 2):
        widths[len(shape) - 1 - i] = (pads[2 * i], pads[2 * i + 1])
    return widths


def _pad_shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    (x,), pads = inputs, a["pads"]
    if len(pads) % 2 or len(pads) > 2 * len(x):
        raise OpShapeError(
            f"`pad` takes pairs (before, after) for up to {len(x)} axes of {fmt_shape(x)}, "
            f"the last axis first, got {len(pads)} values",
            ["as PyTorch's F.pad: (1, 1) pads the last axis, (0, 0, 0, 0, 4, 4) the channels"],
        )
    return tuple(d + b + e for d, (b, e) in zip(x, pad_widths(a, x), strict=True))


def _pad_receptive(a: Attrs, inputs: Sequence[Shape]) -> Receptive:
    """Padding only the channels of a feature map moves no pixel."""
    spatial = len(inputs[0]) == 3 and any(a["pads"][:4])
    return Receptive.REARRANGE if spatial or len(inputs[0]) != 3 else Receptive.POINTWISE


PAD = register(
    OpDef(
        "pad",
        "Constant padding, pairs (before, after) from the last axis on, as PyTorch's F.pad.",
        Group.MOVEMENT,
        _pad_shape,
        attrs=(Attr("pads", "ints", minimum=0), Attr("value", "float", 0.0)),
        receptive=_pad_receptive,
    )
)


def _roll_shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    (x,) = inputs
    if len(a["shifts"]) != len(a["axes"]):
        raise OpShapeError(
            f"`roll` needs one shift per axis, got {len(a['shifts'])} and {len(a['axes'])}"
        )
    for axis in a["axes"]:
        axis_of("roll", axis, x)
    return x


def _roll(d: Decomposition, a: Attrs) -> Value:
    """Each axis rolled by ``s``: its last ``s`` elements, then the rest."""
    y = d.inputs[0]
    for axis, shift in zip(a["axes"], a["shifts"], strict=True):
        n = y.shape[axis_of("roll", axis, y.shape)]
        s = shift % n
        if s:
            tail = d.op("slice", y, axis=axis, start=n - s)
            head = d.op("slice", y, axis=axis, end=n - s)
            y = d.op("concat", tail, head, axis=axis % len(y.shape))
    return y if d.steps else d.op("identity", y)


ROLL = register(
    OpDef(
        "roll",
        "Shift elements along axes, wrapping around (torch.roll): Swin's shifted windows.",
        Group.MOVEMENT,
        _roll_shape,
        attrs=(Attr("shifts", "ints"), Attr("axes", "ints")),
        decompose=_roll,
        receptive=always(Receptive.REARRANGE),
    )
)


def _shuffle_shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    (x,), g = inputs, a["groups"]
    if len(x) != 3 or x[0] % g:
        raise OpShapeError(
            f"`channel_shuffle` groups={g} must divide the channels of a (C, H, W) map, "
            f"got {fmt_shape(x)}"
        )
    return x


def _channel_shuffle(d: Decomposition, a: Attrs) -> Value:
    (x,), g = d.inputs, a["groups"]
    c, h, w = x.shape
    y = d.op("reshape", x, shape=(g, c // g, h, w))
    y = d.op("permute", y, axes=(1, 0, 2, 3))
    return d.op("reshape", y, shape=(c, h, w))


CHANNEL_SHUFFLE = register(
    OpDef(
        "channel_shuffle",
        "Interleave the channels of `groups` groups (ShuffleNet).",
        Group.MOVEMENT,
        _shuffle_shape,
        attrs=(Attr("groups", "int", minimum=1),),
        decompose=_channel_shuffle,
        receptive=lambda a, i: Receptive.POINTWISE,
    )
)

# --- reductions and products -------------------------------------------------------------------


def reduced_axes(op: str, a: Attrs, shape: Shape) -> tuple[int, ...]:
    """The reduced axes of ``shape``, non-negative and sorted; each at most once."""
    axes = sorted(axis_of(op, axis, shape) for axis in a["axis"])
    if len(set(axes)) != len(axes):
        raise OpShapeError(f"`{op}` reduces an axis twice: {fmt_shape(tuple(a['axis']))}")
    return tuple(axes)


def _reduce(op: str, doc: str) -> OpDef:
    def shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
        (x,) = inputs
        axes = reduced_axes(op, a, x)
        if a["keepdim"]:
            return tuple(1 if i in axes else d for i, d in enumerate(x))
        return tuple(d for i, d in enumerate(x) if i not in axes)

    def receptive(a: Attrs, inputs: Sequence[Shape]) -> Receptive:
        spatial = len(inputs[0]) == 3 and set(reduced_axes(op, a, inputs[0])) == {0}
        return Receptive.POINTWISE if spatial and a["keepdim"] else Receptive.GLOBAL

    attrs = (Attr("axis", "ints"), Attr("keepdim", "bool", False))
    return register(OpDef(op, doc, Group.REDUCE, shape, attrs=attrs, receptive=receptive))


SUM = _reduce("sum", "Sum over per-sample axes (`keepdim` keeps them as size 1).")
MEAN = _reduce("mean", "Mean over per-sample axes (`keepdim` keeps them as size 1).")


def _take_shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    data, index = inputs
    axis = axis_of("take", a["axis"], data)
    if len(index) != 1:
        raise OpShapeError(f"`take` needs a rank-1 index, got {fmt_shape(index)}")
    return (*data[:axis], index[0], *data[axis + 1 :])


TAKE = register(
    OpDef(
        "take",
        "Gather along a per-sample axis: `take(table, index, axis)` is table[..., index, ...] "
        "for a rank-1 int64 `index` (a buffer: the same for every sample). Relative position "
        "biases (Swin, MaxViT) read their table so.",
        Group.MOVEMENT,
        _take_shape,
        attrs=(Attr("axis", "int", 0),),
        inputs=2,
        receptive=always(Receptive.REARRANGE),
    )
)


def _matmul_shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    x, y = inputs
    if len(x) < 2 or len(y) < 2 or x[-1] != y[-2]:
        raise OpShapeError(
            f"`matmul` multiplies (..., n, k) by (..., k, m), got {fmt_shape(x)} and "
            f"{fmt_shape(y)}",
            ["transpose an operand with permute: k^T of (T, D) is permute((1, 0))"],
        )
    return (*broadcast(x[:-2], y[:-2]), x[-2], y[-1])


MATMUL = register(
    OpDef(
        "matmul",
        "Batched matrix product of the last two axes, the leading ones broadcast: "
        "attention's q k^T and its weighted sum of values.",
        Group.MERGE,
        _matmul_shape,
        inputs=2,
        macs=lambda a, i, out: math.prod(out) * i[0][-1],
        receptive=lambda a, i: Receptive.GLOBAL,
    )
)
