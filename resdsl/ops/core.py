"""What an op is: its typed attributes, input arity, shape rule, parameter count and MACs.

Shapes are per sample (the batch dimension is implicit): ``(C, H, W)`` for feature maps,
``(F,)`` for vectors, ``(T, D)`` for token sequences.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Shape = tuple[int, ...]
Attrs = Mapping[str, Any]


class Group(enum.Enum):
    """Coarse op families, so passes test membership instead of listing op names."""

    SOURCE = "source"  # graph inputs
    LAYER = "layer"  # owns parameters (conv, linear, norm)
    ELEMENTWISE = "elementwise"  # output shape == input shape, pointwise
    REDUCE = "reduce"  # pooling
    MOVEMENT = "movement"  # reshape, concat
    MERGE = "merge"  # combines inputs of one shape (add)


class OpShapeError(Exception):
    """Raised by a shape rule; the elaborator attaches the source span."""

    def __init__(self, message: str, hints: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.hints = list(hints)


class AttrError(Exception):
    """Raised while binding call arguments to attributes. ``at`` is the argument index or key."""

    def __init__(self, kind: str, message: str, at: int | str | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.at = kind, message, at


REQUIRED: Any = object()


@dataclass(frozen=True)
class Attr:
    """One typed attribute. ``kind`` is one of: int, float, bool, str, pair, ints, padding,
    and optional_{pair,float,int,ints} (which also take ``None``, written ``auto``)."""

    name: str
    kind: str
    default: Any = REQUIRED
    minimum: float | None = None
    below: float | None = None  # exclusive upper bound
    choices: tuple[str, ...] = ()
    doc: str = ""

    def check(self, value: Any) -> Any:
        """Validate and normalise ``value`` (pairs become 2-tuples); raise AttrError."""
        value = _COERCE[self.kind](self, value)
        for v in value if isinstance(value, tuple) else (value,):
            if self.minimum is not None and isinstance(v, int | float) and v < self.minimum:
                raise AttrError("value", f"`{self.name}` must be >= {self.minimum}, got {v}")
            if self.below is not None and isinstance(v, int | float) and v >= self.below:
                raise AttrError("value", f"`{self.name}` must be below {self.below}, got {v}")
        return value


def _type_name(value: Any) -> str:
    """The spec's name for a value's type; a value of a later stage (``ir.TensorValue``)
    names itself with a ``spec_type`` class attribute, so the op table need not know it."""
    return {bool: "bool", int: "int", float: "float", str: "str", tuple: "tuple"}.get(
        type(value), getattr(value, "spec_type", type(value).__name__)
    )


def _expect(attr: Attr, value: Any, wanted: str) -> AttrError:
    return AttrError(
        "type", f"`{attr.name}` expects {wanted}, got {_type_name(value)} {spec_text(value)}"
    )


def spec_text(value: Any) -> str:
    """A value as spec text: ``true`` rather than Python's ``True``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "(" + ", ".join(map(spec_text, value)) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, int | float):
        return repr(value)
    return ""


