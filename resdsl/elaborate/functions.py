"""Builtin functions of the language: ``min``, ``max``, ``range``, ``len``, ``str``, ..."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import ArgumentError, DidYouMean, TypeMismatchError, UnknownNameError, ValueRangeError
from ..ir import TensorValue
from ..ops import OPS
from ..syntax import ast
from .values import OpRef, Partial, TrainingOutput, _label_part, describe, is_block

if TYPE_CHECKING:
    from .elaborator import Elaborator


def builtin_functions(el: Elaborator) -> dict[str, Callable]:
    """The builtins, name -> ``f(call, args, kwargs)``: small closures over ``el`` (for its
    step and loop limits), in one function so they share the argument checker ``numbers``."""

    def numbers(name: str, call: ast.Call, args, kwargs, minimum=1, maximum=None) -> list:
        if kwargs:
            _, (_, span) = next(iter(kwargs.items()))
            raise ArgumentError(f"`{name}` takes no keyword arguments", span)
        if len(args) < minimum or (maximum is not None and len(args) > maximum):
            count = f"{minimum}" if minimum == maximum else f"{minimum} to {maximum or 'any'}"
            raise ArgumentError(f"`{name}` takes {count} argument(s), got {len(args)}", call.span)
        for v, span in args:
            if type(v) not in (int, float):
                raise TypeMismatchError(f"`{name}` needs numbers, got {describe(v)}", span)
        return [v for v, _ in args]

    def minmax(fn):
        def run(call, args, kwargs):
            if len(args) == 1 and isinstance(args[0][0], tuple) and args[0][0]:
                el._tick(len(args[0][0]), call.span)
                args = [(v, args[0][1]) for v in args[0][0]]
            return fn(numbers(call.func, call, args, kwargs))

        return run

    def range_(call, args, kwargs):
        values = numbers("range", call, args, kwargs, 1, 3)
        if any(type(v) is not int for v in values):
            raise TypeMismatchError("`range` needs ints", call.span)
        if len(values) == 3 and values[2] == 0:
            raise ValueRangeError("`range` step must not be zero", call.span)
        r = range(*values)
        # len() raises OverflowError past sys.maxsize: count by arithmetic instead
        el._loop_bound(max(0, -(-(r.stop - r.start) // r.step)), call.span)
        return r

    def len_(call, args, kwargs):
        if len(args) != 1 or kwargs or not isinstance(args[0][0], tuple | str | range):
            raise ArgumentError("`len` takes one tuple or string", call.span)
        return len(args[0][0])

    def convert(fn, name):
        def run(call, args, kwargs):
            (v,) = numbers(name, call, args, kwargs, 1, 1)
            return fn(v)

        return run

    def gcd(call, args, kwargs):
        values = numbers("gcd", call, args, kwargs, 2)
        for v, (_, span) in zip(values, args, strict=True):
            if type(v) is not int:
                raise TypeMismatchError(f"`gcd` needs ints, got {describe(v)}", span)
        return math.gcd(*values)

    def log(call, args, kwargs):
        values = numbers(call.func, call, args, kwargs, 1, 1 if call.func == "log2" else 2)
        for v, (_, span) in zip(values, args, strict=True):
            if v <= 0:
                raise ValueRangeError(f"`{call.func}` needs a positive number, got {v}", span)
        if call.func == "log2":
            return math.log2(values[0])
        if len(values) == 2 and values[1] == 1:
            raise ValueRangeError("`log` to base 1 is not defined", args[1][1])
        return math.log(*values)

    def make_divisible(call, args, kwargs):
        v, divisor, min_value, round_limit = _bind(
            "make_divisible", call, args, kwargs,
            {"v": None, "divisor": 8, "min_value": 0, "round_limit": 0.9},
        )  # fmt: skip
        numbers("make_divisible", call, [v, round_limit], {})
        for name, (value, span) in (("divisor", divisor), ("min_value", min_value)):
            if type(value) is not int:
                raise TypeMismatchError(f"`{name}` must be an int, got {describe(value)}", span)
        if divisor[0] < 1 or min_value[0] < 0:
            bad, (value, span) = (
                ("divisor", divisor) if divisor[0] < 1 else ("min_value", min_value)
            )
            least = 1 if bad == "divisor" else 0
            raise ValueRangeError(f"`{bad}` must be at least {least}, got {value}", span)
        return _make_divisible(v[0], divisor[0], min_value[0], round_limit[0])

    def partial(call, args, kwargs):
        if len(args) != 1:
            raise ArgumentError(
                f"`partial` takes one block and keyword arguments, got {len(args)} "
                "positional argument(s)", args[1][1] if len(args) > 1 else call.span,
                hints=["bind parameters by name: `partial(se_bottleneck, reduction=8)`"],
            )  # fmt: skip
        block, at = args[0]
        if not is_block(block):
            raise TypeMismatchError(f"`partial` needs a block, got {describe(block)}", at)
        if isinstance(block, OpRef):
            return _partial_op(block, kwargs)
        definition = block.definition
        params = {p.name: p for p in definition.params}
        bound = dict((k, (v, s)) for k, v, s in getattr(block, "kwargs", ()))
        for key, (value, span) in kwargs.items():
            if key not in params:
                raise UnknownNameError(
                    f"`{definition.name}` has no parameter `{key}`", span,
                    hints=DidYouMean(sorted(params)).hint(key),
                )  # fmt: skip
            if isinstance(value, TensorValue):
                raise TypeMismatchError(
                    "`partial` binds parameters, not tensor inputs", span,
                    hints=["pass tensors when the block is called"],
                )  # fmt: skip
            bound[key] = (el.typed(params[key], value, span), span)  # a later binding wins
        return Partial(definition, tuple((k, v, s) for k, (v, s) in bound.items()))

    def _partial_op(op: OpRef, kwargs) -> OpRef:
        """An op with attributes bound: checked by name here, by value when it is called."""
        names = [a.name for a in OPS[op.op].attrs]
        bound = {k: (v, s) for k, v, s in op.kwargs}
        for key, (value, span) in kwargs.items():
            if key not in names:
                raise UnknownNameError(
                    f"`{op.op}` has no argument `{key}`", span,
                    hints=DidYouMean(names).hint(key) or [f"signature: {OPS[op.op].signature()}"],
                )  # fmt: skip
            bound[key] = (value, span)
        return OpRef(op.op, tuple((k, v, s) for k, (v, s) in bound.items()))

    def relative_position_index(call, args, kwargs):
        if len(args) != 1 or kwargs:
            raise ArgumentError("`relative_position_index` takes one window size", call.span)
        window = _positive_pair(*args[0], "window")
        n = window[0] * window[1]
        el._loop_bound(n * n, call.span)  # a tuple of n * n elements, built in as many steps
        el._tick(n * n, call.span)
        return _relative_position_index(*window)

    def absolute_offset_index(call, args, kwargs):
        if not 1 <= len(args) <= 2 or kwargs:
            raise ArgumentError(
                "`absolute_offset_index` takes a resolution and an optional stride", call.span
            )
        resolution = _positive_pair(*args[0], "resolution")
        stride = args[1][0] if len(args) == 2 else 1
        if type(stride) is not int or stride < 1:
            raise TypeMismatchError(
                f"the stride is a positive int, got {describe(stride)}", args[1][1]
            )
        h, w = resolution
        count = h * w * (-(-h // stride)) * (-(-w // stride))
        el._loop_bound(count, call.span)  # a tuple of that many elements, built in as many steps
        el._tick(count, call.span)
        return _absolute_offset_index(h, w, stride)

    def training(call, args, kwargs):
        if len(args) != 1 or kwargs or not isinstance(args[0][0], TensorValue):
            got = describe(args[0][0]) if len(args) == 1 and not kwargs else "other arguments"
            raise TypeMismatchError(
                f"`training` marks one tensor as a training-only output, got {got}", call.span
            )
        return TrainingOutput(args[0][0])

    def str_(call, args, kwargs):
        if len(args) != 1 or kwargs:
            raise ArgumentError("`str` takes one argument", call.span)
        return _label_part(args[0][0], call)

    return {
        "min": minmax(min),
        "max": minmax(max),
        "abs": convert(abs, "abs"),
        "int": convert(int, "int"),
        "float": convert(float, "float"),
        "round": convert(round, "round"),
        "ceil": convert(math.ceil, "ceil"),
        "floor": convert(math.floor, "floor"),
        "sqrt": lambda c, a, k: math.sqrt(_nonneg(numbers("sqrt", c, a, k, 1, 1)[0], c)),
        "gcd": gcd,
        "log2": log,
        "log": log,
        "make_divisible": make_divisible,
        "partial": partial,
        "range": range_,
        "len": len_,
        "str": str_,
        "training": training,
        "relative_position_index": relative_position_index,
        "absolute_offset_index": absolute_offset_index,
    }


def _positive_pair(value: object, span: object, what: str) -> tuple[int, int]:
    """A builtin's ``what`` argument: an int (a square) or a pair of positive ints."""
    if type(value) is int:
        value = (value, value)
    if not (isinstance(value, tuple) and len(value) == 2
            and all(type(v) is int and v >= 1 for v in value)):  # fmt: skip
        raise TypeMismatchError(
            f"the {what} is an int or a pair of positive ints, got {describe(value)}", span
        )
    return value


