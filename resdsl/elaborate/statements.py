"""Statements, and recovery from a failed statement so that one run reports every mistake."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import (
    ArgumentError,
    CycleError,
    LimitError,
    Span,
    SpecError,
    TypeMismatchError,
    ValueRangeError,
)
from ..ir import TensorValue
from ..syntax import ast
from .limits import ERROR_STEPS, MAX_ERRORS
from .values import (
    POISON,
    Frame,
    _message,
    _Poisoned,
    _Return,
    _Stop,
    describe,
    instance_note,
)


class Statements:
    """Running statements (mixed into :class:`~resdsl.elaborate.Elaborator`)."""

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
            error.notes.append(instance_note(name, block, call))
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
            got = f"{len(value)} values" if isinstance(value, tuple) else describe(value)
            raise ArgumentError(f"cannot unpack {got} into {len(targets)} names", stmt.span)
        for name, v in zip(targets, value, strict=True):
            frame.vars[name] = v

    def _iterate(self, iterable: ast.Expr, frame: Frame) -> Sequence[Any]:
        value = self.eval(iterable, frame)
        if not isinstance(value, range | tuple):
            raise TypeMismatchError(
                f"a for loop runs over range(...) or a tuple, got {describe(value)}",
                iterable.span,
            )
        self._loop_bound(len(value), iterable.span)
        return value

    def _dense(self, stmt: ast.Dense, frame: Frame) -> None:
        """DenseNet connectivity: each pass sees the concatenation of all earlier outputs."""
        first = frame.vars.get(stmt.var)
        if first is POISON:
            raise _Poisoned
        if not isinstance(first, TensorValue):
            raise TypeMismatchError(
                f"`dense {stmt.var}` needs `{stmt.var}` to be a tensor, got {describe(first)}",
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
