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

from ..elaborate import Added, BlockRef, Elaborator, Frame, Limits, join_name
from ..errors import Span, SpecError
from ..ir import TensorValue
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
    added: Added  # edge sources outside the instance are _External
    names: tuple[str, ...]  # the names in ``added``, checked before a replay
    result: Any  # the returned value, external tensors as _External


class FragmentCache:
    """A bounded LRU map from a block instance's key to its recorded fragment."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self.entries: OrderedDict[tuple, _Fragment] = OrderedDict()

    def get(self, key: tuple) -> _Fragment | None:
        fragment = self.entries.get(key)
        if fragment is not None:
            self.entries.move_to_end(key)
        return fragment

    def put(self, key: tuple, fragment: _Fragment) -> None:
        self.entries[key] = fragment
        if len(self.entries) > self.size:
            self.entries.popitem(last=False)


class IncrementalElaborator(Elaborator):
    """An :class:`~resdsl.elaborate.Elaborator` that replays recorded block instances.

    It overrides the :meth:`~resdsl.elaborate.Elaborator.call_block` hook and records with
    ``mark``/``added_since``, replays with ``splice``."""

    def __init__(self, program: Program, limits: Limits, cache: FragmentCache) -> None:
        super().__init__(program, limits)
        self.cache = cache

    def call_block(self, definition: ast.Definition, call: ast.Call, args, kwargs, frame):
        key, externals = self._fragment_key(definition, call, args, kwargs, frame)
        if key is None:
            return super().call_block(definition, call, args, kwargs, frame)
        fragment = self.cache.get(key)
        if fragment is not None and not self.names_in_use(fragment.names):
            return self._replay_fragment(fragment, externals, call.span)
        return self._record_call(key, externals, definition, call, args, kwargs, frame)

    def _fragment_key(self, definition, call, args, kwargs, frame: Frame):
        """(key, tensor arguments) of a labelled instance; (None, []) when not cacheable."""
        if not isinstance(call.label, ast.Label):
            return None, []  # an anonymous instance's name depends on a counter
        try:
            name = join_name(frame.prefix, self.label_text(call.label, frame))
        except SpecError:
            return None, []  # let the ordinary path report it
        externals: list[TensorValue] = []
        values = tuple(_arg_key(v, externals) for v, _ in args)
        named = tuple(sorted((k, _arg_key(v, externals)) for k, (v, _) in kwargs.items()))
        return (definition.name, definition.span, call.span, name, values, named), externals

    def _record_call(self, key, externals, definition, call, args, kwargs, frame):
        mark = self.mark()
        result = super().call_block(definition, call, args, kwargs, frame)
        if not self.failed_since(mark):
            fragment = _make_fragment(self.added_since(mark), externals, result)
            if fragment is not None:
                self.cache.put(key, fragment)
        return result

    def _replay_fragment(self, fragment: _Fragment, externals: list[TensorValue], span: Span):
        added = fragment.added
        edges = (
            (externals[src.index].node if isinstance(src, _External) else src, dst, key, data)
            for src, dst, key, data in added.edges
        )
        self.splice(added.nodes, edges, added.names, added.counters, span)
        return _unmap_result(fragment.result, externals)


def _make_fragment(added: Added, externals: list[TensorValue], result: Any) -> _Fragment | None:
    """The instance's fragment, its tensor arguments made _External; None if not cacheable."""
    inside = {node.name for node, _ in added.nodes}
    outside = {v.node: i for i, v in reversed(list(enumerate(externals)))}
    if any(node.op == "input" for node, _ in added.nodes):
        return None  # Graph.inputs would need it too
    edges = []
    for src, dst, key, data in added.edges:
        if src not in inside and src not in outside:
            return None  # reads a tensor that is not an argument: do not cache
        edges.append((src if src in inside else _External(outside[src], (), None), dst, key, data))
    mapped = _map_result(result, inside, outside)
    if mapped is _UNCACHEABLE:
        return None
    recorded = Added(added.nodes, tuple(edges), added.names, added.counters)
    return _Fragment(recorded, tuple(n for n, _ in added.names), mapped)


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
