"""PyTorch backend: the IR as readable Python source, and as a live ``nn.Module``.

One table, ``EMITTERS``, maps every op to how it is constructed in ``__init__`` (layers
with parameters) and how it is called in ``forward``. ``generate`` writes the source of a
self-contained module (needing only torch); ``to_module`` compiles that same source, so the
file written by ``resdsl compile --target torch`` and ``Network.to_torch()`` cannot drift.
Submodules are nested by the IR names (``layer1.0.conv1``), which makes state_dict keys
equal to the spec's names. A name that is a plain identifier is an attribute
(``self.conv1 = ...``); one that is not, or that Python would mangle inside the class body
(``__c``), is registered by its string (``self.add_module("__c", ...)``) and looked up with
``self["__c"]``. Names that ``nn.Module`` itself uses (``forward``, ``training``, ...) are
refused during elaboration (:mod:`resdsl.names`) and again here.

The generated text is built only from validated values: identifiers checked against
``[A-Za-z_][A-Za-z0-9_]*`` and literals that are ints, floats, bools or tuples of them.
"""

from __future__ import annotations

import hashlib
import keyword
import linecache
import pickle
import sys
import threading
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .._compat import install_module
from ..errors import SpecError
from ..ir import Graph, Node
from ..names import reserved
from ..ops import OPS, Shape
from ..ops.lowering import aligned, batch_axis
from ..ops.tensors import reduced_axes, slice_bounds
from ..passes import decompose


@dataclass(frozen=True)
class Emitter:
    """How one op appears in generated PyTorch code."""

    call: Callable[..., str]  # (node, arg vars, module ref[, input shapes]) -> expression
    module: Callable[[Node, Sequence[Shape]], str] | None = None  # constructor, if stateful
    shaped: bool = False  # whether ``call`` also takes the per-sample input shapes


def _kwargs(node: Node, names: dict[str, str], skip: Sequence[str] = ()) -> str:
    """Non-default attributes as ``torch_name=value``, in the op table's order."""
    defaults = {a.name: a.default for a in OPS[node.op].attrs}
    parts = []
    for attr, torch_name in names.items():
        if attr not in node.attrs:  # e.g. conv2d has no gamma (std_conv2d shares the emitter)
            continue
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


def _conv(cls: str) -> Callable[[Node, Sequence[Shape]], str]:
    def module(node: Node, shapes: Sequence[Shape]) -> str:
        a = node.attrs
        rest = _kwargs(node, {"stride": "stride", "padding": "padding", "dilation": "dilation",
                              "groups": "groups", "bias": "bias", "gamma": "gamma",
                              "eps": "eps"})  # fmt: skip
        return f"{cls}({shapes[0][0]}, {a['out_channels']}, {_literal(a['kernel'])}{rest})"

    return module


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


def _ints(values: Sequence[int]) -> str:
    return ", ".join(str(v) for v in values)


def _scale_shift(x: str, scale: float, shift: float) -> str:
    expr = x if scale == 1 else f"{x} * {scale!r}"
    return expr if shift == 0 else f"{expr} + {shift!r}"


def _layernorm(node: Node, shapes: Sequence[Shape]) -> str:
    return f"nn.LayerNorm({shapes[0][-1]}{_kwargs(node, {'eps': 'eps'})})"


def _layernorm2d(node: Node, shapes: Sequence[Shape]) -> str:
    return f"LayerNorm2d({shapes[0][0]}, eps={node.attrs['eps']!r})"


def _groupnorm(node: Node, shapes: Sequence[Shape]) -> str:
    rest = _kwargs(node, {"eps": "eps", "affine": "affine"})
    return f"nn.GroupNorm({node.attrs['groups']}, {shapes[0][0]}{rest})"


def _attention(node: Node, shapes: Sequence[Shape]) -> str:
    rest = _kwargs(node, {"dropout": "dropout"})
    return f"nn.MultiheadAttention({shapes[0][-1]}, {node.attrs['heads']}{rest}, batch_first=True)"


