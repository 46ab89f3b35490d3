"""A stable hash of a network's graph, for deduplicating candidates of a search."""

from __future__ import annotations

import hashlib
from typing import Any

from ..ir import Graph

# Attributes that say how a tensor is first initialised, not what the network computes.
_NOT_COMPUTED = {(op, k) for op in ("parameter", "buffer") for k in ("init", "std", "value")}


def fingerprint(network: Any) -> str:
    """A 32-hex-digit hash of a :class:`resdsl.Network`'s (or an ``ir.Graph``'s) structure.

    It covers, node by node in elaboration order, the op, its attributes, its output shape
    and dtype and which nodes feed each input port, then which nodes are the outputs. Names
    are left out, so two specs that build the same layers in the same order hash equal; a
    different op, attribute, shape or connection changes the hash. How a parameter is first
    initialised is not part of it, and a reshape is its output shape (`-1` resolved).
    """
    graph: Graph = getattr(network, "graph", network)
    index = {name: i for i, name in enumerate(graph.nx.nodes)}
    h = hashlib.blake2b(digest_size=16)
    for node in graph.nodes():
        info = graph.info(node.name)
        attrs = sorted((k, v) for k, v in node.attrs.items() if (node.op, k) not in _NOT_COMPUTED)
        if node.op == "reshape":  # `(768, -1)` and `(768, 196)` compute the same
            attrs = [("shape", info.shape)]
        inputs = [index[src] for src in graph.inputs_of(node.name)]
        h.update(repr((node.op, attrs, info.shape, info.dtype, inputs)).encode())
        h.update(b"\0")
    h.update(repr([index[node] for _, node in graph.outputs]).encode())
    return h.hexdigest()
