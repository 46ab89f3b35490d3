"""Counting a candidate's parameters and MACs with memos shared by all candidates.

``Network.layers`` asks the op table for every node. Candidates of one space repeat the
same layers (a 3x3 convolution of 64 channels on a 56x56 map) thousands of times, so the
space keeps the answers keyed by what they depend on: op, attributes, input shapes.

The count-only route (:func:`count`) goes further: it elaborates a candidate into a
:class:`CountGraph`, which keeps each tensor's shape and dtype and running totals instead
of nodes and edges, and a :class:`CountingElaborator` answers a block instance it has seen
before (same block, arguments and input shapes, whatever its name) from the instance's
recorded totals without running its body. A cell of NAS-Bench-201 is then elaborated once
per genotype and stage, an edge once per op and shape, and the network around them is a
few dozen steps of the interpreter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import count as counter
from typing import Any

from ..elaborate import Elaborator, Frame, Limits
from ..errors import SpecError
from ..ir import TensorInfo, TensorValue
from ..loader import Program
from ..network import Layer, Network
from ..ops import OPS
from ..syntax import ast
from . import replay
from .replay import Replay, Step, _arg_key, _evaluate, _In, _Instance, _New

Memo = dict[tuple, tuple[int, int]]


def seed_layers(net: Network, memo: Memo) -> None:
    """Fill ``net.layers`` as ``Network.layers`` would compute it (a ``cached_property``:
    assigning it stores the value that later reads return)."""
    g, layers = net.graph, []
    for n in g.nodes():
        inputs, out = g.input_shapes(n.name), g.info(n.name).shape
        counts = layer_counts(memo, n.op, n.attrs, inputs, out)
        layers.append(Layer(n.name, n.op, out, *counts))
    net.layers = layers


def layer_counts(memo: Memo, op: str, attrs: Any, inputs: list, out: tuple) -> tuple[int, int]:
    """(parameters, MACs) of one node, from the op table once per distinct layer."""
    key = (op, tuple(attrs.items()), tuple(inputs), out)
    counts = memo.get(key)
    if counts is None:
        definition = OPS[op]
        counts = memo[key] = (
            definition.params(attrs, inputs),
            definition.count_macs(attrs, inputs, out),
        )
    return counts


@dataclass(frozen=True)
class Counts:
    """What the count-only route gives: trainable parameters, MACs, output shapes."""

    params: int
    macs: int
    outputs: tuple[tuple[str, tuple[int, ...]], ...]  # (name, shape) of each output


class _Nodes:
    """``graph.nx.nodes`` for the one error hint that reads the elaboration order."""

    def __init__(self, graph: CountGraph) -> None:
        self.nodes = list(graph.infos)


class CountGraph:
    """The part of an ``ir.Graph`` that elaboration reads, plus running totals: each
    tensor's shape and dtype by name, no nodes or edges."""

    def __init__(self, layers: Memo) -> None:
        self.layers = layers
        self.infos: dict[str, TensorInfo] = {}
        self.params = self.macs = self.nodes = 0
        self.name = ""
        self.outputs: list[tuple[str, str]] = []
        self.training_outputs: list[tuple[str, str]] = []
        self.projections: tuple = ()

    def add(self, node: Any, inputs: list[str], info: TensorInfo) -> None:
        infos = self.infos
        shapes = [infos[i].shape for i in inputs]
        infos[node.name] = info
        self.last_attrs = node.attrs
        params, macs = layer_counts(self.layers, node.op, node.attrs, shapes, info.shape)
        self.params += params
        self.macs += macs
        self.nodes += 1

    def info(self, name: str) -> TensorInfo:
        return self.infos[name]

    def __len__(self) -> int:
        return self.nodes

    def __contains__(self, name: str) -> bool:
        return name in self.infos

    @property
    def nx(self) -> _Nodes:
        return _Nodes(self)


