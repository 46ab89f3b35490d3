"""Counting a candidate's parameters and MACs with a memo shared by all candidates.

``Network.layers`` asks the op table for every node. Candidates of one space repeat the
same layers (a 3x3 convolution of 64 channels on a 56x56 map) thousands of times, so the
space keeps the answers keyed by what they depend on: op, attributes, input shapes.
"""

from __future__ import annotations

from ..network import Layer, Network
from ..ops import OPS

Memo = dict[tuple, tuple[int, int]]


def seed_layers(net: Network, memo: Memo) -> None:
    """Fill ``net.layers`` as ``Network.layers`` would compute it (a ``cached_property``:
    assigning it stores the value that later reads return)."""
    g, layers = net.graph, []
    for n in g.nodes():
        inputs, out = g.input_shapes(n.name), g.info(n.name).shape
        key = (n.op, tuple(n.attrs.items()), tuple(inputs), out)
        counts = memo.get(key)
        if counts is None:
            op = OPS[n.op]
            counts = memo[key] = (op.params(n.attrs, inputs), op.count_macs(n.attrs, inputs, out))
        layers.append(Layer(n.name, n.op, out, *counts))
    net.layers = layers
