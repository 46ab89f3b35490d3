"""The macros: ``shortcut`` and ``project``, ordinary functions that ``emit`` a 1x1
convolution (+ batch norm) or a linear in a scope named by the call's label, and ``split``,
which emits one ``slice`` per piece."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import (
    ArgumentError,
    DidYouMean,
    ShapeError,
    Span,
    TypeMismatchError,
    UnknownNameError,
    ValueRangeError,
)
from ..ir import TensorValue
from ..ops import Shape, fmt_shape, projection_hint, projection_stride
from ..syntax import ast
from .values import Frame, describe

if TYPE_CHECKING:
    from .elaborator import Elaborator


class Projection(NamedTuple):
    """A projection that ``shortcut`` inserted (``Network.projections``, ``resdsl check``):
    its scope name (``layer2.0.downsample``), the call, and the shapes it maps between."""

    name: str
    span: Span
    source: Shape
    target: Shape


def _shortcut(el: Elaborator, call: ast.Call, args, kwargs, frame: Frame) -> TensorValue:
    """``shortcut(x, like=y, bn=true, project=true)``: identity if shapes match, else a
    learned projection (recorded in ``el.projections``); ``project=false`` refuses one."""
    x, like, bn, project = _macro_args(
        call, args, kwargs, ("like", "bn", "project"), {"bn": True, "project": True}
    )
    target = like.shape if isinstance(like, TensorValue) else like
    if not isinstance(target, tuple) or not all(type(d) is int for d in target):
        raise TypeMismatchError("`like` must be a tensor or a shape tuple", call.span)
    if type(project) is not bool:
        raise TypeMismatchError(
            f"`project` must be true or false, got {describe(project)}", call.span
        )
    if x.shape == target:
        return x
    if not project:
        fix = projection_hint(x.shape, target)
        raise ShapeError(
            f"the shortcut has shape {fmt_shape(x.shape)}, not {fmt_shape(target)}, and "
            "`project=false` refuses a projection", call.span,
            hints=["check the branch's channels and stride" + (
                f"; or drop `project=false` to insert `{fix}`" if fix else "")],
        )  # fmt: skip
    if len(x.shape) == 3 and len(target) == 3:
        stride = projection_stride(x.shape, target)
        if stride is None:
            raise ShapeError(
                f"cannot project {fmt_shape(x.shape)} to {fmt_shape(target)}: the spatial "
                "sizes are not related by an integer stride", call.span,
            )  # fmt: skip
        y = _projection(el, call, frame, x, target[0], stride, bn)
    elif len(x.shape) == len(target) and x.shape[:-1] == target[:-1]:
        y = _projection(el, call, frame, x, target[-1], 1, bn)
    else:
        raise ShapeError(f"cannot project {fmt_shape(x.shape)} to {fmt_shape(target)}", call.span)
    scope = y.node.rsplit(".", 1)[0]  # `<label>.0` or `<label>.1`
    el.projections.append(Projection(scope, call.span, x.shape, target))
    return y


def _project(el: Elaborator, call: ast.Call, args, kwargs, frame: Frame) -> TensorValue:
    """``project(x, channels, stride=1, bn=true)``: always a learned 1x1 conv (or linear)."""
    x, channels, stride, bn = _macro_args(
        call, args, kwargs, ("channels", "stride", "bn"), {"stride": 1, "bn": True}
    )
    for name, v in (("channels", channels), ("stride", stride)):
        if type(v) is not int or v < 1:
            raise ValueRangeError(f"`project` {name} must be a positive int, got {v!r}", call.span)
    return _projection(el, call, frame, x, channels, stride, bn)


def _projection(el, call, frame, x: TensorValue, out: int, stride: int, bn: Any) -> TensorValue:
    """A 1x1 conv (+ batchnorm2d) on feature maps; a bias-free linear on anything else."""
    if type(bn) is not bool:
        raise TypeMismatchError(f"`bn` must be true or false, got {describe(bn)}", call.span)
    if len(x.shape) != 3 and stride != 1:
        raise ValueRangeError(
            f"a stride needs a (C, H, W) feature map, got {fmt_shape(x.shape)}", call.span
        )
    scope = el._name(frame, call.label, call.func, call.span)
    inner = Frame(frame.vars, scope, call.func)
    if len(x.shape) == 3:
        attrs = {"stride": (stride, call.span), "bias": (False, call.span)}
        y = el.emit(
            "conv2d", [x], {0: (out, call.span), 1: (1, call.span)}, attrs, call.span, inner, "0"
        )
        if bn:
            y = el.emit("batchnorm2d", [y], {}, {}, call.span, inner, "1")
        return y
    return el.emit(
        "linear", [x], {0: (out, call.span)}, {"bias": (False, call.span)}, call.span, inner, "0"
    )


def _macro_args(call: ast.Call, args, kwargs, names: tuple[str, ...], defaults: dict) -> list:
    if not args or not isinstance(args[0][0], TensorValue):
        raise ArgumentError(f"`{call.func}` takes a tensor first", call.span)
    values = {}
    for i, (v, span) in enumerate(args[1:]):
        if i >= len(names):
            raise ArgumentError(f"`{call.func}` takes at most {len(names)} arguments", span)
        values[names[i]] = v
    for key, (v, span) in kwargs.items():
        if key not in names:
            raise UnknownNameError(
                f"`{call.func}` has no argument `{key}`",
                span,
                hints=DidYouMean(list(names)).hint(key),
            )
        values[key] = v
    for name in names:
        if name not in values:
            if name not in defaults:
                raise ArgumentError(f"`{call.func}` needs `{name}`", call.span)
            values[name] = defaults[name]
    return [args[0][0], *(values[n] for n in names)]


def _split(el: Elaborator, call: ast.Call, args, kwargs, frame: Frame) -> tuple[TensorValue, ...]:
    """``split(x, sizes, axis=0)``: consecutive ``slice`` nodes along ``axis``, as
    ``torch.split``: ``sizes`` an int (chunks of that size, the last one smaller) or a tuple
    of sizes adding up to the axis. A label names the pieces ``{label}.0``, ``{label}.1``."""
    x, sizes, axis = _macro_args(call, args, kwargs, ("sizes", "axis"), {"axis": 0})
    if type(axis) is not int:
        raise TypeMismatchError(f"`split` axis must be an int, got {describe(axis)}", call.span)
    if not -len(x.shape) <= axis < len(x.shape):
        raise ValueRangeError(f"`split` axis {axis} is not an axis of {fmt_shape(x.shape)}",
                              call.span)  # fmt: skip
    n = x.shape[axis]
    if type(sizes) is int and sizes >= 1:
        sizes = (sizes,) * (n // sizes) + ((n % sizes,) if n % sizes else ())
    elif not (isinstance(sizes, tuple) and sizes and all(type(s) is int and s >= 1 for s in sizes)):
        raise TypeMismatchError(
            f"`split` sizes must be a positive int or a tuple of them, got {describe(sizes)}",
            call.span,
        )
    elif sum(sizes) != n:
        raise ShapeError(
            f"`split` sizes {fmt_shape(sizes)} add up to {sum(sizes)}, not to the {n} of axis "
            f"{axis} of {fmt_shape(x.shape)}",
            call.span,
        )
    inner, names = frame, [None] * len(sizes)
    if call.label is not None:
        inner = Frame(frame.vars, el._name(frame, call.label, call.func, call.span), call.func)
        names = [str(i) for i in range(len(sizes))]
    pieces, start = [], 0
    for size, name in zip(sizes, names, strict=True):
        bounds = {"axis": (axis, call.span), "start": (start, call.span),
                  "end": (start + size, call.span)}  # fmt: skip
        pieces.append(el.emit("slice", [x], {}, bounds, call.span, inner, name))
        start += size
    return tuple(pieces)


MACROS = {"shortcut": _shortcut, "project": _project, "split": _split}