class InstanceMemo:
    """Block instances by (block, arguments, input shapes and dtypes): what one adds to the
    counts, shared by every candidate of a space. An inline block's key has its label too
    (its body may read it); an ordinary block's name does not count. Op calls likewise, by
    op, attribute values and input shapes: (output info, parameters, MACs)."""

    def __init__(self) -> None:
        self.instances: dict[tuple, _Instance] = {}
        self.ops: dict[tuple, tuple[TensorInfo, int, int, Any]] = {}  # ..., attributes
        self.plans: dict[str, Any] = {}  # block -> replay.Plan, or None
        self.replays: dict[tuple, Any] = {}  # (block, input infos) -> replay.Replay
        self.layers: Memo = {}
        self.hits = self.misses = 0


class CountingElaborator(Elaborator):
    """An :class:`~resdsl.elaborate.Elaborator` into a :class:`CountGraph` that answers
    block instances and op calls from an :class:`InstanceMemo`. Names do not count, so no
    label is evaluated and no name is claimed (the build checks them), and a replayed
    instance adds no steps against the limits."""

    def __init__(self, program: Program, limits: Limits, memo: InstanceMemo) -> None:
        super().__init__(program, limits)
        self.memo = memo
        self.graph = CountGraph(memo.layers)  # type: ignore[assignment]
        self._fresh = counter()
        self._tuples: dict[int, tuple[tuple, Any]] = {}  # id -> (tuple, key): no tensors
        self.traces: dict[int, list[Step]] = {}  # stack depth -> the calls made there
        self.emitted_attrs: Any = None  # the attributes of the node emit() made last

    def check_choice(self, *args: Any) -> None:
        """The space checked the assignment against its choices already."""

    def _name(self, frame: Frame, label: Any, op: str, span: Any) -> str:
        return f"\0{next(self._fresh)}"  # no spec name has a NUL

    def emit(self, op_name: str, inputs: list[TensorValue], attr_args, kwargs, span, frame,
             label) -> TensorValue:  # fmt: skip
        g = self.graph
        infos = g.infos
        key = (
            op_name,
            tuple(_value_key(v) for v, _ in attr_args.values()),
            tuple((k, _value_key(v)) for k, (v, _) in kwargs.items()),
            tuple((i.shape, infos[i.node].dtype) for i in inputs),
        )
        try:
            hit = self.memo.ops.get(key)
        except TypeError:  # an unhashable attribute value: the ordinary path reports it
            hit, key = None, None
        if hit is None:
            before = (g.params, g.macs)
            value = super().emit(op_name, inputs, attr_args, kwargs, span, frame, label)
            self.emitted_attrs = g.last_attrs
            if key is not None:
                self.memo.ops[key] = (
                    infos[value.node],
                    g.params - before[0],
                    g.macs - before[1],
                    g.last_attrs,
                )
            return value
        info, params, macs, self.emitted_attrs = hit
        name = f"\0{next(self._fresh)}"
        infos[name] = info
        g.params += params
        g.macs += macs
        g.nodes += 1
        return TensorValue(name, info.shape, span)

    def call_block(self, definition: ast.Definition, call: ast.Call, args, kwargs, frame):
        return self._memoised(definition, call, args, kwargs, frame, None, super().call_block)

    def call_inline(self, definition: ast.Definition, call: ast.Call, args, kwargs, frame):
        label = "" if call.label is None else self.label_text(call.label, frame)
        return self._memoised(definition, call, args, kwargs, frame, label, super().call_inline)

    def _memoised(self, definition, call, args, kwargs, frame: Frame, label, run):
        externals: list[TensorValue] = []
        infos = self.graph.infos
        key = (
            definition.name, label,
            tuple(self._arg_key(v, externals, infos) for v, _ in args),
            tuple(sorted((k, self._arg_key(v, externals, infos))
                         for k, (v, _) in kwargs.items())),
        )  # fmt: skip
        memo, g = self.memo, self.graph
        hit = memo.instances.get(key)
        if hit is not None:
            memo.hits += 1
            g.params += hit.params
            g.macs += hit.macs
            g.nodes += hit.nodes
            result = self._instantiate(hit.result, externals, call.span)
        else:
            hit = self._replayed(definition, args, kwargs, externals) if label is None else None
            if hit is not None:
                memo.instances[key] = hit
                g.params += hit.params
                g.macs += hit.macs
                g.nodes += hit.nodes
                result = self._instantiate(hit.result, externals, call.span)
            else:
                result, hit = self._run(key, definition, call, args, kwargs, frame, label, run,
                                        externals)  # fmt: skip
        trace = self.traces.get(len(self.stack))
        if trace is not None:  # a call in the body being traced
            trace.append(Step(definition, call, label, key, args, kwargs, externals,
                              tuple(infos[t.node] for t in externals), hit))  # fmt: skip
        return result

    def _run(self, key, definition, call, args, kwargs, frame, label, run, externals):
        """Run a new instance: record its totals, and trace a block that can be replayed."""
        memo, g, infos = self.memo, self.graph, self.graph.infos
        memo.misses += 1
        rkey = trace = None
        if label is None:
            rkey = (definition.name, tuple(infos[t.node] for t in externals))
            trace = self._trace_for(definition, rkey)
        depth = len(self.stack) + 1  # the body's calls are made at this depth
        if trace is not None:
            self.traces[depth] = trace
        before, errors = (g.params, g.macs, g.nodes, len(infos)), len(self.errors)
        try:
            result = run(definition, call, args, kwargs, frame)
        finally:
            if trace is not None:
                del self.traces[depth]
        hit = None
        if len(self.errors) == errors:
            created = set(list(infos)[before[3] :])
            template = _template(result, externals, created, infos)
            if template is not _UNCACHEABLE:
                hit = memo.instances[key] = _Instance(
                    g.params - before[0], g.macs - before[1], g.nodes - before[2], template
                )
                if trace is not None:
                    totals = (hit.params, hit.macs, hit.nodes)
                    memo.replays[rkey] = replay.Replay(memo.plans[definition.name], trace,
                                                       totals, template)  # fmt: skip
        return result, hit

    def _trace_for(self, definition: ast.Definition, rkey: tuple) -> list[Step] | None:
        """A list to trace a new instance into, for a block whose parameters only reach its
        own calls' arguments (replay.plan) and that has no trace for these input shapes."""
        memo = self.memo
        if definition.name not in memo.plans:
            params = {p.name for p in definition.params}
            memo.plans[definition.name] = replay.plan(self.program, definition, params)
        planned = memo.plans[definition.name]
        if planned is None or not planned.calls or rkey in memo.replays:
            return None
        return []

    def _replayed(self, definition, args, kwargs, externals) -> _Instance | None:
        """A new instance of a block traced before with these input shapes, from the
        recorded instances of its calls; None: run it."""
        infos = self.graph.infos
        rep = self.memo.replays.get((definition.name, tuple(infos[t.node] for t in externals)))
        if rep is None:
            return None
        env = _param_values(definition, args, kwargs)
        totals = None if env is None else rep.totals(env, self.memo, lambda step, env: None)
        return None if totals is None else _Instance(*totals, rep.result)

    def _arg_key(self, value: Any, externals: list[TensorValue], infos) -> Any:
        if type(value) is tuple:  # a genotype passed to every cell: its key once
            known = self._tuples.get(id(value))
            if known is not None:
                return known[1]
            n = len(externals)
            key = _arg_key(value, externals, infos)
            if len(externals) == n:
                self._tuples[id(value)] = (value, key)  # holding it keeps its id unique
            return key
        return _arg_key(value, externals, infos)

    def _instantiate(self, template: Any, externals: list[TensorValue], span) -> Any:
        if isinstance(template, _In):
            return externals[template.index]
        if isinstance(template, _New):
            name = f"\0{next(self._fresh)}"  # no spec name has a NUL
            self.graph.infos[name] = template.info
            return TensorValue(name, template.info.shape, span)
        if isinstance(template, tuple):
            return tuple(self._instantiate(t, externals, span) for t in template)
        return template


