"""What every importer produces: the source model as resdsl ops, before it is written as a
spec (:mod:`resdsl.importers.writer`).

An :class:`Imported` graph lists op calls in a topological order. Each :class:`Call` is one
op of the op table with its attributes in the table's terms (per-sample shapes, axes
without the batch), the values it reads, the label path its weights live under (the
source's module path, so the source's state_dict keys are the spec's), and where in the
source it came from, for errors. ``scopes`` names the class of each module path that holds
calls (``layer1.0`` -> ``Bottleneck``): the writer turns instances of one class into one
block.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import SpecError


@dataclass
class Call:
    """One op: ``id`` names its value; ``inputs`` are ids of calls or graph inputs."""

    id: str
    op: str
    attrs: dict[str, Any]
    inputs: list[str]
    label: str | None = None  # the label path of an op that owns weights ("layer1.0.conv1")
    scope: str = ""  # the module path it runs in ("layer1.0"), "" at the top
    source: str = ""  # where it came from: a module path, an ONNX node, a prototxt line


@dataclass
class Imported:
    """A model as op calls: the network's name, its inputs' per-sample shapes, the calls in
    a topological order, the ids it returns, and the class of each module path."""

    name: str
    inputs: list[tuple[str, tuple[int, ...]]]
    calls: list[Call] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    scopes: dict[str, str] = field(default_factory=dict)
    origin: str = ""  # what was imported, for the spec's header comment
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # per-sample, by id
    training_outputs: list[str] = field(default_factory=list)  # `training(...)` outputs
    # the source's weights keyed by the spec's state_dict keys (NumPy arrays), when it has
    # them (PyTorch, ONNX; a Caffe prototxt holds none)
    weights: dict[str, Any] | None = None
    # the source's outputs against a spec's (its relative max difference), where the source
    # can run: the writer checks what it wrote
    verify: Callable[[str], float] | None = None


@dataclass(frozen=True)
class Unsupported:
    """One thing of the source that has no resdsl equivalent."""

    where: str  # a module path, an ONNX node name, "file.prototxt:12"
    what: str  # the op or module ("torch.nn.functional.glu", "ONNX op Einsum")


class ModelImportError(SpecError):
    """The source cannot be imported: every unsupported op at once, each with where it is."""

    code = "E0901"

    def __init__(self, source: str, items: list[Unsupported], message: str = "") -> None:
        lines = [f"  {u.where}: {u.what}" for u in items]
        text = message or (
            f"{source}: {len(items)} op(s) or module(s) have no resdsl equivalent"
            + ("\n" + "\n".join(lines) if lines else "")
        )
        super().__init__(text)
        self.items = items


def tidy(g: Imported) -> Imported:
    """Rewrites every importer's output gets, to the form a spec writes: ``mean`` over the
    map of a (C, H, W) tensor is ``global_avgpool``; two ``scale_shift`` in a row are one;
    a pooling stride equal to the kernel is left out; a slice to the end has no end."""
    uses: dict[str, int] = {}
    for c in g.calls:
        for i in c.inputs:
            uses[i] = uses.get(i, 0) + 1
    for o in [*g.outputs, *g.training_outputs]:
        uses[o] = uses.get(o, 0) + 1
    by_id = {c.id: c for c in g.calls}
    calls: list[Call] = []
    for c in g.calls:
        first = by_id.get(c.inputs[0]) if c.inputs else None
        if c.op == "mean" and sorted(c.attrs["axis"]) == [1, 2] and not c.attrs.get("keepdim"):
            rank = g_rank(g, c)
            if rank == 3:
                c = Call(c.id, "global_avgpool", {}, c.inputs, c.label, c.scope, c.source)
        if c.op in ("maxpool2d", "avgpool2d") and _pair(c.attrs.get("stride")) == _pair(
            c.attrs["kernel"]
        ):  # fmt: skip
            c.attrs = {k: v for k, v in c.attrs.items() if k != "stride"}
        if (
            c.op == "scale_shift" and first is not None and first.op == "scale_shift"
            and uses.get(first.id) == 1 and first in calls
        ):  # fmt: skip
            a, b = first.attrs.get("scale", 1.0), first.attrs.get("shift", 0.0)
            s, t = c.attrs.get("scale", 1.0), c.attrs.get("shift", 0.0)
            calls.remove(first)
            c = Call(c.id, "scale_shift", {"scale": a * s, "shift": b * s + t}, first.inputs,
                     c.label, first.scope, first.source)  # fmt: skip
            by_id[c.id] = c
        calls.append(c)
    g.calls = calls
    return g


def g_rank(g: Imported, call: Call) -> int | None:
    """The per-sample rank of ``call``'s first input, when the importer recorded shapes."""
    shapes = getattr(g, "shapes", {})
    shape = shapes.get(call.inputs[0]) if call.inputs else None
    return None if shape is None else len(shape)


def _pair(v: Any) -> Any:
    return (v, v) if isinstance(v, int) else tuple(v) if isinstance(v, list) else v


def scopes_from_labels(g: Imported) -> Imported:
    """Module scopes for a graph that names its weights by module path but has no module
    tree (an ONNX export of a PyTorch model: ``layer1.0.conv1.weight``): a labelled call
    runs in its label's parent, an unlabelled one in its first input's scope. The class of
    a scope is unknown; it is named after the path (``layer1.0`` -> ``layer``), and only
    instances of one shape share a block."""
    if any(c.scope for c in g.calls) or not any(c.label and "." in c.label for c in g.calls):
        return g
    containers = {""}
    for c in g.calls:
        if c.label:
            path = c.label.rpartition(".")[0]
            while path:
                containers.add(path)
                path = path.rpartition(".")[0]
    for c in g.calls:
        if c.label:
            c.scope = c.label.rpartition(".")[0]
            continue
        path = _path_of(c.id)  # the op's module path, from its node name
        while path not in containers:
            path = path.rpartition(".")[0]
        c.scope = path
    for c in g.calls:
        path = c.scope
        while path:
            words = [w for w in path.split(".") if not w.isdigit()]
            name = re.sub(r"\d+", "", words[-1]) if words else "block"
            g.scopes.setdefault(path, name or "block")
            path = path.rpartition(".")[0]
    return g


def _path_of(name: str) -> str:
    """The module path in an ONNX node name: resdsl's exporter names nodes by the spec's
    names (``layer1.0.relu_1``), PyTorch's by the module stack (``/layer1/layer1.0/relu/Relu``,
    each level the full path or the attribute's name)."""
    if "/" not in name:
        return name.rpartition(".")[0]
    path = ""
    for part in [p for p in name.split("/") if p][:-1]:
        path = part if not path or part.startswith(path + ".") else f"{path}.{part}"
    return path
