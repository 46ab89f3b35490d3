"""Writing an :class:`~resdsl.importers.graph.Imported` graph as spec text.

The flat form is one ``network`` whose statements are chains: a value read once, by the
next op, continues the chain (``x -> conv1: conv2d(...) -> bn1: batchnorm2d -> relu``); a
value read twice, or by an op with several inputs, gets a variable. Weight-owning ops carry
their label path (``"layer1.0.conv1": conv2d(...)``), so the source's state_dict keys are
the spec's. :mod:`resdsl.importers.structure` finds blocks and loops in it first.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from ..ops import OPS
from ..ops.core import REQUIRED, spec_text
from ..syntax.parser import KEYWORDS
from .graph import Call, Imported

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# names a variable must not take: a variable hides an op, macro or builtin of that name
_RESERVED = frozenset(
    {*KEYWORDS, *OPS, "shortcut", "project", "split", "choice", "min", "max", "abs", "int",
     "float", "round", "ceil", "floor", "sqrt", "gcd", "log2", "log", "make_divisible",
     "partial", "range", "len", "str", "training", "relative_position_index",
     "absolute_offset_index", "label"}
)  # fmt: skip
# ops written as operators between their inputs
_INFIX = {"add": "+", "sub": "-", "mul": "*"}


def label_text(label: str) -> str:
    """A label as the spec writes it: bare when it is a plain name, else quoted."""
    if _NAME.fullmatch(label) and label not in KEYWORDS:
        return label
    return '"' + label.replace("\\", "\\\\").replace('"', '\\"') + '"'


def variable(name: str, taken: set[str]) -> str:
    """A fresh variable named after ``name`` (a module path or an ONNX value name)."""
    words = [w for w in name.split(".") if w and not w.isdigit()] or ["v"]
    base = re.sub(r"[^A-Za-z0-9_]", "_", words[-1]).strip("_") or "v"
    if not _NAME.fullmatch(base):
        base = f"v_{base}"
    out, k = base, 1
    while out in taken or out in _RESERVED:
        out, k = f"{base}_{k}", k + 1
    taken.add(out)
    return out


def op_text(op: str, attrs: dict[str, Any], label: str | None) -> str:
    """``label: op(required..., key=value...)``, defaults left out; ``op`` alone without
    attributes (a bare chain stage)."""
    spec = OPS[op]
    args, required = [], True
    for attr in spec.attrs:
        if attr.name not in attrs:
            required = False
            continue
        value = attrs[attr.name]
        if attr.default is not REQUIRED and _same(value, attr.default):
            required = False
            continue
        if attr.kind in ("pair", "optional_pair", "padding") and isinstance(value, tuple):
            value = value[0] if len(set(value)) == 1 else value  # (3, 3) is written 3
        text = value_text(value)
        if required and attr.default is REQUIRED:
            args.append(text)
        else:
            required = False
            args.append(f"{attr.name}={text}")
    call = f"{op}({', '.join(args)})" if args else op
    return f"{label_text(label)}: {call}" if label else call


def window_index(values: Any) -> str | None:
    """``relative_position_index(window)`` when a buffer holds exactly that (Swin's and
    MaxViT's index of relative offsets, thousands of numbers written out otherwise)."""
    from ..elaborate.functions import _relative_position_index

    if not isinstance(values, tuple) or len(values) < 2:
        return None
    n = math.isqrt(len(values))
    if n * n != len(values) or any(type(v) is not int for v in values):
        return None
    for height in (h for h in range(1, n + 1) if n % h == 0):
        if values == _relative_position_index(height, n // height):
            window = height if height == n // height else (height, n // height)
            return f"relative_position_index({value_text(window)})"
    return None


def offset_index(values: Any) -> str | None:
    """``absolute_offset_index(resolution, stride)`` when a buffer holds exactly that
    (LeViT's index of absolute offsets; square grids, strides up to 4)."""
    from ..elaborate.functions import _absolute_offset_index

    if not isinstance(values, tuple) or len(values) < 2 or values[0] != 0:
        return None
    if any(type(v) is not int for v in values):
        return None
    for side in range(1, math.isqrt(len(values)) + 1):
        keys = side * side
        for stride in range(1, 5):
            queries = (-(-side // stride)) ** 2
            if keys * queries != len(values) or (stride > 1 and side <= stride):
                continue
            if values == _absolute_offset_index(side, side, stride):
                return f"absolute_offset_index({side}" + (f", {stride})" if stride > 1 else ")")
    return None


def index_text(values: Any) -> str | None:
    """A builtin that writes an index buffer's values by name, if one does."""
    return window_index(values) or offset_index(values)


def _same(value: Any, default: Any) -> bool:
    if type(value).__name__ == "Expr":
        return False
    if isinstance(default, tuple) and isinstance(value, int) and not isinstance(value, bool):
        return all(d == value for d in default)  # a pair written as one int
    return value == default and type(value) is type(default)


def value_text(value: Any) -> str:
    """An attribute value as spec text; an ``Expr`` (a parameter) as it is."""
    from .structure import Expr

    if isinstance(value, Expr):
        return value.text
    if isinstance(value, tuple) and len(value) > 3 and (named := index_text(value)):
        return named
    if isinstance(value, tuple):
        items = [value_text(v) for v in value]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    return spec_text(value)


def flat_body(
    calls: list[Call],
    inputs: Iterable[str],
    outputs: list[str],
    indent: str = "    ",
    reserved: Iterable[str] = (),
) -> tuple[list[str], dict[str, str]]:
    """The statements computing ``outputs`` from ``inputs``, and each value's variable
    (none named as one of ``reserved``, the file's blocks)."""
    from .structure import LOOP, SHORTCUT

    uses: Counter[str] = Counter(i for c in calls for i in c.inputs)
    uses.update(outputs)
    taken: set[str] = set(reserved)
    names: dict[str, str] = {}
    for name in inputs:
        names[name] = variable(name, taken)
    by_id = {c.id: c for c in calls}
    # a call continues its first input's chain when that value is read only here
    continues = {
        c.id: c.inputs[0]
        for c in calls
        if len(c.inputs) == 1 and c.inputs[0] in by_id and uses[c.inputs[0]] == 1
        and c.inputs[0] not in outputs and LOOP not in (c.op, by_id[c.inputs[0]].op)
        and SHORTCUT not in (c.op, by_id[c.inputs[0]].op)
    }  # fmt: skip
    continued = set(continues.values())
    lines: list[str] = []
    for c in calls:
        if c.id in continued:
            continue  # written as part of the chain that reads it
        if c.op == SHORTCUT:  # written inside the add that reads it
            x, y = (names[i] for i in c.inputs)
            names[c.id] = f"{label_text(c.label)}: shortcut({x}, like={y})"
            continue
        if c.op == LOOP:
            lines += _loop(c, names, uses, taken, indent)
            continue
        chain = [c]
        while chain[0].id in continues:
            chain.insert(0, by_id[continues[chain[0].id]])
        head, stages = _head(chain[0], names), [_stage(s) for s in chain[1:]]
        if chain[0].inputs and len(chain[0].inputs) == 1 and chain[0].op not in _INFIX:
            head, stages = names[chain[0].inputs[0]], [_stage(chain[0]), *stages]
        looped = any(k.op == LOOP and k.inputs == [c.id] for k in calls) and uses[c.id] == 1
        var = variable("y" if looped else c.label or _base_name(c), taken)
        names[c.id] = var
        lines.append(f"{indent}{var} = " + " -> ".join([head, *stages]))
    return lines, names


def _base_name(c: Call) -> str:
    from .structure import BLOCK

    return c.attrs["block"] if c.op == BLOCK else c.op


def _loop(c: Call, names: dict, uses: Counter, taken: set[str], indent: str) -> list[str]:
    """``for i in range(n) { y = y -> "{prefix}{i}": block(args) }``; the loop's value is
    the variable it updates (a copy of its input's, if that is read again)."""
    a = c.attrs
    (source,) = c.inputs
    lines = []
    if uses[source] == 1:
        var = names[source]
    else:
        var = variable(a["block"], taken)
        lines.append(f"{indent}{var} = {names[source]}")
    index = "i" if a["start"] == 0 else f"i + {a['start']}"
    label = '"' + a["prefix"].replace('"', '\\"') + "{" + index + '}"'
    args = []
    for form in a["forms"]:
        if form[0] == "each":
            args.append(f"{value_text(form[1])}[i]")
        elif value_text(form[1]) == value_text(form[2]):
            args.append(value_text(form[1]))
        else:
            args.append(f"if i == 0 then {value_text(form[1])} else {value_text(form[2])}")
    lines += [
        f"{indent}for i in range({value_text(a['n'])}) {{",
        f"{indent}    {var} = {var} -> {label}: {a['block']}({', '.join(args)})",
        f"{indent}}}",
    ]
    names[c.id] = var
    return lines


def _stage(c: Call) -> str:
    from .structure import BLOCK

    if c.op == BLOCK:
        call = f"{c.attrs['block']}({', '.join(value_text(v) for v in c.attrs['args'])})"
        return f"{label_text(c.label)}: {call}" if c.label else call
    return op_text(c.op, c.attrs, c.label)


def _head(c: Call, names: dict[str, str]) -> str:
    """A call that starts a chain: an operator between its inputs, or the op with its
    inputs as arguments (``concat(a, b, axis=1)``, ``label: parameter(...)``)."""
    args = [names[i] for i in c.inputs]
    if c.op in _INFIX and len(args) == 2 and not c.label:
        return f"{args[0]} {_INFIX[c.op]} {args[1]}"
    if c.op == "add" and not c.label:
        return " + ".join(args)
    text = _stage(c)
    if not args:
        return text if "(" in text else f"{text}()"
    label, _, call = text.partition(": ") if c.label else ("", "", text)
    name, _, rest = call.partition("(")
    inner = ", ".join(args + ([rest[:-1]] if rest else []))
    return f"{label + ': ' if label else ''}{name}({inner})"


def _returns(g: Imported, names: dict[str, str]) -> str:
    """The network's outputs, the training-only ones marked (auxiliary classifiers)."""
    values = [names[o] for o in g.outputs]
    values += [f"training({names[o]})" for o in g.training_outputs]
    return ", ".join(values)


def write_flat(g: Imported) -> str:
    """The whole graph as one network of chains."""
    lines, names = flat_body(g.calls, [n for n, _ in g.inputs], g.outputs + g.training_outputs)
    header = ", ".join(f"{names[n]}: {spec_text(tuple(s))}" for n, s in g.inputs)
    returns = _returns(g, names)
    origin = f"# Imported by `resdsl import` from {g.origin}.\n" if g.origin else ""
    return formatted(
        f"{origin}network {variable(g.name, set())}() ({header}) {{\n"
        + "\n".join(lines)
        + f"\n    return {returns}\n}}\n"
    )


def formatted(text: str) -> str:
    """``text`` in the canonical layout (what ``resdsl fmt`` writes)."""
    from ..tools.fmt import format_text

    return format_text(text)


def write_structured(g: Imported) -> str:
    """Blocks for the module classes, loops for their runs, then the network."""
    from .structure import structure

    s = structure(g)
    blocks = {b.name for b in s.blocks}
    parts = []
    for b in s.blocks:
        params = ", ".join(f"{n}: {t}" for n, t in b.params)
        lines, names = flat_body(b.calls, b.inputs, [b.output], reserved=blocks)
        inputs = ", ".join(names[i] for i in b.inputs)
        parts.append(
            f"block {b.name}({params}) ({inputs}) {{\n" + "\n".join(lines)
            + f"\n    return {names[b.output]}\n}}\n"
        )  # fmt: skip
    lines, names = flat_body(
        s.calls, [n for n, _ in g.inputs], g.outputs + g.training_outputs, reserved=blocks
    )
    header = ", ".join(f"{names[n]}: {spec_text(tuple(sh))}" for n, sh in g.inputs)
    returns = _returns(g, names)
    origin = f"# Imported by `resdsl import` from {g.origin}.\n\n" if g.origin else ""
    network = (
        f"network {variable(g.name, set())}() ({header}) {{\n" + "\n".join(lines)
        + f"\n    return {returns}\n}}\n"
    )  # fmt: skip
    return formatted(origin + "\n".join([*parts, network]))