_UNCACHEABLE = object()


def _param_values(definition: ast.Definition, args, kwargs) -> dict[str, Any] | None:
    """The block's parameter values from a call's arguments; None where a missing one's
    default is not a literal."""
    params = definition.params
    env = {p.name: v for p, (v, _) in zip(params, args[len(definition.inputs) :], strict=False)}
    env.update((k, v) for k, (v, _) in kwargs.items())
    for p in params:
        if p.name not in env:
            if not isinstance(p.default, ast.Literal):
                return None
            env[p.name] = p.default.value
    return env


def _value_key(value: Any) -> Any:
    """An attribute value as a key: 1, 1.0 and true are different values."""
    if type(value) is tuple:
        return (tuple, tuple(_value_key(v) for v in value))
    return (type(value), value)


def _template(value: Any, externals: list[TensorValue], created: set[str], infos) -> Any:
    if isinstance(value, TensorValue):
        for i, ext in enumerate(externals):
            if ext.node == value.node:
                return _In(i)
        return _New(infos[value.node]) if value.node in created else _UNCACHEABLE
    if isinstance(value, tuple):
        items = tuple(_template(v, externals, created, infos) for v in value)
        return _UNCACHEABLE if any(i is _UNCACHEABLE for i in items) else items
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return _UNCACHEABLE


