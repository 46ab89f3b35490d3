"""Caffe ``deploy.prototxt`` files as resdsl graphs.

:func:`parse_prototxt` reads Protocol Buffers' text format (``grammars/prototxt.lark``,
LALR) into :class:`Message` trees whose every :class:`Field` keeps its line and column;
:func:`import_prototxt` turns a ``NetParameter`` into an :class:`~.graph.Imported` graph.
Nothing is executed and no weights are read: only the net's structure.

The net is walked in layer order, as Caffe runs it. A blob name stands for the value its
last writer produced, so in-place layers (``top == bottom``: ReLU, BatchNorm, Scale) chain
as they do in Caffe. Shapes are tracked with the op table's own rules, so a wrong layer is
reported at its line, and global pooling knows its window. The net's outputs are the blobs
nothing reads after their last write (Caffe's rule).

The layers (and their parameters) that have an equivalent:

==================  ==========================================================================
Convolution         ``conv2d`` (2-D: kernel, stride, pad, dilation, group, bias_term)
BatchNorm + Scale   one ``batchnorm2d`` (eps): a ``Scale`` with ``bias_term: true`` right
                    after the BatchNorm, reading only its output; a BatchNorm alone is
                    ``batchnorm2d(affine=false)``. The label is the BatchNorm's name.
ReLU                ``relu`` (``negative_slope: 0`` only)
Pooling             ``maxpool2d`` / ``avgpool2d`` with ``ceil_mode=true`` (Caffe rounds the
                    output size up, and drops a last window that would start in the right
                    padding, as PyTorch's ``ceil_mode`` does); global pooling: AVE is
                    ``global_avgpool`` when only InnerProducts read it (they flatten anyway),
                    else ``adaptive_avgpool2d(1)``; MAX is ``maxpool2d`` over the whole map
Eltwise             SUM: ``add`` (``coeff`` all 1; ``[1, -1]``: ``sub``); PROD: ``mul``
InnerProduct        ``flatten`` (unless the input is flat) + ``linear``
Softmax, Concat     ``softmax``, ``concat`` (the axis less the batch axis)
Dropout             ``dropout`` (``scale_train: true``, Caffe's default)
Flatten, Split      ``flatten``; nothing (its tops are its bottom)
Sigmoid, TanH       ``sigmoid``, ``tanh``; AbsVal: ``abs``
Input               the network's inputs (so are ``input`` + ``input_shape`` / ``input_dim``)
==================  ==========================================================================

Caffe's average pooling divides by the window clipped to the *padded* input (the padding
counts, the part of a ceil-mode window past the padding does not): PyTorch's
``count_include_pad=True`` with ``ceil_mode=True`` computes the same divisor, which
tests/test_import_caffe.py checks against a port of Caffe's loop. Batch dimensions are
dropped: shapes are per sample. Layers of the TRAIN phase (``include { phase: TRAIN }``)
are skipped, as Caffe skips them in a deploy net.

Every layer type or parameter without an equivalent is collected (``path:line (layer
NAME)``) and reported in one :class:`~.graph.ModelImportError` at the end.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from ..errors import (
    ArgumentError,
    DidYouMean,
    LimitError,
    ShapeError,
    Span,
    SpecSyntaxError,
    TypeMismatchError,
    UnknownNameError,
    ValueRangeError,
    remember_source,
    shown_path,
)
from ..loader import read_text
from ..names import reserved
from ..ops import OPS
from ..ops.core import AttrError, OpShapeError
from .graph import Call, Imported, ModelImportError, Unsupported

__all__ = ["Field", "Message", "Word", "import_prototxt", "parse_prototxt"]

# Real deploy nets are well under 1 MB (ResNet-152's is 98 KB); parsing costs about 10 us
# of CPU per byte, so a bound keeps a hostile file within seconds.
MAX_PROTOTXT_SIZE = 4 * 1024 * 1024
MAX_DEPTH = 100  # nesting of messages and lists; deeper input is refused before parsing
MAX_NUMBER_DIGITS = 100  # a longer numeral is refused (Python refuses int() past 4,300)


# --- the text format ---------------------------------------------------------------------------


class Word(str):
    """A bare identifier as a value: an enum value (``MAX``), ``true``, ``inf``."""

    __slots__ = ()


@dataclass(frozen=True)
class Field:
    """``name: value`` or ``name { ... }``, with where it is in its file."""

    name: str
    value: Any  # int | float | str | Word | Message
    span: Span

    @property
    def line(self) -> int:
        return self.span.line


@dataclass
class Message:
    """A message of the text format: its fields in file order (repeated ones repeat)."""

    fields: list[Field] = field(default_factory=list)
    span: Span | None = None  # where it opens (its field's name); None for the file

    def all(self, name: str) -> list[Field]:
        """Every field called ``name``, in order."""
        return [f for f in self.fields if f.name == name]

    def get(self, name: str) -> Field | None:
        """The one field called ``name`` (None when absent); given twice is an error."""
        found = self.all(name)
        if len(found) > 1:
            raise ArgumentError(
                f"`{name}` is given {len(found)} times; it takes one value", found[1].span
            )
        return found[0] if found else None

    def names(self) -> list[str]:
        return list(dict.fromkeys(f.name for f in self.fields))


@lru_cache(maxsize=1)
def _parser() -> Lark:
    text = resources.files("resdsl.grammars").joinpath("prototxt.lark").read_text("utf-8")
    return Lark(text, parser="lalr", propagate_positions=True, maybe_placeholders=False)


# strings and comments (skipped), and brackets
_BRACKETS = re.compile(
    r"""#[^\n]*|"[^"\\\n]*(?:\\.[^"\\\n]*)*"?|'[^'\\\n]*(?:\\.[^'\\\n]*)*'?|[{<\[]|[}>\]]"""
)