def _nonneg(v: float, call: ast.Call) -> float:
    if v < 0:
        raise ValueRangeError("`sqrt` of a negative number", call.span)
    return v


def _relative_position_index(height: int, width: int) -> tuple[int, ...]:
    """Swin's and MaxViT's index of each (query, key) pair of a window into the table of
    relative offsets: ``(dy + height - 1) * (2 * width - 1) + dx + width - 1`` with
    ``(dy, dx)`` the query's position minus the key's, row-major over the window."""
    cells = [(i // width, i % width) for i in range(height * width)]
    return tuple(
        (yi - yj + height - 1) * (2 * width - 1) + xi - xj + width - 1
        for yi, xi in cells
        for yj, xj in cells
    )


def _absolute_offset_index(height: int, width: int, stride: int = 1) -> tuple[int, ...]:
    """LeViT's index of each (query, key) pair into a table of absolute offsets:
    ``|dy| * width + |dx|``, the queries every ``stride``-th row and column of the
    ``height`` x ``width`` grid, the keys every position, both row-major."""
    keys = [(i // width, i % width) for i in range(height * width)]
    queries = [(y, x) for y in range(0, height, stride) for x in range(0, width, stride)]
    return tuple(abs(yq - yk) * width + abs(xq - xk) for yq, xq in queries for yk, xk in keys)


def _make_divisible(v: float, divisor: int, min_value: int, round_limit: float) -> int:
    """timm's ``make_divisible`` and torchvision's ``_make_divisible``, line for line: the
    nearest multiple of ``divisor``, at least ``min_value`` (``divisor`` when 0), and not
    more than ``1 - round_limit`` below ``v``."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


def _bind(name: str, call: ast.Call, args, kwargs, defaults: dict) -> list:
    """``(value, span)`` per parameter of a builtin that takes keywords, in ``defaults``'
    order; a default of None means required."""
    names = list(defaults)
    if len(args) > len(names):
        raise ArgumentError(
            f"`{name}` takes at most {len(names)} arguments, got {len(args)}", args[len(names)][1]
        )
    values = {names[i]: arg for i, arg in enumerate(args)}
    for key, (value, span) in kwargs.items():
        if key not in defaults:
            raise UnknownNameError(
                f"`{name}` has no argument `{key}`", span, hints=DidYouMean(names).hint(key)
            )
        if key in values:
            raise ArgumentError(f"argument `{key}` is given twice", span)
        values[key] = (value, span)
    for key, default in defaults.items():
        if key not in values:
            if default is None:
                raise ArgumentError(f"`{name}` needs `{key}`", call.span)
            values[key] = (default, call.span)
    return [values[k] for k in names]
