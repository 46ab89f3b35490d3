"""AST -> graph IR: bind parameters, run blocks and loops, name every op, infer shapes.

Elaboration is an interpreter over the AST. Scalars are Python values, tensors are
:class:`~resdsl.ir.TensorValue` handles; calling an op adds a node to the graph after
its shape rule (from the op table) accepts the inputs, so every later expression can
query shapes (``x.channels``) and a mismatch is reported where it is written.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import (
    ArgumentError,
    CycleError,
    DidYouMean,
    DuplicateNameError,
    LimitError,
    Note,
    ShapeError,
    Span,
    SpecError,
    TypeMismatchError,
    UnknownNameError,
    ValueRangeError,
)
from .ir import Graph, Node, TensorInfo, TensorValue, freeze
from .loader import Program
from .names import check_label
from .ops import OPS, AttrError, OpShapeError, fmt_shape, projection_hint, projection_stride
from .ops.core import spec_text
from .syntax import ast


@dataclass(frozen=True)
class Limits:
    """Bounds that keep a hostile or mistaken spec from exhausting time or memory.

    The defaults admit real networks by a wide margin (ResNet-152: 515 ops, 5,403 steps,
    tensors of 802,816 elements) and stop a hostile spec within about a second and well
    under 200 MB. docs/security.md explains each bound.
    """

    max_nodes: int = 20_000  # ops in the graph
    max_loop: int = 100_000  # passes of one loop; elements of a tuple or string
    max_call_depth: int = 64  # nesting of block calls
    max_int: int = 2**62  # magnitude of a computed integer
    max_tensor_elements: int = 2**28  # elements of one tensor (per sample) or weight
    max_steps: int = 500_000  # expressions and statements run, loop passes, elements built
    max_name_length: int = 1_000  # characters of a hierarchical node name


@dataclass(frozen=True)
class BlockRef:
    """A block definition used as a value (``stage(bottleneck, ...)``)."""

    definition: ast.Definition


@dataclass
class Frame:
    """Variables and naming scope of one block instance."""

    vars: dict[str, Any]
    prefix: str  # hierarchical name of this instance, "" at top level
    block: str


class _Return(Exception):  # noqa: N818 - control flow, not an error
    def __init__(self, value: Any, stmt: ast.Return) -> None:
        self.value, self.stmt = value, stmt


class _Poison:
    """The value of a name whose statement failed: using it fails silently (the error that
    caused it is already recorded), so one mistake is reported once, not at every use."""

    def __repr__(self) -> str:
        return "<poison>"


POISON = _Poison()


class _Poisoned(Exception):  # noqa: N818 - control flow, not an error
    """An expression used a poisoned name; its statement is skipped without a new error."""


class _Stop(Exception):  # noqa: N818 - control flow, not an error
    """Enough errors recorded: unwind to the entry point, which raises them."""


MAX_ERRORS = 20  # stop collecting after this many distinct errors
ERROR_STEPS = 1_000  # what a recovered error costs against Limits.max_steps
# A block call (a frame, its name, binding each parameter and input) and a new op (its
# shape rule, its node in the graph) are each many times the work of an expression: they
# are charged so, so that max_steps bounds time whatever a spec spends its steps on (a
# tree of 2**40 calls of an empty block stops within a second).
CALL_STEPS = 20
NODE_STEPS = 10
MAX_ATTR_INT = 2**31 - 1  # integer op attributes: what 32-bit kernel arguments hold


PARAM_TYPES: dict[str, Callable[[Any], bool]] = {
    "int": lambda v: type(v) is int,
    "float": lambda v: type(v) in (int, float),
    "bool": lambda v: type(v) is bool,
    "str": lambda v: type(v) is str,
    "tuple": lambda v: type(v) is tuple,
    "block": lambda v: isinstance(v, BlockRef),
}

TENSOR_ATTRS = {
    "shape": lambda s: s,
    "rank": len,
    "channels": lambda s: s[0],
    "features": lambda s: s[-1],
    "height": lambda s: s[-2],
    "width": lambda s: s[-1],
}


@dataclass
class Elaborator:
    program: Program
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        self.graph = Graph()
        self.names: dict[str, Span | None] = {}  # every node and scope name in use
        self.counters: dict[tuple[str, str], int] = {}
        self.stack: list[tuple[ast.Definition, Span | None]] = []
        self.statement: Span | None = None  # the statement being run, for backstop errors
        self.errors: list[SpecError] = []  # recorded by statements that failed; see _exec
        self.instances: list[tuple[str, str, Span]] = []  # (name, block, call) being run
        self.builtins = _builtins(self)
        self.steps = 0  # work done, against limits.max_steps

    # --- entry point ---------------------------------------------------------------------------

    def network(self, name: str | None, params: dict[str, Any]) -> Graph:
        definition = self._pick_network(name)
        self.graph.name = definition.name
        frame = Frame({}, "", definition.name)
        self._bind_params(definition, frame, {}, params, definition.name_span, from_api=True)
        for inp in definition.inputs:
            frame.vars[inp.name] = self._input(inp, frame)
        self.stack.append((definition, None))
        try:
            self._exec(definition.body, frame)
        except _Return as r:
            self._raise_recorded()
            self._outputs(r.stmt, r.value)
        except (_Poisoned, _Stop):
            self._raise_recorded()
            raise AssertionError("a poisoned value without an error") from None  # pragma: no cover
        else:
            self._raise_recorded()
            raise SpecError(f"network `{definition.name}` has no `return`", definition.name_span)
        return self.graph

    # --- error recovery ------------------------------------------------------------------------

    def _record(self, error: SpecError) -> None:
        """Keep ``error`` and go on with the next statement, so one run reports every
        independent mistake. Limits and cycles are not recovered from: going on would
        repeat the expensive work they stopped."""
        if isinstance(error, LimitError | CycleError):
            raise error
        # an error's hints may scan the graph or the names in scope: a failing statement in a
        # long loop must not add up to unbounded work
        self._tick(ERROR_STEPS, error.span)
        key = (error.code, error.span, error.message)
        if any((e.code, e.span, e.message) == key for e in self.errors):
            return  # the same mistake in another instance of a block
        for name, block, call in reversed(self.instances[-8:]):
            error.notes.append(Note(f"in `{name}`, an instance of `{block}`", call))
        self.errors.append(error)
        if len(self.errors) >= MAX_ERRORS:
            raise _Stop

    def _raise_recorded(self) -> None:
        """Raise the first recorded error (in source order), carrying all of them."""
        if not self.errors:
            return
        ordered = sorted(self.errors, key=_error_order)
        first = ordered[0]
        first.errors = ordered
        raise first

    def _poison(self, stmt: ast.Stmt, frame: Frame) -> None:
        """Mark every name ``stmt`` would have assigned as poisoned."""
        for name in _assigned(stmt):
            frame.vars[name] = POISON

    def _pick_network(self, name: str | None) -> ast.Definition:
        main = self.program.main
        networks = [d for d in main.definitions if d.kind == "network"]
        if name is None:
            if len(networks) == 1:
                return networks[0]
            if not networks:
                raise SpecError(f"{main.path} defines no `network`", Span(main.path, 1, 1, 1, 1))
            names = ", ".join(n.name for n in networks)
            raise SpecError(
                f"{main.path} defines several networks ({names}); pick one by name",
                networks[1].name_span,
                hints=[
                    "pass `network=NAME` to resdsl.load, or `--network NAME` on the command line"
                ],
            )
        found = {d.name: d for d in networks}.get(name)
        if found is None:
            raise UnknownNameError(
                f"no network named `{name}` in {main.path}",
                hints=DidYouMean([d.name for d in networks]).hint(name),
            )
        return found

    def _input(self, inp: ast.Input, frame: Frame) -> TensorValue:
        if inp.shape is None:
            raise TypeMismatchError(
                f"network input `{inp.name}` needs a shape", inp.span,
                hints=[f"write `{inp.name}: (3, 224, 224)` (per sample, without the batch)"],
            )  # fmt: skip
        shape = self.eval(inp.shape, frame)
        if isinstance(shape, int) and not isinstance(shape, bool):
            shape = (shape,)
        if not isinstance(shape, tuple) or not all(type(d) is int for d in shape):
            raise TypeMismatchError(
                f"the shape of `{inp.name}` must be a tuple of ints, got {_describe(shape)}",
                inp.shape.span,
            )
        if not shape or any(d <= 0 for d in shape):
            raise ValueRangeError(
                f"the shape of `{inp.name}` must have positive sizes, got {fmt_shape(shape)}",
                inp.shape.span,
            )
        self._check_size(shape, inp.span)
        self._claim(inp.name, inp.span)
        node = Node("input", freeze({"shape": shape}), inp.name, inp.span)
        self.graph.add(node, [], TensorInfo(shape))
        return TensorValue(inp.name, shape, inp.span)

    def _outputs(self, ret: ast.Return, value: Any) -> None:
        values = value if isinstance(value, tuple) and len(ret.values) > 1 else (value,)
        for i, (v, expr) in enumerate(zip(values, ret.values, strict=True)):
            if not isinstance(v, TensorValue):
                raise TypeMismatchError(f"a network returns tensors, got {_describe(v)}", expr.span)
            name = expr.id if isinstance(expr, ast.Name) else "output"
            if len(values) > 1 and (name == "output" or name in dict(self.graph.outputs)):
                name = f"output{i}"  # unnamed, or the same value returned twice
            self.graph.outputs.append((name, v.node))

    # --- statements ----------------------------------------------------------------------------

    def _exec(self, body: Sequence[ast.Stmt], frame: Frame) -> None:
        for stmt in body:
            try:
                self._stmt(stmt, frame)
            except _Poisoned:
                if isinstance(stmt, ast.Return):
                    raise  # the caller's statement is poisoned in turn
                self._poison(stmt, frame)
            except SpecError as e:
                self._record(e)
                if isinstance(stmt, ast.Return):
                    raise _Poisoned from None
                self._poison(stmt, frame)

    def _stmt(self, stmt: ast.Stmt, frame: Frame) -> None:
        self.statement = stmt.span
        self._tick(1, stmt.span)
        match stmt:
            case ast.Assign(targets=targets, value=value):
                self._assign(targets, self.eval(value, frame), stmt, frame)
            case ast.Return(values=values):
                vals = tuple(self.eval(v, frame) for v in values)
                if len(vals) > 1:
                    self._check_elements(vals, stmt.span)
                raise _Return(vals[0] if len(vals) == 1 else vals, stmt)
            case ast.For(var=var, iterable=iterable, body=body):
                for i in self._iterate(iterable, frame):
                    self._tick(1, stmt.span)  # an empty body is work too
                    frame.vars[var] = i
                    self._exec(body, frame)
            case ast.Repeat(count=count, body=body):
                n = self._int(count, frame, "a repeat count")
                self._loop_bound(n, count.span)
                for _ in range(n):
                    self._tick(1, stmt.span)
                    self._exec(body, frame)
            case ast.Dense():
                self._dense(stmt, frame)
            case ast.If(branches=branches, otherwise=otherwise):
                for test, body in branches:
                    if self._bool(test, frame):
                        self._exec(body, frame)
                        break
                else:
                    if otherwise is not None:
                        self._exec(otherwise, frame)
            case ast.Assert(test=test, message=message):
                if not self._bool(test, frame):
                    text = "assertion failed"
                    if message is not None:
                        text = _message(self.eval(message, frame))
                    raise ValueRangeError(text, test.span)

    def _assign(self, targets: tuple[str, ...], value: Any, stmt: ast.Stmt, frame: Frame) -> None:
        if len(targets) == 1:
            frame.vars[targets[0]] = value
            return
        if not isinstance(value, tuple) or len(value) != len(targets):
            got = f"{len(value)} values" if isinstance(value, tuple) else _describe(value)
            raise ArgumentError(f"cannot unpack {got} into {len(targets)} names", stmt.span)
        for name, v in zip(targets, value, strict=True):
            frame.vars[name] = v

    def _iterate(self, iterable: ast.Expr, frame: Frame) -> Sequence[Any]:
        value = self.eval(iterable, frame)
        if not isinstance(value, range | tuple):
            raise TypeMismatchError(
                f"a for loop runs over range(...) or a tuple, got {_describe(value)}",
                iterable.span,
            )
        self._loop_bound(len(value), iterable.span)
        return value

    def _loop_bound(self, n: int, span: Span) -> None:
        if n > self.limits.max_loop:
            raise LimitError(
                f"loop of {n} iterations exceeds the limit of {self.limits.max_loop}", span
            )
        if n < 0:
            raise ValueRangeError(f"cannot repeat a negative number of times ({n})", span)

    def _dense(self, stmt: ast.Dense, frame: Frame) -> None:
        """DenseNet connectivity: each pass sees the concatenation of all earlier outputs."""
        first = frame.vars.get(stmt.var)
        if first is POISON:
            raise _Poisoned
        if not isinstance(first, TensorValue):
            raise TypeMismatchError(
                f"`dense {stmt.var}` needs `{stmt.var}` to be a tensor, got {_describe(first)}",
                stmt.span,
            )
        features = [first]
        for i in self._iterate(stmt.iterable, frame):
            frame.vars[stmt.index] = i
            seen = self._concat(features, stmt.span, frame)
            frame.vars[stmt.var] = seen
            self._exec(stmt.body, frame)
            new = frame.vars[stmt.var]
            if new is POISON:
                raise _Poisoned
            if not isinstance(new, TensorValue) or new == seen:
                raise TypeMismatchError(
                    f"the body of `dense {stmt.var}` must assign a new tensor to `{stmt.var}`",
                    stmt.span,
                )
            features.append(new)
        frame.vars[stmt.var] = self._concat(features, stmt.span, frame)

    def _concat(self, features: list[TensorValue], span: Span, frame: Frame) -> TensorValue:
        if len(features) == 1:
            return features[0]
        return self.emit("concat", features, {}, {}, span, frame, None)

    # --- expressions ---------------------------------------------------------------------------

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
                        f"bad operand for unary {op}: {_describe(value)}", expr.span
                    )
                return -value if op == "-" else value
            case ast.Cond(test=test, then=then, otherwise=otherwise):
                return self.eval(then if self._bool(test, frame) else otherwise, frame)
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

    def choice_options(self, choice: ast.Choice, frame: Frame) -> list[Any]:
        """The values of ``choice(...)`` in ``frame``: ranges spread, repeats dropped."""
        values: dict[str, Any] = {}  # keyed by repr: 1, 1.0 and true are different values
        for option in choice.options:
            value = self.eval(option, frame)
            for v in value if isinstance(value, range) else (value,):
                if not _literal(v):
                    raise TypeMismatchError(
                        "a choice is between numbers, true/false, strings and tuples of "
                        f"them, got {_describe(v)}", option.span,
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
            return value
        definition = self.program.definitions.get(name)
        if definition is not None and definition.kind == "block":
            return BlockRef(definition)
        known = [*frame.vars, *self.program.definitions]
        hints = DidYouMean(known).hint(name)
        if name in OPS or name in self.builtins:
            hints = [
                f"`{name}` is an op or function: call it, `{name}(...)`, or chain it, `x -> {name}`"
            ]
        raise UnknownNameError(f"unknown name `{name}`", span, hints=hints)

    def _bool(self, expr: ast.Expr, frame: Frame) -> bool:
        value = self.eval(expr, frame)
        if type(value) is not bool:
            raise TypeMismatchError(f"expected true or false, got {_describe(value)}", expr.span)
        return value

    def _int(self, expr: ast.Expr, frame: Frame, what: str) -> int:
        value = self.eval(expr, frame)
        if type(value) is not int:
            raise TypeMismatchError(f"{what} must be an int, got {_describe(value)}", expr.span)
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
                f"unsupported operands for `{expr.op}`: {_describe(left)} and {_describe(right)}",
                expr.span,
            ) from None
        self._check_scalar(result, expr.span)
        return result

    def _check_scalar(self, value: Any, span: Span) -> None:
        if type(value) is int and abs(value) > self.limits.max_int:
            raise LimitError(f"integer of {_digits(value)} digits is too large", span)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueRangeError(f"arithmetic gives {value}", span)
        if isinstance(value, tuple | str):
            self._check_elements(value, span)

    def _check_elements(self, value: tuple | str, span: Span) -> None:
        """Bound a tuple or string built by the spec, counting nested tuples in full: a
        tuple holding another twice per level doubles without using memory, but comparing
        or printing it would not finish. Building it is that many steps of work."""
        n = _elements(value, self.limits.max_loop)
        if n > self.limits.max_loop:
            raise LimitError(
                f"a value of more than {self.limits.max_loop} elements (nested ones included) "
                "is too long", span,
            )  # fmt: skip
        self._tick(n, span)

    def _tick(self, cost: int, span: Span | None) -> None:
        """Count ``cost`` steps of work; past ``limits.max_steps`` the spec is stopped."""
        self.steps += cost
        if self.steps > self.limits.max_steps:
            raise LimitError(
                f"elaboration takes more than {self.limits.max_steps} steps", span,
                hints=["a step is an expression or statement run, a loop pass, or an element "
                       "of a tuple or string built; resdsl.Limits(max_steps=...) raises it"],
            )  # fmt: skip

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
                f"`{op}` is not defined for {_describe(left)} and {_describe(right)}", span,
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
        """Suggest projecting the skip: the operand computed earlier in the graph."""
        order = {name: i for i, name in enumerate(self.graph.nx.nodes)}
        (skip, skip_expr), (res, res_expr) = sorted(
            ((left, expr.left), (right, expr.right)), key=lambda p: order[p[0].node]
        )
        fix = projection_hint(skip.shape, res.shape)
        if fix is None:
            return []
        s, r = _text(skip_expr), _text(res_expr)
        return [
            f"project the shortcut: `{r} + shortcut({s}, like={r})` is identity when the "
            f"shapes match and `{s} -> {fix}` here"
        ]

    def _attribute(self, expr: ast.Attribute, frame: Frame) -> Any:
        value = self.eval(expr.value, frame)
        if not isinstance(value, TensorValue):
            raise TypeMismatchError(
                f"`.{expr.attr}` needs a tensor, got {_describe(value)}", expr.span
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
                f"cannot index {_describe(value)} with {_describe(index)}", expr.span
            )
        if not -len(value) <= index < len(value):
            raise ValueRangeError(f"index {index} out of range for length {len(value)}", expr.span)
        return value[index]

    # --- calls ---------------------------------------------------------------------------------

    def call(self, call: ast.Call, frame: Frame, piped: tuple[Any, Span] | None = None) -> Any:
        """Evaluate ``label: f(args)``; ``piped`` is the value flowing in through ``->``."""
        args = [(self.eval(a, frame), a.span) for a in call.args]
        if piped is not None:
            args.insert(0, piped)
        kwargs: dict[str, tuple[Any, Span]] = {}
        for key, value, key_span in call.kwargs:
            if key in kwargs:
                raise ArgumentError(f"keyword `{key}` is given twice", key_span)
            # the span covers `key=value`, so an unknown or mistyped keyword is underlined whole
            kwargs[key] = (self.eval(value, frame), _through(key_span, value.span))
        target = frame.vars.get(call.func)
        if target is POISON:
            raise _Poisoned
        if call.func in frame.vars and not isinstance(target, BlockRef):
            raise TypeMismatchError(
                f"`{call.func}` is {_describe(target)}, not a block or op", call.func_span
            )
        if target is None:
            definition = self.program.definitions.get(call.func)
            if definition is not None:
                target = BlockRef(definition)
        if isinstance(target, BlockRef):
            return self._call_block(target.definition, call, args, kwargs, frame)
        if call.func in MACROS:
            return MACROS[call.func](self, call, args, kwargs, frame)
        if call.func in OPS and call.func != "input":
            return self._call_op(call, args, kwargs, frame)
        if call.func in self.builtins:
            if call.label is not None:
                raise ArgumentError(
                    f"`{call.func}` is a function; only ops and blocks take a name", call.label.span
                )
            result = self.builtins[call.func](call, args, kwargs)
            self._check_scalar(result, call.span)
            return result
        known = [*OPS, *MACROS, *self.builtins, *self.program.definitions]
        raise UnknownNameError(
            f"unknown op or block `{call.func}`", call.func_span,
            hints=DidYouMean([k for k in known if k != "input"]).hint(call.func),
        )  # fmt: skip

    def _call_op(self, call: ast.Call, args, kwargs, frame: Frame) -> TensorValue:
        op = OPS[call.func]
        if op.inputs is None and args and _tensors(args[0][0]):  # concat(features)
            args = [(v, args[0][1]) for v in args[0][0]] + list(args[1:])
        n = 0
        while n < len(args) and isinstance(args[n][0], TensorValue):
            n += 1
        inputs, attr_args = args[:n], args[n:]
        for value, span in attr_args:
            if isinstance(value, TensorValue):
                raise TypeMismatchError(
                    f"`{op.name}` takes its tensor inputs first; this tensor comes after "
                    "an attribute", span,
                )  # fmt: skip
        expected = op.inputs if op.inputs is not None else op.min_inputs
        if (op.inputs is not None and n != op.inputs) or n < expected:
            count = f"{expected}" if op.inputs is not None else f"at least {expected}"
            raise ArgumentError(
                f"`{op.name}` takes {count} tensor input(s), got {n}", call.span,
                hints=[f"signature: {op.signature()}"],
            )  # fmt: skip
        return self.emit(
            op.name, [v for v, _ in inputs],
            dict(enumerate(attr_args)), kwargs, call.span, frame, call.label,
        )  # fmt: skip

    def emit(
        self,
        op_name: str,
        inputs: list[TensorValue],
        attr_args: dict[int, tuple[Any, Span]],
        kwargs: dict[str, tuple[Any, Span]],
        span: Span,
        frame: Frame,
        label: ast.Label | str | None,
    ) -> TensorValue:
        """Bind attributes, run the shape rule, name the node and add it to the graph."""
        op = OPS[op_name]
        try:
            attrs = op.bind(
                [v for v, _ in attr_args.values()], {k: v for k, (v, _) in kwargs.items()}
            )
        except AttrError as e:
            raise self._attr_error(op_name, e, attr_args, kwargs, span) from None
        try:
            shape = op.shape(attrs, [i.shape for i in inputs])
        except OpShapeError as e:
            raise ShapeError(e.message, span, hints=e.hints) from None
        self._check_size(shape, span)
        self._check_attr_ints(op_name, attrs, attr_args, kwargs, span)
        sizes = (len(v) for v in attrs.values() if type(v) is tuple)  # bound: flat tuples
        self._tick(NODE_STEPS + len(shape) + sum(sizes), span)  # long shapes, attrs: work
        for weight in op.weights(attrs, [i.shape for i in inputs]):
            self._check_size(weight.shape, span, f"weight `{weight.name}`")
        name = self._name(frame, label, op_name, span)
        node = Node(op_name, freeze(attrs), name, span, frame.prefix, frame.block)
        self.graph.add(node, [i.node for i in inputs], TensorInfo(shape))
        if len(self.graph) > self.limits.max_nodes:
            raise LimitError(f"the network has more than {self.limits.max_nodes} ops", span)
        return TensorValue(name, shape, span)

    def _attr_error(self, op: str, e: AttrError, attr_args, kwargs, span: Span) -> SpecError:
        at_span = span
        if isinstance(e.at, int) and e.at in attr_args:
            at_span = attr_args[e.at][1]
        elif isinstance(e.at, str) and e.at in kwargs:
            at_span = kwargs[e.at][1]
        hints = [f"signature: {OPS[op].signature()}"]
        if e.kind == "unknown":
            hints = DidYouMean([a.name for a in OPS[op].attrs]).hint(str(e.at)) + hints
        kinds = {"type": TypeMismatchError, "value": ValueRangeError, "unknown": UnknownNameError}
        cls = kinds.get(e.kind, ArgumentError)
        return cls(e.message, at_span, hints=hints)

    def _check_attr_ints(self, op_name: str, attrs: dict, attr_args, kwargs, span: Span) -> None:
        """Integer attributes fit 32 bits: ``stride=10**12`` may give a valid shape (1 x 1),
        but PyTorch's and TVM's kernels hold strides, paddings and sizes in 32 bits."""
        for i, attr in enumerate(OPS[op_name].attrs):
            value = attrs.get(attr.name)
            ints = value if type(value) is tuple else (value,)
            big = [v for v in ints if type(v) is int and abs(v) > MAX_ATTR_INT]
            if big:
                at = kwargs[attr.name][1] if attr.name in kwargs else attr_args.get(i, (0, span))[1]
                raise LimitError(
                    f"`{attr.name}` is too large: an integer of {_digits(big[0])} digits "
                    "(ops take at most 2**31 - 1)", at,
                )  # fmt: skip

    def _check_size(self, shape: tuple[int, ...], span: Span, what: str = "tensor") -> None:
        if math.prod(shape) > self.limits.max_tensor_elements:
            per = " per sample" if what == "tensor" else ""
            raise LimitError(
                f"{what} of shape {fmt_shape(shape)} exceeds {self.limits.max_tensor_elements} "
                f"elements{per}", span,
            )  # fmt: skip

    def _call_block(self, definition: ast.Definition, call: ast.Call, args, kwargs, frame):
        if definition.kind != "block":
            raise TypeMismatchError(
                f"`{definition.name}` is a network; only blocks can be called", call.func_span
            )
        if any(d is definition for d, _ in self.stack):
            chain = " -> ".join(d.name for d, _ in self.stack[1:]) + f" -> {definition.name}"
            raise CycleError(
                f"block `{definition.name}` calls itself: {chain.lstrip(' ->')}", call.span,
                notes=[Note(f"`{definition.name}` is defined here", definition.name_span)],
            )  # fmt: skip
        if len(self.stack) >= self.limits.max_call_depth:
            raise LimitError(f"blocks nested deeper than {self.limits.max_call_depth}", call.span)
        n_in = len(definition.inputs)
        self._tick(CALL_STEPS + len(definition.params) + n_in, call.span)
        inputs, params = args[:n_in], args[n_in:]
        if len(inputs) < n_in or not all(isinstance(v, TensorValue) for v, _ in inputs):
            names = ", ".join(i.name for i in definition.inputs)
            raise ArgumentError(
                f"block `{definition.name}` takes {n_in} tensor input(s) ({names}) first",
                call.span,
                hints=[f"chain it, `x -> {definition.name}(...)`, or pass the tensor first"],
                notes=[Note(f"`{definition.name}` is defined here", definition.name_span)],
            )
        name = self._name(frame, call.label, definition.name, call.span)
        inner = Frame({}, name, definition.name)
        self._bind_params(definition, inner, dict(enumerate(params)), kwargs, call.span)
        for inp, (value, span) in zip(definition.inputs, inputs, strict=True):
            if inp.shape is not None:
                want = self.eval(inp.shape, inner)
                want = (want,) if type(want) is int else want  # `(x: 4)` means `(x: (4,))`
                if want != value.shape:
                    raise ShapeError(
                        f"`{definition.name}` expects `{inp.name}` of shape {want}, "
                        f"got {fmt_shape(value.shape)}", span,
                    )  # fmt: skip
            # inside the body, the value's origin is the block's input declaration
            inner.vars[inp.name] = TensorValue(value.node, value.shape, inp.span)
        self.stack.append((definition, call.span))
        self.instances.append((name, definition.name, call.span))
        try:
            self._exec(definition.body, inner)
        except _Return as r:
            return r.value
        except SpecError as e:  # say which instance failed: the body is shared by all of them
            if e.span is not None and e.span.path is not None and len(e.notes) < 8:
                e.notes.append(Note(f"in `{name}`, an instance of `{definition.name}`", call.span))
            raise
        finally:
            self.stack.pop()
            self.instances.pop()
        raise SpecError(f"block `{definition.name}` ends without `return`", definition.name_span)

    def _bind_params(
        self, definition: ast.Definition, frame: Frame, positional: dict, named: dict,
        span: Span, from_api: bool = False,
    ) -> None:  # fmt: skip
        """Bind call arguments (or API/CLI parameters) to a definition's typed parameters."""
        params = definition.params
        if len(positional) > len(params):
            raise ArgumentError(
                f"`{definition.name}` takes {len(params)} parameter(s), got {len(positional)}",
                list(positional.values())[len(params)][1],
            )
        known = {p.name for p in params}
        for key in named:
            if key not in known:
                at = span if from_api else named[key][1]
                raise UnknownNameError(
                    f"`{definition.name}` has no parameter `{key}`", at,
                    hints=DidYouMean(sorted(known)).hint(key),
                )  # fmt: skip
        for i, p in enumerate(params):
            if i in positional and p.name in named:
                raise ArgumentError(f"parameter `{p.name}` is given twice", named[p.name][1])
            if i in positional:
                value, at = positional[i]
            elif p.name in named:
                value, at = named[p.name] if not from_api else (named[p.name], p.span)
            elif p.default is not None:
                value, at = self.eval(p.default, frame), p.default.span
            else:
                raise ArgumentError(
                    f"`{definition.name}` needs parameter `{p.name}`", span,
                    notes=[Note("declared here", p.span)],
                )  # fmt: skip
            frame.vars[p.name] = self._typed(p, value, at)
            if isinstance(p.default, ast.Choice) and p.name in named:
                self._check_choice(p.name, p.default, frame, at)

    def _check_choice(self, name: str, choice: ast.Choice, frame: Frame, at: Span) -> None:
        """A value given for a choice parameter must be one of the choice's values."""
        options = self.choice_options(choice, frame)
        if frame.vars[name] not in options:
            values = ", ".join(spec_text(v) for v in options)
            raise ValueRangeError(
                f"`{name}` is a choice of {values}; got {spec_text(frame.vars[name])}", at,
                notes=[Note("the choice is here", choice.span)],
            )  # fmt: skip

    def _typed(self, p: ast.Param, value: Any, at: Span) -> Any:
        check = PARAM_TYPES.get(p.type)
        if check is None:
            raise UnknownNameError(
                f"unknown type `{p.type}`", p.type_span,
                hints=DidYouMean(list(PARAM_TYPES)).hint(p.type)
                or ["types: " + ", ".join(PARAM_TYPES)],
            )  # fmt: skip
        if not check(value):
            raise TypeMismatchError(
                f"parameter `{p.name}` is {p.type}, got {_describe(value)}", at,
                notes=[Note("declared here", p.span)],
            )  # fmt: skip
        return float(value) if p.type == "float" else value

    # --- names ---------------------------------------------------------------------------------

    def _name(self, frame: Frame, label: ast.Label | str | None, base: str, span: Span) -> str:
        """The hierarchical name of a new node or block instance (one namespace for both)."""
        if label is None:
            k = self.counters.get((frame.prefix, base), 0)
            while True:
                full = _join(frame.prefix, f"{base}_{k}")
                k += 1
                if full not in self.names:
                    break
            self.counters[(frame.prefix, base)] = k
        else:
            segment = label if isinstance(label, str) else self._label_text(label, frame)
            check_label(segment, label.span if isinstance(label, ast.Label) else span)
            full = _join(frame.prefix, segment)
            if full in self.names:
                first = self.names[full]
                raise DuplicateNameError(
                    f"the name `{full}` is already used",
                    label.span if isinstance(label, ast.Label) else span,
                    hints=['inside a loop, put the index in the name: `"conv{i}": conv2d(...)`'],
                    notes=[Note("first used here", first)] if first else [],
                )
        if len(full) > self.limits.max_name_length:
            raise LimitError(
                f"a name of {len(full)} characters exceeds the limit of "
                f"{self.limits.max_name_length}",
                label.span if isinstance(label, ast.Label) else span,
            )
        self._claim(full, span)
        return full

    def _claim(self, name: str, span: Span | None) -> None:
        self.names[name] = span

    def _label_text(self, label: ast.Label, frame: Frame) -> str:
        parts, size = [], 0
        for p in label.parts:  # checked as it grows: a template of many long holes
            parts.append(p if isinstance(p, str) else _label_part(self.eval(p, frame), p))
            size += len(parts[-1])
            if size > self.limits.max_name_length:
                raise LimitError(
                    f"a name of more than {self.limits.max_name_length} characters", label.span
                )
        text = "".join(parts)
        if not text or not all(c.isalnum() or c == "_" for c in text) or not text.isascii():
            raise ValueRangeError(
                f"name {text!r} must be letters, digits and underscores", label.span
            )
        return text