def parse_prototxt(text: str, path: str = "<string>") -> Message:
    """Parse Protocol Buffers' text format (a Caffe ``.prototxt``) into a :class:`Message`.

    Raises :class:`SpecSyntaxError` (located) for text that is not the format,
    :class:`LimitError` for input too large or too deeply nested."""
    remember_source(path, text)
    if len(text) > MAX_PROTOTXT_SIZE:
        raise LimitError(
            f"the file has {len(text):,} characters, more than the limit of {MAX_PROTOTXT_SIZE:,}",
            Span(path, 1, 1, 1, 1),
        )
    depth = 0
    for m in _BRACKETS.finditer(text):
        char = m.group()
        if char in "{<[":
            depth += 1
            if depth > MAX_DEPTH:
                raise LimitError(
                    f"messages nested more than {MAX_DEPTH} deep", _at(text, m.start(), path)
                )
        elif char in "}>]":
            depth = max(0, depth - 1)
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(e, text, path) from None
    return Message(_fields(tree.children, path))


def _at(text: str, pos: int, path: str) -> Span:
    line = text.count("\n", 0, pos) + 1
    column = pos - text.rfind("\n", 0, pos)
    return Span(path, line, column, line, column + 1)


def _tok_span(tok: Token, path: str) -> Span:
    return Span(path, tok.line, tok.column, tok.end_line, tok.end_column)


def _fields(children: list, path: str) -> list[Field]:
    out = []
    for node in children:
        if not isinstance(node, Tree):
            continue
        name, rest = node.children[0], node.children[1:]
        span = _tok_span(name, path)
        if node.data == "scalar_field":
            out.append(Field(str(name), _value(rest[0], path), span))
        elif node.data == "message_field":
            out.append(Field(str(name), Message(_fields(rest, path), span), span))
        else:  # list_field: each item a field of the same name
            for item in rest:
                if isinstance(item, Tree) and item.data == "message":
                    inner = Message(_fields(item.children, path), span)
                    out.append(Field(str(name), inner, span))
                elif isinstance(item, Tree):
                    out.append(Field(str(name), _value(item, path), span))
    return out


def _value(node: Tree, path: str) -> Any:
    if node.data == "string":
        return "".join(_unquote(t, path) for t in node.children)
    tok = node.children[0]
    if node.data == "word":
        return Word(tok)
    if node.data == "negative_word":
        return Word("-" + tok)
    return _number(tok, path)


def _number(tok: Token, path: str) -> int | float:
    text = str(tok)
    if len(text) > MAX_NUMBER_DIGITS:
        raise LimitError(f"a number of more than {MAX_NUMBER_DIGITS} characters",
                         _tok_span(tok, path))  # fmt: skip
    sign, body = (-1, text[1:]) if text[0] == "-" else (1, text.lstrip("+"))
    try:
        if body[:2] in ("0x", "0X"):
            return sign * int(body, 16)
        if any(c in body for c in ".eEfF"):
            return sign * float(body.rstrip("fF"))
        if len(body) > 1 and body[0] == "0":
            return sign * int(body, 8)  # the text format reads a leading 0 as octal
        return sign * int(body)
    except ValueError:
        raise SpecSyntaxError(f"`{text}` is not a number", _tok_span(tok, path)) from None


_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)")
_SIMPLE = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
           "\\": "\\", "'": "'", '"': '"', "?": "?"}  # fmt: skip


def _unquote(tok: Token, path: str) -> str:
    def replace(m: re.Match) -> str:
        e = m.group(1)
        if e in _SIMPLE:
            return _SIMPLE[e]
        base = 16 if e[0] in "xuU" else 8 if e[0] in "01234567" else 0
        if base == 16:
            code = int(e[1:], 16)
        elif base == 8:
            code = int(e, 8)
        else:
            raise SpecSyntaxError(f"unknown escape `\\{e}` in a string", _tok_span(tok, path))
        if code > 0x10FFFF:
            raise SpecSyntaxError(f"escape `\\{e}` is past Unicode", _tok_span(tok, path))
        return chr(code)

    return _ESCAPE.sub(replace, str(tok)[1:-1])


_FRIENDLY = {"NAME": "a field name", "NUMBER": "a number", "STRING": "a string",
             "$END": "end of file", "LBRACE": "`{`", "RBRACE": "`}`", "LESSTHAN": "`<`",
             "MORETHAN": "`>`", "LSQB": "`[`", "RSQB": "`]`", "COLON": "`:`",
             "COMMA": "`,`", "MINUS": "`-`", "SEMICOLON": "`;`"}  # fmt: skip


