"""The abstract syntax tree: plain frozen dataclasses, each with the span it came from."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import Span

# --- expressions -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expr:
    span: Span


@dataclass(frozen=True, slots=True)
class Literal(Expr):
    value: int | float | bool | str


@dataclass(frozen=True, slots=True)
class Name(Expr):
    id: str


@dataclass(frozen=True, slots=True)
class TupleExpr(Expr):
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Comprehension(Expr):
    """``(e for i in range(n) for j in range(m))``: a tuple, the last loop varying fastest."""

    element: Expr
    loops: tuple[tuple[str, Expr], ...]  # (variable, iterable), outermost first


@dataclass(frozen=True, slots=True)
class BinOp(Expr):
    op: str  # + - * / // % ** == != < <= > >= and or
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class UnaryOp(Expr):
    op: str  # - + not
    operand: Expr


@dataclass(frozen=True, slots=True)
class Cond(Expr):
    """``if test then then else otherwise``; an ``elif`` is a Cond nested in ``otherwise``."""

    test: Expr
    then: Expr
    otherwise: Expr


@dataclass(frozen=True, slots=True)
class Attribute(Expr):
    value: Expr
    attr: str


@dataclass(frozen=True, slots=True)
class Index(Expr):
    value: Expr
    index: Expr


@dataclass(frozen=True, slots=True)
class Label:
    """The name an op or block instance gets: plain (``conv1``) or a template (``"{i}"``)."""

    span: Span
    text: str
    parts: tuple[str | Expr, ...]  # literal text and interpolated expressions, in order


@dataclass(frozen=True, slots=True)
class Call(Expr):
    """``label: func(args, key=value)``. A chain stage ``x -> f(a)`` is ``f(x, a)``."""

    func: str
    func_span: Span
    args: tuple[Expr, ...]
    kwargs: tuple[tuple[str, Expr, Span], ...]
    label: Label | None = None


@dataclass(frozen=True, slots=True)
class Chain(Expr):
    """``head -> stage -> stage``: each stage is called with the previous value first."""

    head: Expr
    stages: tuple[Call, ...]


@dataclass(frozen=True, slots=True)
class Choice(Expr):
    """``choice(a, b, ...)`` as a network parameter's default: one choice of a search space
    (docs/search.md). Options may use earlier parameters; a ``range`` option is spread."""

    options: tuple[Expr, ...]


# --- statements ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stmt:
    span: Span


@dataclass(frozen=True, slots=True)
class Assign(Stmt):
    targets: tuple[str, ...]
    value: Expr


@dataclass(frozen=True, slots=True)
class Return(Stmt):
    values: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class For(Stmt):
    var: str
    iterable: Expr
    body: tuple[Stmt, ...]


@dataclass(frozen=True, slots=True)
class Repeat(Stmt):
    count: Expr
    body: tuple[Stmt, ...]


@dataclass(frozen=True, slots=True)
class Dense(Stmt):
    """``dense x for i in range(n) { x = ... }``: DenseNet connectivity over ``x``."""

    var: str
    index: str
    iterable: Expr
    body: tuple[Stmt, ...]


@dataclass(frozen=True, slots=True)
class If(Stmt):
    branches: tuple[tuple[Expr, tuple[Stmt, ...]], ...]
    otherwise: tuple[Stmt, ...] | None


@dataclass(frozen=True, slots=True)
class Assert(Stmt):
    test: Expr
    message: Expr | None


# --- definitions -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Param:
    span: Span
    name: str
    type: str
    type_span: Span
    default: Expr | None


@dataclass(frozen=True, slots=True)
class Input:
    span: Span
    name: str
    shape: Expr | None


@dataclass(frozen=True, slots=True)
class Definition:
    """A ``block`` or a ``network`` (``kind``): parameters, tensor inputs, body. An
    ``inline block`` adds no name level: its body names nodes in the caller's scope."""

    span: Span
    kind: str
    name: str
    name_span: Span
    params: tuple[Param, ...]
    inputs: tuple[Input, ...]
    body: tuple[Stmt, ...]
    inline: bool = False


@dataclass(frozen=True, slots=True)
class Import:
    span: Span
    path: str  # relative to the importing file; "std/NAME.res" for the standard library
    std: str | None = None  # NAME of `import std.NAME`


@dataclass(frozen=True, slots=True)
class Module:
    """One parsed ``.res`` file."""

    path: str
    imports: tuple[Import, ...]
    definitions: tuple[Definition, ...]
