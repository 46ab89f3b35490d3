"""Counting a candidate by replaying the network body of an earlier one.

When a network's choices only ever reach its blocks as arguments — `cell(genotype)`, never
an `if`, an arithmetic, a label or an op attribute — then its body does the same thing for
every candidate: the same calls in the same order, the choices flowing into some of them.
:func:`plan` checks that on the spec (statically); a :class:`Replay` then holds the trace of
one counted candidate (the block instances the body created, :class:`Step`) and
counts another by looking up only the instances the choices reach, with the choices'
values substituted in their arguments. Anything else the body computes can depend on a
choice only through the shapes of those instances' results, so each replayed result must
equal the traced one (a guard); otherwise, or when an instance cannot be looked up or
elaborated alone, the candidate is counted by running the body.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from ..elaborate import BlockRef
from ..ir import TensorInfo, TensorValue
from ..syntax import ast

if TYPE_CHECKING:
    from ..loader import Program


@dataclass(frozen=True)
class Plan:
    """The choices' paths through a network body: the calls they reach, and how."""

    values: dict[str, ast.Expr]  # a variable's choice expression (`genotype = (a, b)`)
    calls: dict[int, frozenset[int]]  # id() of a block call reading a choice: id()s of those
    #                                   of its argument expressions that are choices


def plan(program: Program, network: ast.Definition, choices: set[str]) -> Plan | None:
    """The plan of a body whose choices only reach block arguments, else None."""
    params = {p.name for p in network.params}
    if any(
        p.default is not None and not isinstance(p.default, ast.Choice)
        and _reads(p.default) & choices
        for p in network.params
    ):  # fmt: skip
        return None  # a fixed parameter computed from a choice
    assigned = _assigned_names(network.body)
    values: dict[str, ast.Expr] = {}
    for stmt in network.body:  # `genotype = (edge1_0, ...)` at the top level, once
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and _is_choice_expr(stmt.value, choices | set(values))):  # fmt: skip
            name = stmt.targets[0]
            if assigned.count(name) != 1 or name in params:
                return None
            values[name] = stmt.value
    tainted = choices | set(values)
    blocks = {
        name for name, d in program.definitions.items()
        if d.kind == "block" and name not in params and name not in assigned
    }  # fmt: skip
    calls: dict[int, frozenset[int]] = {}
    for stmt in network.body:
        if isinstance(stmt, ast.Assign) and stmt.targets[0] in values:
            continue
        if not _check(stmt, tainted, blocks, calls):
            return None
    return Plan(values, calls)


def _is_choice_expr(expr: ast.Expr, tainted: set[str]) -> bool:
    if isinstance(expr, ast.Name):
        return expr.id in tainted
    if isinstance(expr, ast.Index):  # `e[2]`
        return (
            isinstance(expr.value, ast.Name) and expr.value.id in tainted
            and isinstance(expr.index, ast.Literal) and type(expr.index.value) is int
        )  # fmt: skip
    if isinstance(expr, ast.TupleExpr):
        return any(_is_choice_expr(i, tainted) for i in expr.items) and all(
            isinstance(i, ast.Literal) or _is_choice_expr(i, tainted) for i in expr.items
        )
    return False


def _children(node: Any) -> list[Any]:
    out = []
    for f in fields(node):
        value = getattr(node, f.name)
        stack = [value]
        while stack:
            v = stack.pop()
            if isinstance(v, tuple):
                stack.extend(v)
            elif isinstance(v, ast.Expr | ast.Stmt | ast.Label):
                out.append(v)
    return out


def _check(node: Any, tainted: set[str], blocks: set[str], calls: dict) -> bool:
    """Whether ``node`` reads the tainted names only as whole arguments of block calls."""
    if isinstance(node, ast.Name):
        return node.id not in tainted
    if isinstance(node, ast.Call) and node.func in blocks:
        arguments = [*node.args, *(v for _, v, _ in node.kwargs)]
        reached = [a for a in arguments if _is_choice_expr(a, tainted)]
        if reached:
            calls[id(node)] = frozenset(id(a) for a in reached)
        rest = [a for a in arguments if a not in reached]
        label = [node.label] if node.label is not None else []
        return all(_check(c, tainted, blocks, calls) for c in [*rest, *label])
    return all(_check(c, tainted, blocks, calls) for c in _children(node))


def _reads(expr: ast.Expr) -> set[str]:
    out = set()
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Name):
            out.add(node.id)
        stack.extend(_children(node))
    return out


def _assigned_names(body: tuple[ast.Stmt, ...]) -> list[str]:
    out: list[str] = []
    for stmt in body:
        if isinstance(stmt, ast.Assign):
            out.extend(stmt.targets)
        elif isinstance(stmt, ast.For):
            out.append(stmt.var)
        elif isinstance(stmt, ast.Dense):
            out.extend((stmt.var, stmt.index))
        for child in _children(stmt):
            if isinstance(child, ast.Stmt):
                out.extend(_assigned_names((child,)))
    return out


@dataclass(frozen=True)
class _In:
    """In a recorded value: the instance's ``index``-th tensor argument."""

    index: int


@dataclass(frozen=True)
class _New:
    """In a recorded value: a tensor the instance computed."""

    info: TensorInfo


@dataclass(frozen=True)
class Step:
    """A block instance that a traced body (the network's, or a block's) created."""

    definition: ast.Definition
    call: ast.Call
    label: str | None
    key: tuple
    args: list  # [(value, span)], the piped tensor first
    kwargs: dict
    externals: list[TensorValue]
    infos: tuple[TensorInfo, ...]  # of the externals
    instance: _Instance | None  # None: not memoised (the trace cannot be replayed)


@dataclass(frozen=True)
class _Instance:
    """A block instance's totals and its value (tensors as :class:`_In` / :class:`_New`)."""

    params: int
    macs: int
    nodes: int
    result: Any