# --- projection shortcuts (elaboration macros) -------------------------------------------------


def _shortcut(el: Elaborator, call: ast.Call, args, kwargs, frame: Frame) -> TensorValue:
    """``shortcut(x, like=y, bn=true)``: identity if shapes match, else a learned projection."""
    x, like, bn = _macro_args(call, args, kwargs, ("like", "bn"), {"bn": True})
    target = like.shape if isinstance(like, TensorValue) else like
    if not isinstance(target, tuple) or not all(type(d) is int for d in target):
        raise TypeMismatchError("`like` must be a tensor or a shape tuple", call.span)
    if x.shape == target:
        return x
    if len(x.shape) == 3 and len(target) == 3:
        stride = projection_stride(x.shape, target)
        if stride is None:
            raise ShapeError(
                f"cannot project {fmt_shape(x.shape)} to {fmt_shape(target)}: the spatial "
                "sizes are not related by an integer stride", call.span,
            )  # fmt: skip
        return _projection(el, call, frame, x, target[0], stride, bn)
    if len(x.shape) == len(target) and x.shape[:-1] == target[:-1]:
        return _projection(el, call, frame, x, target[-1], 1, bn)
    raise ShapeError(f"cannot project {fmt_shape(x.shape)} to {fmt_shape(target)}", call.span)


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
        raise TypeMismatchError(f"`bn` must be true or false, got {_describe(bn)}", call.span)
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