def _stored(node: Node) -> tuple[int, ...]:
    a = node.attrs
    return a["stored"] if a["stored"] is not None else (1, *a["shape"])


def _initial(node: Node) -> str:
    """A ``parameter``'s or ``buffer``'s tensor as stored (by default with a leading 1, so it
    broadcasts over the batch), initialised per ``init``."""
    a = node.attrs
    size, init = _ints(_stored(node)), a["init"]
    if a.get("values") is not None:  # the elements: a constant of the generated file
        dtype = "torch.int64" if a["dtype"] == "int64" else "torch.float32"
        return f"torch.tensor({_constant_name(a['values'])}, dtype={dtype}).reshape({size})"
    if init == "normal":
        return f"torch.empty({size}).normal_(std={a['std']!r})"
    if init == "uniform":
        return f"torch.empty({size}).uniform_({-a['value']!r}, {a['value']!r})"
    if init == "constant":
        return f"torch.full(({size},), {a['value']!r})"
    if init == "kaiming":  # as nn.Linear initialises its weight
        return f"nn.init.kaiming_uniform_(torch.empty({size}), a=5**0.5)"
    return f"torch.{init}({size})"  # zeros or ones


def _constant_name(values: tuple) -> str:
    """The module-level name a generated file gives a buffer's elements (one definition
    per distinct tuple: Swin's blocks share one relative position index)."""
    return "VALUES_" + hashlib.sha256(repr(values).encode()).hexdigest()[:8].upper()


def _constant_lines(graph: Graph) -> list[str]:
    """``VALUES_... = (...)`` for each distinct ``values`` of the graph's buffers, wrapped."""
    import textwrap

    out: dict[str, tuple] = {}
    for node in graph.nodes():
        if node.op == "buffer" and node.attrs["values"] is not None:
            out.setdefault(_constant_name(node.attrs["values"]), node.attrs["values"])
    lines = []
    for name, values in sorted(out.items()):
        body = textwrap.wrap(", ".join(map(repr, values)), _WIDTH - 4)
        lines += [f"{name} = (", *(f"    {line}" for line in body), ")", "", ""]
    return lines


def _take(node: Node, args: Sequence[str], mod: str | None) -> str:
    return f"{args[0]}.index_select({node.attrs['axis'] + 1}, {args[1]}[0])"


def _parameter(node: Node, shapes: Sequence[Shape]) -> str:
    return f"nn.Parameter({_initial(node)})"


def _expand_parameter(node: Node, args: Sequence[str], mod: str | None) -> str:
    shape = node.attrs["shape"]
    view = "" if _stored(node) == (1, *shape) else f".reshape(1, {_ints(shape)})"
    return f"{mod}{view}.expand({args[0]}{', -1' * len(shape)})"


def _binary(symbol: str) -> Callable[[Node, Sequence[str], str | None, Sequence[Shape]], str]:
    """A broadcasting binary op: per-sample shapes align on the last axis, the batch on the
    first, so the operand of lower rank gains unit axes after its batch axis."""

    def call(node: Node, args: Sequence[str], mod: str | None, shapes: Sequence[Shape]) -> str:
        return f" {symbol} ".join(
            v if view is None else f"{v}[:{', None' * (len(view) - 1 - len(s))}]"
            for v, s, view in zip(args, shapes, aligned(shapes), strict=True)
        )

    return call


def _sum(node: Node, args: Sequence[str], mod: str | None, shapes: Sequence[Shape]) -> str:
    if len(set(shapes)) == 1:  # the residual add
        return " + ".join(args)
    return _binary("+")(node, args, mod, shapes)


def _clamp(node: Node, args: Sequence[str], mod: str | None) -> str:
    bounds = [f"{k}={node.attrs[k]!r}" for k in ("min", "max") if node.attrs[k] is not None]
    return f"{args[0]}.clamp({', '.join(bounds)})"


def _slice(node: Node, args: Sequence[str], mod: str | None, shapes: Sequence[Shape]) -> str:
    axis, start, stop, step = slice_bounds(node.attrs, shapes[0])
    rest = f":{step}" if step != 1 else ""
    return f"{args[0]}[{':, ' * (axis + 1)}{start}:{stop}{rest}]"


