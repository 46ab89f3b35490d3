"""Draw a network's block graph with Graphviz: ``resdsl draw FILE -o net.svg|net.png|net.dot``.

Block instances (the IR's scopes: ``layer1``, ``layer1.0``, ``layer1.0.downsample``) are
nested clusters labelled ``name: block``; ``depth`` collapses the clusters nested deeper
than it into one box each. Edges carry the shape of the tensor they move, and each edge
has a kind (:func:`edge_kinds`) drawn in its own style (:data:`EDGE_STYLES`):

* ``skip``: an identity shortcut into an ``add``. An input of an ``add`` is a skip when,
  followed back through ops that only scale or pass a tensor on (:data:`SCALING_OPS`, as
  in ``x / L + f``), it starts at a node that is a strict ancestor of another input of the
  same ``add``: the other input is the residual branch computed from it, this one is not;
* ``projection``: an edge into, inside or out of the nodes that the ``shortcut`` and
  ``project`` macros create (a 1x1 conv + batch norm, or a linear map), and the scaling
  ops between them and the ``add`` they feed;
* ``concat``: an input of a ``concat`` (dense connections, ``dense x for ...``);
* ``data``: every other edge.

The DOT source is built with the ``graphviz`` package and needs no Graphviz binary;
rendering SVG or PNG runs Graphviz's ``dot``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import networkx as nx

from .._io import atomic_write
from ..ir import Graph
from ..ops import OPS, fmt_shape

if TYPE_CHECKING:
    import graphviz

FORMATS = (".dot", ".svg", ".png")  # by the output file's extension
PROJECTION_MACROS = frozenset({"shortcut", "project"})  # elaborate.MACROS
SCALING_OPS = frozenset(name for name, op in OPS.items() if op.scales)

EDGE_STYLES: dict[str, dict[str, str]] = {
    "data": {},
    "skip": {"style": "dashed", "color": "#1f77b4", "fontcolor": "#1f77b4"},
    "projection": {"style": "bold", "color": "#d95f02", "fontcolor": "#d95f02"},
    "concat": {"style": "dotted", "color": "#1b9e77", "fontcolor": "#1b9e77", "penwidth": "2"},
}
_LEGEND = {
    "skip": "- - - identity skip into an add",
    "projection": "━━ projection shortcut",
    "concat": "····· concatenation (dense)",
}

OUTPUT_PREFIX = "@"  # graph outputs are drawn as nodes "@NAME", apart from the IR's names


class DrawError(Exception):
    """The drawing cannot be produced here (a missing Graphviz); the message says why."""


# --- edge kinds -------------------------------------------------------------------------------


def edge_kinds(graph: Graph) -> dict[tuple[str, str, int], str]:
    """The kind of every edge, keyed by ``(producer, consumer, port)``; see the module doc."""
    kinds = {}
    for src, dst, data in graph.nx.edges(data=True):
        kinds[src, dst, data["port"]] = _base_kind(graph, src, dst)
    for node in graph.nodes():
        if node.op == "add":
            _mark_add_inputs(graph, node.name, kinds)
    return kinds


def _is_projection(graph: Graph, name: str) -> bool:
    node = graph.node(name)  # top-level nodes carry the network's name as their block
    return bool(node.scope) and node.block in PROJECTION_MACROS


def _base_kind(graph: Graph, src: str, dst: str) -> str:
    if _is_projection(graph, src) or _is_projection(graph, dst):
        return "projection"
    return "concat" if graph.node(dst).op == "concat" else "data"


def _chain(graph: Graph, name: str) -> list[str]:
    """``name`` and the producers behind it reached through scaling ops only."""
    chain = [name]
    while graph.node(chain[-1]).op in SCALING_OPS:
        inputs = graph.inputs_of(chain[-1])
        if len(inputs) != 1:
            break
        chain.append(inputs[0])
    return chain


def _mark_add_inputs(graph: Graph, add: str, kinds: dict[tuple[str, str, int], str]) -> None:
    """Classify the inputs of one ``add`` as skip or projection (with their scaling chains)."""
    inputs = graph.inputs_of(add)
    for port, src in enumerate(inputs):
        chain = _chain(graph, src)
        root = chain[-1]
        if _is_projection(graph, root):
            kind = "projection"
        elif any(
            other != root and nx.has_path(graph.nx, root, other)
            for p, other in enumerate(inputs)
            if p != port
        ):
            kind = "skip"
        else:
            continue
        kinds[src, add, port] = kind
        for consumer, producer in itertools.pairwise(chain):
            kinds[producer, consumer, 0] = kind


# --- clusters ---------------------------------------------------------------------------------


def _prefixes(scope: str) -> Iterator[str]:
    """``layer1.0`` -> ``layer1``, ``layer1.0`` (names never contain dots themselves)."""
    parts = scope.split(".") if scope else []
    for i in range(1, len(parts) + 1):
        yield ".".join(parts[:i])


def _depth(scope: str) -> int:
    return scope.count(".") + 1 if scope else 0


def _blocks(graph: Graph) -> dict[str, str]:
    """Each scope's block name where the IR records it (a scope that creates no node of its
    own, such as a `stage` whose nodes all lie in its sub-blocks, has none)."""
    blocks = {}
    for node in graph.nodes():
        if node.scope:
            blocks.setdefault(node.scope, node.block)
    return blocks


def representative(scope: str, name: str, depth: int | None) -> str:
    """What stands for node ``name`` when clusters deeper than ``depth`` are collapsed."""
    if depth is None or _depth(scope) <= depth:
        return name
    return ".".join(scope.split(".")[: depth + 1])


# --- DOT --------------------------------------------------------------------------------------


def to_dot(graph: Graph, depth: int | None = None) -> str:
    """DOT source of the block graph; clusters deeper than ``depth`` become boxes."""
    import graphviz

    if depth is not None and depth < 0:
        raise ValueError("depth must be >= 0")
    dot = graphviz.Digraph(
        graph.name,
        graph_attr={"rankdir": "TB", "fontname": "Helvetica", "labelloc": "t"},
        node_attr={"shape": "box", "style": "rounded", "fontname": "Helvetica", "fontsize": "11"},
        edge_attr={"fontname": "Helvetica", "fontsize": "9"},
    )
    rep = {n.name: representative(n.scope, n.name, depth) for n in graph.nodes()}
    _add_nodes(dot, graph, rep)
    kinds_used = _add_edges(dot, graph, rep)
    dot.attr(label=_title(graph.name, kinds_used))
    return dot.source


def _add_nodes(dot: graphviz.Digraph, graph: Graph, rep: dict[str, str]) -> None:
    """Nodes and collapsed boxes, each inside the clusters of its enclosing scopes."""
    tree: dict[str, list[tuple[str, str]]] = {}  # scope -> [(kind, name)] in graph order
    seen: set[str] = set()
    for node in graph.nodes():
        shown = rep[node.name]
        owner = node.scope if shown == node.name else shown.rpartition(".")[0]
        parent = ""
        for prefix in _prefixes(owner):
            if prefix not in seen:
                seen.add(prefix)
                tree.setdefault(parent, []).append(("cluster", prefix))
            parent = prefix
        if shown not in seen:
            seen.add(shown)
            tree.setdefault(owner, []).append(("box" if shown != node.name else "node", shown))
    blocks, params = _blocks(graph), _scope_params(graph, rep)
    _emit_scope(dot, graph, tree, "", blocks, params)
    for out, _ in graph.outputs:
        dot.node(OUTPUT_PREFIX + out, label=out, shape="ellipse", style="filled",
                 fillcolor="#eeeeee")  # fmt: skip


def _scope_params(graph: Graph, rep: dict[str, str]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for node in graph.nodes():
        if rep[node.name] != node.name:
            totals[rep[node.name]] = totals.get(rep[node.name], 0) + graph.params_of(node.name)
    return totals


def _emit_scope(dot, graph: Graph, tree, scope: str, blocks, params) -> None:
    for kind, name in tree.get(scope, []):
        label = f"{name}: {blocks[name]}" if name in blocks else name
        if kind == "cluster":
            with dot.subgraph(name=f"cluster_{name}") as sub:
                sub.attr(label=label, style="rounded", color="#999999", fontsize="11")
                _emit_scope(sub, graph, tree, name, blocks, params)
        elif kind == "box":
            dot.node(name, label=f"{label}\\n{params[name]:,} params", shape="box3d",
                     style="filled", fillcolor="#f4f4f4")  # fmt: skip
        else:
            dot.node(name, **_node_style(graph, name))


def _node_style(graph: Graph, name: str) -> dict[str, str]:
    node = graph.node(name)
    short = name.rpartition(".")[2]
    if node.op == "input":
        return {"label": f"{name}\\n{fmt_shape(graph.info(name).shape)}", "shape": "ellipse",
                "style": "filled", "fillcolor": "#eeeeee"}  # fmt: skip
    op = OPS[node.op]
    if op.symbol:  # merges: a symbol in a circle, or a word in an ellipse
        return {"label": op.symbol, "shape": "circle" if len(op.symbol) == 1 else "ellipse",
                "tooltip": name}  # fmt: skip
    detail = op.detail(node.attrs) if op.detail else ""
    return {"label": f"{short}\\n{node.op}{detail}", "tooltip": name}


def _add_edges(dot: graphviz.Digraph, graph: Graph, rep: dict[str, str]) -> set[str]:
    """Edges between what is shown; a tensor's uses inside one box become one edge."""
    kinds = edge_kinds(graph)
    edges: dict[tuple, str] = {}  # key -> kind, in a deterministic (graph) order
    for src, dst, data in graph.nx.edges(data=True):
        a, b = rep[src], rep[dst]
        if a == b:
            continue  # inside a collapsed box
        kind = kinds[src, dst, data["port"]]
        key = (src, a, b, data["port"]) if (a, b) == (src, dst) else (src, a, b)
        # Merged uses are plain data unless they all are of one kind: the edge from a block
        # into a collapsed block feeds both its branch and its skip.
        edges[key] = kind if edges.get(key, kind) == kind else "data"
    for key, kind in edges.items():
        src, a, b = key[:3]
        dot.edge(a, b, label=fmt_shape(graph.info(src).shape), **EDGE_STYLES[kind])
    for out, node in graph.outputs:
        dot.edge(rep[node], OUTPUT_PREFIX + out, label=fmt_shape(graph.info(node).shape))
    return set(edges.values())


