"""Analyses of an elaborated network for ``resdsl info --report``: pure functions over the IR.

* :func:`stages` — parameters, MACs and activation memory per stage (the first segment of a
  node's name: a top-level block instance such as ``layer1``, or a top-level op).
  **Activation memory** is the sum of the bytes of every tensor a stage's ops produce, for
  one sample (batch 1) in the graph's dtype (float32: 4 bytes) — what training keeps for the
  backward pass; inference, which frees tensors early, needs less.
* :func:`receptive_fields` — the receptive field of each output: its size and jump (the
  distance in input pixels between neighbouring output pixels), the maximum over all paths.
  When the tensors stop being feature maps (global pooling, flattening), it is the receptive
  field of the last feature map before that.
* :func:`path_stats` — the view of residual networks as ensembles of paths (Veit et al.,
  2016): how many input-to-output paths the graph has and how long they are, a path's
  length being the number of weighted layers (:data:`WEIGHTED_OPS`) on it.
* :func:`init_stats` — the standard deviation of each block instance's output at
  initialisation, from the PyTorch backend (the one function here that needs torch).
"""

from __future__ import annotations

import math
import operator
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from ..ir import Graph
from ..ops import OPS, Receptive, fmt_shape

if TYPE_CHECKING:
    from ..network import Network

WEIGHTED_OPS = tuple(name for name, op in OPS.items() if op.depth)  # what a path's length counts
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
PROJECTION_MACROS = frozenset({"shortcut", "project"})  # macro scopes, not block instances


# --- stages -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """Totals over the ops of one stage."""

    name: str
    ops: int
    params: int
    macs: int
    activation_bytes: int


def stages(graph: Graph) -> list[Stage]:
    """Per-stage totals, stages in the order they first appear."""
    totals: dict[str, list[int]] = {}
    training = graph.training_only()
    for node in graph.nodes():
        info = graph.info(node.name)
        row = totals.setdefault(node.name.split(".", 1)[0], [0, 0, 0, 0])
        row[0] += 1
        row[1] += graph.params_of(node.name)
        row[2] += 0 if node.name in training else graph.macs_of(node.name)
        row[3] += math.prod(info.shape) * DTYPE_BYTES[info.dtype]
    return [Stage(name, *row) for name, row in totals.items()]


# --- receptive field --------------------------------------------------------------------------

# A feature map's receptive field, per axis (H, W): the (size, jump) pairs of its paths that
# no other path beats in both. Size and jump both only grow along a path, so the largest
# size reachable downstream always comes from one of these pairs: keeping them all makes
# "maximum over paths" exact even where paths with different strides meet.
Axis = tuple[tuple[int, int], ...]
Field = tuple[Axis, Axis]
GLOBAL = "global"  # every value may depend on every input pixel
UNKNOWN = "unknown"  # a rearrangement (reshape, permute, ...) the analysis does not follow
_RANK = {UNKNOWN: 3, GLOBAL: 2}  # in a join, unknown wins over global, global over a field


@dataclass(frozen=True)
class ReceptiveField:
    """The receptive field of one output (see the module docstring)."""

    output: str
    kind: str  # "field": ``size``/``jump`` hold; "global"; "unknown"; "none" (no feature map)
    size: tuple[int, int] | None = None
    jump: tuple[int, int] | None = None
    at: str | None = None  # the feature map it is measured at
    shape: tuple[int, ...] | None = None  # that map's shape
    pooled: bool = False  # the output is not a feature map: `at` is the last one before it
    reason: str = ""  # for "unknown": the op that stopped the analysis


def _pareto(pairs: Iterable[tuple[int, int]]) -> Axis:
    best: list[tuple[int, int]] = []
    for r, j in sorted(set(pairs), reverse=True):  # by size, then jump, descending
        if not best or j > best[-1][1]:
            best.append((r, j))
    return tuple(best)


def _join(states: list[Any]) -> Any:
    """Several paths meet: the maximum over them (None, a constant, does not count)."""
    states = [s for s in states if s is not None]
    if not states:
        return None
    marks = [s for s in states if isinstance(s, str)]
    if marks:
        return max(marks, key=_RANK.__getitem__)
    return tuple(_pareto(p for s in states for p in s[axis]) for axis in (0, 1))


