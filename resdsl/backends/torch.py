"""PyTorch backend: the IR as readable Python source, and as a live ``nn.Module``.

One table, ``EMITTERS``, maps every op to how it is constructed in ``__init__`` (layers
with parameters) and how it is called in ``forward``. ``generate`` writes the source of a
self-contained module (needing only torch); ``to_module`` compiles that same source, so the
file written by ``resdsl compile --target torch`` and ``Network.to_torch()`` cannot drift.
Submodules are nested by the IR names (``layer1.0.conv1``), which makes state_dict keys
equal to the spec's names.

The generated text is built only from validated values: identifiers checked against
``[A-Za-z_][A-Za-z0-9_]*`` and literals that are ints, floats, bools or tuples of them.
"""

from __future__ import annotations

import keyword
import linecache
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import SpecError
from ..ir import Graph, Node
from ..ops import OPS, Shape


@dataclass(frozen=True)
class Emitter:
    """How one op appears in generated PyTorch code."""

    call: Callable[[Node, Sequence[str], str | None], str]  # (node, arg vars, module ref)
    module: Callable[[Node, Sequence[Shape]], str] | None = None  # constructor, if stateful


def _kwargs(node: Node, names: dict[str, str], skip: Sequence[str] = ()) -> str:
    """Non-default attributes as ``torch_name=value``, in the op table's order."""
    defaults = {a.name: a.default for a in OPS[node.op].attrs}
    parts = []
    for attr, torch_name in names.items():
        value = node.attrs[attr]
        if attr in skip or value == defaults.get(attr):
            continue
        parts.append(f"{torch_name}={_literal(value)}")
    return "".join(", " + p for p in parts)


def _literal(value: Any) -> str:
    if isinstance(value, tuple) and len(value) == 2 and value[0] == value[1]:
        value = value[0]  # (3, 3) -> 3: reads like hand-written code
    if isinstance(value, str):
        return f'"{value}"'  # attribute strings are from a fixed set ("same")
    if isinstance(value, bool | int | float) or value is None:
        return repr(value)
    if isinstance(value, tuple) and all(isinstance(v, int) for v in value):
        return repr(value)
    raise TypeError(f"cannot emit {value!r}")  # pragma: no cover - attrs are validated


def _conv2d(node: Node, shapes: Sequence[Shape]) -> str:
    a = node.attrs
    rest = _kwargs(node, {"stride": "stride", "padding": "padding", "dilation": "dilation",
                          "groups": "groups", "bias": "bias"})  # fmt: skip
    return f"nn.Conv2d({shapes[0][0]}, {a['out_channels']}, {_literal(a['kernel'])}{rest})"


def _batchnorm2d(node: Node, shapes: Sequence[Shape]) -> str:
    rest = _kwargs(node, {"eps": "eps", "momentum": "momentum", "affine": "affine"})
    return f"nn.BatchNorm2d({shapes[0][0]}{rest})"


def _linear(node: Node, shapes: Sequence[Shape]) -> str:
    rest = _kwargs(node, {"bias": "bias"})
    return f"nn.Linear({shapes[0][-1]}, {node.attrs['out_features']}{rest})"


def _module_call(node: Node, args: Sequence[str], mod: str | None) -> str:
    return f"{mod}({args[0]})"


def _pool(fn: str, names: Sequence[str]) -> Callable[[Node, Sequence[str], str | None], str]:
    """F.max_pool2d / F.avg_pool2d: the attribute names are torch's keyword names."""

    def call(node: Node, args: Sequence[str], mod: str | None) -> str:
        kernel = _literal(node.attrs["kernel"])
        return f"F.{fn}({args[0]}, {kernel}{_kwargs(node, {n: n for n in names})})"

    return call


EMITTERS: dict[str, Emitter] = {
    "conv2d": Emitter(_module_call, _conv2d),
    "batchnorm2d": Emitter(_module_call, _batchnorm2d),
    "linear": Emitter(_module_call, _linear),
    "relu": Emitter(lambda n, a, m: f"F.relu({a[0]})"),
    "identity": Emitter(lambda n, a, m: a[0]),
    "dropout": Emitter(lambda n, a, m: f"F.dropout({a[0]}, {n.attrs['p']!r}, self.training)"),
    "maxpool2d": Emitter(_pool("max_pool2d", ("stride", "padding", "dilation", "ceil_mode"))),
    "avgpool2d": Emitter(
        _pool("avg_pool2d", ("stride", "padding", "ceil_mode", "count_include_pad"))
    ),
    "adaptive_avgpool2d": Emitter(
        lambda n, a, m: f"F.adaptive_avg_pool2d({a[0]}, {n.attrs['output_size']!r})"
    ),
    "global_avgpool": Emitter(lambda n, a, m: f"F.adaptive_avg_pool2d({a[0]}, 1).flatten(1)"),
    "flatten": Emitter(lambda n, a, m: f"{a[0]}.flatten({n.attrs['start'] + 1})"),
    "add": Emitter(lambda n, a, m: " + ".join(a)),
    "concat": Emitter(lambda n, a, m: f"torch.cat([{', '.join(a)}], dim={n.attrs['axis'] + 1})"),
}

_RESERVED = {"self", "torch", "nn", "F", "Scope", "build"}
_WIDTH = 100  # the project's line length; generated code follows it


def _is_identifier(name: str) -> bool:
    return name.isidentifier() and name.isascii() and not keyword.iskeyword(name)