MACROS = {"shortcut": _shortcut, "project": _project}

# --- builtin functions -------------------------------------------------------------------------


def _builtins(el: Elaborator) -> dict[str, Callable]:
    def numbers(name: str, call: ast.Call, args, kwargs, minimum=1, maximum=None) -> list:
        if kwargs:
            _, (_, span) = next(iter(kwargs.items()))
            raise ArgumentError(f"`{name}` takes no keyword arguments", span)
        if len(args) < minimum or (maximum is not None and len(args) > maximum):
            count = f"{minimum}" if minimum == maximum else f"{minimum} to {maximum or 'any'}"
            raise ArgumentError(f"`{name}` takes {count} argument(s), got {len(args)}", call.span)
        for v, span in args:
            if type(v) not in (int, float):
                raise TypeMismatchError(f"`{name}` needs numbers, got {_describe(v)}", span)
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


# --- helpers -----------------------------------------------------------------------------------

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


def _describe(value: Any) -> str:
    if isinstance(value, TensorValue):
        return f"a tensor of shape {fmt_shape(value.shape)}"
    if isinstance(value, BlockRef):
        return f"block `{value.definition.name}`"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, range):
        return "a range"
    if value is None:
        return "nothing"
    kind = {int: "int", float: "float", str: "str", tuple: "tuple"}.get(type(value), "value")
    text = spec_text(value) or repr(value)
    return f"{kind} {text if len(text) < 40 else text[:37] + '...'}"


