"""Expand composite ops into the ops they are defined by, for a backend that lacks them.

The op table defines a composite once, as a decomposition (``OpDef.decompose``); this pass
is the one place that applies it, as PyTorch's decomposition tables and TVM's legalisation
do: a backend passes the ops it emits itself (its emitter table) and gets a graph of
those ops only. Expansion repeats until no composite is left that the backend lacks, so a
decomposition may use other composites.

The step that computes the composite's value keeps the composite's name, so its users and
the graph outputs are unchanged; the other steps are named ``{composite}/{label}`` (no spec
name holds ``/``). A step that owns weights reads the composite's (``Node.keys``), so the
weights dict is the same before and after, except for tensors the decomposition derives from
the composite's (a standardised convolution weight): :func:`derive_weights` adds them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

from ..ir import Graph, Node, TensorInfo, freeze
from ..ops import OPS, Derived


def _key(out: Graph, node: Node, weight: str | Derived) -> str:
    """The state_dict key a step reads: one of the composite's, or a derived tensor's
    (``{composite}/{name}``), whose recipe the graph keeps for :func:`derive_weights`."""
    if isinstance(weight, str):
        return node.key(weight)
    key = f"{node.name}/{weight.name}"
    out.derived[key] = (weight.fn, tuple(node.key(s) for s in weight.sources))
    return key


def derive_weights(graph: Graph, weights: Mapping[str, Any]) -> dict[str, Any]:
    """``weights`` and the derived tensors the expanded ``graph`` reads (see :class:`Derived`)."""
    if not graph.derived:
        return dict(weights)
    out = dict(weights)
    for key, (fn, sources) in graph.derived.items():
        out[key] = fn(*(weights[s] for s in sources))
    return out


def decompose(graph: Graph, native: Collection[str]) -> Graph:
    """``graph`` with every composite op outside ``native`` expanded; ``graph`` is kept."""
    if all(n.op in native or not OPS[n.op].composite for n in graph.nodes()):
        return graph
    out = Graph(graph.name)
    for node in graph.nodes():
        _add(out, node, graph.inputs_of(node.name), graph.info(node.name), native)
    out.outputs = list(graph.outputs)
    out.training_outputs = list(graph.training_outputs)
    return out


def _add(out: Graph, node: Node, inputs: list[str], info: TensorInfo, native) -> None:
    op = OPS[node.op]
    if node.op in native or not op.composite:
        out.add(node, inputs, info)
        return
    shapes = [out.info(s).shape for s in inputs]
    steps = op.expand(node.attrs, shapes).steps
    names: list[str] = []
    for i, step in enumerate(steps):
        name = node.name if i == len(steps) - 1 else f"{node.name}/{step.label}"
        keys = {w: _key(out, node, mine) for w, mine in step.weights.items()} or None
        sub = dataclasses.replace(node, op=step.op, attrs=freeze(dict(step.attrs)), name=name,
                                  keys=keys)  # fmt: skip
        srcs = [inputs[-1 - v.ref] if v.ref < 0 else names[v.ref] for v in step.inputs]
        _add(out, sub, srcs, TensorInfo(step.shape, info.dtype), native)
        names.append(name)
