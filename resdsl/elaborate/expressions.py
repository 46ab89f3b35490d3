"""Expressions: names, arithmetic (scalar and tensor), attributes, indexing, choices."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..errors import (
    ArgumentError,
    DidYouMean,
    LimitError,
    Note,
    ShapeError,
    Span,
    TypeMismatchError,
    UnknownNameError,
    ValueRangeError,
)
from ..ir import TensorValue
from ..ops import OPS, fmt_shape, projection_hint
from ..ops.core import spec_text
from ..syntax import ast
from .limits import _elements
from .values import (
    POISON,
    TENSOR_ATTRS,
    BlockRef,
    Frame,
    MissingLabel,
    OpRef,
    _Poisoned,
    _text,
    describe,
    is_literal,
)


class Expressions:
    """Evaluating expressions (mixed into :class:`~resdsl.elaborate.Elaborator`)."""

    def eval(self, expr: ast.Expr, frame: Frame) -> Any:
        self.steps += 1  # one statement may hold a long expression (inlined: the hot path)
        if self.steps > self.limits.max_steps:
            self._tick(0, expr.span)
        match expr:
            case ast.Literal(value=value):
                return value
            case ast.Name(id=name):
                return self._lookup(name, expr.span, frame)
            case ast.TupleExpr(items=items):
                value = tuple(self.eval(i, frame) for i in items)
                self._check_elements(value, expr.span)
                return value
            case ast.Comprehension():
                return self._comprehension(expr, frame)
            case ast.BinOp(op="and", left=left, right=right):
                return self._bool(left, frame) and self._bool(right, frame)
            case ast.BinOp(op="or", left=left, right=right):
                return self._bool(left, frame) or self._bool(right, frame)
            case ast.BinOp():
                return self._binop(expr, frame)
            case ast.UnaryOp(op="not", operand=operand):
                return not self._bool(operand, frame)
            case ast.UnaryOp(op=op, operand=operand):
                value = self.eval(operand, frame)
                if isinstance(value, TensorValue):
                    scale = (-1.0 if op == "-" else 1.0, expr.span)
                    return self.emit("scale_shift", [value], {}, {"scale": scale}, expr.span,
                                     frame, None)  # fmt: skip
                if type(value) not in (int, float):
                    raise TypeMismatchError(
                        f"bad operand for unary {op}: {describe(value)}", expr.span
                    )
                return -value if op == "-" else value
            case ast.Cond():  # an `elif` chain is a chain of Conds: walk it, not recurse
                while isinstance(expr, ast.Cond):
                    expr = expr.then if self._bool(expr.test, frame) else expr.otherwise
                return self.eval(expr, frame)
            case ast.Attribute():
                return self._attribute(expr, frame)
            case ast.Index():
                return self._index(expr, frame)
            case ast.Chain(head=head, stages=stages):
                value, span = self.eval(head, frame), head.span
                for stage in stages:
                    value, span = self.call(stage, frame, (value, span)), stage.span
                return value
            case ast.Call():
                return self.call(expr, frame)
            case ast.Choice():  # a search space loaded as a spec: the first value
                return self.choice_options(expr, frame)[0]
        raise AssertionError(f"unknown expression {expr!r}")  # pragma: no cover

    def choice_options(
        self, choice: ast.Choice, frame: Frame, type_: str | None = None
    ) -> list[Any]:
        """The values of ``choice(...)`` in ``frame``: ranges spread, repeats dropped.

        For a parameter whose type ``type_`` is not ``tuple``, a tuple value is spread too
        (``choice(ops)`` over ``ops = ("zero", "skip")``); for a ``tuple`` parameter a tuple
        is one value."""
        values: dict[str, Any] = {}  # keyed by repr: 1, 1.0 and true are different values
        spread = (range, tuple) if type_ not in (None, "tuple") else range
        for option in choice.options:
            value = self.eval(option, frame)
            for v in value if isinstance(value, spread) else (value,):
                if not is_literal(v):
                    raise TypeMismatchError(
                        "a choice is between numbers, true/false, strings and tuples of "
                        f"them, got {describe(v)}", option.span,
                    )  # fmt: skip
                values.setdefault(repr(v), v)
        if not values:
            raise ValueRangeError("this choice has no values", choice.span)
        return list(values.values())

    def _lookup(self, name: str, span: Span, frame: Frame) -> Any:
        if name in frame.vars:
            value = frame.vars[name]
            if value is POISON:
                raise _Poisoned
            if isinstance(value, MissingLabel):  # the note on the instance shows the call
                raise ArgumentError(
                    f"`label` is the label of the call to inline block `{value.block}`, and "
                    "this call has none", span,
                    hints=[f"label the call: `norm: {value.block}(...)`"],
                )  # fmt: skip
            return value
        definition = self.program.definitions.get(name)
        if definition is not None and definition.kind == "block":
            return BlockRef(definition)
        if name in OPS and name != "input":  # an op as a value: `squeeze_excite(act=silu)`
            return OpRef(name)
        known = [*frame.vars, *self.program.definitions]
        hints = DidYouMean(known).hint(name)
        if name in self.builtins:
            hints = [f"`{name}` is a function: call it, `{name}(...)`"]
        raise UnknownNameError(f"unknown name `{name}`", span, hints=hints)

    def _bool(self, expr: ast.Expr, frame: Frame) -> bool:
        value = self.eval(expr, frame)
        if type(value) is not bool:
            raise TypeMismatchError(f"expected true or false, got {describe(value)}", expr.span)
        return value

    def _int(self, expr: ast.Expr, frame: Frame, what: str) -> int:
        value = self.eval(expr, frame)
        if type(value) is not int:
            raise TypeMismatchError(f"{what} must be an int, got {describe(value)}", expr.span)
        return value

    def _binop(self, expr: ast.BinOp, frame: Frame) -> Any:
        """Evaluate a left-deep run (``a + b - c + ...``) iteratively, however long."""
        spine = [expr]
        while isinstance(spine[-1].left, ast.BinOp) and spine[-1].left.op not in ("and", "or"):
            spine.append(spine[-1].left)
        value = self.eval(spine[-1].left, frame)
        for node in reversed(spine):
            value = self._apply(node, value, self.eval(node.right, frame), frame)
        return value

    def _apply(self, expr: ast.BinOp, left: Any, right: Any, frame: Frame) -> Any:
        compared = expr.op in ("==", "!=") and isinstance(left, tuple | str)  # elementwise
        self._tick(1 + (_elements(left, self.limits.max_loop) if compared else 0), expr.span)
        if isinstance(left, TensorValue) or isinstance(right, TensorValue):
            return self._tensor_binop(expr, left, right, frame)
        try:
            result = _SCALAR_OPS[expr.op](left, right)
        except ZeroDivisionError:
            raise ValueRangeError("division by zero", expr.span) from None
        except OverflowError:
            raise LimitError(f"the result of `{expr.op}` is too large", expr.span) from None
        except (TypeError, ValueError):
            raise TypeMismatchError(
                f"unsupported operands for `{expr.op}`: {describe(left)} and {describe(right)}",
                expr.span,
            ) from None
        self._check_scalar(result, expr.span)
        return result

    def _tensor_binop(self, expr: ast.BinOp, left: Any, right: Any, frame: Frame) -> TensorValue:
        """Arithmetic with tensors: `+` `-` of equal shapes, `*` broadcasting, and numbers.

        ``y + x`` is the residual add (shapes must match); ``t * f`` a gate; ``x / L``,
        ``alpha * f`` and ``1 - t`` become ``scale_shift`` with constant factors.
        """
        op, span = expr.op, expr.span
        tensors = isinstance(left, TensorValue) and isinstance(right, TensorValue)
        if tensors and op in ("+", "-", "*"):
            kind = {"+": "add", "-": "sub", "*": "mul"}[op]
            try:
                return self.emit(kind, [left, right], {}, {}, span, frame, None)
            except ShapeError as e:
                if op == "+":
                    e.hints = self._projection_hints(expr, left, right) or e.hints
                e.notes = [
                    Note(f"`{_text(side)}` has shape {fmt_shape(v.shape)}", v.span)
                    for side, v in ((expr.left, left), (expr.right, right))
                    if v.span is not None
                ]
                raise
        tensor_left = isinstance(left, TensorValue)
        number = right if tensor_left else left
        supported = op in ("+", "-", "*") or (op == "/" and tensor_left)
        if tensors or type(number) not in (int, float) or not supported:
            raise TypeMismatchError(
                f"`{op}` is not defined for {describe(left)} and {describe(right)}", span,
                hints=["tensors combine with `+`, `-`, `*` and with numbers (`x / 2`, `1 - t`)"],
            )  # fmt: skip
        try:
            scale, shift = _affine(op, float(number), tensor_left, span)
        except OverflowError:  # float() of an int past 1e308 (a raised Limits.max_int)
            raise LimitError(f"the constant in `{op}` is too large for a float", span) from None
        if not (math.isfinite(scale) and math.isfinite(shift)):  # `x / 1e-320`: 1 / 1e-320
            raise ValueRangeError(
                f"dividing by {spec_text(number)} scales by {scale}: constants in the graph "
                "must be finite numbers", span,
            )  # fmt: skip
        tensor = left if tensor_left else right
        return self.emit(
            "scale_shift", [tensor], {}, {"scale": (scale, span), "shift": (shift, span)},
            span, frame, None,
        )  # fmt: skip

    def _projection_hints(self, expr: ast.BinOp, left: TensorValue, right: TensorValue) -> list:
        """Suggest projecting the skip: the operand that a projection would widen or
        subsample (more pixels, fewer channels: a block's input), else the one computed
        earlier in the graph."""
        order = {name: i for i, name in enumerate(self.graph.nx.nodes)}

        def widens(a: TensorValue, b: TensorValue) -> bool:
            return (
                len(a.shape) == len(b.shape)
                and a.shape[0] <= b.shape[0]
                and all(x >= y for x, y in zip(a.shape[1:], b.shape[1:], strict=True))
            )

        operands = [(left, expr.left, right), (right, expr.right, left)]  # (value, expr, other)
        (skip, skip_expr, _), (res, res_expr, _) = sorted(
            operands, key=lambda p: (not widens(p[0], p[2]), order[p[0].node])
        )
        fix = projection_hint(skip.shape, res.shape)
        if fix is None:
            return []
        s, r = _text(skip_expr), _text(res_expr)
        return [
            f"project the shortcut: `{r} + shortcut({s}, like={r})` is identity when the "
            f"shapes match and `{s} -> {fix}` here"
        ]

    def _comprehension(self, expr: ast.Comprehension, frame: Frame) -> tuple:
        """The elements in loop order; the loop variables are visible only inside, each
        pass counts a step, and the result is bounded like any tuple."""
        inner = Frame(dict(frame.vars), frame.prefix, frame.block)
        out: list[Any] = []

        def loop(depth: int) -> None:
            if depth == len(expr.loops):
                out.append(self.eval(expr.element, inner))
                if len(out) > self.limits.max_loop:
                    self._check_elements(tuple(out), expr.span)
                return
            name, iterable = expr.loops[depth]
            values = self.eval(iterable, inner)
            if not isinstance(values, tuple | range):
                raise TypeMismatchError(
                    f"`for {name} in ...` needs a range or a tuple, got {describe(values)}",
                    iterable.span,
                )
            for value in values:
                inner.vars[name] = value
                loop(depth + 1)

        loop(0)
        value = tuple(out)
        self._check_elements(value, expr.span)
        return value

    def _attribute(self, expr: ast.Attribute, frame: Frame) -> Any:
        value = self.eval(expr.value, frame)
        if not isinstance(value, TensorValue):
            raise TypeMismatchError(
                f"`.{expr.attr}` needs a tensor, got {describe(value)}", expr.span
            )
        rule = TENSOR_ATTRS.get(expr.attr)
        if rule is None:
            raise UnknownNameError(
                f"tensors have no attribute `{expr.attr}`", expr.span,
                hints=DidYouMean(list(TENSOR_ATTRS)).hint(expr.attr)
                or ["known: " + ", ".join(TENSOR_ATTRS)],
            )  # fmt: skip
        if expr.attr in ("height", "width") and len(value.shape) < 2:
            raise ShapeError(f"`.{expr.attr}` needs a rank-2 or higher tensor", expr.span)
        return rule(value.shape)

    def _index(self, expr: ast.Index, frame: Frame) -> Any:
        value, index = self.eval(expr.value, frame), self.eval(expr.index, frame)
        if isinstance(value, TensorValue) and type(index) is int:  # x[0]: the first token
            attrs = {"axis": (0, expr.span), "index": (index, expr.index.span)}
            return self.emit("select", [value], {}, attrs, expr.span, frame, None)
        if not isinstance(value, tuple | str) or type(index) is not int:
            raise TypeMismatchError(
                f"cannot index {describe(value)} with {describe(index)}", expr.span
            )
        if not -len(value) <= index < len(value):
            raise ValueRangeError(f"index {index} out of range for length {len(value)}", expr.span)
        return value[index]


_SCALAR_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": lambda a, b: _num(a, b) + b if not isinstance(a, tuple | str) else a + b,
    "-": lambda a, b: _num(a, b) - b,
    "*": lambda a, b: _num(a, b) * b,
    "/": lambda a, b: _num(a, b) / b,
    "//": lambda a, b: _num(a, b) // b,
    "%": lambda a, b: _num(a, b) % b,
    "**": lambda a, b: _pow(_num(a, b), b),
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: _num(a, b) < b,
    "<=": lambda a, b: _num(a, b) <= b,
    ">": lambda a, b: _num(a, b) > b,
    ">=": lambda a, b: _num(a, b) >= b,
}


def _num(a: Any, b: Any) -> Any:
    if type(a) not in (int, float) or type(b) not in (int, float):
        raise TypeError
    return a


def _pow(a: Any, b: Any) -> Any:
    if type(b) is int and abs(b) > 256 and abs(a) > 1:
        raise OverflowError
    return a**b


def _affine(op: str, number: float, tensor_left: bool, span: Span) -> tuple[float, float]:
    """(scale, shift) of ``tensor op number`` or ``number op tensor``."""
    if op == "+":
        return 1.0, number
    if op == "-":
        return (1.0, -number) if tensor_left else (-1.0, number)
    if op == "*":
        return number, 0.0
    if number == 0:  # `/`, with the tensor on the left (checked by the caller)
        raise ValueRangeError("division by zero", span)
    return 1.0 / number, 0.0