def _digits(value: int) -> int:
    """Decimal digits of ``value``; estimated past 4,000, where ``str`` refuses (CPython's
    int_max_str_digits)."""
    if value.bit_length() < 13_000:
        return len(str(abs(value)))
    return int((value.bit_length() - 1) * math.log10(2)) + 1


def _elements(value: Any, limit: int) -> int:
    """Elements of a tuple or characters of a string, nested tuples counted in full (each
    time they occur); stops counting once past ``limit``."""
    count, stack = 0, [value]
    while stack and count <= limit:
        v = stack.pop()
        if isinstance(v, tuple | str):
            count += len(v)
            if isinstance(v, tuple) and count <= limit:
                stack.extend(v)
    return count


def _literal(value: Any) -> bool:
    """A value a spec can write as a literal: what a choice and a ``--set`` may hold."""
    if isinstance(value, tuple):
        return all(_literal(v) for v in value)
    return type(value) in (int, float, bool, str)


def _message(value: Any) -> str:
    """An assertion's message: a string as it is, a literal as a spec writes it, anything
    else (a tensor, a block) described, never a Python repr."""
    if isinstance(value, str):
        return value
    if _literal(value):
        return spec_text(value)
    return f"assertion failed: {_describe(value)}"


def _label_part(value: Any, where: ast.Expr | ast.Call) -> str:
    if type(value) in (int, str):
        return str(value)
    raise TypeMismatchError(f"a name can hold ints and strings, got {_describe(value)}", where.span)


