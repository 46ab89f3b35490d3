"""``resdsl diff A.res B.res``: a semantic diff of two elaborated networks, for code review.

Two specs are compared by what they build, not by their text: a reformatted or refactored
spec whose network is the same has no differences. Everything is matched by IR name
(``layer2.0.conv1``), so a renamed label shows as one thing removed and another added.

* **blocks**: block instances (the IR's scopes, ``layer1``, ``layer1.0``, and the
  projections ``layer2.0.downsample``) present in one network only, and those in both whose
  block definition or own ops differ;
* **ops**: op nodes added, removed, or changed (same name, another op, other attributes or
  another output shape);
* **connections**: edges, keyed by the consuming op and its input port, added, removed or
  changed (another producer, or another kind). Kinds are those ``resdsl draw`` shows
  (:func:`resdsl.tools.draw.edge_kinds`): ``skip`` (identity shortcut into an add),
  ``projection``, ``concat`` (dense), ``data``;
* **stages**: parameters and MACs per top-level scope (``layer1``; ops outside any block
  form the stage ``""``, shown as ``(top level)``), in both networks and the difference.

:func:`compare` returns all of it as one JSON-ready dict; :func:`render` prints it. The text
form leaves out what a block line already says: the ops and connections inside an added or
removed block.
"""

from __future__ import annotations

from typing import Any

from ..network import Network
from ..ops import fmt_shape
from .draw import edge_kinds

__all__ = ["compare", "render"]

TOP = "(top level)"


def compare(a: Network, b: Network) -> dict[str, Any]:
    """Everything that differs between networks ``a`` and ``b`` (see the module doc)."""
    ops_a, ops_b = _ops(a), _ops(b)
    blocks = _diff_blocks(_blocks(a, ops_a), _blocks(b, ops_b), ops_a, ops_b)
    ops = _diff_ops(ops_a, ops_b)
    connections = _diff_edges(_edges(a), _edges(b))
    result = {
        "a": _summary(a),
        "b": _summary(b),
        "params_delta": b.num_params - a.num_params,
        "macs_delta": b.macs - a.macs,
        "blocks": blocks,
        "ops": ops,
        "connections": connections,
        "stages": _stages(ops_a, ops_b),
    }
    result["identical"] = not any(
        section[k] for section in (blocks, ops, connections) for k in section
    )
    return result


def _summary(net: Network) -> dict[str, Any]:
    return {
        "network": net.name,
        "source": net.source,
        "num_params": net.num_params,
        "macs": net.macs,
        "ops": len(net.graph),
    }


# --- ops and blocks ----------------------------------------------------------------------------


def _ops(net: Network) -> dict[str, dict[str, Any]]:
    """Every op of ``net`` by name, in graph order, with what the diff compares and counts."""
    g, out = net.graph, {}
    for layer in net.layers:
        node = g.node(layer.name)
        out[layer.name] = {
            "name": layer.name,
            "op": layer.op,
            "attrs": _plain(dict(node.attrs)),
            "shape": list(layer.shape),
            "params": layer.params,
            "macs": layer.macs,
            "scope": node.scope,
            "block": node.block,
        }
    return out


def _plain(value: Any) -> Any:
    """Attribute values as JSON values (tuples become lists)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _scopes(scope: str) -> list[str]:
    """``layer1.0.downsample`` -> ``layer1``, ``layer1.0``, ``layer1.0.downsample``."""
    parts = scope.split(".") if scope else []
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _blocks(net: Network, ops: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every block instance: its block (where the IR records one), op count, params, MACs."""
    blocks: dict[str, dict[str, Any]] = {}
    for op in ops.values():
        for scope in _scopes(op["scope"]):
            entry = blocks.setdefault(
                scope, {"name": scope, "block": None, "ops": 0, "params": 0, "macs": 0}
            )
            entry["ops"] += 1
            entry["params"] += op["params"]
            entry["macs"] += op["macs"]
        if op["scope"]:  # a scope creating no op of its own (a `stage`) records no block
            blocks[op["scope"]]["block"] = op["block"]
    return blocks


