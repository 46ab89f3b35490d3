"""`resdsl draw`: the DOT structure (clusters, collapsed boxes, edge kinds, shapes on edges),
Graphviz rendering, the missing-binary error and atomic output."""

import functools
import os
import re
import shutil

import pydot
import pytest

import resdsl
from resdsl.cli import main
from resdsl.tools.draw import EDGE_STYLES, edge_kinds, to_dot

from .conftest import EXAMPLES

# pydot's parser uses pyparsing names that pyparsing 3.3 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated.*:DeprecationWarning")
HAS_DOT = shutil.which("dot") is not None
SHAPE = re.compile(r"^\(\d+(, \d+)*,?\)$")


@functools.cache
def resnet18() -> resdsl.Network:
    return resdsl.load(EXAMPLES / "resnet18.res")


@functools.cache
def parsed(depth: int | None) -> pydot.Dot:
    """resnet18's DOT at ``depth``, parsed back by pydot (slow: once per depth)."""
    (graph,) = pydot.graph_from_dot_data(to_dot(resnet18().graph, depth))
    return graph


def _unquote(name: str) -> str:
    return name.strip('"')


def clusters(graph) -> dict[str, object]:
    """All clusters, nested ones included, by name."""
    found = {}
    for sub in graph.get_subgraphs():
        found[_unquote(sub.get_name())] = sub
        found.update(clusters(sub))
    return found


def node_names(graph) -> set[str]:
    return {_unquote(n.get_name()) for n in graph.get_nodes()} - {"node", "edge", "graph"}


def edges(graph) -> list[tuple[str, str, dict]]:
    return [
        (_unquote(e.get_source()), _unquote(e.get_destination()), e.get_attributes())
        for e in graph.get_edges()
    ]


def kind_of(attrs: dict) -> str:
    """Which EDGE_STYLES entry an edge's attributes are."""
    matches = [
        k for k, style in EDGE_STYLES.items()
        if all(_unquote(str(attrs.get(a, ""))) == v for a, v in style.items())
        and ("style" in style or "style" not in attrs)
    ]  # fmt: skip
    assert len(matches) == 1, attrs
    return matches[0]


STAGES = ["layer1", "layer2", "layer3", "layer4"]
BLOCKS = [f"{s}.{i}" for s in STAGES for i in (0, 1)]
PROJECTED = ["layer2.0", "layer3.0", "layer4.0"]  # the blocks whose shortcut projects


def test_depth_1_clusters_are_the_stages_with_one_box_per_block():
    dot = parsed(1)
    found = clusters(dot)
    assert set(found) == {f"cluster_{s}" for s in STAGES}
    for stage in STAGES:
        assert node_names(found[f"cluster_{stage}"]) == {f"{stage}.0", f"{stage}.1"}
    top = node_names(dot)
    assert top == {"x", "conv1", "bn1", "relu_0", "maxpool", "avgpool", "fc", "@output"}
    # The stem's 4 edges, maxpool -> 8 blocks in a chain -> avgpool (9), avgpool -> fc,
    # fc -> output: a block's input feeds its branch and its skip, drawn as one edge.
    assert len(edges(dot)) == 4 + 9 + 1 + 1
    assert {kind_of(a) for _, _, a in edges(dot)} == {"data"}


def test_collapsed_boxes_show_the_block_and_its_parameter_count():
    source = to_dot(resnet18().graph, 1)
    # layer1.0: two 3x3 convs 64 -> 64 without bias and two batch norms.
    params = 2 * (64 * 64 * 9) + 2 * (2 * 64)
    assert f'"layer1.0" [label="layer1.0: basic\\n{params:,} params"' in source


def test_depth_2_clusters_are_the_blocks_and_projections_are_boxes():
    dot = parsed(2)
    found = clusters(dot)
    assert set(found) == {f"cluster_{s}" for s in STAGES + BLOCKS}
    for block in PROJECTED:
        assert f"{block}.downsample" in node_names(found[f"cluster_{block}"])
    assert found["cluster_layer1.0"].get_label() == '"layer1.0: basic"'
    # Per block: conv1 -> bn1 -> relu -> conv2 -> bn2 -> add -> relu (6) and the block's
    # input into conv1 and into the add (2); a projecting block has its input into the
    # downsample box and the box into the add instead (3). Stem 4, head 3.
    assert len(edges(dot)) == 5 * 8 + 3 * 9 + 4 + 3


