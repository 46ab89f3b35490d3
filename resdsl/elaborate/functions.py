"""Builtin functions of the language: ``min``, ``max``, ``range``, ``len``, ``str``, ..."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import ArgumentError, TypeMismatchError, ValueRangeError
from ..syntax import ast
from .values import _label_part, describe

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
        "range": range_,
        "len": len_,
        "str": str_,
    }


def _nonneg(v: float, call: ast.Call) -> float:
    if v < 0:
        raise ValueRangeError("`sqrt` of a negative number", call.span)
    return v