def _title(name: str, kinds: set[str]) -> str:
    """The graph's label: the network's name and a legend of the edge kinds drawn."""
    rows = [f'<tr><td align="left"><b>{name}</b></td></tr>']
    for kind, text in _LEGEND.items():
        if kind in kinds:
            color = EDGE_STYLES[kind]["color"]
            rows.append(f'<tr><td align="left"><font color="{color}">{text}</font></td></tr>')
    return f'<<table border="0" cellspacing="0">{"".join(rows)}</table>>'


# --- output -----------------------------------------------------------------------------------


def render(source: str, fmt: str) -> bytes:
    """Run Graphviz's ``dot`` on DOT ``source``; ``fmt`` is ``svg`` or ``png``."""
    import graphviz

    try:
        return graphviz.pipe("dot", fmt, source.encode("utf-8"), quiet=True)
    except graphviz.ExecutableNotFound:
        raise DrawError(
            f"drawing {fmt.upper()} needs Graphviz's `dot` program, which is not on PATH.\n"
            "  install it: apt-get install graphviz | brew install graphviz | "
            "conda install -c conda-forge graphviz\n"
            "  or write DOT, which needs no Graphviz: -o net.dot"
        ) from None
    except graphviz.CalledProcessError as e:
        stderr = (e.stderr or b"").decode("utf-8", "replace").strip()
        raise DrawError(f"Graphviz's dot failed: {stderr or e}") from None


def write(graph: Graph, path: str, depth: int | None = None) -> None:
    """Draw ``graph`` to ``path`` (.dot, .svg or .png), atomically: nothing on failure."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"cannot draw to {ext or 'a file without an extension'}")
    source = to_dot(graph, depth)
    atomic_write(path, source if ext == ".dot" else render(source, ext[1:]))