def _diff_blocks(blocks_a, blocks_b, ops_a, ops_b) -> dict[str, list[dict[str, Any]]]:
    own_a, own_b = _own_ops(ops_a), _own_ops(ops_b)
    changed = []
    for name in blocks_a.keys() & blocks_b.keys():
        x, y = blocks_a[name], blocks_b[name]
        mine_a, mine_b = own_a.get(name, {}), own_b.get(name, {})
        added = [n for n in mine_b if n not in mine_a]
        removed = [n for n in mine_a if n not in mine_b]
        modified = [n for n in mine_a.keys() & mine_b.keys() if _differs(mine_a[n], mine_b[n])]
        if x["block"] != y["block"] or added or removed or modified:
            changed.append(
                {
                    "name": name,
                    "block": [x["block"], y["block"]],
                    "ops_added": len(added),
                    "ops_removed": len(removed),
                    "ops_changed": len(modified),
                    "params": [x["params"], y["params"]],
                    "macs": [x["macs"], y["macs"]],
                }
            )
    order = {name: i for i, name in enumerate([*blocks_b, *blocks_a])}
    return {
        "added": [v for k, v in blocks_b.items() if k not in blocks_a],
        "removed": [v for k, v in blocks_a.items() if k not in blocks_b],
        "changed": sorted(changed, key=lambda c: order[c["name"]]),
    }


def _own_ops(ops: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """The ops directly in each scope (not in its sub-blocks)."""
    own: dict[str, dict[str, dict[str, Any]]] = {}
    for name, op in ops.items():
        own.setdefault(op["scope"], {})[name] = op
    return own


def _differs(x: dict[str, Any], y: dict[str, Any]) -> bool:
    return any(x[k] != y[k] for k in ("op", "attrs", "shape"))


def _diff_ops(ops_a, ops_b) -> dict[str, list[dict[str, Any]]]:
    changed = []
    for name, y in ops_b.items():
        x = ops_a.get(name)
        if x is None or not _differs(x, y):
            continue
        change: dict[str, Any] = {"name": name}
        if x["op"] != y["op"]:
            change["op"] = [x["op"], y["op"]]
        keys = list(dict.fromkeys([*x["attrs"], *y["attrs"]]))
        attrs = {
            k: [x["attrs"].get(k), y["attrs"].get(k)]
            for k in keys
            if x["attrs"].get(k) != y["attrs"].get(k)
        }
        if attrs:
            change["attrs"] = attrs
        if x["shape"] != y["shape"]:
            change["shape"] = [x["shape"], y["shape"]]
        change["params"] = [x["params"], y["params"]]
        change["macs"] = [x["macs"], y["macs"]]
        changed.append(change)
    public = ("name", "op", "attrs", "shape", "params", "macs")
    return {
        "added": [{k: v[k] for k in public} for n, v in ops_b.items() if n not in ops_a],
        "removed": [{k: v[k] for k in public} for n, v in ops_a.items() if n not in ops_b],
        "changed": changed,
    }


# --- connections -------------------------------------------------------------------------------


def _edges(net: Network) -> dict[tuple[str, int], dict[str, Any]]:
    """Every edge keyed by (consumer, port): an input slot is filled by one producer."""
    edges = {}
    for (src, dst, port), kind in edge_kinds(net.graph).items():
        edges[dst, port] = {"src": src, "dst": dst, "port": port, "kind": kind}
    order = {name: i for i, name in enumerate(net.graph.nx.nodes)}
    return dict(sorted(edges.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])))