def _pad(node: Node, args: Sequence[str], mod: str | None) -> str:
    value = f", value={node.attrs['value']!r}" if node.attrs["value"] else ""
    return f"F.pad({args[0]}, {node.attrs['pads']!r}{value})"


def _reduce(node: Node, args: Sequence[str], mod: str | None, shapes: Sequence[Shape]) -> str:
    dims = tuple(a + 1 for a in reduced_axes(node.op, node.attrs, shapes[0]))
    keep = ", keepdim=True" if node.attrs["keepdim"] else ""
    return f"{args[0]}.{node.op}({dims[0] if len(dims) == 1 else dims!r}{keep})"


def _softmax(node: Node, args: Sequence[str], mod: str | None, shapes: Sequence[Shape]) -> str:
    return f"{args[0]}.softmax({batch_axis(node.attrs['axis'], len(shapes[0]))})"


def _gelu(node: Node, args: Sequence[str], mod: str | None) -> str:
    tanh = ', approximate="tanh"' if node.attrs["approximate"] == "tanh" else ""
    return f"F.gelu({args[0]}{tanh})"


EMITTERS: dict[str, Emitter] = {
    "conv2d": Emitter(_module_call, _conv("nn.Conv2d")),
    "conv1d": Emitter(_module_call, _conv("nn.Conv1d")),
    "std_conv2d": Emitter(_module_call, _conv("ScaledStdConv2d")),
    "batchnorm2d": Emitter(_module_call, _batchnorm2d),
    "linear": Emitter(_module_call, _linear),
    "relu": Emitter(lambda n, a, m: f"F.relu({a[0]})"),
    "identity": Emitter(lambda n, a, m: a[0]),
    "zero": Emitter(lambda n, a, m: f"torch.zeros_like({a[0]})"),
    "dropout": Emitter(lambda n, a, m: f"F.dropout({a[0]}, {n.attrs['p']!r}, self.training)"),
    "maxpool2d": Emitter(_pool("max_pool2d", ("stride", "padding", "dilation", "ceil_mode"))),
    "avgpool2d": Emitter(
        _pool("avg_pool2d", ("stride", "padding", "ceil_mode", "count_include_pad"))
    ),
    "adaptive_avgpool2d": Emitter(
        lambda n, a, m: f"F.adaptive_avg_pool2d({a[0]}, {n.attrs['output_size']!r})"
    ),
    "global_avgpool": Emitter(lambda n, a, m: f"{a[0]}.mean((2, 3))"),
    "flatten": Emitter(lambda n, a, m: f"{a[0]}.flatten({n.attrs['start'] + 1})"),
    "add": Emitter(_sum, shaped=True),
    "concat": Emitter(lambda n, a, m: f"torch.cat([{', '.join(a)}], dim={n.attrs['axis'] + 1})"),
    "mul": Emitter(_binary("*"), shaped=True),
    "matmul": Emitter(_binary("@"), shaped=True),
    "sub": Emitter(_binary("-"), shaped=True),
    "div": Emitter(_binary("/"), shaped=True),
    "scale_shift": Emitter(lambda n, a, m: _scale_shift(a[0], n.attrs["scale"], n.attrs["shift"])),
    "clamp": Emitter(_clamp),
    "sigmoid": Emitter(lambda n, a, m: f"torch.sigmoid({a[0]})"),
    "exp": Emitter(lambda n, a, m: f"torch.exp({a[0]})"),
    "sin": Emitter(lambda n, a, m: f"torch.sin({a[0]})"),
    "cos": Emitter(lambda n, a, m: f"torch.cos({a[0]})"),
    "tanh": Emitter(lambda n, a, m: f"torch.tanh({a[0]})"),
    "leaky_relu": Emitter(lambda n, a, m: f"F.leaky_relu({a[0]}, {n.attrs['negative_slope']!r})"),
    "abs": Emitter(lambda n, a, m: f"torch.abs({a[0]})"),
    "sqrt": Emitter(lambda n, a, m: f"torch.sqrt({a[0]})"),
    "normalize": Emitter(
        lambda n, a, m, s: (
            f"F.normalize({a[0]}, dim={batch_axis(n.attrs['axis'], len(s[0]))}"
            f", eps={n.attrs['eps']!r})"
        ),
        shaped=True,
    ),
    "take": Emitter(_take),
    "gelu": Emitter(_gelu),
    "softmax": Emitter(_softmax, shaped=True),
    # native forms of composites: PyTorch's own functions read (and run) better
    "relu6": Emitter(lambda n, a, m: f"F.relu6({a[0]})"),
    "hardtanh": Emitter(
        lambda n, a, m: f"F.hardtanh({a[0]}, {n.attrs['min_val']!r}, {n.attrs['max_val']!r})"
    ),
    "silu": Emitter(lambda n, a, m: f"F.silu({a[0]})"),
    "hardsigmoid": Emitter(lambda n, a, m: f"F.hardsigmoid({a[0]})"),
    "hardswish": Emitter(lambda n, a, m: f"F.hardswish({a[0]})"),
    "drop_path": Emitter(lambda n, a, m: f"drop_path({a[0]}, {n.attrs['p']!r}, self.training)"),
    "layernorm": Emitter(_module_call, _layernorm),
    "layernorm2d": Emitter(_module_call, _layernorm2d),
    "groupnorm": Emitter(_module_call, _groupnorm),
    "attention": Emitter(
        lambda n, a, m: f"{m}({a[0]}, {a[0]}, {a[0]}, need_weights=False)[0]", _attention
    ),
    # ops without tensor inputs get the batch size as their argument
    "parameter": Emitter(_expand_parameter, _parameter),
    "buffer": Emitter(_expand_parameter, lambda n, s: _initial(n)),
    "reshape": Emitter(
        lambda n, a, m: f"{a[0]}.reshape({a[0]}.shape[0], {_ints(n.attrs['shape'])})"
    ),
    "permute": Emitter(
        lambda n, a, m: f"{a[0]}.permute(0, {_ints(tuple(i + 1 for i in n.attrs['axes']))})"
    ),
    "select": Emitter(lambda n, a, m: f"{a[0]}.select({n.attrs['axis'] + 1}, {n.attrs['index']})"),
    "slice": Emitter(_slice, shaped=True),
    "pad": Emitter(_pad),
    "sum": Emitter(_reduce, shaped=True),
    "mean": Emitter(_reduce, shaped=True),
}