def _window(field: Any, kernel, stride, dilation=(1, 1)) -> Any:
    if isinstance(field, str) or field is None:
        return field
    return tuple(
        _pareto((r + dilation[a] * (kernel[a] - 1) * j, j * stride[a]) for r, j in field[a])
        for a in (0, 1)
    )


def _adaptive(field: Any, size_in: tuple[int, ...], size_out: tuple[int, int]) -> Any:
    """Adaptive pooling as a window per axis: exact when the output size divides the input
    size; otherwise PyTorch's widest window and a stride rounded up (an upper bound)."""
    if size_out == (1, 1):
        return GLOBAL
    kernel, stride = [], []
    for n, o in zip(size_in, size_out, strict=True):
        widest = max(-(-(i + 1) * n // o) - i * n // o for i in range(o))
        kernel.append(widest)
        stride.append(-(-n // o))
    return _window(field, kernel, stride)


def _transfer(graph: Graph, name: str, states: dict[str, Any]) -> Any:
    """A node's receptive field from its inputs', by the op table's ``receptive`` rule."""
    node = graph.node(name)
    inputs = graph.inputs_of(name)
    joined = _join([states[src] for src in inputs])
    a = node.attrs
    if node.op == "input":
        return ((((1, 1),), ((1, 1),))) if len(graph.info(name).shape) == 3 else None
    rule = OPS[node.op].receptive(a, graph.input_shapes(name))
    if rule is Receptive.WINDOW:
        stride = a["stride"] or a["kernel"]  # pools stride by their kernel by default
        return _window(joined, a["kernel"], stride, a.get("dilation", (1, 1)))
    if rule is Receptive.ADAPTIVE:
        return _adaptive(joined, graph.info(inputs[0]).shape[1:], a["output_size"])
    if rule is Receptive.POINTWISE or joined is None or joined == GLOBAL:
        return joined
    # a mix along an axis (linear, attention, global pooling) reads every pixel; a
    # rearrangement (reshape, permute, roll, concat along H or W) moves them: not followed.
    return GLOBAL if rule is Receptive.GLOBAL else UNKNOWN


def receptive_fields(graph: Graph) -> list[ReceptiveField]:
    """The receptive field of each graph output (maximum over all paths)."""
    state: dict[str, Any] = {}
    last: dict[str, tuple[Any, str] | None] = {}  # the last feature map before spatial ends
    stopped: dict[str, str] = {}  # for UNKNOWN: the op that stopped the analysis
    for node in graph.topological():
        inputs = graph.inputs_of(node.name)
        state[node.name] = _transfer(graph, node.name, state)
        candidates = [last[src] for src in inputs if last[src] is not None]
        for src in inputs:  # the analysis of a feature map ends here: remember it
            if _is_map(graph, src) and state[src] is not None and not _is_field(state[node.name]):
                candidates.append((state[src], src))
        last[node.name] = _largest(candidates)
        if state[node.name] == UNKNOWN:
            known = [stopped[s] for s in inputs if s in stopped]
            stopped[node.name] = known[0] if known else f"{node.op} ({node.name})"
    return [_describe(graph, out, node, state, last, stopped) for out, node in graph.outputs]


def _is_field(state: Any) -> bool:
    return isinstance(state, tuple)


def _is_map(graph: Graph, name: str) -> bool:
    """A spatial feature map: (C, H, W) with more than one pixel."""
    shape = graph.info(name).shape
    return len(shape) == 3 and shape[1] * shape[2] > 1


def _largest(candidates: list[tuple[Any, str]]) -> tuple[Any, str] | None:
    """The largest field; of equals the latest (candidates come in topological order)."""
    best, best_key = None, (0, 0)
    for state, at in candidates:
        key = (_RANK[state], 0) if isinstance(state, str) else (1, state[0][0][0] * state[1][0][0])
        if best is None or key >= best_key:
            best, best_key = (state, at), key
    return best


def _describe(graph, out, node, state, last, stopped) -> ReceptiveField:
    here = state[node]
    if _is_field(here):
        return _field(out, here, node, graph, pooled=False)
    if here == UNKNOWN:
        return ReceptiveField(out, UNKNOWN, reason=stopped.get(node, ""))
    if last[node] is None:
        return ReceptiveField(out, GLOBAL if here == GLOBAL else "none")
    field, at = last[node]
    if _is_field(field):
        return _field(out, field, at, graph, pooled=True)
    return ReceptiveField(out, field, at=at, shape=graph.info(at).shape, pooled=True)


def _field(out: str, field: Field, at: str, graph: Graph, pooled: bool) -> ReceptiveField:
    size = (field[0][0][0], field[1][0][0])  # the largest size comes first
    jump = (field[0][0][1], field[1][0][1])
    return ReceptiveField(out, "field", size, jump, at, graph.info(at).shape, pooled)


# --- paths ------------------------------------------------------------------------------------

# Bounds of the histogram of path counts by length. A node's counts are one big integer per
# length, about (lengths) x (bits of its path count) in all. The summary (total, shortest,
# longest, mean) is always exact and cheap; the histogram is computed only when its estimated
# work and memory fit these bounds -- a chain of 5,000 residual blocks does (2**5000 paths, a
# few seconds, tens of MB) -- and is left out (None) past them.
MAX_HISTOGRAM_WORK = 2**37  # bits of big-integer additions
MAX_HISTOGRAM_MEMORY = 2**30  # bits of counts held at once (128 MiB)


@dataclass(frozen=True)
class PathStats:
    """Input-to-output paths: their number, the shortest and longest length, the sum of the
    lengths over all paths (exact integers), and ``histogram[length]`` paths -- ``None``
    when the histogram is too large to compute (:data:`MAX_HISTOGRAM_WORK`)."""

    total: int
    shortest: int | None
    longest: int | None
    length_sum: int
    histogram: dict[int, int] | None

    @property
    def mean(self) -> Fraction | None:
        return Fraction(self.length_sum, self.total) if self.total else None

    @property
    def median(self) -> int | None:
        """The shortest length such that at least half of the paths are no longer."""
        seen = 0
        for length, n in (self.histogram or {}).items():  # sorted by length
            seen += n
            if 2 * seen >= self.total:
                return length
        return None


def path_stats(graph: Graph) -> PathStats:
    """Count input-to-output paths by length, in two passes over the DAG.

    A node's paths from an input are summed from its inputs' (an input used twice, as in
    ``x + x``, counts twice: paths are sequences of edges), one longer if the node is a
    weighted layer. Nodes not reached from an input (``parameter``) start no path. Both
    passes drop a node's numbers once its last user is done. The first keeps four numbers
    per node: the count, the sum of lengths, the shortest and the longest. The second, when
    the first's estimate of its cost fits the bounds, counts by length: an offset and a list
    of counts per node, shared (not copied) by a node with one input.
    """
    order = [(n.name, n.op, graph.inputs_of(n.name)) for n in graph.topological()]
    outputs = [node for _, node in graph.outputs]
    frees = _last_uses(graph, order, outputs)
    summary: dict[str, tuple[int, int, int, int] | None] = {}
    sizes: dict[str, int] = {}  # estimated bits of each live node's counts by length
    work = live = peak = 0
    for i, (name, op, sources) in enumerate(order):
        reached = [summary[s] for s in sources if summary[s] is not None]
        if op == "input":
            summary[name], bits = (1, 0, 0, 0), 64
        elif not reached:
            summary[name], bits = None, 0
        else:
            step = 1 if op in WEIGHTED_OPS else 0
            total = sum(r[0] for r in reached)
            lo, hi = min(r[2] for r in reached) + step, max(r[3] for r in reached) + step
            summary[name] = (total, sum(r[1] for r in reached) + step * total, lo, hi)
            bits = (hi - lo + 1) * (total.bit_length() + 64)
            work += bits if len(reached) > 1 else 0  # one input: its list is shared
        sizes[name] = bits
        live += bits  # an over-estimate: a shared list is counted by each holder
        peak = max(peak, live)
        for done in frees.get(i, ()):
            del summary[done]
            live -= sizes.pop(done)
    ends = [summary[o] for o in outputs if summary[o] is not None]
    if not ends:
        return PathStats(0, None, None, 0, {})
    total = sum(e[0] for e in ends)
    stats = (total, min(e[2] for e in ends), max(e[3] for e in ends), sum(e[1] for e in ends))
    if work > MAX_HISTOGRAM_WORK or peak > MAX_HISTOGRAM_MEMORY:
        return PathStats(*stats, None)
    return PathStats(*stats, _histogram(order, outputs, frees))


Poly = tuple[int, list[int]]  # (shortest length, paths of that length and of each longer one)


def _histogram(order: list, outputs: list[str], frees: dict[int, list[str]]) -> dict[int, int]:
    polys: dict[str, Poly | None] = {}
    for i, (name, op, sources) in enumerate(order):
        reached = [polys[s] for s in sources if polys[s] is not None]
        step = 1 if op in WEIGHTED_OPS else 0
        if op == "input":
            polys[name] = (0, [1])
        elif len(reached) == 1:
            polys[name] = (reached[0][0] + step, reached[0][1])
        else:
            polys[name] = _add(reached, step) if reached else None
        for done in frees.get(i, ()):
            del polys[done]
    start, counts = _add([p for p in (polys[o] for o in outputs) if p is not None], 0)
    return {start + k: n for k, n in enumerate(counts) if n}


def _add(polys: list[Poly], step: int) -> Poly:
    """The sum of the polynomials, each path ``step`` longer."""
    start = min(off for off, _ in polys)
    out = [0] * (max(off + len(counts) for off, counts in polys) - start)
    for off, counts in polys:
        k = off - start
        out[k : k + len(counts)] = map(operator.add, out[k : k + len(counts)], counts)
    return start + step, out


def _last_uses(graph: Graph, order: list, outputs: list[str]) -> dict[int, list[str]]:
    """``i -> names`` whose last user is ``order[i]`` (graph outputs are never dropped)."""
    last: dict[str, int] = {}
    for i, (_, _, sources) in enumerate(order):
        for src in sources:
            last[src] = i
    kept, frees = set(outputs), {}
    for name, i in last.items():
        if name not in kept:
            frees.setdefault(i, []).append(name)
    return frees


# --- activations at initialisation -------------------------------------------------------------


@dataclass(frozen=True)
class BlockStat:
    """The output of one block instance at initialisation."""

    scope: str
    block: str
    node: str  # the node whose value the block instance returns
    shape: tuple[int, ...]
    std: float


def block_outputs(graph: Graph) -> dict[str, tuple[str, str]]:
    """``scope -> (block, output node)`` for each block instance, in graph order.

    A block instance's output is the last of its nodes (nested ones included) that is used
    outside it or is a graph output. Scopes of the projection macros are not blocks.
    """
    outputs = {node for _, node in graph.outputs}
    found: dict[str, str] = {}
    for node in graph.topological():
        parts = node.scope.split(".") if node.scope else []
        users = [graph.node(u).scope for u in graph.users_of(node.name)]
        for i in range(1, len(parts) + 1):
            scope = ".".join(parts[:i])
            if node.name in outputs or any(
                u != scope and not u.startswith(scope + ".") for u in users
            ):
                found[scope] = node.name
    blocks = {n.scope: n.block for n in graph.nodes() if n.scope}
    first = {s: i for i, s in enumerate(dict.fromkeys(
        p for n in graph.nodes() for p in _prefixes(n.scope)))}  # fmt: skip
    return {
        scope: (blocks.get(scope, ""), found[scope])
        for scope in sorted(found, key=first.__getitem__)
        if blocks.get(scope) not in PROJECTION_MACROS
    }


def _prefixes(scope: str) -> list[str]:
    """``layer1.0`` -> ``layer1``, ``layer1.0`` (names never contain dots themselves)."""
    parts = scope.split(".") if scope else []
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def init_stats(net: Network, seed: int = 0, batch: int = 8) -> dict[str, Any]:
    """Activation std at each block instance's output for a standard normal input.

    The module comes from ``net.to_torch(seed)``; batch norm uses the batch's statistics (as
    in the first training step) while dropout and stochastic depth are off, so the numbers
    show how the signal's scale changes with depth and nothing else.
    """
    import torch

    graph = net.graph
    model = net.to_torch(seed=seed).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.train()
    generator = torch.Generator().manual_seed(seed)
    inputs = [torch.randn((batch, *graph.info(n).shape), generator=generator)
              for n in graph.inputs]  # fmt: skip
    with torch.no_grad():
        values = _forward_values(model, graph, inputs)
    std = {name: float(values[name].float().std(correction=0)) for name in values}
    blocks = [
        BlockStat(scope, block, node, graph.info(node).shape, std[node])
        for scope, (block, node) in block_outputs(graph).items()
    ]
    return {
        "seed": seed,
        "batch": batch,
        "inputs": {name: std[name] for name in graph.inputs},
        "blocks": [asdict(b) for b in blocks],
    }


def _forward_values(model, graph: Graph, inputs: list[Any]) -> dict[str, Any]:
    """Every node's value in one forward pass of the generated module.

    Block outputs are mostly functional (``F.relu(...)``, ``a + b``), which module hooks do
    not see; the generated ``forward`` keeps one local variable per node, so the values are
    read from its frame when it returns.
    """
    from ..backends.torch import _RESERVED, _variable

    taken = set(_RESERVED)
    variables = {node.name: _variable(node.name, taken) for node in graph.nodes()}
    code = type(model).forward.__code__
    captured: dict[str, Any] = {}

    def profile(frame, event, arg):
        if event == "return" and frame.f_code is code:
            captured.update(frame.f_locals)

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        model(*inputs)
    finally:
        sys.setprofile(previous)
    values = {}
    for name, var in variables.items():
        value = captured.get(var)
        want = (inputs[0].shape[0], *graph.info(name).shape)
        if value is None or tuple(value.shape) != want:
            raise RuntimeError(f"init stats: no value of shape {want} for node {name}")
        values[name] = value
    return values


# --- the report -------------------------------------------------------------------------------


def report(net: Network, init: bool = False, seed: int = 0) -> dict[str, Any]:
    """Everything ``resdsl info --report`` shows, as JSON-ready data."""
    graph = net.graph
    rows = stages(graph)
    paths = path_stats(graph)
    mean = paths.mean
    histogram = None
    if paths.histogram is not None:
        histogram = [[k, _json_int(n)] for k, n in paths.histogram.items()]
    data: dict[str, Any] = {
        "stages": [asdict(s) for s in rows],
        "activation_bytes": sum(s.activation_bytes for s in rows),
        "receptive_field": [
            {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(rf).items()}
            for rf in receptive_fields(graph)
        ],
        "paths": {
            "weighted_ops": list(WEIGHTED_OPS),
            "total": _json_int(paths.total),
            "shortest": paths.shortest,
            "longest": paths.longest,
            "mean": None if mean is None else float(mean),
            "median": paths.median,
            # per length when short; the bins (at most _BINS) always, when computed
            "histogram": histogram if len(histogram or ()) <= _LENGTHS else None,
            "bins": None
            if histogram is None
            else [[a, b, _json_int(n)] for a, b, n in _bins(paths)],
        },
    }
    if init:
        data["init_stats"] = init_stats(net, seed=seed)
    return data


# --- text ------------------------------------------------------------------------------------

_BAR = 40  # width of the longest histogram bar
_BINS = 24  # at most this many histogram rows; longer ranges are binned
_LENGTHS = 256  # the JSON report lists lengths one by one up to this many


def render_report(data: dict[str, Any]) -> str:
    """The report as text, from the data :func:`report` returns."""
    lines = [*_stage_lines(data), "", *_field_lines(data), "", *_path_lines(data["paths"])]
    if "init_stats" in data:
        lines += ["", *_init_lines(data["init_stats"])]
    return "\n".join(lines)


def _table(rows: list[tuple[str, ...]], right: set[int]) -> list[str]:
    """Rows of cells as aligned lines, indented; the columns in ``right`` right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()
        for row in rows
    ]  # fmt: skip


def _bytes(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _stage_lines(data: dict[str, Any]) -> list[str]:
    rows = [("stage", "ops", "params", "MACs", "activations")]
    rows += [(s["name"], f"{s['ops']:,}", f"{s['params']:,}", f"{s['macs']:,}",
              _bytes(s["activation_bytes"])) for s in data["stages"]]  # fmt: skip
    total = [sum(s[k] for s in data["stages"]) for k in ("ops", "params", "macs")]
    rows.append(("total", *(f"{n:,}" for n in total), _bytes(data["activation_bytes"])))
    head = "per stage (activations: the bytes of the tensors a stage produces, batch 1)"
    return [head, *_table(rows, {1, 2, 3, 4})]


def _pixels(pair: list[int]) -> str:
    return f"{pair[0]} x {pair[1]}"


def _field_lines(data: dict[str, Any]) -> list[str]:
    lines = ["receptive field (maximum over all paths)"]
    for rf in data["receptive_field"]:
        at = f"`{rf['at']}` {fmt_shape(tuple(rf['shape']))}" if rf["at"] else ""
        if rf["kind"] == "field":
            text = f"{_pixels(rf['size'])} px, jump {_pixels(rf['jump'])} px"
            if rf["pooled"]:
                text += f"\n    at {at}, the last feature map before the output"
        elif rf["kind"] == "global":
            if at:
                text = (
                    f"the whole input\n    global pooling already feeds {at}, the last feature map"
                )
            else:
                text = "the whole input"
        elif rf["kind"] == "unknown":
            text = f"not computed: a path goes through {rf['reason']}, which it does not follow"
        else:
            text = "none: the output does not depend on a feature-map input"
        lines.append(f"  {rf['output']}: {text}")
    return lines


def _path_lines(paths: dict[str, Any]) -> list[str]:
    *first, last = paths["weighted_ops"]
    weighted = f"{', '.join(first)} and {last}" if first else last
    lines = [f"paths from input to output (Veit et al., 2016); length: {weighted} ops on it"]
    if not paths["total"]:
        return [*lines, "  none"]
    median = "" if paths["median"] is None else f"   median {paths['median']}"
    lines.append(
        f"  total {_count(paths['total'])}   shortest {paths['shortest']}   longest "
        f"{paths['longest']}   mean {paths['mean']:.2f}{median}"
    )
    if paths["bins"] is None:
        return [*lines, "  (no histogram: the counts by length are too large to compute)"]
    rows = [("length", "paths", "share", "")]
    counts = [_exact(n) for _, _, n in paths["bins"]]
    total, biggest = _exact(paths["total"]), max(counts)
    for (lo, hi, _), n in zip(paths["bins"], counts, strict=True):
        bar = "#" * max(1, round(_BAR * n / biggest)) if n else ""
        label = str(lo) if lo == hi else f"{lo}-{hi}"
        rows.append((label, _count(n), f"{100 * n / total:.1f}%", bar))
    return [*lines, *_table(rows, {0, 1, 2})]


def _bins(stats: PathStats) -> list[tuple[int, int, int]]:
    """Histogram rows ``(shortest, longest, paths)``: one per length, or ranges of lengths
    when there are many."""
    counts = stats.histogram or {}
    lo, hi = stats.shortest, stats.longest
    if lo is None or hi is None:
        return []
    width = -(-(hi - lo + 1) // _BINS)
    rows = []
    for start in range(lo, hi + 1, width):
        end = min(start + width - 1, hi)
        rows.append((start, end, sum(counts.get(k, 0) for k in range(start, end + 1))))
    return rows


_DIGITS = 4_000  # JSON holds exact integers up to this many digits (str() refuses 4,300)


def _json_int(n: int) -> int | str:
    """``n`` exactly, or past :data:`_DIGITS` digits an approximation as a string."""
    return n if n.bit_length() < _DIGITS * 3.3 else _scientific(n)


def _exact(n: int | str) -> int:
    """Undo :func:`_json_int` (approximately, for a string)."""
    if isinstance(n, int):
        return n
    mantissa, exponent = n.split("e")
    return int(float(mantissa) * 1e15) * 10 ** (int(exponent) - 15)


def _count(n: int | str) -> str:
    """A count for people: ``1,024``, or ``1.071e301`` past 24 digits."""
    if isinstance(n, str) or n >= 10**24:
        return n if isinstance(n, str) else _scientific(n)
    return f"{n:,}"


def _scientific(n: int) -> str:
    """``n`` as ``1.234e5678``, without ``str(n)`` (slow, and refused past 4,300 digits)."""
    shift = max(0, n.bit_length() - 64)
    log = math.log10(n >> shift) + shift * math.log10(2)
    exponent = math.floor(log)
    mantissa = 10 ** (log - exponent)
    if mantissa >= 9.9995:  # rounds up to 10.000
        mantissa, exponent = 1.0, exponent + 1
    return f"{mantissa:.3f}e{exponent}"


def _init_lines(stats: dict[str, Any]) -> list[str]:
    head = (
        f"activation std at initialisation (seed {stats['seed']}, batch {stats['batch']}, "
        "standard normal input, batch norm on batch statistics)"
    )
    rows = [("block", "output", "shape", "std")]
    rows += [(f"{name} (input)", name, "", f"{std:.4f}") for name, std in stats["inputs"].items()]
    for b in stats["blocks"]:
        label = f"{b['scope']}: {b['block']}" if b["block"] else b["scope"]
        rows.append((label, b["node"], fmt_shape(tuple(b["shape"])), f"{b['std']:.4f}"))
    return [head, *_table(rows, {3})]