def _tensors(value: Any) -> bool:
    """A non-empty tuple of tensors (spread into a variadic op's inputs)."""
    return (
        isinstance(value, tuple) and bool(value) and all(isinstance(v, TensorValue) for v in value)
    )


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


def _through(start: Span, end: Span) -> Span:
    return Span(start.path, start.line, start.column, end.end_line, end.end_column)


def _join(prefix: str, segment: str) -> str:
    return f"{prefix}.{segment}" if prefix else segment


def _assigned(stmt: ast.Stmt) -> list[str]:
    """The names a statement assigns, including in nested bodies."""
    match stmt:
        case ast.Assign(targets=targets):
            return list(targets)
        case ast.For(var=var, body=body):
            return [var, *(n for s in body for n in _assigned(s))]
        case ast.Dense(var=var, index=index, body=body):
            return [var, index, *(n for s in body for n in _assigned(s))]
        case ast.Repeat(body=body):
            return [n for s in body for n in _assigned(s)]
        case ast.If(branches=branches, otherwise=otherwise):
            bodies = [b for _, b in branches] + [otherwise or ()]
            return [n for b in bodies for s in b for n in _assigned(s)]
    return []


def _error_order(error: SpecError) -> tuple:
    span = error.span
    return (0, span.path, span.line, span.column) if span else (1, "", 0, 0)