def _as_int(attr: Attr, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _expect(attr, v, "an int")
    return v


def _as_float(attr: Attr, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _expect(attr, v, "a number")
    return float(v)


def _as_bool(attr: Attr, v: Any) -> bool:
    if not isinstance(v, bool):
        raise _expect(attr, v, "true or false")
    return v


def _as_str(attr: Attr, v: Any) -> str:
    if not isinstance(v, str):
        raise _expect(attr, v, "a string")
    if attr.choices and v not in attr.choices:
        raise AttrError("value", f"`{attr.name}` must be one of {', '.join(attr.choices)}")
    return v


def _as_pair(attr: Attr, v: Any) -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    if isinstance(v, tuple) and len(v) == 2 and all(type(i) is int for i in v):
        return v
    raise _expect(attr, v, "an int or a pair of ints")


def _as_padding(attr: Attr, v: Any) -> tuple[int, int] | str:
    if isinstance(v, str):
        if v not in ("same", "valid"):
            raise AttrError("value", f'`{attr.name}` must be an int, a pair, "same" or "valid"')
        return (0, 0) if v == "valid" else v
    return _as_pair(attr, v)


def _as_ints(attr: Attr, v: Any) -> tuple[int, ...]:
    if isinstance(v, int) and not isinstance(v, bool):
        return (v,)
    if isinstance(v, tuple) and all(type(i) is int for i in v):
        return v
    raise _expect(attr, v, "an int or a tuple of ints")


def _as_numbers(attr: Attr, v: Any) -> tuple[int | float, ...]:
    if isinstance(v, tuple) and all(type(i) in (int, float) for i in v):
        return v
    raise _expect(attr, v, "a tuple of numbers")


def _as_optional_pair(attr: Attr, v: Any) -> tuple[int, int] | None:
    return None if v is None else _as_pair(attr, v)


def _as_optional_float(attr: Attr, v: Any) -> float | None:
    return None if v is None else _as_float(attr, v)


def _as_optional_int(attr: Attr, v: Any) -> int | None:
    return None if v is None else _as_int(attr, v)


_COERCE: dict[str, Callable[[Attr, Any], Any]] = {
    "int": _as_int,
    "float": _as_float,
    "bool": _as_bool,
    "str": _as_str,
    "pair": _as_pair,
    "ints": _as_ints,
    "optional_pair": _as_optional_pair,
    "optional_float": _as_optional_float,
    "optional_int": _as_optional_int,
    "optional_ints": lambda attr, v: None if v is None else _as_ints(attr, v),
    "optional_numbers": lambda attr, v: None if v is None else _as_numbers(attr, v),
    "padding": _as_padding,
}


def _zero(attrs: Attrs, inputs: Sequence[Shape], out: Shape) -> int:
    return 0


@dataclass(frozen=True)
class Weight:
    """A tensor an op owns, named as in PyTorch's state_dict (``weight``, ``running_mean``)."""

    name: str
    shape: Shape
    trainable: bool = True  # False for buffers such as batch-norm running statistics
    dtype: str = "float32"
    # Initial value, as PyTorch's layers do by default: "uniform" draws from
    # U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (or U(-value, value) when ``value`` is given);
    # "normal" from N(0, std^2); "constant" is ``value``; "zeros" and "ones".
    init: str = "uniform"
    fan_in: int = 1
    std: float = 0.02
    value: float | None = None
    required: bool = True  # False: may be absent from a checkpoint (unused at inference)
    values: tuple[float, ...] | None = None  # init "values": the elements, row-major


def weight_key(node: str, weight: str) -> str:
    """The state_dict key of a node's weight; a weight named "" is the node itself
    (a learnable tensor such as ViT's ``class_token``)."""
    return f"{node}.{weight}" if weight else node


def _no_weights(attrs: Attrs, inputs: Sequence[Shape]) -> tuple[Weight, ...]:
    return ()


class Receptive(enum.Enum):
    """How an op moves a feature map's receptive field (``tools.analysis``)."""

    POINTWISE = "pointwise"  # each output pixel reads the same input pixel (relu, add, bn)
    WINDOW = "window"  # a sliding window: attributes kernel, stride (default the kernel), dilation
    ADAPTIVE = "adaptive"  # adaptive pooling to ``output_size``
    GLOBAL = "global"  # every output may read every input pixel (global pooling, linear)
    REARRANGE = "rearrange"  # pixels move (reshape, permute, roll): the analysis stops here


@dataclass(frozen=True)
class Value:
    """A tensor inside a decomposition: an input of the composite (``ref`` -1 - i) or the
    output of step ``ref``; with its per-sample shape."""

    ref: int
    shape: Shape


@dataclass(frozen=True)
class Derived:
    """A step's weight computed from the composite's weights when the network is lowered
    (they are constants then): a weight-standardised convolution's conv reads
    ``fn(weight, gain)``. ``name`` labels the derived tensor (``{node}/{name}``)."""

    name: str
    sources: tuple[str, ...]  # the composite's weight names, the arguments of ``fn``
    fn: Callable[..., Any]  # NumPy arrays -> NumPy array of the step's weight shape


@dataclass(frozen=True)
class Step:
    """One op of a decomposition. ``weights`` maps the step's weight names to the
    composite's (so the composite's state_dict layout is kept: attention's ``in_proj_weight``
    is read by a ``linear`` step as its ``weight``), or to a :class:`Derived` tensor."""

    op: str
    inputs: tuple[Value, ...]
    attrs: Mapping[str, Any]
    shape: Shape
    label: str
    weights: Mapping[str, str | Derived]


class Decomposition:
    """What a composite's ``decompose`` function writes into: ``d.op("linear", x, ...)``
    binds and checks the attributes, infers the shape from the table and returns the step's
    :class:`Value`. The last step computes the composite's value."""

    def __init__(self, inputs: Sequence[Shape]) -> None:
        self.inputs = [Value(-1 - i, s) for i, s in enumerate(inputs)]
        self.steps: list[Step] = []

    def op(
        self,
        name: str,
        *inputs: Value,
        label: str = "",
        weights: Mapping[str, str | Derived] | None = None,
        **attrs: Any,
    ) -> Value:
        op = OPS[name]
        bound = op.bind((), attrs)
        shape = op.shape(bound, [v.shape for v in inputs])
        own = {w.name for w in op.weights(bound, [v.shape for v in inputs])}
        mapped = dict(weights or {})
        if own != set(mapped):  # a step's weights are always the composite's
            raise ValueError(f"step {name} owns weights {sorted(own)}, mapped {sorted(mapped)}")
        self.steps.append(Step(name, inputs, bound, shape, label or f"{name}{len(self.steps)}",
                               mapped))  # fmt: skip
        return Value(len(self.steps) - 1, shape)


Decompose = Callable[[Decomposition, Attrs], Value]


def always(kind: Receptive) -> Callable[[Attrs, Sequence[Shape]], Receptive]:
    """A receptive-field rule that does not depend on the attributes or shapes."""
    return lambda attrs, inputs: kind


def same_shape(attrs: Attrs, inputs: Sequence[Shape]) -> Shape:
    """The shape rule of an op whose output has its (first) input's shape."""
    return inputs[0]


def layer_weights(shape: Shape, bias: bool) -> tuple[Weight, ...]:
    """A convolution's or linear layer's ``weight`` (out, fan-in axes...) and ``bias``,
    initialised as PyTorch's layers are (uniform over 1/sqrt(fan_in))."""
    fan_in = math.prod(shape[1:])
    weight = Weight("weight", shape, fan_in=fan_in)
    return (weight, Weight("bias", shape[:1], fan_in=fan_in)) if bias else (weight,)


_never = always(Receptive.REARRANGE)


@dataclass(frozen=True)
class OpDef:
    """An entry of the op table. Passes and backends look ops up here; nothing re-derives it.

    An op is a *primitive*, which every backend emits itself, or a *composite*: ``decompose``
    writes it as other ops (into a :class:`Decomposition`), and a backend without an emitter
    of its own for it gets that expansion (:func:`resdsl.passes.decompose`). A composite's
    MACs default to the sum over its expansion.
    """

    name: str
    doc: str
    group: Group
    shape: Callable[[Attrs, Sequence[Shape]], Shape]
    attrs: tuple[Attr, ...] = ()
    inputs: int | None = 1  # tensor inputs; None: variadic, at least ``min_inputs``
    min_inputs: int = 1
    weights: Callable[[Attrs, Sequence[Shape]], tuple[Weight, ...]] = _no_weights
    macs: Callable[[Attrs, Sequence[Shape], Shape], int] | None = None  # None: 0, or the
    decompose: Decompose | None = None  #   sum over the decomposition for a composite
    # --- what passes and tools need to know about the op ---
    inference_noop: bool = False  # returns its input at inference (dropout): passes drop it
    receptive: Callable[[Attrs, Sequence[Shape]], Receptive] = _never
    depth: bool = False  # counts as one layer of a path's depth (conv, linear, attention)
    scales: bool = False  # its output is its input scaled: draw follows a skip through it
    # f(0) = 0: the canonical fingerprint (resdsl.search.fingerprint) makes it a zero when
    # its input is one; a function of the attributes where it depends on them (a bias)
    maps_zero: bool | Callable[[Attrs], bool] = False
    symbol: str = ""  # drawn as this symbol in a circle (merges: "+")
    detail: Callable[[Attrs], str] | None = None  # drawn after the op's name: " 64, 3x3 /2"

    def keeps_zero(self, attrs: Attrs) -> bool:
        """Whether the op maps an all-zero input to an all-zero output."""
        return self.maps_zero(attrs) if callable(self.maps_zero) else self.maps_zero

    @property
    def composite(self) -> bool:
        return self.decompose is not None

    def expand(self, attrs: Attrs, inputs: Sequence[Shape]) -> Decomposition:
        """The composite's decomposition for these attributes and input shapes."""
        if self.decompose is None:
            raise ValueError(f"`{self.name}` is a primitive")
        d = Decomposition(inputs)
        out = self.decompose(d, attrs)
        if out.ref != len(d.steps) - 1:  # the value is the last step's
            raise ValueError(f"`{self.name}`'s decomposition does not end with its value")
        return d

    def count_macs(self, attrs: Attrs, inputs: Sequence[Shape], out: Shape) -> int:
        if self.macs is not None:
            return self.macs(attrs, inputs, out)
        if self.decompose is None:
            return 0
        return sum(
            OPS[s.op].count_macs(s.attrs, [v.shape for v in s.inputs], s.shape)
            for s in self.expand(attrs, inputs).steps
        )

    def params(self, attrs: Attrs, inputs: Sequence[Shape], out: Shape | None = None) -> int:
        """Trainable parameters: the elements of the trainable weights."""
        return sum(math.prod(w.shape) for w in self.weights(attrs, inputs) if w.trainable)

    def bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Bind positional and keyword attribute values; fill defaults; validate each."""
        if len(args) > len(self.attrs):
            raise AttrError(
                "argument",
                f"`{self.name}` takes at most {len(self.attrs)} attribute argument(s), "
                f"got {len(args)}",
                len(self.attrs),
            )
        names = [a.name for a in self.attrs]
        values: dict[str, Any] = {}
        for i, v in enumerate(args):
            values[names[i]] = (i, v)
        for key, v in kwargs.items():
            if key not in names:
                raise AttrError("unknown", f"`{self.name}` has no argument `{key}`", key)
            if key in values:
                raise AttrError("argument", f"`{key}` is given twice", key)
            values[key] = (key, v)
        out: dict[str, Any] = {}
        for attr in self.attrs:
            if attr.name in values:
                at, v = values[attr.name]
                try:
                    out[attr.name] = attr.check(v)
                except AttrError as e:
                    e.at = at
                    raise
            elif attr.default is REQUIRED:
                raise AttrError("missing", f"`{self.name}` needs `{attr.name}`", None)
            else:
                out[attr.name] = attr.default
        return out

    def signature(self) -> str:
        """``conv2d(out_channels: int, kernel: pair, stride: pair = 1, ...)``."""
        parts = []
        for a in self.attrs:
            default = "" if a.default is REQUIRED else f" = {_fmt(a.default)}"
            parts.append(f"{a.name}: {a.kind}{default}")
        return f"{self.name}({', '.join(parts)})"


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if v is None:
        return "auto"
    return str(v)


OPS: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    if op.name in OPS:
        raise ValueError(f"op {op.name} registered twice")
    OPS[op.name] = op
    return op