# Helpers that generated files define when they use them (kept readable and dependency-free).
HELPERS = {
    "std_conv2d": [
        "class ScaledStdConv2d(nn.Conv2d):",
        '    """A weight-standardised convolution with a per-filter gain, as timm\'s."""',
        "",
        "    def __init__(self, *args, gamma=1.0, eps=1e-6, **kwargs):",
        "        super().__init__(*args, **kwargs)",
        "        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1))",
        "        self.scale = gamma * self.weight[0].numel() ** -0.5",
        "        self.eps = eps",
        "",
        "    def forward(self, x):",
        "        weight = F.batch_norm(",
        "            self.weight.reshape(1, self.out_channels, -1), None, None,",
        "            weight=(self.gain * self.scale).view(-1), training=True, momentum=0.0,",
        "            eps=self.eps,",
        "        ).reshape_as(self.weight)",
        "        return self._conv_forward(x, weight, self.bias)",
    ],
    "layernorm2d": [
        "class LayerNorm2d(nn.LayerNorm):",
        '    """Layer norm over the channels of (B, C, H, W), as torchvision\'s."""',
        "",
        "    def forward(self, x):",
        "        x = x.permute(0, 2, 3, 1)",
        "        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)",
        "        return x.permute(0, 3, 1, 2)",
    ],
    "drop_path": [
        "def drop_path(x, p: float, training: bool):",
        '    """Stochastic depth: zero whole samples with probability p, scale the rest."""',
        "    if not training or p == 0.0:",
        "        return x",
        "    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - p)",
        "    return x * keep / (1 - p)",
    ],
}