def test_skip_and_projection_edges_have_their_styles():
    by_pair = {(a, b): kind_of(attrs) for a, b, attrs in edges(parsed(2))}
    assert by_pair["maxpool", "layer1.0.add_0"] == "skip"
    assert by_pair["layer1.0.relu_1", "layer1.1.add_0"] == "skip"
    assert by_pair["layer1.1.relu_1", "layer2.0.downsample"] == "projection"
    assert by_pair["layer2.0.downsample", "layer2.0.add_0"] == "projection"
    assert by_pair["layer1.0.bn2", "layer1.0.add_0"] == "data"  # the residual branch
    assert by_pair["maxpool", "layer1.0.conv1"] == "data"
    kinds = [kind_of(attrs) for _, _, attrs in edges(parsed(2))]
    assert kinds.count("skip") == 5  # the five identity blocks
    assert kinds.count("projection") == 6  # into and out of three downsample boxes
    assert EDGE_STYLES["skip"]["style"] == "dashed"
    assert EDGE_STYLES["projection"]["style"] == "bold"


def test_edges_carry_the_shapes_of_their_tensors():
    dot = parsed(1)
    labels = {(a, b): _unquote(attrs["label"]) for a, b, attrs in edges(dot)}
    assert labels["x", "conv1"] == "(3, 224, 224)"
    assert labels["maxpool", "layer1.0"] == "(64, 56, 56)"
    assert labels["layer2.0", "layer2.1"] == "(128, 28, 28)"
    assert labels["layer4.1", "avgpool"] == "(512, 7, 7)"
    assert labels["fc", "@output"] == "(1000,)"
    assert all(SHAPE.match(label) for label in labels.values())


def test_full_depth_draws_every_ir_edge():
    graph = resnet18().graph
    source = to_dot(graph)
    n_ir_edges = sum(len(graph.inputs_of(n.name)) for n in graph.nodes())
    assert n_ir_edges == 5 * 8 + 3 * 10 + 4 + 2  # the downsample's conv -> bn is inside
    assert len(re.findall(r" -> ", source)) == n_ir_edges + 1  # and the output's edge
    assert len(re.findall(r"subgraph \"?cluster_", source)) == 4 + 8 + 3
    assert 'subgraph "cluster_layer2.0.downsample"' in source


def test_dense_block_inputs_are_concat_edges(spec):
    path = spec(
        "block layer(growth: int) (x) { return x -> conv: conv2d(growth, 3, padding=1) }\n"
        "network dense_net() (x: (4, 8, 8)) {\n"
        '    dense x for i in range(3) { x = x -> "layer{i}": layer(2) }\n'
        "    return x\n"
        "}\n"
    )
    graph = resdsl.load(path).graph
    kinds = edge_kinds(graph)
    concat_edges = [e for e, k in kinds.items() if k == "concat"]
    # Three layers: the concatenations after layers 1, 2, 3 take 2, 3 and 4 tensors.
    assert len(concat_edges) == 2 + 3 + 4
    assert all(graph.node(dst).op == "concat" for _, dst, _ in concat_edges)
    assert ("x", "layer0.conv", 0) in kinds and kinds["x", "layer0.conv", 0] == "data"
    (dot,) = pydot.graph_from_dot_data(to_dot(graph))
    assert [kind_of(a) for _, _, a in edges(dot)].count("concat") == 9