def _variable(name: str, taken: set[str]) -> str:
    """A unique Python variable for node ``name`` (``layer1.0.conv1`` -> ``layer1_0_conv1``)."""
    base = name.replace(".", "_")
    if base[0].isdigit() or keyword.iskeyword(base) or base in _RESERVED:
        base = "v_" + base
    if not _is_identifier(base):  # pragma: no cover - names are checked during elaboration
        raise ValueError(f"bad name {name!r}")
    var, k = base, 1
    while var in taken:  # `a.b` and `a_b` are different nodes
        var, k = f"{base}_{k}", k + 1
    taken.add(var)
    return var


def _module_ref(name: str) -> str:
    """``layer1.0.conv1`` -> ``self.layer1[0].conv1``."""
    ref = "self"
    for seg in name.split("."):
        ref += (
            f".{seg}" if _is_identifier(seg) else f'["{seg}"]' if not seg.isdigit() else f"[{seg}]"
        )
    return ref


def _class_name(name: str) -> str:
    parts = [p for p in name.replace("-", "_").split("_") if p]
    cls = "".join(p[:1].upper() + p[1:] for p in parts) or "Network"
    return cls if _is_identifier(cls) and cls not in _RESERVED else f"Net{cls}"


def _shape(shape: Shape) -> str:
    return "(B" + "".join(f", {d}" for d in shape) + ")"


def generate(graph: Graph, source_path: str | None = None) -> str:
    """Python source of a module equivalent to ``graph`` (deterministic, byte for byte)."""
    from .. import __version__

    init, forward, scopes, taken = [], [], set(), set(_RESERVED)
    var = {}
    for node in graph.nodes():
        if node.op not in EMITTERS and node.op != "input":
            raise SpecError(f"op `{node.op}` has no PyTorch emitter (target torch)", node.span)
        if node.op == "input":
            var[node.name] = _variable(node.name, taken)
            continue
        emitter = EMITTERS[node.op]
        args = [var[src] for src in graph.inputs_of(node.name)]
        shapes = [graph.info(src).shape for src in graph.inputs_of(node.name)]
        ref = None
        if emitter.module is not None:
            init += _declare(node.name, emitter.module(node, shapes), scopes)
            ref = _module_ref(node.name)
        if node.scope and (not forward or forward[-1][0] != node.scope):
            forward.append((node.scope, f"        # {node.scope}: {node.block}"))
        var[node.name] = _variable(node.name, taken)
        line = f"        {var[node.name]} = {emitter.call(node, args, ref)}"
        comment = f"# {_shape(graph.info(node.name).shape)}"
        if len(line) + len(comment) + 2 <= _WIDTH:
            forward.append((node.scope, f"{line}  {comment}"))
        else:  # keep lines within the width: the shape goes on its own line above
            forward += [(node.scope, f"        {comment}"), (node.scope, line)]
    outputs = [var[node] for _, node in graph.outputs]
    params = ", ".join(var[name] for name in graph.inputs)
    shapes = ", ".join(f"{var[n]}: {_shape(graph.info(n).shape)}" for n in graph.inputs)
    origin = f" from {source_path}" if source_path else ""
    cls = _class_name(graph.name)
    lines = [
        f'"""{graph.name}: generated by resdsl {__version__}{origin}.',
        "",
        "Needs only PyTorch. Submodule names (and state_dict keys) are the spec's names.",
        '"""',
        "",
        *(["import torch"] if any("torch." in line for _, line in forward) else []),
        "import torch.nn.functional as F",
        "from torch import nn",
        "",
        "",
        "class Scope(nn.Module):",
        '    """A block instance of the spec: a named group of layers."""',
        "",
        "    def __getitem__(self, key):",
        "        return self._modules[str(key)]",
        "",
        "",
        f"class {cls}(Scope):",
        "    def __init__(self):",
        "        super().__init__()",
        *(init or ["        pass"]),
        "",
        f"    def forward(self, {params}):",
        f"        # {shapes}",
        *(line for _, line in forward),
        f"        return {', '.join(outputs)}",
        "",
        "",
        "def build():",
        f'    """A fresh `{cls}` with PyTorch\'s default initialisation."""',
        f"    return {cls}()",
        "",
    ]
    return "\n".join(lines)


def _declare(name: str, constructor: str, scopes: set[str]) -> list[str]:
    """Lines creating ``name``'s parent scopes (once) and then the layer itself."""
    lines = []
    segments = name.split(".")
    for depth in range(1, len(segments) + 1):
        path = ".".join(segments[:depth])
        value = constructor if depth == len(segments) else "Scope()"
        if depth < len(segments) and path in scopes:
            continue
        scopes.add(path)
        parent = _module_ref(".".join(segments[: depth - 1])) if depth > 1 else "self"
        seg = segments[depth - 1]
        if _is_identifier(seg):
            lines.append(f"        {parent}.{seg} = {value}")
        else:
            lines.append(f'        {parent}.add_module("{seg}", {value})')
    return lines


def to_module(graph: Graph, seed: int | None = 0):
    """Build the module from the generated source; ``seed`` fixes the initial weights."""
    import torch

    source = generate(graph)
    filename = f"<resdsl:{graph.name}:{abs(hash(source)):x}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {}
    exec(compile(source, filename, "exec"), namespace)  # our own generated code, see above
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return namespace["build"]()