def _syntax_error(e: UnexpectedInput, text: str, path: str) -> SpecSyntaxError:
    line, column, width, hints = max(e.line, 1), max(e.column, 1), 1, []
    if isinstance(e, UnexpectedToken) and e.token.type != "$END":
        tok = e.token
        found = "a string" if tok.type == "STRING" else f"`{tok.value}`"
        width = max(1, len(str(tok.value))) if tok.end_line == tok.line else 1
        expected = set(e.accepts or e.expected)
    elif isinstance(e, UnexpectedToken | UnexpectedEOF):
        found, width = "end of file", 0
        lines = text.split("\n")
        if len(lines) > 1 and not lines[-1]:
            lines.pop()
        line, column = len(lines), len(lines[-1]) + 1
        expected = set(getattr(e, "accepts", None) or e.expected)
        if "RBRACE" in expected or "MORETHAN" in expected:
            hints.append("a message is left open: close it with `}`")
    else:
        char = text[e.pos_in_stream] if isinstance(e, UnexpectedCharacters) else "?"
        found, expected = f"character {char!r}", set()
        if char in "\"'":
            hints.append("a string ends with its quote on the line it starts")
    words = sorted({_FRIENDLY.get(t, f"`{t.lower()}`") for t in expected if t != "$END"})
    message = f"unexpected {found}" + (f"; expected {', '.join(words)}" if words else "")
    if expected == {"COLON"} or ("COLON" in expected and "LBRACE" in expected):
        hints.append("a field is `name: value` or `name { ... }`")
    return SpecSyntaxError(message, Span(path, line, column, line, column + width), hints=hints)


# --- reading typed values ----------------------------------------------------------------------


def _describe(value: Any) -> str:
    if isinstance(value, Message):
        return "a message"
    if isinstance(value, Word):
        return f"`{value}`"
    if isinstance(value, str):
        return "a string"
    return f"`{value}`"


def _type_error(f: Field, wanted: str) -> TypeMismatchError:
    return TypeMismatchError(f"`{f.name}` takes {wanted}, got {_describe(f.value)}", f.span)


def _as_int(f: Field, minimum: int | None = 0) -> int:
    if type(f.value) is not int:
        raise _type_error(f, "an integer")
    if minimum is not None and f.value < minimum:
        raise ValueRangeError(f"`{f.name}` must be >= {minimum}, got {f.value}", f.span)
    return f.value


def _as_float(f: Field) -> float:
    v = f.value
    if type(v) in (int, float):
        return float(v)
    if isinstance(v, Word) and v.lower() in ("inf", "-inf", "infinity", "-infinity", "nan"):
        return float(v)
    raise _type_error(f, "a number")


def _as_bool(f: Field) -> bool:
    v = f.value
    if isinstance(v, Word) and v in ("true", "True", "t"):
        return True
    if isinstance(v, Word) and v in ("false", "False", "f"):
        return False
    if type(v) is int and v in (0, 1):
        return bool(v)
    raise _type_error(f, "`true` or `false`")


def _as_word(f: Field) -> str:
    if not isinstance(f.value, Word):
        raise _type_error(f, "a name (an enum value)")
    return str(f.value)


def _as_str(f: Field) -> str:
    if not isinstance(f.value, str) or isinstance(f.value, Word):
        raise _type_error(f, "a quoted string")
    return f.value


def _as_message(f: Field) -> Message:
    if not isinstance(f.value, Message):
        raise _type_error(f, "a message `{ ... }`")
    return f.value


def _int(m: Message, name: str, default: int | None = None, minimum: int | None = 0):
    f = m.get(name)
    return default if f is None else _as_int(f, minimum)


def _float(m: Message, name: str, default: float) -> float:
    f = m.get(name)
    return default if f is None else _as_float(f)


def _bool(m: Message, name: str, default: bool) -> bool:
    f = m.get(name)
    return default if f is None else _as_bool(f)


def _word(m: Message, name: str, default: str) -> str:
    f = m.get(name)
    return default if f is None else _as_word(f)


def _ints(m: Message, name: str, minimum: int | None = 0) -> list[int]:
    return [_as_int(f, minimum) for f in m.all(name)]


def _message(m: Message, name: str) -> Message:
    f = m.get(name)
    return Message([], None) if f is None else _as_message(f)


# --- the net -----------------------------------------------------------------------------------


@dataclass
class _Value:
    """What a blob name stands for: a call's (or input's) id and its per-sample shape;
    ``id`` None when an unsupported layer produced it (its readers make no calls)."""

    id: str | None
    shape: tuple[int, ...] = ()


_POISON = _Value(None)

# fields of a layer that do not change what the deployed net computes
_LAYER_FIELDS = {"name", "type", "bottom", "top", "phase", "loss_weight", "param", "blobs",
                 "propagate_down", "include", "exclude"}  # fmt: skip