_RESERVED = {"self", "torch", "nn", "F", "Scope", "build", "LayerNorm2d", "ScaledStdConv2d",
             *HELPERS}  # fmt: skip
_WIDTH = 100  # the project's line length; generated code follows it


def _is_identifier(name: str) -> bool:
    return name.isidentifier() and name.isascii() and not keyword.iskeyword(name)


def _is_attribute(segment: str) -> bool:
    """Whether ``self.<segment>`` in the generated class means the submodule ``segment``:
    an identifier that Python does not mangle (``self.__c`` would be ``self._Net__c``)."""
    return _is_identifier(segment) and not segment.startswith("__")


def _variable(name: str, taken: set[str]) -> str:
    """A unique Python variable for node ``name`` (``layer1.0.conv1`` -> ``layer1_0_conv1``)."""
    base = "".join(c if c.isalnum() and c.isascii() else "_" for c in name)
    if base[0].isdigit() or keyword.iskeyword(base) or base in _RESERVED or base[:2] == "__":
        base = "v_" + base
    if not _is_identifier(base):  # pragma: no cover - names are checked during elaboration
        raise ValueError(f"bad name {name!r}")
    var, k = base, 1
    while var in taken:  # `a.b` and `a_b` are different nodes
        var, k = f"{base}_{k}", k + 1
    taken.add(var)
    return var


def _module_ref(name: str) -> str:
    """``layer1.0.conv1`` -> ``self.layer1[0].conv1``; ``__c.class`` -> ``self["__c"]["class"]``."""
    ref = "self"
    for seg in name.split("."):
        ref += (
            f".{seg}" if _is_attribute(seg) else f'["{seg}"]' if not seg.isdigit() else f"[{seg}]"
        )
    return ref


def _parameter_ref(name: str) -> str:
    """A parameter not named by an attribute: ``getattr(self.layer1, "class")`` (``Scope``'s
    ``[...]`` looks up submodules only)."""
    parent, _, seg = name.rpartition(".")
    if _is_attribute(seg):
        return _module_ref(name)
    return f'getattr({_module_ref(parent) if parent else "self"}, "{seg}")'


def _class_name(name: str) -> str:
    parts = [p for p in name.replace("-", "_").split("_") if p]
    cls = "".join(p[:1].upper() + p[1:] for p in parts) or "Network"
    return cls if _is_identifier(cls) and cls not in _RESERVED else f"Net{cls}"


def _docstring_text(text: str) -> str:
    """``text`` safe inside a generated docstring: a file name is chosen by whoever made the
    spec, and one holding ``\"\"\"`` and a newline would otherwise end the docstring and
    inject code. Backslashes, control and non-ASCII characters become escapes, and quotes are
    escaped."""
    return text.encode("unicode_escape").decode("ascii").replace('"', '\\"')


def _shape(shape: Shape) -> str:
    return "(B" + "".join(f", {d}" for d in shape) + ")"