def _diff_edges(edges_a, edges_b) -> dict[str, list[dict[str, Any]]]:
    changed = []
    for key, y in edges_b.items():
        x = edges_a.get(key)
        if x is not None and (x["src"], x["kind"]) != (y["src"], y["kind"]):
            changed.append(
                {
                    "dst": y["dst"],
                    "port": y["port"],
                    "src": [x["src"], y["src"]],
                    "kind": [x["kind"], y["kind"]],
                }
            )
    return {
        "added": [v for k, v in edges_b.items() if k not in edges_a],
        "removed": [v for k, v in edges_a.items() if k not in edges_b],
        "changed": changed,
    }


# --- stages ------------------------------------------------------------------------------------


def _stages(ops_a, ops_b) -> list[dict[str, Any]]:
    """Params and MACs per top-level scope, in the order the stages appear (b's, then a's)."""
    totals: dict[str, dict[str, int]] = {}
    for side, ops in (("b", ops_b), ("a", ops_a)):
        for op in ops.values():
            stage = op["scope"].split(".")[0]
            t = totals.setdefault(stage, {"params_a": 0, "params_b": 0, "macs_a": 0, "macs_b": 0})
            t[f"params_{side}"] += op["params"]
            t[f"macs_{side}"] += op["macs"]
    return [
        {
            "stage": stage,
            "params_a": t["params_a"],
            "params_b": t["params_b"],
            "params_delta": t["params_b"] - t["params_a"],
            "macs_a": t["macs_a"],
            "macs_b": t["macs_b"],
            "macs_delta": t["macs_b"] - t["macs_a"],
        }
        for stage, t in totals.items()
    ]


# --- text --------------------------------------------------------------------------------------


def render(d: dict[str, Any]) -> str:
    """The diff as text: both networks, then blocks, ops, connections, and the stage table."""
    out = [_side("a", d["a"]), _side("b", d["b"]), ""]
    if d["identical"]:
        out.append("no differences in blocks, ops or connections")
    else:
        out += _render_blocks(d["blocks"])
        hidden = _inside(d["blocks"]["added"]) | _inside(d["blocks"]["removed"])
        out += _render_ops(d["ops"], hidden)
        out += _render_connections(d["connections"], hidden)
    out += ["", *_render_stages(d)]
    return "\n".join(out)


def _side(tag: str, s: dict[str, Any]) -> str:
    return (
        f"{tag}  {s['network']}  {s['source']}  {s['num_params']:,} params  "
        f"{s['macs']:,} MACs  {s['ops']} ops"
    )


def _inside(blocks: list[dict[str, Any]]) -> set[str]:
    return {b["name"] for b in blocks}


def _hidden(name: str, blocks: set[str]) -> bool:
    """Whether ``name`` (an op) lies inside one of ``blocks``."""
    return any(name.startswith(b + ".") for b in blocks)


def _counted(title: str, section: dict[str, list], shown: dict[str, list]) -> list[str]:
    parts = [f"{len(section[k])} {k}" for k in ("added", "removed", "changed") if section[k]]
    rows = sum(len(v) for v in shown.values())
    total = sum(len(v) for v in section.values())
    note = "" if rows == total else f" ({total - rows} inside the blocks above)"
    return [f"{title}: {', '.join(parts) if parts else 'none'}{note}"]


def _render_blocks(blocks: dict[str, list]) -> list[str]:
    # A nested added block is part of its added parent: list only the outermost.
    added, removed = _outermost(blocks["added"]), _outermost(blocks["removed"])
    shown = {"added": added, "removed": removed, "changed": blocks["changed"]}
    out = _counted("blocks", blocks, shown)
    for sign, items in (("+", added), ("-", removed)):
        for b in items:
            out.append(
                f"  {sign} {b['name']}  {b['block'] or 'block'}  {b['ops']} ops  "
                f"{b['params']:,} params  {b['macs']:,} MACs"
            )
    for c in blocks["changed"]:
        kinds = (
            c["block"][0]
            if c["block"][0] == c["block"][1]
            else " -> ".join(str(k) for k in c["block"])
        )
        counts = ", ".join(
            f"{c['ops_' + k]} ops {k}" for k in ("added", "removed", "changed") if c["ops_" + k]
        )
        out.append(f"  ~ {c['name']}  {kinds}  {counts or 'block definition'}".rstrip())
    return out