_FILLERS = {"weight_filler", "bias_filler", "filler", "engine"}
# each supported type: its parameter message and the fields of it that are read or inert
_PARAMS: dict[str, tuple[str, set[str]]] = {
    "Convolution": ("convolution_param", {
        "num_output", "bias_term", "pad", "kernel_size", "stride", "dilation", "pad_h",
        "pad_w", "kernel_h", "kernel_w", "stride_h", "stride_w", "group", "axis",
        "force_nd_im2col"}),
    "Pooling": ("pooling_param", {
        "pool", "pad", "pad_h", "pad_w", "kernel_size", "kernel_h", "kernel_w", "stride",
        "stride_h", "stride_w", "global_pooling", "round_mode"}),
    "BatchNorm": ("batch_norm_param", {"use_global_stats", "moving_average_fraction", "eps"}),
    "Scale": ("scale_param", {"axis", "num_axes", "bias_term"}),
    "ReLU": ("relu_param", {"negative_slope"}),
    "InnerProduct": ("inner_product_param", {"num_output", "bias_term", "axis", "transpose"}),
    "Softmax": ("softmax_param", {"axis"}),
    "Concat": ("concat_param", {"axis", "concat_dim"}),
    "Eltwise": ("eltwise_param", {"operation", "coeff", "stable_prod_grad"}),
    "Dropout": ("dropout_param", {"dropout_ratio", "scale_train"}),
    "Flatten": ("flatten_param", {"axis", "end_axis"}),
    "Input": ("input_param", {"shape"}),
    "Split": ("", set()),
    "Sigmoid": ("sigmoid_param", set()),
    "TanH": ("tanh_param", set()),
    "AbsVal": ("", set()),
}  # fmt: skip
_UNARY = {"Sigmoid": "sigmoid", "TanH": "tanh", "AbsVal": "abs"}


@dataclass
class _Layer:
    index: int
    msg: Message
    span: Span
    name: str
    type: str
    bottoms: list[Field]
    tops: list[Field]


def import_prototxt(path: str) -> Imported:
    """The network of a Caffe ``deploy.prototxt`` as an :class:`Imported` graph."""
    return import_prototxt_text(_read(path), path)


def import_prototxt_text(text: str, path: str = "<string>") -> Imported:
    """Like :func:`import_prototxt`, from the file's text (``path`` names it in errors)."""
    return _Net(parse_prototxt(text, path), path).run()


def _read(path: str) -> str:
    shown = shown_path(os.fspath(path))

    def check(size: int) -> None:
        if size > MAX_PROTOTXT_SIZE:
            raise LimitError(
                f"{shown} has {size:,} bytes, more than the limit of {MAX_PROTOTXT_SIZE:,}"
            )

    return read_text(path, check)


def _segment(name: str) -> str:
    """A layer name as a label segment: other characters than letters, digits, `_` and
    `-` become `_` (``conv1/7x7_s2`` -> ``conv1_7x7_s2``), a reserved name gets a `_`."""
    text = re.sub(r"[^A-Za-z0-9_-]", "_", name) or "layer"
    while reserved(text):
        text += "_"
    return text


