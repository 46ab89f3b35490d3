"""Shape inference over a finished graph, as an interpreter in topological order.

Elaboration already infers each shape as it adds a node (so specs can query shapes);
this pass re-derives them from the op table for graphs that were built or rewritten by
other means — graph passes, tests, future frontends — and names the node that breaks.
"""

from __future__ import annotations

from ..errors import ShapeError
from ..ir import Graph, TensorInfo
from ..ops import OPS, OpShapeError


def infer_shapes(graph: Graph) -> Graph:
    """Recompute every node's :class:`TensorInfo`; raise ShapeError at the failing node."""
    for node in graph.topological():
        inputs = [graph.info(src).shape for src in graph.inputs_of(node.name)]
        op = OPS[node.op]
        expected = op.inputs if op.inputs is not None else None
        if (expected is not None and len(inputs) != expected) or len(inputs) < op.min_inputs:
            raise ShapeError(f"node `{node.name}` ({node.op}) has {len(inputs)} inputs", node.span)
        try:
            shape = op.shape(node.attrs, inputs)
        except OpShapeError as e:
            raise ShapeError(
                f"{e.message} (at node `{node.name}`)", node.span, hints=e.hints
            ) from None
        graph.set_info(node.name, TensorInfo(shape, graph.info(node.name).dtype))
    return graph
