"""The graph IR: a thin wrapper around ``networkx.MultiDiGraph``.

* Node key: the op instance's hierarchical name (``layer1.0.conv1``), unique in a graph.
* Node data ``op``: a frozen :class:`Node` (op name, attributes, name, source span).
* Node data ``info``: the inferred :class:`TensorInfo` (shape, dtype), kept apart from the op.
* Edges: one per tensor use, with ``port`` (input position) — parallel edges are allowed,
  so ``add(x, x)`` is two edges.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import networkx as nx

from ._compat import in_adjacency
from .errors import Span
from .ops import OPS, Shape, Weight, weight_key


@dataclass(frozen=True, slots=True)
class Node:
    """One op instance."""

    op: str
    attrs: Mapping[str, Any]
    name: str
    span: Span | None
    scope: str = ""  # the block instance that created it ("layer1.0"), "" at top level
    block: str = ""  # the block definition that created it ("bottleneck")
    # A step of an expanded composite reads the composite's weights: its weight name ->
    # the state_dict key (see resdsl.passes.decompose); None: its own keys.
    keys: Mapping[str, str] | None = None

    def key(self, weight: str) -> str:
        """The state_dict key of one of this node's weights."""
        if self.keys is not None:
            return self.keys[weight]
        return weight_key(self.name, weight)


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """What shape inference knows about a node's output."""

    shape: Shape
    dtype: str = "float32"


@dataclass(frozen=True, slots=True)
class TensorValue:
    """A tensor during elaboration: the node producing it and its shape."""

    spec_type: ClassVar[str] = "tensor"  # what error messages call it (ops.core._type_name)
    node: str
    shape: Shape
    span: Span | None = None


class Graph:
    """An elaborated network: op nodes, tensor edges, named inputs and outputs."""

    def __init__(self, name: str = "network") -> None:
        self.name = name
        self.nx = nx.MultiDiGraph()
        self.inputs: list[str] = []
        self.outputs: list[tuple[str, str]] = []  # (output name, producing node)
        # outputs produced only in training mode (auxiliary classifiers): `training(aux)`
        self.training_outputs: list[tuple[str, str]] = []
        # weights an expanded composite derives from its own: key -> (fn, source keys)
        self.derived: dict[str, tuple[Any, tuple[str, ...]]] = {}

    def add(
        self, node: Node, inputs: list[str], info: TensorInfo, *, check_unique: bool = True
    ) -> None:
        if check_unique and node.name in self.nx:
            raise KeyError(node.name)
        self.nx.add_node(node.name, op=node, info=info)
        self.nx.add_edges_from((src, node.name, {"port": p}) for p, src in enumerate(inputs))
        if node.op == "input":
            self.inputs.append(node.name)

    def __contains__(self, name: str) -> bool:
        return name in self.nx

    def __len__(self) -> int:
        return self.nx.number_of_nodes()

    def node(self, name: str) -> Node:
        return self.nx.nodes[name]["op"]

    def info(self, name: str) -> TensorInfo:
        return self.nx.nodes[name]["info"]

    def set_info(self, name: str, info: TensorInfo) -> None:
        self.nx.nodes[name]["info"] = info

    def inputs_of(self, name: str) -> list[str]:
        """Producers of ``name``'s inputs, in port order."""
        # the adjacency dicts, not `self.nx.pred`'s views: the hot path of counting and passes
        ports = [
            (d["port"], src) for src, keys in in_adjacency(self.nx)[name].items()
            for d in keys.values()
        ]  # fmt: skip
        ports.sort()
        return [src for _, src in ports]

    def users_of(self, name: str) -> list[str]:
        return list(dict.fromkeys(dst for _, dst in self.nx.out_edges(name)))

    def topological(self) -> Iterator[Node]:
        """Nodes in a deterministic topological order (ties broken by insertion order)."""
        order = {n: i for i, n in enumerate(self.nx.nodes)}
        for name in nx.lexicographical_topological_sort(self.nx, key=order.__getitem__):
            yield self.node(name)

    def nodes(self) -> Iterator[Node]:
        """Nodes in insertion order (elaboration emits them topologically)."""
        for name in self.nx.nodes:
            yield self.node(name)

    def input_shapes(self, name: str) -> list[Shape]:
        return [self.info(src).shape for src in self.inputs_of(name)]

    # --- rewriting (used by passes) ---------------------------------------------------------

    def replace_node(self, name: str, node: Node) -> None:
        """Swap the op record of ``name`` (same name, same edges), e.g. new attributes."""
        if node.name != name:
            raise ValueError(f"replace_node keeps the name: {name} != {node.name}")
        self.nx.nodes[name]["op"] = node

    def redirect(self, old: str, new: str) -> None:
        """Make every user of ``old`` (and any graph output) read ``new`` instead."""
        for _, dst, key, data in list(self.nx.out_edges(old, keys=True, data=True)):
            self.nx.remove_edge(old, dst, key)
            self.nx.add_edge(new, dst, port=data["port"])
        self.outputs = [(out, new if node == old else node) for out, node in self.outputs]

    def remove(self, name: str) -> None:
        """Delete a node that nothing reads any more."""
        if self.users_of(name) or any(node == name for _, node in self.outputs):
            raise ValueError(f"{name} still has users")
        self.nx.remove_node(name)
        if name in self.inputs:
            self.inputs.remove(name)

    def copy(self) -> Graph:
        """A copy whose structure can be rewritten without touching this graph."""
        other = Graph(self.name)
        other.nx = self.nx.copy()
        other.inputs, other.outputs = list(self.inputs), list(self.outputs)
        other.training_outputs = list(self.training_outputs)
        other.derived = dict(self.derived)
        return other

    def training_only(self) -> set[str]:
        """Nodes that only training outputs read (an auxiliary classifier's branch)."""
        if not self.training_outputs:
            return set()
        live = set(self.inputs)
        for _, node in self.outputs:
            live |= {node, *nx.ancestors(self.nx, node)}
        extra = set()
        for _, node in self.training_outputs:
            if node in self.nx:  # a pass may have removed the branch already
                extra |= {node, *nx.ancestors(self.nx, node)}
        return extra - live

    def inference(self) -> Graph:
        """This graph as inference sees it: without the training-only outputs and the nodes
        only they read (what the ONNX and TVM backends compile). ``self`` when it has none."""
        if not self.training_outputs:
            return self
        other = self.copy()
        other.nx.remove_nodes_from(self.training_only())
        other.training_outputs = []
        return other

    # --- counting -----------------------------------------------------------------------------

    def params_of(self, name: str) -> int:
        node = self.node(name)
        return OPS[node.op].params(node.attrs, self.input_shapes(name))

    def weights_of(self, name: str) -> tuple[Weight, ...]:
        """The tensors ``name`` owns; state_dict keys are ``f"{name}.{weight.name}"``."""
        node = self.node(name)
        return OPS[node.op].weights(node.attrs, self.input_shapes(name))

    def macs_of(self, name: str) -> int:
        node = self.node(name)
        return OPS[node.op].count_macs(node.attrs, self.input_shapes(name), self.info(name).shape)


def freeze(attrs: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(attrs))