def _outermost(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names = _inside(blocks)
    return [b for b in blocks if not _hidden(b["name"], names)]


def _render_ops(ops: dict[str, list], hidden: set[str]) -> list[str]:
    shown = {k: [o for o in ops[k] if not _hidden(o["name"], hidden)] for k in ops}
    out = _counted("ops", ops, shown)
    for sign, key in (("+", "added"), ("-", "removed")):
        for o in shown[key]:
            out.append(
                f"  {sign} {o['name']}  {o['op']}  {fmt_shape(tuple(o['shape']))}  "
                f"{o['params']:,} params"
            )
    for c in shown["changed"]:
        parts = []
        if "op" in c:
            parts.append(f"op {c['op'][0]} -> {c['op'][1]}")
        parts += [f"{k} {_value(v[0])} -> {_value(v[1])}" for k, v in c.get("attrs", {}).items()]
        if "shape" in c:
            parts.append(
                f"shape {fmt_shape(tuple(c['shape'][0]))} -> {fmt_shape(tuple(c['shape'][1]))}"
            )
        if c["params"][0] != c["params"][1]:
            parts.append(f"params {c['params'][0]:,} -> {c['params'][1]:,}")
        out.append(f"  ~ {c['name']}  " + ", ".join(parts))
    return out


def _value(v: Any) -> str:
    if isinstance(v, list):
        return "(" + ", ".join(map(_value, v)) + ("," if len(v) == 1 else "") + ")"
    if v is None:
        return "(none)"
    return str(v).lower() if isinstance(v, bool) else str(v)


def _render_connections(edges: dict[str, list], hidden: set[str]) -> list[str]:
    def inside(e: dict[str, Any]) -> bool:  # both ends in one added or removed block
        return any(_hidden(e["dst"], {b}) and _hidden(e["src"], {b}) for b in hidden)

    shown = {k: [e for e in edges[k] if k == "changed" or not inside(e)] for k in edges}
    out = _counted("connections", edges, shown)
    for sign, key in (("+", "added"), ("-", "removed")):
        for e in shown[key]:
            out.append(f"  {sign} {e['src']} -> {e['dst']}[{e['port']}]  {e['kind']}")
    for c in shown["changed"]:
        kind = c["kind"][0] if c["kind"][0] == c["kind"][1] else " -> ".join(c["kind"])
        out.append(f"  ~ {c['dst']}[{c['port']}]: {c['src'][0]} -> {c['src'][1]}  {kind}")
    return out


def _render_stages(d: dict[str, Any]) -> list[str]:
    rows = [("stage", "params a", "params b", "Δ params", "MACs a", "MACs b", "Δ MACs")]
    for s in [*d["stages"], _total(d)]:
        rows.append(
            (
                s["stage"] or TOP,
                f"{s['params_a']:,}",
                f"{s['params_b']:,}",
                f"{s['params_delta']:+,}",
                f"{s['macs_a']:,}",
                f"{s['macs_b']:,}",
                f"{s['macs_delta']:+,}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(7)]
    lines = []
    for i, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [r[c].rjust(widths[c]) for c in range(1, 7)]
        lines.append("  ".join(cells))
        if i in (0, len(rows) - 2):
            lines.append("-" * len(lines[-1]))
    return lines


def _total(d: dict[str, Any]) -> dict[str, Any]:
    a, b = d["a"], d["b"]
    return {
        "stage": "total",
        "params_a": a["num_params"],
        "params_b": b["num_params"],
        "params_delta": d["params_delta"],
        "macs_a": a["macs"],
        "macs_b": b["macs"],
        "macs_delta": d["macs_delta"],
    }