def generate(graph: Graph, source_path: str | None = None) -> str:
    """Python source of a module equivalent to ``graph`` (deterministic, byte for byte)."""
    graph = decompose(graph, EMITTERS)
    training = graph.training_only()
    init, forward, scopes, taken, helpers = [], [], set(), set(_RESERVED), set()
    var = {}
    for node in graph.nodes():
        if node.op not in EMITTERS and node.op != "input":
            raise SpecError(f"op `{node.op}` has no PyTorch emitter (target torch)", node.span)
        if node.op == "input":
            var[node.name] = _variable(node.name, taken)
            continue
        emitter = EMITTERS[node.op]
        args = [var[src] for src in graph.inputs_of(node.name)] or [
            f"{var[graph.inputs[0]]}.shape[0]"  # an op without inputs: the batch size
        ]
        if node.op in HELPERS:
            helpers.add(node.op)
        shapes = [graph.info(src).shape for src in graph.inputs_of(node.name)]
        ref = None
        if emitter.module is not None:
            for seg in node.name.split("."):  # elaboration refuses these names already
                if reason := reserved(seg):
                    raise SpecError(f"{reason} (target torch)", node.span)
            persistent = node.op != "buffer" or node.attrs["persistent"]
            init += _declare(node.name, emitter.module(node, shapes), scopes, persistent)
            tensor = node.op in ("parameter", "buffer")
            ref = _parameter_ref(node.name) if tensor else _module_ref(node.name)
        # a training-only branch (an auxiliary classifier) runs under `if self.training:`
        indent = " " * (12 if node.name in training else 8)
        if node.name in training and (not forward or not forward[-1][1].startswith(indent)):
            forward.append((node.scope, "        if self.training:"))
        if node.scope and (not forward or forward[-1][0] != node.scope):
            forward.append((node.scope, f"{indent}# {node.scope}: {node.block}"))
        var[node.name] = _variable(node.name, taken)
        call = emitter.call(node, args, ref, *([shapes] if emitter.shaped else []))
        line = f"{indent}{var[node.name]} = {call}"
        comment = f"# {_shape(graph.info(node.name).shape)}"
        if len(line) + len(comment) + 2 <= _WIDTH:
            forward.append((node.scope, f"{line}  {comment}"))
        else:  # keep lines within the width: the shape goes on its own line above
            forward += [(node.scope, f"{indent}{comment}"), (node.scope, line)]
    outputs = [var[node] for _, node in graph.outputs]
    returns = [f"        return {', '.join(outputs)}"]
    if graph.training_outputs:  # in training mode, as torchvision: (logits, aux, ...)
        everything = outputs + [var[node] for _, node in graph.training_outputs]
        returns = ["        if self.training:", f"            return {', '.join(everything)}",
                   *returns]  # fmt: skip
    params = ", ".join(var[name] for name in graph.inputs)
    shapes = ", ".join(f"{var[n]}: {_shape(graph.info(n).shape)}" for n in graph.inputs)
    cls = _class_name(graph.name)
    code = "".join(text for _, text in forward) + "".join(init)
    lines = [
        *file_head(graph, source_path, code, sorted(helpers)),
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
        *returns,
        "",
        "",
        *file_tail(cls),
    ]
    return "\n".join(lines)


def file_head(
    graph: Graph,
    source_path: str | None,
    code: str,
    helpers: Sequence[str],
    imports: Sequence[str] = (),
) -> list[str]:
    """A generated file's first lines: its docstring, the imports ``code`` (the classes'
    text) and ``helpers`` need, the module constants and the helper classes."""
    from .. import __version__

    origin = f" from {_docstring_text(source_path)}" if source_path else ""
    helper_lines = [line for name in helpers for line in HELPERS[name]]
    uses_torch = "torch." in code + "".join(helper_lines)
    return [
        f'"""{graph.name}: generated by resdsl {__version__}{origin}.',
        "",
        "Needs only PyTorch. Submodule names (and state_dict keys) are the spec's names.",
        '"""',
        "",
        *imports,
        *(["import torch"] if uses_torch else []),
        "import torch.nn.functional as F",
        "from torch import nn",
        "",
        "",
        *_constant_lines(graph),
        *(line for name in helpers for line in [*HELPERS[name], "", ""]),
    ]


def file_tail(cls: str) -> list[str]:
    """``build()``, which a generated file ends with."""
    return [
        "def build():",
        f'    """A fresh `{cls}` with PyTorch\'s default initialisation."""',
        f"    return {cls}()",
        "",
    ]


def _declare(name: str, constructor: str, scopes: set[str], persistent: bool = True) -> list[str]:
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
        if value.startswith("torch."):  # a buffer: only register_buffer makes it one
            extra = "" if persistent else ", persistent=False"
            lines.append(f'        {parent}.register_buffer("{seg}", {value}{extra})')
        elif _is_attribute(seg):
            lines.append(f"        {parent}.{seg} = {value}")
        elif value.startswith("nn.Parameter("):
            lines.append(f'        {parent}.register_parameter("{seg}", {value})')
        else:
            lines.append(f'        {parent}.add_module("{seg}", {value})')
    return lines


