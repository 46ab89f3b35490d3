"""Incremental elaboration: a block instance seen in an earlier candidate is replayed.

Candidates of a space share most of their block instances (``layer1`` is the same whenever
its depth, width and input shape are). A block instance's nodes depend only on the block,
its instance name, its call site, and its arguments — the tensors' *shapes*, not which
node produced them. :class:`IncrementalElaborator` records the nodes, names and name
counters each labelled instance adds, keyed by exactly that, and replays them (with the
input nodes of the new graph substituted) the next time, skipping the interpreter. Only
instances that elaborated without error are recorded, so diagnostics are unchanged; the
graphs are identical to :func:`resdsl.elaborate.elaborate`'s (tests/test_search.py).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ..elaborate import BlockRef, Elaborator, Frame, Limits, _join
from ..errors import LimitError, Span, SpecError
from ..ir import Node, TensorInfo, TensorValue
from ..loader import Program
from ..syntax import ast


@dataclass(frozen=True)
class _External:
    """A reference to the ``index``-th tensor argument of the instance being replayed."""

    index: int
    shape: tuple[int, ...]
    span: Span | None


@dataclass(frozen=True)
class _Fragment:
    nodes: tuple[tuple[Node, TensorInfo], ...]
    edges: tuple[tuple[str | _External, str, int, dict[str, Any]], ...]  # src, dst, key, data
    names: tuple[tuple[str, Span | None], ...]  # every name the instance claimed
    counters: tuple[tuple[tuple[str, str], int], ...]  # anonymous-name counters inside it
    result: Any  # the returned value, external tensors as _External


class FragmentCache:
    """A bounded LRU map from a block instance's key to its recorded fragment."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self.entries: OrderedDict[tuple, _Fragment] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: tuple) -> _Fragment | None:
        fragment = self.entries.get(key)
        if fragment is None:
            self.misses += 1
        else:
            self.hits += 1
            self.entries.move_to_end(key)
        return fragment

    def put(self, key: tuple, fragment: _Fragment) -> None:
        self.entries[key] = fragment
        if len(self.entries) > self.size:
            self.entries.popitem(last=False)


class IncrementalElaborator(Elaborator):
    """An :class:`~resdsl.elaborate.Elaborator` that replays recorded block instances."""

    def __init__(self, program: Program, limits: Limits, cache: FragmentCache) -> None:
        super().__init__(program, limits)
        self.cache = cache

    def _call_block(self, definition: ast.Definition, call: ast.Call, args, kwargs, frame):
        key, externals = self._fragment_key(definition, call, args, kwargs, frame)
        if key is None:
            return super()._call_block(definition, call, args, kwargs, frame)
        fragment = self.cache.get(key)
        if fragment is not None and not any(name in self.names for name, _ in fragment.names):
            return self._replay_fragment(fragment, externals, call.span)
        return self._record_call(key, externals, definition, call, args, kwargs, frame)

    def _fragment_key(self, definition, call, args, kwargs, frame: Frame):
        """(key, tensor arguments) of a labelled instance; (None, []) when not cacheable."""
        if not isinstance(call.label, ast.Label):
            return None, []  # an anonymous instance's name depends on a counter
        try:
            name = _join(frame.prefix, self._label_text(call.label, frame))
        except SpecError:
            return None, []  # let the ordinary path report it
        externals: list[TensorValue] = []
        values = tuple(_arg_key(v, externals) for v, _ in args)
        named = tuple(sorted((k, _arg_key(v, externals)) for k, (v, _) in kwargs.items()))
        return (definition.name, definition.span, call.span, name, values, named), externals

    def _record_call(self, key, externals, definition, call, args, kwargs, frame):
        nodes_before, names_before = len(self.graph), len(self.names)
        errors_before = len(self.errors)
        result = super()._call_block(definition, call, args, kwargs, frame)
        if len(self.errors) == errors_before:
            fragment = self._make_fragment(externals, nodes_before, names_before, result)
            if fragment is not None:
                self.cache.put(key, fragment)
        return result

    def _make_fragment(self, externals, nodes_before: int, names_before: int, result):
        g = self.graph
        new = list(g.nx.nodes)[nodes_before:]
        inside = set(new)
        outside = {v.node: i for i, v in reversed(list(enumerate(externals)))}
        nodes, edges = [], []
        for name in new:
            if g.node(name).op == "input":
                return None  # Graph.inputs would need it too
            for src, _, key, data in g.nx.in_edges(name, keys=True, data=True):
                if src not in inside and src not in outside:
                    return None  # reads a tensor that is not an argument: do not cache
                src = src if src in inside else _External(outside[src], (), None)
                edges.append((src, name, key, dict(data)))
            nodes.append((g.node(name), g.info(name)))
        names = tuple(list(self.names.items())[names_before:])
        scope = names[0][0] if names else ""  # the instance's own name is claimed first
        counters = tuple(
            (k, v) for k, v in self.counters.items()
            if k[0] == scope or k[0].startswith(scope + ".")
        )  # fmt: skip
        mapped = _map_result(result, inside, outside)
        if mapped is _UNCACHEABLE:
            return None
        return _Fragment(tuple(nodes), tuple(edges), names, counters, mapped)

    def _replay_fragment(self, fragment: _Fragment, externals: list[TensorValue], span: Span):
        # In bulk, with the edge keys Graph.add would give (the k-th parallel edge is key
        # k): the graph is the same as if the nodes had been emitted one by one.
        g = self.graph.nx
        g.add_nodes_from((node.name, {"op": node, "info": info}) for node, info in fragment.nodes)
        g.add_edges_from(
            (externals[src.index].node if isinstance(src, _External) else src, dst, key, data)
            for src, dst, key, data in fragment.edges
        )
        self.names.update(fragment.names)
        self.counters.update(fragment.counters)
        if len(self.graph) > self.limits.max_nodes:
            raise LimitError(f"the network has more than {self.limits.max_nodes} ops", span)
        return _unmap_result(fragment.result, externals)


_UNCACHEABLE = object()


def _arg_key(value: Any, externals: list[TensorValue]) -> Any:
    """What an argument contributes to a key; tensors by shape, collected in order."""
    if isinstance(value, TensorValue):
        externals.append(value)
        return ("tensor", value.shape)
    if isinstance(value, BlockRef):
        return ("block", value.definition.name, value.definition.span)
    if isinstance(value, tuple):
        return ("tuple", tuple(_arg_key(v, externals) for v in value))
    return (type(value).__name__, repr(value))


def _map_result(value: Any, inside: set[str], outside: dict[str, int]) -> Any:
    if isinstance(value, TensorValue):
        if value.node in inside:
            return value
        if value.node in outside:
            return _External(outside[value.node], value.shape, value.span)
        return _UNCACHEABLE
    if isinstance(value, tuple):
        items = tuple(_map_result(v, inside, outside) for v in value)
        return _UNCACHEABLE if any(i is _UNCACHEABLE for i in items) else items
    return value


def _unmap_result(value: Any, externals: list[TensorValue]) -> Any:
    if isinstance(value, _External):
        return TensorValue(externals[value.index].node, value.shape, value.span)
    if isinstance(value, tuple):
        return tuple(_unmap_result(v, externals) for v in value)
    return value