def _text(expr: ast.Expr) -> str:
    return expr.id if isinstance(expr, ast.Name) else "x"


def elaborate(program: Program, network: str | None = None, params: dict[str, Any] | None = None,
              limits: Limits | None = None) -> Graph:  # fmt: skip
    """Elaborate ``network`` (the only one in the main file by default) into a graph."""
    check_definitions(program)
    elaborator = Elaborator(program, limits or Limits())
    try:
        return elaborator.network(network, dict(params or {}))
    except RecursionError:  # a backstop: parse depth and call depth are limited before this
        raise LimitError("the spec nests too deeply to elaborate", elaborator.statement) from None


def check_definitions(program: Program) -> None:
    """Checks that need no elaboration: every parameter type is known (all are reported)."""
    errors: list[SpecError] = [
        UnknownNameError(
            f"unknown type `{p.type}`", p.type_span,
            hints=DidYouMean(list(PARAM_TYPES)).hint(p.type)
            or ["types: " + ", ".join(PARAM_TYPES)],
        )
        for definition in program.definitions.values()
        for p in definition.params
        if p.type not in PARAM_TYPES
    ]  # fmt: skip
    errors += [
        TypeMismatchError(
            f"`choice` is for network parameters; `{definition.name}` is a block",
            p.default.span, hints=["make it a network parameter and pass it to the block"],
        )
        for definition in program.definitions.values()
        for p in definition.params
        if isinstance(p.default, ast.Choice) and definition.kind != "network"
    ]  # fmt: skip
    if errors:
        errors.sort(key=_error_order)
        errors[0].errors = errors
        raise errors[0]