# Generated modules live in real module namespaces, ``resdsl._generated.m_<digest>`` in
# sys.modules (``<digest>``: the SHA-256 of the generated source), so pickle, torch.save,
# copy.deepcopy and multiprocessing treat their classes like any other.
_GENERATED = "resdsl._generated"
_SOURCE = "__resdsl_source__"  # the module attribute holding the generated source
_LOCK = threading.Lock()


def _module_name(source: str) -> str:
    return f"{_GENERATED}.m_{hashlib.sha256(source.encode()).hexdigest()[:24]}"


def _load(source: str) -> types.ModuleType:
    """The module of ``source`` (generated by :func:`generate`), executed once per process.

    Its classes get ``__module__`` set to the module's name and a ``__reduce_ex__`` that
    pickles an instance as ``_rebuild(source, class name)`` plus its state, so a process
    where the module does not exist yet (a spawned worker, a fresh interpreter loading a
    ``torch.save`` file) recreates it from the same text before restoring the state.
    """
    import torch

    name = _module_name(source)
    with _LOCK:
        if (module := sys.modules.get(name)) is not None:
            return module
        if _GENERATED not in sys.modules:  # a namespace only: nothing to import under it
            parent = types.ModuleType(_GENERATED, "Modules that resdsl generated in-process.")
            parent.__path__ = []
            install_module(_GENERATED, parent)
        filename = f"<{name}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        module = types.ModuleType(name)
        module.__file__ = filename
        setattr(module, _SOURCE, source)
        exec(compile(source, filename, "exec"), module.__dict__)  # see _rebuild on safety
        for value in list(module.__dict__.values()):
            if (
                isinstance(value, type)
                and issubclass(value, torch.nn.Module)
                and value.__module__ == name  # set by exec from the module's __name__
            ):
                value.__reduce_ex__ = _reduce_ex
        install_module(name, module)
        setattr(sys.modules[_GENERATED], name.rpartition(".")[2], module)
        return module


def _reduce_ex(self: Any, protocol: int) -> Any:
    """Pickle a generated module as ``_rebuild(source, class name)`` and its state."""
    cls = type(self)
    source = getattr(sys.modules.get(cls.__module__), _SOURCE, None)
    if not isinstance(source, str):  # a subclass defined elsewhere: pickled by reference
        return object.__reduce_ex__(self, protocol)
    return _rebuild, (source, cls.__qualname__), self.__getstate__()


def _rebuild(source: str, qualname: str) -> Any:
    """An empty instance of class ``qualname`` of generated ``source`` (unpickling calls
    ``__setstate__`` on it next). The module is executed only if this process lacks it.

    Safety: ``source`` is the text :func:`generate` wrote for the pickled module (built only
    from validated identifiers and literals, see the top of this file), stored in the
    pickle once (a module's instances share the string). Unpickling runs it, so it is
    exactly as trustworthy as the pickle that carries it: **never unpickle data you do not
    trust** (``pickle.load`` and ``torch.load(weights_only=False)`` can run arbitrary code
    with or without resdsl), and never allow this function in a restricted unpickler.
    ``torch.load(weights_only=True)``, which resdsl uses for ``--weights``, refuses it.
    Modules are named by the digest of their text, so a pickle cannot replace one that this
    process built already; and only a class defined by that text is instantiated.
    """
    import torch

    module = _load(source)
    cls = getattr(module, qualname, None)
    if not (
        isinstance(cls, type)
        and issubclass(cls, torch.nn.Module)
        and cls.__module__ == module.__name__
    ):
        raise pickle.UnpicklingError(f"resdsl: no module class {qualname!r} in generated source")
    return cls.__new__(cls)


def to_module(graph: Graph, seed: int | None = 0):
    """Build the module from the generated source; ``seed`` fixes the initial weights.

    The class lives in ``resdsl._generated.m_<digest>`` (see :func:`_load`), so the module
    pickles, deep-copies and crosses to spawned processes like any PyTorch module.
    """
    import torch

    build = _load(generate(graph)).build
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return build()