def count(
    program: Program, network: str, params: dict[str, Any], limits: Limits,
    memo: InstanceMemo, trace: list[Step] | None = None,
) -> tuple[Counts, CountGraph]:  # fmt: skip
    """Elaborate ``network`` with ``params`` for its counts only; with a ``trace`` list, the
    block instances its body creates are appended to it."""
    el = CountingElaborator(program, limits, memo)
    if trace is not None:
        el.traces[1] = trace  # the network's own calls
    g: CountGraph = el.network(network, params)  # type: ignore[assignment]
    outputs = tuple((name, g.infos[node].shape) for name, node in g.outputs)
    return Counts(g.params, g.macs, outputs), g


class NetworkReplay:
    """The network body of a counted candidate, replayed for the space's other candidates:
    a step the memo does not have is elaborated alone, by an elaborator kept for that."""

    def __init__(self, replay: Replay, outputs: tuple, network: ast.Definition) -> None:
        self.replay, self.outputs, self.network = replay, outputs, network
        self._elaborator: CountingElaborator | None = None  # reused: building one costs

    def count(self, values: Mapping[str, Any], program: Program, limits: Limits,
              memo: InstanceMemo) -> Counts | None:  # fmt: skip
        """The counts of the candidate with parameters ``values``; None: run the body."""

        def elaborate(step: Step, env: dict) -> Any:
            return self._elaborate(step, env, program, limits, memo)

        totals = self.replay.totals(values, memo, elaborate)
        return None if totals is None else Counts(totals[0], totals[1], self.outputs)

    def _elaborate(
        self,
        step: Step,
        env,
        program: Program,
        limits: Limits,
        memo: InstanceMemo,
    ):
        """Elaborate the step's instance alone, with the choices' values in its arguments."""
        el = self._elaborator
        if el is None or el.memo is not memo:
            el = self._elaborator = CountingElaborator(program, limits, memo)
            el.stack.append((self.network, None))
        el.graph, el.errors, el.steps = CountGraph(memo.layers), [], 0
        for t, info in zip(step.externals, step.infos, strict=True):
            el.graph.infos[t.node] = info
        exprs, kwexprs = self.replay.exprs(step)
        args = [
            (_evaluate(e, env), span) if e is not None else (value, span)
            for e, (value, span) in zip(exprs, step.args, strict=True)
        ]
        kwargs = {
            k: ((_evaluate(kwexprs[k], env), span) if k in kwexprs else (v, span))
            for k, (v, span) in step.kwargs.items()
        }
        frame = Frame({}, "", self.network.name)
        call = el.call_inline if step.definition.inline else el.call_block
        try:
            call(step.definition, step.call, args, kwargs, frame)
        except SpecError:
            return None
        if el.errors:
            return None
        return memo.instances.get(self.replay.key(step, env))
