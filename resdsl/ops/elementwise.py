"""Elementwise ops: arithmetic, activations, gates, and what training alone does (dropout).

Same conventions as ``table.py``: per-sample shapes, MACs for matrix work only. Several
activations are composites, written once here as the ops they are made of (ReLU6 is a
clamp, SiLU ``x * sigmoid(x)``); a backend with a faster or more readable form of its own
registers it as a native emitter, checked against the decomposition by the tests.
"""

from __future__ import annotations

from collections.abc import Sequence

from .core import (
    Attr,
    Attrs,
    Decomposition,
    Group,
    OpDef,
    OpShapeError,
    Receptive,
    Shape,
    Value,
    always,
    register,
    same_shape,
)
from .table import broadcast, fmt_shape


def _unary(name: str, doc: str, **more) -> OpDef:
    return register(
        OpDef(
            name, doc, Group.ELEMENTWISE, same_shape, receptive=always(Receptive.POINTWISE), **more
        )
    )


# --- arithmetic --------------------------------------------------------------------------------


def _mul_shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    return broadcast(inputs[0], inputs[1])


MUL = register(
    OpDef(
        "mul",
        "Elementwise product with broadcasting: gates (highway, squeeze-and-excitation).",
        Group.MERGE,
        _mul_shape,
        inputs=2,
        receptive=always(Receptive.POINTWISE),
        symbol="\N{MULTIPLICATION SIGN}",
    )
)
SUB = register(
    OpDef(
        "sub",
        "Elementwise difference with broadcasting.",
        Group.MERGE,
        _mul_shape,
        inputs=2,
        receptive=always(Receptive.POINTWISE),
        symbol="\N{MINUS SIGN}",
    )
)


DIV = register(
    OpDef(
        "div",
        "Elementwise quotient with broadcasting.",
        Group.MERGE,
        _mul_shape,
        inputs=2,
        receptive=always(Receptive.POINTWISE),
        symbol="/",
    )
)


def _scale_shift_detail(a: Attrs) -> str:
    shift = f" + {a['shift']:g}" if a["shift"] else ""
    return f" \N{MULTIPLICATION SIGN}{a['scale']:g}{shift}"


SCALE_SHIFT = _unary(
    "scale_shift",
    "x * scale + shift with constants: `x / L`, `alpha * f`, `1 - t` in specs.",
    attrs=(Attr("scale", "float", 1.0), Attr("shift", "float", 0.0)),
    scales=True,
    detail=_scale_shift_detail,
)

# --- activations -------------------------------------------------------------------------------

CLAMP = _unary(
    "clamp",
    "min(max(x, min), max), elementwise; either bound may be left out.",
    attrs=(Attr("min", "optional_float", None), Attr("max", "optional_float", None)),
)
SIGMOID = _unary("sigmoid", "1 / (1 + exp(-x)), elementwise.")
TANH = _unary("tanh", "The hyperbolic tangent, elementwise.")
LEAKY_RELU = _unary(
    "leaky_relu",
    "x for x >= 0, negative_slope * x below (Darknet's and CSPNet's activation).",
    attrs=(Attr("negative_slope", "float", 0.01),),
)
EXP = _unary("exp", "e ** x, elementwise (Swin V2's learned logit scale).")
SIN = _unary("sin", "The sine, elementwise (rotary position embeddings).")
COS = _unary("cos", "The cosine, elementwise (rotary position embeddings).")
ABS = _unary("abs", "The absolute value, elementwise.")
SQRT = _unary("sqrt", "The square root, elementwise.")
GELU = _unary(
    "gelu",
    'Gaussian error linear unit: exact (erf) or, with approximate="tanh", the tanh form.',
    attrs=(Attr("approximate", "str", "none", choices=("none", "tanh")),),
)


def _hardtanh(d: Decomposition, a: Attrs) -> Value:
    return d.op("clamp", d.inputs[0], min=a["min_val"], max=a["max_val"])


HARDTANH = _unary(
    "hardtanh",
    "Clamp to [min_val, max_val] (PyTorch's Hardtanh).",
    attrs=(Attr("min_val", "float", -1.0), Attr("max_val", "float", 1.0)),
    decompose=_hardtanh,
)
RELU6 = _unary(
    "relu6",
    "min(max(x, 0), 6): MobileNet's activation.",
    decompose=lambda d, a: d.op("clamp", d.inputs[0], min=0.0, max=6.0),
)


def _silu(d: Decomposition, a: Attrs) -> Value:
    (x,) = d.inputs
    return d.op("mul", x, d.op("sigmoid", x))


SILU = _unary("silu", "x * sigmoid(x) (swish): EfficientNet's activation.", decompose=_silu)


def _hardsigmoid(d: Decomposition, a: Attrs) -> Value:
    scaled = d.op("scale_shift", d.inputs[0], scale=1 / 6, shift=0.5)
    return d.op("clamp", scaled, min=0.0, max=1.0)


HARDSIGMOID = _unary("hardsigmoid", "relu6(x + 3) / 6: MobileNetV3's gate.", decompose=_hardsigmoid)


def _hardswish(d: Decomposition, a: Attrs) -> Value:
    (x,) = d.inputs
    return d.op("mul", x, d.op("hardsigmoid", x))


HARDSWISH = _unary(
    "hardswish", "x * relu6(x + 3) / 6: MobileNetV3's activation.", decompose=_hardswish
)


def _softmax_shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    (x,) = inputs
    if not -len(x) <= a["axis"] < len(x):
        raise OpShapeError(f"`softmax` axis {a['axis']} is not an axis of {fmt_shape(x)}")
    return x


SOFTMAX = register(
    OpDef(
        "softmax",
        "exp(x) / sum(exp(x)) along a per-sample axis (-1: the last).",
        Group.ELEMENTWISE,
        _softmax_shape,
        attrs=(Attr("axis", "int", -1),),
        receptive=lambda a, i: (
            Receptive.POINTWISE if len(i[0]) == 3 and a["axis"] in (0, -3) else Receptive.GLOBAL
        ),
    )
)


def _normalize_shape(a: Attrs, inputs: Sequence[Shape]) -> Shape:
    (x,) = inputs
    if not -len(x) <= a["axis"] < len(x):
        raise OpShapeError(f"`normalize` axis {a['axis']} is not an axis of {fmt_shape(x)}")
    return x


def _normalize(d: Decomposition, a: Attrs) -> Value:
    (x,) = d.inputs
    squares = d.op("sum", d.op("mul", x, x), axis=(a["axis"],), keepdim=True)
    norm = d.op("clamp", d.op("sqrt", squares), min=a["eps"])
    return d.op("div", x, norm)


NORMALIZE = register(
    OpDef(
        "normalize",
        "x / max(norm(x), eps), the L2 norm along a per-sample axis (F.normalize): "
        "Swin V2's cosine attention.",
        Group.ELEMENTWISE,
        _normalize_shape,
        attrs=(Attr("axis", "int", -1), Attr("eps", "float", 1e-12, minimum=0)),
        decompose=_normalize,
        receptive=lambda a, i: Receptive.GLOBAL,
    )
)

# --- training only -----------------------------------------------------------------------------

DROP_PATH = _unary(
    "drop_path",
    "Stochastic depth: in training, zero the whole sample with probability p and scale "
    "the rest by 1/(1-p); identity at inference.",
    attrs=(Attr("p", "float", 0.0, minimum=0, below=1),),
    inference_noop=True,
    scales=True,
)
