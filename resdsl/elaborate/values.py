"""The values a spec computes with, and how diagnostics describe them.

Scalars are Python values; a tensor is an :class:`~resdsl.ir.TensorValue` (producing node,
shape, span); a block used as a value is a :class:`BlockRef`. A name whose statement failed
holds :data:`POISON`. ``constant`` reads a ``--set`` value without evaluating anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import Note, Span, TypeMismatchError
from ..ir import TensorValue
from ..ops import fmt_shape
from ..ops.core import spec_text
from ..syntax import ast


@dataclass(frozen=True)
class BlockRef:
    """A block definition used as a value (``stage(bottleneck, ...)``)."""

    definition: ast.Definition


@dataclass(frozen=True, eq=True, repr=False)
class Partial:
    """A block with some parameters bound by keyword: ``partial(se_bottleneck, reduction=8)``.

    Called (or passed to a ``block`` parameter) like its block; the call's keywords override
    the partial's, as with Python's ``functools.partial``. ``kwargs`` holds ``(name, value,
    span of name=value)``, in the order written."""

    definition: ast.Definition
    kwargs: tuple[tuple[str, Any, Span], ...]

    def __repr__(self) -> str:  # a cache key (search/incremental.py): short and exact
        items = ", ".join(f"{k}={_key_text(v)}" for k, v, _ in self.kwargs)
        return f"partial({_key_text(BlockRef(self.definition))}, {items})"


def _key_text(value: Any) -> str:
    if isinstance(value, BlockRef):
        d = value.definition
        return f"{d.name}@{d.span.path}:{d.span.line}:{d.span.column}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_key_text(v) for v in value) + ",)"
    return repr(value)


@dataclass(frozen=True)
class OpRef:
    """An op used as a value where a block is expected: ``squeeze_excite(act=silu)``.
    Called like the op itself (its attributes by position or keyword); ``partial`` binds
    attributes by keyword (``partial(batchnorm2d, eps=1e-3)``), held as ``kwargs`` like
    :class:`Partial`'s."""

    op: str
    kwargs: tuple[tuple[str, Any, Span], ...] = ()

    def __repr__(self) -> str:  # a cache key: exact
        items = "".join(f", {k}={_key_text(v)}" for k, v, _ in self.kwargs)
        return f"op:{self.op}{items}"


def is_block(value: Any) -> bool:
    """A block as a value: a definition, one with parameters bound by ``partial``, or an op."""
    return isinstance(value, BlockRef | Partial | OpRef)


@dataclass(frozen=True)
class TrainingOutput:
    """``training(aux)``: a network output produced only in training mode (GoogLeNet's and
    Inception's auxiliary classifiers); valid only in a network's ``return``."""

    tensor: TensorValue


@dataclass(frozen=True)
class MissingLabel:
    """The value of ``label`` inside an inline block called without one: using it is an
    error (whose note on the block's instance points at the call)."""

    block: str


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


PARAM_TYPES: dict[str, Callable[[Any], bool]] = {
    "int": lambda v: type(v) is int,
    "float": lambda v: type(v) in (int, float),
    "bool": lambda v: type(v) is bool,
    "str": lambda v: type(v) is str,
    "tuple": lambda v: type(v) is tuple,
    "block": is_block,
}

TENSOR_ATTRS = {
    "shape": lambda s: s,
    "rank": len,
    "channels": lambda s: s[0],
    "features": lambda s: s[-1],
    "height": lambda s: s[-2],
    "width": lambda s: s[-1],
}


def describe(value: Any) -> str:
    if isinstance(value, TensorValue):
        return f"a tensor of shape {fmt_shape(value.shape)}"
    if isinstance(value, BlockRef):
        return f"block `{value.definition.name}`"
    if isinstance(value, OpRef):
        return f"op `{value.op}`"
    if isinstance(value, TrainingOutput):
        return f"a training-only output of shape {fmt_shape(value.tensor.shape)}"
    if isinstance(value, Partial):
        keys = ", ".join(f"{k}=" for k, _, _ in value.kwargs)
        return f"block `{value.definition.name}` with {keys} bound by `partial`"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, range):
        return "a range"
    if value is None:
        return "nothing"
    kind = {int: "int", float: "float", str: "str", tuple: "tuple"}.get(type(value), "value")
    text = spec_text(value) or repr(value)
    return f"{kind} {text if len(text) < 40 else text[:37] + '...'}"


def is_literal(value: Any) -> bool:
    """A value a spec can write as a literal: what a choice and a ``--set`` may hold."""
    if isinstance(value, tuple):
        return all(is_literal(v) for v in value)
    return type(value) in (int, float, bool, str)


def _message(value: Any) -> str:
    """An assertion's message: a string as it is, a literal as a spec writes it, anything
    else (a tensor, a block) described, never a Python repr."""
    if isinstance(value, str):
        return value
    if is_literal(value):
        return spec_text(value)
    return f"assertion failed: {describe(value)}"


def instance_note(name: str | None, block: str, call: Span) -> Note:
    """The note an error inside a block body gets for each enclosing instance."""
    if name is None:
        return Note(f"in a call of inline block `{block}`", call)
    return Note(f"in `{name}`, an instance of `{block}`", call)


def _label_part(value: Any, where: ast.Expr | ast.Call) -> str:
    if type(value) in (int, str):
        return str(value)
    raise TypeMismatchError(f"a name can hold ints and strings, got {describe(value)}", where.span)


def _tensors(value: Any) -> bool:
    """A non-empty tuple of tensors (spread into a variadic op's inputs)."""
    return (
        isinstance(value, tuple) and bool(value) and all(isinstance(v, TensorValue) for v in value)
    )


def _through(start: Span, end: Span) -> Span:
    return Span(start.path, start.line, start.column, end.end_line, end.end_column)


def join_name(prefix: str, segment: str) -> str:
    return f"{prefix}.{segment}" if prefix else segment


def _text(expr: ast.Expr) -> str:
    return expr.id if isinstance(expr, ast.Name) else "x"


def constant(text: str) -> Any:
    """A parameter value from the command line: a literal, a tuple of literals, or a bare word.

    Nothing is evaluated: ``--set num_classes=10``, ``--set widths=(64, 128)``,
    ``--set mode=fast`` (a bare word is a string). Numbers are ASCII digits: fullwidth
    or Bengali digits are refused. Raises ValueError.
    """
    from ..errors import SpecSyntaxError
    from ..syntax import parse_expr

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