def _arg_key(value: Any, externals: list[TensorValue], infos: dict[str, TensorInfo]) -> Any:
    if isinstance(value, TensorValue):
        externals.append(value)
        return ("tensor", value.shape, infos[value.node].dtype)
    if isinstance(value, BlockRef):
        return ("block", value.definition.span)
    if isinstance(value, tuple):
        return ("tuple", tuple(_arg_key(v, externals, infos) for v in value))
    if isinstance(value, bool | int | float | str) or value is None:
        return (type(value).__name__, value)
    return ("other", id(value), repr(value))  # partials, ops as values: by identity


class Replay:
    """A traced instance of a planned block or network, replayed for others (module doc).

    ``totals`` are the traced instance's (parameters, MACs, nodes), ``result`` its value."""

    def __init__(self, plan: Plan, trace: list[Step], totals: tuple[int, int, int], result: Any):
        self.plan, self.result = plan, result
        self.steps = [s for s in trace if id(s.call) in plan.calls]
        self.ok = all(s.instance is not None for s in self.steps)
        self.base = tuple(
            t - sum(getattr(s.instance, f) for s in self.steps if s.instance is not None)
            for t, f in zip(totals, ("params", "macs", "nodes"), strict=True)
        )
        # per step, once: which key parts the choices give, and the traced result's shapes
        self._plans = [
            (s, *self._key_plan(s), _infos(s.instance.result, s) if self.ok else None)
            for s in self.steps
        ]

    def _key_plan(self, step: Step) -> tuple:
        exprs, kwexprs = self.exprs(step)
        named = step.key[3]
        subs = tuple((i, e) for i, e in enumerate(exprs) if e is not None)
        kwsubs = tuple((i, kwexprs[k]) for i, (k, _) in enumerate(named) if k in kwexprs)
        return subs, kwsubs

    def totals(
        self, values: Mapping[str, Any], memo: Any,  # counting.InstanceMemo
        elaborate: Callable[[Step, dict], Any],
    ) -> tuple[int, int, int] | None:  # fmt: skip
        """(parameters, MACs, nodes) of the instance whose parameters are ``values``; None
        when it must be run. ``elaborate(step, env)`` answers a step not in ``memo``."""
        if not self.ok:
            return None
        env = dict(values)
        try:
            for name, expr in self.plan.values.items():
                env[name] = _evaluate(expr, env)
            keys: dict[int, Any] = {}
            params, macs, nodes = self.base
            instances = memo.instances
            for step, subs, kwsubs, traced in self._plans:
                instance = instances.get(_substituted(step.key, subs, kwsubs, env, keys))
                if instance is None:
                    instance = elaborate(step, env)
                if instance is None or (
                    instance.result is not step.instance.result
                    and _infos(instance.result, step) != traced
                ):
                    return None  # the guard: a result's shapes differ from the traced one
                memo.hits += 1
                params += instance.params
                macs += instance.macs
                nodes += instance.nodes
        except _NotAValue:
            return None
        return params, macs, nodes

    def key(self, step: Step, env: Mapping[str, Any]) -> tuple:
        """The memo key of the step's instance with the choices' values in ``env``."""
        subs, kwsubs = self._key_plan(step)
        return _substituted(step.key, subs, kwsubs, env, {})

    def exprs(self, step: Step) -> tuple[list[ast.Expr | None], dict[str, ast.Expr]]:
        """The choice expressions of a step's arguments (None for the others; the piped
        tensor first) and keyword arguments."""
        reached = self.plan.calls[id(step.call)]
        piped = len(step.args) - len(step.call.args)
        exprs = [None] * piped + [a if id(a) in reached else None for a in step.call.args]
        return exprs, {k: v for k, v, _ in step.call.kwargs if id(v) in reached}


def _substituted(key: tuple, subs, kwsubs, env: Mapping[str, Any], keys: dict) -> tuple:
    """A traced key with the parts the choices give evaluated in ``env``."""
    name, label, args, named = key
    if subs:
        args = list(args)
        for i, expr in subs:
            args[i] = _value_key(env, expr, keys)
        args = tuple(args)
    if kwsubs:
        named = list(named)
        for i, expr in kwsubs:
            named[i] = (named[i][0], _value_key(env, expr, keys))
        named = tuple(named)
    return (name, label, args, named)


def _infos(template: Any, step: Step) -> Any:
    """A recorded value with its tensors as their (shape, dtype): what the rest of a body
    can see of them (whether a tensor is an argument or new changes no count)."""
    if isinstance(template, _In):
        return step.infos[template.index]
    if isinstance(template, _New):
        return template.info
    if isinstance(template, tuple):
        return tuple(_infos(t, step) for t in template)
    return template


class _NotAValue(Exception):  # noqa: N818 - control flow, not an error
    """A choice expression that does not evaluate as the interpreter would: run the body."""


def _evaluate(expr: ast.Expr, env: Mapping[str, Any]) -> Any:
    if isinstance(expr, ast.Name):
        return env[expr.id]
    if isinstance(expr, ast.TupleExpr):
        return tuple(_evaluate(i, env) for i in expr.items)
    if isinstance(expr, ast.Index):  # `e[2]`: a literal index into a tuple, in range
        value, index = env[expr.value.id], expr.index.value
        if type(value) is not tuple or not -len(value) <= index < len(value):
            raise _NotAValue
        return value[index]
    return expr.value  # a Literal in a choice tuple


def _value_key(env: Mapping[str, Any], expr: ast.Expr, keys: dict[int, Any]) -> Any:
    key = keys.get(id(expr))
    if key is None:
        key = keys[id(expr)] = _arg_key(_evaluate(expr, env), [], {})
    return key