def _two(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else v


class _Net:
    def __init__(self, net: Message, path: str) -> None:
        self.net, self.path = net, path
        self.calls: list[Call] = []
        self.inputs: list[tuple[str, tuple[int, ...]]] = []
        self.blobs: dict[str, _Value] = {}
        self.read: set[str] = set()  # ids some call reads
        self.order: list[str] = []  # blob names in the order of their first write
        self.ids: set[str] = set()
        self.labels: set[str] = set()
        self.unsupported: list[Unsupported] = []

    # -- the walk --

    def run(self) -> Imported:
        net, path = self.net, self.path
        if net.all("layers"):
            first = net.all("layers")[0]
            raise ModelImportError(path, [Unsupported(
                f"{path}:{first.line}",
                "Caffe's V1 net format (`layers { ... }`): convert it with Caffe's "
                "upgrade_net_proto_text first",
            )])  # fmt: skip
        name_field = net.get("name")
        name = _as_str(name_field) if name_field else os.path.basename(path).split(".")[0]
        self._net_inputs()
        layers = self._layers()
        readers = self._readers(layers)
        self._types = [layer.type for layer in layers]
        skip: set[int] = set()
        for i, layer in enumerate(layers):
            if i in skip:
                continue
            if layer.type == "BatchNorm":
                fused = self._fuses(layer, layers, readers)
                if fused:
                    skip.add(i + 1)
                self._batchnorm(layer, layers[i + 1] if fused else None)
                continue
            self._layer(layer, readers)
        if self.unsupported:
            raise ModelImportError(path, self.unsupported)
        outputs = [
            v.id
            for b in self.order
            if (v := self.blobs[b]).id is not None and v.id not in self.read
            and v.id not in {n for n, _ in self.inputs}
        ]  # fmt: skip
        if not outputs:
            raise ValueRangeError(
                "the net computes nothing: every blob its layers write is read again",
                Span(path, 1, 1, 1, 1),
            )
        return Imported(name or "net", self.inputs, self.calls, outputs, {}, origin=path)

    def _net_inputs(self) -> None:
        """``input: "data"`` with ``input_shape { dim: ... }`` or four ``input_dim`` each."""
        net = self.net
        names = net.all("input")
        shapes = [_as_message(f) for f in net.all("input_shape")]
        dims = net.all("input_dim")
        if not names:
            if shapes or dims:
                f = (net.all("input_shape") or dims)[0]
                raise ArgumentError("an input shape without an `input` name", f.span)
            return
        if shapes:
            if len(shapes) != len(names):
                raise ArgumentError(
                    f"{len(names)} `input`(s) but {len(shapes)} `input_shape`(s)",
                    names[0].span,
                )
            per = [_ints(s, "dim", 1) for s in shapes]
        elif dims:
            if len(dims) != 4 * len(names):
                raise ArgumentError(
                    f"{len(names)} `input`(s) need {4 * len(names)} `input_dim`s, got {len(dims)}",
                    dims[0].span,
                )
            values = [_as_int(f, 1) for f in dims]
            per = [values[4 * k : 4 * k + 4] for k in range(len(names))]
        else:
            raise ArgumentError("`input` without `input_shape` or `input_dim`", names[0].span)
        for f, shape in zip(names, per, strict=True):
            self._input(_as_str(f), shape, f.span)

    def _input(self, blob: str, dims: list[int], span: Span) -> None:
        if len(dims) < 2:
            raise ShapeError(
                f"input `{blob}` has shape {tuple(dims)}: it needs a batch axis and at least "
                "one more",
                span,
            )
        shape = tuple(dims[1:])  # the batch axis is dropped: shapes are per sample
        if any(d < 1 for d in shape):
            raise ValueRangeError(f"input `{blob}` has an empty shape {shape}", span)
        ident = self._id(blob)
        self.inputs.append((ident, shape))
        self._write(blob, _Value(ident, shape))

    def _layers(self) -> list[_Layer]:
        out = []
        for f in self.net.all("layer"):
            msg = _as_message(f)
            name_f, type_f = msg.get("name"), msg.get("type")
            if type_f is None:
                raise ArgumentError("a layer without a `type`", f.span)
            name = _as_str(name_f) if name_f else f"layer{len(out)}"
            layer = _Layer(len(out), msg, f.span, name, _as_str(type_f),
                           msg.all("bottom"), msg.all("top"))  # fmt: skip
            for b in (*layer.bottoms, *layer.tops):
                _as_str(b)
            if self._deployed(layer):
                out.append(layer)
        return [
            _Layer(i, la.msg, la.span, la.name, la.type, la.bottoms, la.tops)
            for i, la in enumerate(out)
        ]

    def _deployed(self, layer: _Layer) -> bool:
        """Whether the layer runs in the TEST phase (a deploy net's): ``include``/``exclude``
        rules by phase; a rule by stage or level is not supported."""
        rules = [(True, _as_message(f)) for f in layer.msg.all("include")]
        rules += [(False, _as_message(f)) for f in layer.msg.all("exclude")]
        phase = _word(layer.msg, "phase", "TEST")
        if phase not in ("TEST", "TRAIN"):
            raise ValueRangeError(f"unknown phase `{phase}`", layer.msg.get("phase").span)
        if phase == "TRAIN":
            return False
        for _, rule in rules:
            for other in rule.names():
                if other != "phase":
                    self._unsupported(layer, f"a layer rule by `{other}`")
        included = [r for inc, r in rules if inc]
        excluded = [r for inc, r in rules if not inc]
        if any(_word(r, "phase", "TEST") == "TEST" for r in excluded):
            return False
        return not included or any(_word(r, "phase", "TEST") == "TEST" for r in included)

    def _readers(self, layers: list[_Layer]) -> dict[tuple[str, int], list[int]]:
        """For each (blob, index of the layer that wrote it): the layers that read it."""
        version: dict[str, int] = {}
        readers: dict[tuple[str, int], list[int]] = defaultdict(list)
        for layer in layers:
            for b in layer.bottoms:
                readers[(b.value, version.get(b.value, -1))].append(layer.index)
            for t in layer.tops:
                version[t.value] = layer.index
        return readers

    # -- helpers --

    def _where(self, layer: _Layer) -> str:
        return f"{self.path}:{layer.span.line} (layer {layer.name})"

    def _unsupported(self, layer: _Layer, what: str) -> None:
        item = Unsupported(self._where(layer), what)
        if item not in self.unsupported:
            self.unsupported.append(item)

    def _id(self, base: str) -> str:
        text = re.sub(r"[^A-Za-z0-9_.-]", "_", base) or "v"
        ident, k = text, 1
        while ident in self.ids:
            k += 1
            ident = f"{text}_{k}"
        self.ids.add(ident)
        return ident

    def _label(self, layer: _Layer) -> str:
        base = _segment(layer.name)
        label, k = base, 1
        while label in self.labels:
            k += 1
            label = f"{base}_{k}"
        self.labels.add(label)
        return label

    def _write(self, blob: str, value: _Value) -> None:
        if blob not in self.blobs:
            self.order.append(blob)
        self.blobs[blob] = value

    def _bottoms(self, layer: _Layer, count: int | None = 1, least: int = 1) -> list[_Value]:
        """The values the layer reads: ``count`` of them (None: at least ``least``)."""
        n = len(layer.bottoms)
        if (count is not None and n != count) or n < least:
            want = f"{count}" if count is not None else f"at least {least}"
            raise ArgumentError(
                f"a {layer.type} layer reads {want} bottom blob(s), layer `{layer.name}` has {n}",
                layer.span,
            )
        out = []
        for b in layer.bottoms:
            if b.value not in self.blobs:
                raise UnknownNameError(
                    f"layer `{layer.name}` reads the blob `{b.value}`, which no earlier "
                    "layer writes",
                    b.span,
                    hints=DidYouMean(list(self.blobs)).hint(b.value),
                )
            out.append(self.blobs[b.value])
        return out

    def _tops(self, layer: _Layer, count: int = 1) -> list[Field]:
        if len(layer.tops) != count:
            raise ArgumentError(
                f"a {layer.type} layer writes {count} top blob(s), layer `{layer.name}` "
                f"has {len(layer.tops)}",
                layer.span,
            )
        return layer.tops

    def _param(self, layer: _Layer) -> Message:
        """The layer's own parameter message; unknown fields of it are unsupported."""
        key, known = _PARAMS[layer.type]
        msg = _message(layer.msg, key) if key else Message()
        for name in msg.names():
            if name not in known and name not in _FILLERS:
                self._unsupported(layer, f"{layer.type} parameter `{name}`")
        return msg

    def _call(self, layer: _Layer, op: str, attrs: dict[str, Any], inputs: list[_Value],
              label: str | None = None, suffix: str = "") -> _Value:  # fmt: skip
        """Append one call, its shape from the op table's rule (errors at the layer)."""
        spec = OPS[op]
        try:
            bound = spec.bind((), attrs)
            shape = tuple(spec.shape(bound, [v.shape for v in inputs]))
        except AttrError as e:
            raise ValueRangeError(
                f"layer `{layer.name}` ({layer.type}): {e.message}", layer.span
            ) from None
        except OpShapeError as e:
            raise ShapeError(
                f"layer `{layer.name}` ({layer.type}): {e.message}", layer.span, hints=e.hints
            ) from None
        ident = self._id(layer.name + suffix)
        self.read.update(v.id for v in inputs)
        self.calls.append(Call(ident, op, attrs, [v.id for v in inputs], label,
                               source=f"{self.path}:{layer.span.line}"))  # fmt: skip
        return _Value(ident, shape)

    # -- layers --

    def _layer(self, layer: _Layer, readers) -> None:
        kind = layer.type
        if kind not in _PARAMS:
            self._unsupported(layer, f"Caffe layer type {kind}")
            for t in layer.tops:
                self._write(t.value, _POISON)
            return
        if kind == "Input":
            param = self._param(layer)
            shapes = [_ints(_as_message(f), "dim", 1) for f in param.all("shape")]
            if len(shapes) not in (1, len(layer.tops)):
                raise ArgumentError(
                    f"an Input layer with {len(layer.tops)} top(s) and {len(shapes)} shape(s)",
                    layer.span,
                )
            for k, t in enumerate(layer.tops):
                self._input(t.value, shapes[0] if len(shapes) == 1 else shapes[k], t.span)
            return
        if kind == "Split":
            (value,) = self._bottoms(layer)
            for t in layer.tops:
                self._write(t.value, value)
            return
        many = kind in ("Eltwise", "Concat")
        inputs = self._bottoms(layer, None if many else 1, 2 if kind == "Eltwise" else 1)
        tops = self._tops(layer)
        before = len(self.unsupported)
        value = getattr(self, "_" + kind.lower(), self._unary)(layer, inputs, readers)
        if value is None or len(self.unsupported) > before:
            value = _POISON  # the layer is not imported: its readers make no calls
        self._write(tops[0].value, value)

    def _fuses(self, bn: _Layer, layers: list[_Layer], readers) -> bool:
        """A Scale with a bias right after the BatchNorm, the only reader of its output."""
        if bn.index + 1 >= len(layers) or len(bn.tops) != 1:
            return False
        scale, top = layers[bn.index + 1], bn.tops[0].value
        if scale.type != "Scale" or [b.value for b in scale.bottoms] != [top]:
            return False
        if readers.get((top, bn.index)) != [scale.index]:
            return False
        param = _message(scale.msg, "scale_param")
        return (
            _bool(param, "bias_term", False)
            and _int(param, "axis", 1, None) in (1, -3)
            and _int(param, "num_axes", 1, None) == 1
        )

    def _batchnorm(self, bn: _Layer, scale: _Layer | None) -> None:
        """A BatchNorm (and the Scale fused into it): writes its top (and the Scale's)."""
        param = self._param(bn)
        (x,) = self._bottoms(bn)
        tops = self._tops(bn)
        if scale is not None:
            self._param(scale)
            (top,) = self._tops(scale)
        if not _bool(param, "use_global_stats", True):
            self._unsupported(bn, "BatchNorm with `use_global_stats: false` (the batch's "
                                  "statistics at inference)")  # fmt: skip
        eps = _float(param, "eps", 1e-5)
        value = _POISON
        if x.id is not None and not self._unsupported_since(bn):
            attrs: dict[str, Any] = {"eps": eps}
            if scale is None:
                attrs["affine"] = False
            value = self._call(bn, "batchnorm2d", attrs, [x], self._label(bn))
        self._write(tops[0].value, value)
        if scale is not None:
            self._write(top.value, value)

    def _unsupported_since(self, layer: _Layer) -> bool:
        return any(u.where == self._where(layer) for u in self.unsupported)

    def _scale(self, layer: _Layer, inputs, readers) -> None:
        param = self._param(layer)
        if len(inputs) == 1 and _bool(param, "bias_term", False):
            self._unsupported(layer, "Caffe layer type Scale (other than right after a "
                                     "BatchNorm that only it reads)")  # fmt: skip
        else:
            self._unsupported(layer, "Caffe layer type Scale without `bias_term: true`")

    def _convolution(self, layer: _Layer, inputs, readers) -> _Value | None:
        p = self._param(layer)
        num = p.get("num_output")
        if num is None:
            raise ArgumentError(f"convolution `{layer.name}` has no `num_output`", layer.span)
        out = _as_int(num, 1)
        kernel = self._pair(layer, p, "kernel_size", "kernel_h", "kernel_w", None, 1)
        stride = self._pair(layer, p, "stride", "stride_h", "stride_w", 1, 1)
        pad = self._pair(layer, p, "pad", "pad_h", "pad_w", 0, 0)
        dilation = self._pair(layer, p, "dilation", None, None, 1, 1)
        group = _int(p, "group", 1, 1)
        if _int(p, "axis", 1, None) not in (1, -3):
            self._unsupported(layer, "Convolution with `axis` other than 1")
        if None in (kernel, stride, pad, dilation) or inputs[0].id is None:
            return None
        attrs = {"out_channels": out, "kernel": kernel, "stride": stride, "padding": pad,
                 "dilation": dilation, "groups": group,
                 "bias": _bool(p, "bias_term", True)}  # fmt: skip
        return self._call(layer, "conv2d", attrs, inputs, self._label(layer))

    def _pair(self, layer, p: Message, name, h, w, default, minimum):
        """A 2-D size: ``name`` (one value, or one per axis: h, w) or ``h`` and ``w``;
        compact (an int) when both are equal. None when not expressible (3-D)."""
        values = _ints(p, name, minimum) if layer.type == "Convolution" else (
            [v] if (v := _int(p, name, None, minimum)) is not None else [])  # fmt: skip
        hw = [_int(p, k, None, minimum) if k else None for k in (h, w)]
        if any(v is not None for v in hw):
            if values or None in hw:
                raise ArgumentError(
                    f"give `{name}`, or both `{h}` and `{w}`", (p.get(h) or p.get(w)).span
                )
            values = hw
        if not values:
            if default is None:
                raise ArgumentError(f"layer `{layer.name}` has no `{name}`", layer.span)
            return default
        if len(values) > 2:
            self._unsupported(layer, f"{layer.type} over {len(values)} spatial axes")
            return None
        return values[0] if len(values) == 1 or values[0] == values[1] else tuple(values)

    def _pooling(self, layer: _Layer, inputs, readers) -> _Value | None:
        p = self._param(layer)
        pool = _word(p, "pool", "MAX")
        if pool not in ("MAX", "AVE"):
            self._unsupported(layer, f"Pooling `pool: {pool}`")
        ceil = _word(p, "round_mode", "CEIL")
        if ceil not in ("CEIL", "FLOOR"):
            raise ValueRangeError(f"unknown round_mode `{ceil}`", p.get("round_mode").span)
        (x,) = inputs
        if _bool(p, "global_pooling", False):
            for key in ("kernel_size", "kernel_h", "kernel_w"):
                if p.get(key) is not None:
                    raise ArgumentError("global pooling takes no kernel size", p.get(key).span)
            if (
                self._pair(layer, p, "pad", "pad_h", "pad_w", 0, 0) != 0
                or self._pair(layer, p, "stride", "stride_h", "stride_w", 1, 1) != 1
            ):
                raise ArgumentError("global pooling takes no padding or stride", layer.span)
            if x.id is None or self._unsupported_since(layer):
                return None
            if len(x.shape) != 3:
                raise ShapeError(f"pooling `{layer.name}` needs a (C, H, W) input, got "
                                 f"{x.shape}", layer.span)  # fmt: skip
            if pool == "MAX":
                return self._call(layer, "maxpool2d", {"kernel": x.shape[1:], "stride": 1},
                                  inputs)  # fmt: skip
            top = layer.tops[0].value if layer.tops else ""
            flat = all(
                self._type_at(r) == "InnerProduct" for r in readers.get((top, layer.index), [])
            ) and readers.get((top, layer.index))
            if flat:
                return self._call(layer, "global_avgpool", {}, inputs)
            return self._call(layer, "adaptive_avgpool2d", {"output_size": 1}, inputs)
        kernel = self._pair(layer, p, "kernel_size", "kernel_h", "kernel_w", None, 1)
        stride = self._pair(layer, p, "stride", "stride_h", "stride_w", 1, 1)
        pad = self._pair(layer, p, "pad", "pad_h", "pad_w", 0, 0)
        if None in (kernel, stride, pad):
            return None
        k2, p2 = _two(kernel), _two(pad)
        if p2[0] > k2[0] // 2 or p2[1] > k2[1] // 2:
            self._unsupported(layer, f"Pooling with pad {pad} more than half the kernel "
                                     f"{kernel} (PyTorch refuses it)")  # fmt: skip
        if x.id is not None and len(x.shape) == 3 and ceil == "CEIL":
            for size, k, s, pd in zip(x.shape[1:], k2, _two(stride), p2, strict=True):
                n = -(-(size + 2 * pd - k) // s) + 1
                if pd == 0 and (n - 1) * s >= size:  # Caffe clips this only with padding
                    self._unsupported(
                        layer,
                        "Pooling whose last window starts past the "
                        "input (Caffe gives it an extra row or column)",
                    )
        if x.id is None or self._unsupported_since(layer):
            return None
        op = "maxpool2d" if pool == "MAX" else "avgpool2d"
        attrs = {"kernel": kernel, "stride": stride, "padding": pad, "ceil_mode": ceil == "CEIL"}
        return self._call(layer, op, attrs, inputs)

    def _type_at(self, index: int) -> str:
        return self._types[index]

    def _relu(self, layer: _Layer, inputs, readers) -> _Value | None:
        p = self._param(layer)
        if _float(p, "negative_slope", 0.0) != 0.0:
            self._unsupported(layer, "ReLU with `negative_slope` (leaky ReLU)")
            return None
        return self._call(layer, "relu", {}, inputs) if inputs[0].id else None

    def _unary(self, layer: _Layer, inputs, readers) -> _Value | None:
        self._param(layer)
        return self._call(layer, _UNARY[layer.type], {}, inputs) if inputs[0].id else None

    def _flat(self, layer: _Layer, x: _Value, p: Message) -> _Value | None:
        """``x`` flattened from Caffe's axis 1 (the first per-sample axis) on."""
        axis = _int(p, "axis", 1, None)
        if axis not in (1, -len(x.shape) - 1 if x.id else 1):
            self._unsupported(layer, f"{layer.type} with `axis: {axis}` (other than 1)")
            return None
        if x.id is None or len(x.shape) == 1:
            return x
        return self._call(layer, "flatten", {}, [x], suffix="_flatten")

    def _innerproduct(self, layer: _Layer, inputs, readers) -> _Value | None:
        p = self._param(layer)
        num = p.get("num_output")
        if num is None:
            raise ArgumentError(f"inner product `{layer.name}` has no `num_output`", layer.span)
        out, bias = _as_int(num, 1), _bool(p, "bias_term", True)
        _bool(p, "transpose", False)  # how the weights are stored, not what they compute
        x = self._flat(layer, inputs[0], p)
        if x is None or x.id is None:
            return None
        return self._call(layer, "linear", {"out_features": out, "bias": bias}, [x],
                          self._label(layer))  # fmt: skip

    def _flatten(self, layer: _Layer, inputs, readers) -> _Value | None:
        p = self._param(layer)
        if _int(p, "end_axis", -1, None) != -1:
            self._unsupported(layer, "Flatten with `end_axis` other than -1")
            return None
        return self._flat(layer, inputs[0], p)

    def _axis(self, layer: _Layer, axis: int, x: _Value) -> int | None:
        """Caffe's axis (of the blob with its batch axis) as a per-sample axis."""
        rank = len(x.shape) + 1
        full = axis + rank if axis < 0 else axis
        if not 0 <= full < rank:
            raise ValueRangeError(
                f"layer `{layer.name}`: axis {axis} is not an axis of a blob of rank {rank}",
                layer.span,
            )
        if full == 0:
            self._unsupported(layer, f"{layer.type} over the batch axis")
            return None
        return full - 1

    def _softmax(self, layer: _Layer, inputs, readers) -> _Value | None:
        p = self._param(layer)
        axis = _int(p, "axis", 1, None)
        (x,) = inputs
        if x.id is None:
            return None
        a = self._axis(layer, axis, x)
        if a is None:
            return None
        return self._call(layer, "softmax", {"axis": -1 if a == len(x.shape) - 1 else a}, [x])

    def _concat(self, layer: _Layer, inputs, readers) -> _Value | None:
        p = self._param(layer)
        axis = _int(p, "axis", None, None)
        if axis is None:
            axis = _int(p, "concat_dim", 1, 0)
        if any(v.id is None for v in inputs):
            return None
        a = self._axis(layer, axis, inputs[0])
        if a is None:
            return None
        return self._call(layer, "concat", {"axis": a}, inputs)

    def _eltwise(self, layer: _Layer, inputs, readers) -> _Value | None:
        p = self._param(layer)
        operation = _word(p, "operation", "SUM")
        coeffs = [_as_float(f) for f in p.all("coeff")]
        if coeffs and len(coeffs) != len(inputs):
            raise ArgumentError(
                f"Eltwise `{layer.name}` has {len(coeffs)} coeff(s) for {len(inputs)} bottoms",
                p.all("coeff")[0].span,
            )
        op = None
        if operation == "SUM":
            if not coeffs or all(c == 1 for c in coeffs):
                op = "add"
            elif coeffs == [1, -1]:
                op = "sub"
            else:
                self._unsupported(layer, f"Eltwise SUM with `coeff` {coeffs}")
        elif operation == "PROD":
            if coeffs:
                raise ArgumentError("Eltwise PROD takes no `coeff`", p.all("coeff")[0].span)
            op = "mul"
        else:
            self._unsupported(layer, f"Eltwise {operation}")
        if op is None or any(v.id is None for v in inputs):
            return None
        if op == "add":
            return self._call(layer, "add", {}, inputs)
        value = inputs[0]
        for k, other in enumerate(inputs[1:]):  # mul and sub take two inputs
            last = k == len(inputs) - 2
            value = self._call(layer, op, {}, [value, other], suffix="" if last else f"_{k}")
        return value

    def _dropout(self, layer: _Layer, inputs, readers) -> _Value | None:
        p = self._param(layer)
        ratio = _float(p, "dropout_ratio", 0.5)
        if not _bool(p, "scale_train", True):
            self._unsupported(layer, "Dropout with `scale_train: false` (it scales at "
                                     "inference)")  # fmt: skip
            return None
        if inputs[0].id is None:
            return None
        return self._call(layer, "dropout", {"p": ratio}, inputs)
