"""Inference-time rewrites: drop no-ops, fold batch norm into convolutions, remove dead ops.

Each pass is a plain function ``pass(graph, weights) -> bool`` that rewrites ``graph`` and
``weights`` (state_dict key -> NumPy array) in place and says whether it changed anything.
The graph and the weights change together: a pass that removes a node deletes its weights,
one that changes a node's attributes rewrites the weights those attributes declare.

:func:`run_inference_passes` runs them on copies, in order, and (with ``verify``) checks
after each one that the graph still infers the same shapes and the weights still fit it,
naming the pass that broke either. Such a failure is a bug in the pass, not in the spec.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import networkx as nx

from ..ir import Graph, Node, TensorInfo, freeze
from ..ops import OPS
from ..ops.lowering import batchnorm_affine
from ..weights import check, expected
from .shapes import infer_shapes

if TYPE_CHECKING:
    import numpy as np

    from ..weights import Weights

Pass = Callable[[Graph, "Weights"], bool]

# Ops that return their input unchanged at inference time (dropout is identity in eval mode).
INFERENCE_NOOPS = frozenset(name for name, op in OPS.items() if op.inference_noop)


def _drop_weights(graph: Graph, weights: Weights, name: str) -> None:
    """Delete the weights ``name`` owns; call it while ``name`` still has its inputs."""
    node = graph.node(name)
    for w in graph.weights_of(name):  # optional ones (num_batches_tracked) may be absent
        weights.pop(node.key(w.name), None)


def _sole_user(graph: Graph, name: str) -> str | None:
    """The one node reading ``name`` through exactly one edge, if ``name`` is no graph output."""
    edges = list(graph.nx.out_edges(name))
    if len(edges) != 1 or any(node == name for _, node in graph.outputs):
        return None
    return edges[0][1]


def drop_identities(graph: Graph, weights: Weights) -> bool:
    """Bypass and remove every op in :data:`INFERENCE_NOOPS`."""
    changed = False
    for name in list(graph.nx.nodes):
        if not OPS[graph.node(name).op].inference_noop:
            continue
        (src,) = graph.inputs_of(name)
        graph.redirect(name, src)
        _drop_weights(graph, weights, name)
        graph.remove(name)
        changed = True
    return changed


def fold_batchnorm(graph: Graph, weights: Weights) -> bool:
    """Fold each ``batchnorm2d`` into the ``conv2d`` it reads, when nothing else reads it."""
    changed = False
    for name in list(graph.nx.nodes):
        bn = graph.node(name)
        if bn.op != "batchnorm2d":
            continue
        (conv_name,) = graph.inputs_of(name)
        conv = graph.node(conv_name)
        if conv.op != "conv2d" or _sole_user(graph, conv_name) != name:
            continue
        weights[conv.key("weight")], weights[conv.key("bias")] = _folded(weights, conv, bn)
        _drop_weights(graph, weights, name)
        attrs = freeze({**conv.attrs, "bias": True})
        graph.replace_node(conv_name, dataclasses.replace(conv, attrs=attrs))
        graph.redirect(name, conv_name)
        graph.remove(name)
        changed = True
    return changed


def _folded(weights: Weights, conv: Node, bn: Node) -> tuple[np.ndarray, np.ndarray]:
    """The conv's weight and bias with ``bn`` applied to its output: with ``bn`` as
    ``x * s + t`` per channel (:func:`~resdsl.ops.lowering.batchnorm_affine`), w' = w * s
    per output channel and b' = b * s + t, where b is 0 for a bias-free conv."""
    import numpy as np

    weight = np.asarray(weights[conv.key("weight")], dtype=np.float64)
    scale, shift = batchnorm_affine(weights, bn.key, bn.attrs["eps"], weight.shape[0])
    bias = np.asarray(weights[conv.key("bias")], np.float64) if conv.attrs["bias"] else 0.0
    return (weight * scale[:, None, None, None]).astype(np.float32), (bias * scale + shift).astype(
        np.float32
    )


def eliminate_dead(graph: Graph, weights: Weights) -> bool:
    """Remove ops no graph output depends on (and their weights); graph inputs always stay."""
    live = set(graph.inputs)
    for _, node in graph.outputs:
        live.add(node)
        live |= nx.ancestors(graph.nx, node)
    dead = [n.name for n in graph.topological() if n.name not in live]
    for name in reversed(dead):  # users before producers, so each is unread when removed
        _drop_weights(graph, weights, name)
        graph.remove(name)
    # a training-only output's branch is dead at inference: it goes with its nodes
    graph.training_outputs = [(n, node) for n, node in graph.training_outputs if node in graph]
    return bool(dead)


PASSES: tuple[Pass, ...] = (drop_identities, fold_batchnorm, eliminate_dead)


def run_inference_passes(
    graph: Graph, weights: Weights, verify: bool = True
) -> tuple[Graph, Weights]:
    """The inference graph and its weights; ``graph`` and ``weights`` are left untouched.

    ``weights`` must fit ``graph`` (else :class:`~resdsl.weights.WeightsError`). With
    ``verify``, each pass is checked to keep the graph well-formed, its stored shapes
    current, its inputs and outputs unchanged and the weights fitting it; a pass that breaks
    any of that raises ``RuntimeError`` naming the pass.
    """
    check(graph, weights)
    interface = _interface(graph)
    graph, weights = graph.copy(), dict(weights)  # passes replace arrays, never mutate them
    for fn in PASSES:
        fn(graph, weights)
        if verify:
            try:
                _verify(graph, weights, interface)
            except Exception as e:  # any failure here is the pass's fault
                raise RuntimeError(f"pass {fn.__name__} broke the graph: {e}") from e
    return graph, weights


def _interface(graph: Graph) -> tuple:
    return (
        [(n, graph.info(n).shape) for n in graph.inputs],
        [(out, graph.info(node).shape) for out, node in graph.outputs],
    )


def _verify(graph: Graph, weights: Weights, interface: tuple) -> None:
    """Raise ``ValueError`` describing the first way ``graph`` and ``weights`` are broken."""
    for name in [*graph.inputs, *(node for _, node in graph.outputs)]:
        if name not in graph:
            raise ValueError(f"graph input or output `{name}` is not a node")
    for name in graph.nx.nodes:
        ports = sorted(d["port"] for _, _, d in graph.nx.in_edges(name, data=True))
        if ports != list(range(len(ports))):
            raise ValueError(f"node `{name}` has input ports {ports}")
    stored = {name: graph.info(name) for name in graph.nx.nodes}
    infer_shapes(graph)
    for name, info in stored.items():
        if graph.info(name) != info:
            raise ValueError(
                f"node `{name}` records {_describe(info)} but infers {_describe(graph.info(name))}"
            )
    if _interface(graph) != interface:
        raise ValueError(f"inputs and outputs changed from {interface} to {_interface(graph)}")
    want = expected(graph)
    for key in weights:
        if key not in want:
            raise ValueError(f"weight `{key}` belongs to no node")
    for key, w in want.items():
        if key not in weights:
            if w.required:
                raise ValueError(f"weight `{key}` is missing")
        elif tuple(weights[key].shape) != w.shape:
            raise ValueError(f"weight `{key}` has shape {weights[key].shape}, needs {w.shape}")


def _describe(info: TensorInfo) -> str:
    return f"shape {info.shape} ({info.dtype})"
