"""The graph IR and the shape-inference pass."""

import pytest

import resdsl
from resdsl.ir import Node, TensorInfo, freeze
from resdsl.passes import infer_shapes

SPEC = """
block unit(c: int) (x) {
    y = x -> conv: conv2d(c, 3, padding=1) -> relu
    return y + x
}
network t() (x: (4, 8, 8)) {
    y = x -> a: unit(4) -> b: unit(4)
    return concat(y, y, x)
}
"""


def test_nodes_edges_and_ports():
    g = resdsl.loads(SPEC).graph
    assert g.inputs == ["x"]
    assert g.outputs == [("output", "concat_0")]
    node = g.node("a.conv")
    assert (node.op, node.attrs["out_channels"], node.scope, node.block) == (
        "conv2d",
        4,
        "a",
        "unit",
    )
    assert (node.span.line, node.span.column) == (3, 14)
    # concat(y, y, x): two parallel edges from b.add_0, in port order, then x
    assert g.inputs_of("concat_0") == ["b.add_0", "b.add_0", "x"]
    assert g.info("concat_0") == TensorInfo((12, 8, 8))
    assert g.users_of("x") == ["a.conv", "a.add_0", "concat_0"]


def test_infer_shapes_recomputes_what_elaboration_found():
    g = resdsl.loads(SPEC).graph
    before = {n.name: g.info(n.name) for n in g.nodes()}
    for n in g.nodes():
        g.set_info(n.name, TensorInfo(()))
    infer_shapes(g)
    assert {n.name: g.info(n.name) for n in g.nodes()} == before


def test_infer_shapes_names_the_broken_node():
    g = resdsl.loads(SPEC).graph
    # rewrite a.conv to 5 output channels: the residual add in `a` no longer fits
    old = g.node("a.conv")
    attrs = dict(old.attrs, out_channels=5)
    g.nx.nodes["a.conv"]["op"] = Node(old.op, freeze(attrs), old.name, old.span, old.scope)
    with pytest.raises(resdsl.ShapeError, match=r"\(at node `a.add_0`\)") as e:
        infer_shapes(g)
    assert (e.value.line, e.value.column) == (4, 12)


def test_topological_order_is_insertion_order_for_elaborated_graphs():
    g = resdsl.loads(SPEC).graph
    assert [n.name for n in g.topological()] == [n.name for n in g.nodes()]