def constant(text: str) -> Any:
    """A parameter value from the command line: a literal, a tuple of literals, or a bare word.

    Nothing is evaluated: ``--set num_classes=10``, ``--set widths=(64, 128)``,
    ``--set mode=fast`` (a bare word is a string). Numbers are ASCII digits: fullwidth
    or Bengali digits are refused. Raises ValueError.
    """
    from .errors import SpecSyntaxError
    from .syntax import parse_expr

    try:
        expr = parse_expr(text, "<--set>")
    except SpecSyntaxError as e:  # a digit of another script is one too, with a hint
        hint = f" ({e.hints[0]})" if e.hints and "ASCII" in e.hints[0] else ""
        raise ValueError(f"cannot read {text!r}: {e.message}{hint}") from None
    return _constant(expr, text)


def _constant(expr: ast.Expr, text: str) -> Any:
    match expr:
        case ast.Literal(value=value):
            return value
        case ast.Name(id=word):
            return word
        case ast.TupleExpr(items=items):
            return tuple(_constant(i, text) for i in items)
        case ast.UnaryOp(op="-", operand=ast.Literal(value=int() | float() as v)) if (
            type(v) is not bool
        ):
            return -v
    raise ValueError(f"{text!r} is not a literal (a number, true/false, a string or a tuple)")