def test_scaled_skips_and_projections_keep_their_kind_through_the_scaling():
    graph = resdsl.load(EXAMPLES / "scaled_residual.res", depths=(2, 2), widths=(8, 16)).graph
    kinds = edge_kinds(graph)
    # layer1.0: `x / L + f`, x being the stem's output, scaled by a scale_shift.
    assert kinds["conv1", "layer1.0.scale_shift_0", 0] == "skip"
    assert kinds["layer1.0.scale_shift_0", "layer1.0.add_0", 0] == "skip"
    assert kinds["layer1.0.conv2", "layer1.0.add_0", 1] == "data"
    # layer2.0 projects its skip (`project` macro), then scales it.
    assert kinds["layer2.0.relu_0", "layer2.0.shortcut.0", 0] == "projection"
    assert kinds["layer2.0.shortcut.0", "layer2.0.scale_shift_0", 0] == "projection"
    assert kinds["layer2.0.scale_shift_0", "layer2.0.add_0", 0] == "projection"


def test_x_plus_x_is_not_a_skip(spec):
    path = spec("network twice() (x: (4,)) { y = x -> fc: linear(4)\n return y + y }\n")
    kinds = edge_kinds(resdsl.load(path).graph)
    assert sorted(kinds.values()) == ["data", "data", "data"]


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.res")))
def test_every_example_draws_valid_dot(example):
    try:
        net = resdsl.load(EXAMPLES / example)
    except resdsl.SpecError:
        pytest.skip("a library, no network")
    if HAS_DOT:  # Graphviz reads the whole drawing back (and fails on a syntax error)
        import graphviz

        canon = graphviz.pipe("dot", "canon", to_dot(net.graph).encode(), quiet=True)
        assert canon.startswith(b"digraph")
    else:  # pydot is slow on large graphs: the stage-level drawing
        (dot,) = pydot.graph_from_dot_data(to_dot(net.graph, 0))
        assert _unquote(dot.get_name()) == net.name


# --- the command line --------------------------------------------------------------------------


def test_cli_writes_dot_and_prints_it_without_o(tmp_path, capsys):
    out = tmp_path / "net.dot"
    assert main(["draw", str(EXAMPLES / "resnet18.res"), "-o", str(out), "--depth", "1"]) == 0
    assert out.read_text() == to_dot(resnet18().graph, 1)
    assert f"wrote {out}" in capsys.readouterr().err
    assert main(["draw", str(EXAMPLES / "resnet18.res"), "--depth", "1"]) == 0
    assert capsys.readouterr().out == to_dot(resnet18().graph, 1)


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot is not installed")
@pytest.mark.parametrize(("ext", "magic"), [("svg", b"<svg"), ("png", b"\x89PNG")])
def test_cli_renders_with_graphviz(tmp_path, ext, magic):
    out = tmp_path / f"net.{ext}"
    assert main(["draw", str(EXAMPLES / "resnet18.res"), "-o", str(out), "--depth", "1"]) == 0
    assert magic in out.read_bytes()[:400]


def test_missing_dot_binary_is_a_clear_error_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no `dot` anywhere
    out = tmp_path / "net.svg"
    out.write_text("previous drawing")
    assert main(["draw", str(EXAMPLES / "resnet18.res"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("resdsl draw: error: drawing SVG needs Graphviz's `dot` program")
    for hint in ("apt-get install graphviz", "brew install graphviz", "conda install", "net.dot"):
        assert hint in err
    assert "Traceback" not in err
    assert out.read_text() == "previous drawing"
    assert sorted(os.listdir(tmp_path)) == ["net.svg"]  # no temporary file left behind


def test_usage_errors(tmp_path, capsys):
    res = str(EXAMPLES / "resnet18.res")
    assert main(["draw", res, "-o", str(tmp_path / "net.jpg")]) == 2
    assert "name a .dot, .svg or .png file" in capsys.readouterr().err
    assert main(["draw", res, "-o", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["draw", res, "--depth", "-1"]) == 2
    assert "--depth must be 0 or more" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_a_spec_error_writes_nothing(spec, tmp_path, capsys):
    path = spec(
        "network broken() (x: (3, 8, 8)) {\n    y = x -> conv2d(4, 3)\n    return y + x\n}\n"
    )
    out = tmp_path / "net.dot"
    assert main(["draw", path, "-o", str(out)]) == 1
    assert "error[E0301]" in capsys.readouterr().err
    assert not out.exists()
