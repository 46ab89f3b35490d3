"""Hypothesis strategies that write `.res` specs, and the property every spec must satisfy.

* ``specs()`` builds spec text structurally, tracking the shape of the running tensor, so
  almost every spec it writes is valid: random networks with blocks, loops, identity skips,
  projections, concatenations, dense loops, gates, token sequences and several outputs,
  with small sizes so the PyTorch forward is fast.
* ``mutants()`` damages such a spec (or an example file): token deletions, swaps and
  duplications, wrong and huge numbers, unicode, deep nesting, truncation.
* ``long_literals()`` puts string literals, identifiers, numbers and comments of up to
  several MB into labels, keyword arguments, asserts, imports and names of an otherwise
  valid spec.
* ``deep_nesting()`` nests each non-bracket operator (``not``, unary ``-``/``+``, ``**``,
  ``if ... then ... else``, ``[0]``, ``.channels``) and mixes of them, 1 to 200,000 deep,
  in an expression of an otherwise valid spec (an assignment, a keyword argument, an
  assert, a loop count, a template-label hole).
* ``check(text)`` is the property: ``resdsl.loads`` returns a network whose PyTorch forward
  gives exactly ``output_shapes``, or raises a ``SpecError`` located inside the text;
  ``cpu_deadline(seconds)`` bounds its CPU time (hostile input must be refused quickly).

Used by ``tests/test_fuzz.py`` (the quick CI profile) and ``benchmarks/fuzz.py`` (the long
profile).
"""

from __future__ import annotations

import contextlib
import math
import pathlib
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field

from hypothesis import strategies as st

import resdsl

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
PATH = "fuzz.res"
# A mutant may legally grow (`padding=1_000`); the forward runs below these sizes, a
# ResNet-18 at 224 x 224 (1.8 G MACs, 2.3 M activations) is above them.
MAX_MACS, MAX_ELEMENTS = 200_000_000, 2**21


# --- the property ----------------------------------------------------------------------------


def check(text: str, batch: int = 1) -> str:
    """Load ``text``; return ``"ok"``, ``"ok-large"`` or the error code. Anything else is a
    failure.

    A network must run in PyTorch (eval mode, ``batch`` samples) and give exactly its
    inferred output shapes (one too big to run quickly is only loaded: ``"ok-large"``); an
    error must be a ``SpecError`` whose span is inside ``text``.
    """
    try:
        net = resdsl.loads(text, path=PATH)
    except resdsl.SpecError as e:
        check_span(e, text)
        resdsl.render(e)  # the renderer must cope with any located error
        return e.code
    if net.macs > MAX_MACS or sum(math.prod(la.shape) for la in net.layers) > MAX_ELEMENTS:
        return "ok-large"  # valid, within the limits, but too big to run by the thousand
    run_forward(net, batch)
    return "ok"


class HangError(Exception):
    """An example ran past its CPU-time budget."""


@contextlib.contextmanager
def cpu_deadline(seconds: float) -> Iterator[None]:
    """Raise ``HangError`` after ``seconds`` of CPU time (not wall time: on a busy machine an
    example may wait long for a core without being slow itself). Main thread only."""

    def expire(signum, frame):
        # re-armed first: raised inside a garbage-collector callback the error is ignored
        signal.setitimer(signal.ITIMER_PROF, 0.5)
        raise HangError(f"no result after {seconds} s of CPU time")

    previous = signal.signal(signal.SIGPROF, expire)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def check_span(error: resdsl.SpecError, text: str) -> None:
    """The error and its notes point at real places in ``text`` (1-based, end exclusive), or
    in a file it imports (the standard library: an error there is caused by the arguments
    the spec passed, and a note points back at the call)."""
    from resdsl.errors import _SOURCES  # every text the parser has read, by path

    assert error.span is not None, f"unlocated error: {error!r}"
    for span in [error.span, *(n.span for n in error.notes if n.span is not None)]:
        source = text if span.path == PATH else _SOURCES.get(span.path)
        assert source is not None, (span, error)
        lines = source.split("\n")  # Lark counts lines by "\n" only
        assert 1 <= span.line <= span.end_line <= len(lines), (span, error)
        assert 1 <= span.column <= len(lines[span.line - 1]) + 1, (span, error)
        assert 1 <= span.end_column <= len(lines[span.end_line - 1]) + 1, (span, error)


def run_forward(net: resdsl.Network, batch: int) -> None:
    import torch

    model = net.to_torch(seed=0).eval()
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn((batch, *s), generator=gen) for s in net.input_shapes.values()]
    with torch.no_grad():
        out = model(*inputs)
    outs = out if isinstance(out, tuple) else (out,)
    got = [tuple(o.shape) for o in outs]
    want = [(batch, *s) for s in net.output_shapes.values()]
    assert got == want, f"forward gives {got}, the network says {want}"


# --- a structural spec generator -------------------------------------------------------------


@dataclass
class Writer:
    """Spec text under construction, with the shape of each live variable."""

    draw: st.DrawFn
    lines: list[str] = field(default_factory=list)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    blocks: list[str] = field(default_factory=list)  # block definitions, as text
    count: int = 0

    def fresh(self, stem: str = "t") -> str:
        self.count += 1
        return f"{stem}{self.count}"

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)


# Ops that keep a (C, H, W) shape, as chain stages.
SAME_SHAPE = ["relu", "batchnorm2d", "sigmoid", "gelu", "identity", "dropout(0.1)",
              "drop_path(0.2)", "batchnorm2d(eps=0.001)", "relu6", "silu", "hardswish",
              "hardsigmoid", "hardtanh(-1, 2)", "clamp(max=3)", 'gelu(approximate="tanh")',
              "softmax(0)", "layernorm2d", "groupnorm(1)", "channel_shuffle(1)",
              "roll((1, -1), (1, 2))"]  # fmt: skip


def _draw_same(w: Writer, c: int, labels: bool = True) -> str:
    """A chain of shape-preserving stages (convs keep channels, padding keeps H and W).

    ``labels``: whether a stage may carry a fixed label (not in a loop body, where a second
    pass would reuse the name)."""
    stages = []
    kinds = ["op", "conv", "conv_same", "label"] if labels else ["op", "conv", "conv_same"]
    for _ in range(w.draw(st.integers(1, 3))):
        kind = w.draw(st.sampled_from(kinds))
        if kind == "op":
            stages.append(w.draw(st.sampled_from(SAME_SHAPE)))
        elif kind == "conv":
            k = w.draw(st.sampled_from([1, 3, 5]))
            groups = w.draw(st.sampled_from([g for g in (1, 2, c) if c % g == 0]))
            bias = w.draw(st.booleans())
            stages.append(f"conv2d({c}, {k}, padding={k // 2}, groups={groups}, bias={_b(bias)})")
        elif kind == "conv_same":
            stages.append(f'conv2d({c}, 3, padding="same")')
        else:  # a plain label, or one in a scope that later labels enter again, or a hyphen
            label = w.draw(st.sampled_from(["{}", '"grp.{}"', '"grp.{}-a.b"', '"{}-0"']))
            stages.append(label.format(w.fresh("n")) + ": relu")
    return " -> ".join(stages)


def _b(value: bool) -> str:
    return "true" if value else "false"


def _conv_out(h: int, k: int, s: int, p: int) -> int:
    return (h + 2 * p - k) // s + 1


def _stmt(w: Writer, x: str, indent: int, depth: int) -> None:
    """One statement (or a small group) updating the feature map ``x``."""
    c, h, wd = w.shapes[x]
    options = ["chain", "residual", "project", "shortcut", "concat", "gate", "arith", "pool"]
    if depth < 2:
        options += ["for", "repeat", "if", "dense", "block"]
    kind = w.draw(st.sampled_from(options))
    if kind == "chain":
        w.emit(indent, f"{x} = {x} -> {_draw_same(w, c)}")
    elif kind == "residual":  # identity skip
        y = w.fresh("y")
        w.emit(indent, f"{y} = {x} -> {_draw_same(w, c)}")
        w.emit(indent, f"{x} = relu({y} + {x})")
    elif kind in ("project", "shortcut"):
        c2 = w.draw(st.integers(1, 8))
        s = w.draw(st.sampled_from([1, 2])) if min(h, wd) >= 2 else 1
        y = w.fresh("y")
        w.emit(indent, f"{y} = {x} -> conv2d({c2}, 3, stride={s}, padding=1, bias=false)"
                       " -> batchnorm2d")  # fmt: skip
        skip = (f"shortcut({x}, like={y})" if kind == "shortcut"
                else f"({x} -> {w.fresh('p')}: project({c2}, stride={s}))")  # fmt: skip
        w.emit(indent, f"{x} = {y} + {skip}")
        w.shapes[x] = (c2, -(-h // s), -(-wd // s))
    elif kind == "concat":
        c2 = w.draw(st.integers(1, 6))
        y = w.fresh("y")
        widths = [
            str(c2),
            f"gcd({c2}, {3 * c2})",
            f"int(log2({2**c2}))",
            f"make_divisible({c2}, 1)",
            f"round(log({c2**2}, {c2 + 1}) * 0 + {c2})",
        ]
        width = w.draw(st.sampled_from(widths))  # the builtins, each giving c2
        w.emit(indent, f"{y} = {x} -> conv2d({width}, 1)")
        w.emit(indent, f"{x} = concat({x}, {y})")
        w.shapes[x] = (c + c2, h, wd)
    elif kind == "gate":  # squeeze-and-excitation style
        w.emit(indent, f"{x} = {x} * ({x} -> global_avgpool -> reshape(({c}, 1, 1)) -> sigmoid)")
    elif kind == "arith":
        expr = w.draw(st.sampled_from([f"{x} * 0.5", f"1 - {x}", f"-{x}", f"{x} / 2",
                                       f"{x} - {x} -> relu", f"{x} + 1.5"]))  # fmt: skip
        w.emit(indent, f"{x} = {expr}")
    elif kind == "pool":
        if min(h, wd) >= 2:
            pool = w.draw(st.sampled_from(["maxpool2d(2)", "avgpool2d(2)",
                                           "maxpool2d(3, stride=2, padding=1)"]))  # fmt: skip
            w.emit(indent, f"{x} = {x} -> {pool}")
            k, s, p = (3, 2, 1) if "3" in pool else (2, 2, 0)
            w.shapes[x] = (c, _conv_out(h, k, s, p), _conv_out(wd, k, s, p))
    elif kind in ("for", "repeat"):
        n = w.draw(st.integers(0, 3))
        head = f"for i{depth} in range({n})" if kind == "for" else f"repeat {n}"
        w.emit(indent, head + " {")
        # the body keeps the shape, so any number of passes is valid
        w.emit(indent + 1, f"{x} = {x} -> {_draw_same(w, c, labels=False)}")
        if kind == "for" and w.draw(st.booleans()):
            label = w.draw(st.sampled_from(["r{}_{{i{}}}_{}", "r{}.{{i{}}}-{}"]))
            label = label.format(depth, depth, w.fresh("l"))
            w.emit(indent + 1, f'{x} = {x} -> "{label}": relu')
        w.emit(indent, "}")
    elif kind == "if":
        flag = w.draw(st.booleans())
        w.emit(indent, f"if {x}.channels {'>=' if flag else '<'} 1 {{")
        _stmt(w, x, indent + 1, depth + 1)
        w.emit(indent, "} else {")
        w.emit(indent + 1, f"{x} = {x} -> relu")
        w.emit(indent, "}")
        if not flag:
            w.shapes[x] = (c, h, wd)
    elif kind == "dense":
        n, growth = w.draw(st.integers(1, 3)), w.draw(st.integers(1, 4))
        w.emit(indent, f"dense {x} for j{depth} in range({n}) {{")
        w.emit(indent + 1, f'{x} = {x} -> "d{w.fresh("")}_{{j{depth}}}": conv2d({growth}, 3, '
                           "padding=1)")  # fmt: skip
        w.emit(indent, "}")
        w.shapes[x] = (c + n * growth, h, wd)
    elif kind == "block":
        name = _block(w)
        planes = w.draw(st.integers(1, 8))
        s = w.draw(st.sampled_from([1, 2])) if min(h, wd) >= 2 else 1
        n = w.draw(st.integers(1, 2))
        stride = w.draw(st.sampled_from(
            [f"if b == 0 then {s} else 1", f"if b == 0 then {s} elif b == 1 then 1 else 2"]
        ))  # fmt: skip
        call = f"{name}({planes}, stride={stride})"
        if w.draw(st.booleans()):  # bind the width with `partial` first
            bound = w.fresh("k")
            w.emit(indent, f"{bound} = partial({name}, planes={planes})")
            call = f"{bound}(stride={stride})"
        label = w.draw(st.sampled_from(["{}_{{b}}", "{}.{{b}}", "stages.{}-{{b}}"]))
        w.emit(indent, f"for b in range({n}) {{")
        w.emit(indent + 1, f'{x} = {x} -> "{label.format(w.fresh("blk"))}": {call}')
        w.emit(indent, "}")
        w.shapes[x] = (planes, -(-h // s), -(-wd // s))


def _block(w: Writer) -> str:
    """Define a basic residual block with a projection shortcut; return its name."""
    name = f"basic{len(w.blocks)}"
    mid = w.draw(st.sampled_from(["relu", "gelu", "identity"]))
    if w.draw(st.booleans()):  # inline: its names join the caller's, under the call's label
        w.blocks.append(
            f"inline block {name}(planes: int, stride: int = 1) (x) {{\n"
            '    y = x -> "{label}.conv1": conv2d(planes, 3, stride=stride, padding=1, '
            "bias=false)\n"
            f'          -> "{{label}}.bn1": batchnorm2d -> {mid}\n'
            '          -> "{label}.conv2": conv2d(planes, 3, padding=1, bias=false)\n'
            '          -> "{label}.bn2": batchnorm2d\n'
            '    return relu(y + "{label}.downsample": shortcut(x, like=y))\n'
            "}\n"
        )
        return name
    w.blocks.append(
        f"block {name}(planes: int, stride: int = 1) (x) {{\n"
        "    y = x -> conv1: conv2d(planes, 3, stride=stride, padding=1, bias=false)\n"
        f"          -> bn1: batchnorm2d -> {mid}\n"
        "          -> conv2: conv2d(planes, 3, padding=1, bias=false) -> bn2: batchnorm2d\n"
        "    return relu(y + downsample: shortcut(x, like=y))\n"
        "}\n"
    )
    return name


def _head(w: Writer, x: str) -> list[str]:
    """Finish with one or two outputs: a classifier, a token sequence, or the map itself."""
    c = w.shapes[x][0]
    kind = w.draw(st.sampled_from(["classifier", "flatten", "tokens", "map", "two"]))
    classes = w.draw(st.integers(1, 10))
    if kind == "classifier":
        return [f"{x} -> global_avgpool -> fc: linear({classes})"]
    if kind == "flatten":
        return [f"{x} -> flatten -> linear({classes}, bias=false)"]
    if kind == "tokens":  # (C, H, W) -> (HW, C): a tiny transformer layer and the first token
        heads = w.draw(st.sampled_from([d for d in (1, 2, 4) if c % d == 0]))
        w.emit(1, f"s = {x} -> flatten(1) -> permute((1, 0))")
        w.emit(1, f"s = s + (s -> layernorm -> attention({heads}))")
        w.emit(1, f"s = s + (s -> layernorm -> linear({2 * c}) -> gelu -> linear({c}))")
        return ["s[0]" if w.draw(st.booleans()) else "s"]
    if kind == "map":
        return [x]
    return [f"{x} -> global_avgpool", f"{x} -> adaptive_avgpool2d(1)"]


@st.composite
def specs(draw: st.DrawFn) -> str:
    """A random, almost always valid spec: one network over a small image."""
    w = Writer(draw)
    c, h = draw(st.integers(1, 4)), draw(st.integers(1, 12))
    wd = draw(st.sampled_from([h, h + 1, max(1, h - 3)]))
    w.shapes["x"] = (c, h, wd)
    for _ in range(draw(st.integers(0, 6))):
        _stmt(w, "x", 1, 0)
    outputs = _head(w, "x")
    body = "\n".join(w.lines)
    ret = f"    return {', '.join(outputs)}"
    net = f"network fuzz() (x: ({c}, {h}, {wd})) {{\n{body}\n{ret}\n}}\n"
    return "".join(w.blocks) + net


# --- mutations -------------------------------------------------------------------------------

TOKEN = re.compile(r'"(?:\\.|[^"\\\n])*"|\d[\d_]*(?:\.\d*)?(?:[eE][-+]?\d+)?|\w+|->|\*\*|//|'
                   r"[=!<>]=|\S")  # fmt: skip
NUMBERS = ["0", "-1", "1", "3", "1_000", "10000000000000000000000000000000000000000", "2**63",
           "1e400", "1e-400", "0.0", "2.5", "9" * 5000, "10 ** 12", "-0"]  # fmt: skip
JUNK = ["(", ")", "{", "}", ",", ":", "->", "=", '"', "'", "\\", "#", "\x00", "\t", "\r",
        "\u00e9", "\u2028", "\U0001f600", "\ufeff", "return", "block", "network", "import",
        "for", "in", "dense", "if", "else", "elif", "then", "and", "not", "true", "x", "y", "[0]",
        "inline", '"a.b"', '"a-b"', '"a..b"', '".{i}"', "partial(", ", k=1",
        ".channels", '"{i}"', '"{"', '"a{1 +}"', "shortcut", "concat", "add", "input"]  # fmt: skip


NAMES = ["x", "y", "z", "i", "planes", "stride", "basic0", "fuzz", "relu", "conv2d", "linear",
         "concat", "add", "mul", "shortcut", "project", "dense", "range", "len", "str", "max",
         "channels", "shape", "rank", "int", "float", "tuple", "block", "bool", "true", "input",
         "parameter", "reshape", "attention", "select", "global_avgpool", "std", "partial",
         "gcd", "log2", "log", "make_divisible", "label", "inline"]  # fmt: skip


def _seeds() -> list[str]:
    """Small real specs to mutate besides generated ones."""
    names = ["resnet18.res", "highway.res", "long_skips.res", "se_resnet.res", "vit_b_16.res"]
    return [(EXAMPLES / n).read_text() for n in names if (EXAMPLES / n).exists()]


@st.composite
def mutants(draw: st.DrawFn) -> str:
    """A valid spec with one to four random edits."""
    seeds = _seeds()
    text = draw(specs()) if not seeds or draw(st.integers(0, 3)) else draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(1, 4))):
        text = _mutate(draw, text)
    return text


def _mutate(draw: st.DrawFn, text: str) -> str:
    tokens = [(m.start(), m.end()) for m in TOKEN.finditer(text)]
    if not tokens:
        return text + draw(st.sampled_from(JUNK))
    i = draw(st.integers(0, len(tokens) - 1))
    start, end = tokens[i]
    # edits that keep the text parseable are weighted up, so mutants reach elaboration
    kind = draw(
        st.sampled_from(
            [
                "number",
                "number",
                "number",
                "name",
                "name",
                "delete",
                "duplicate",
                "swap",
                "junk",
                "nest",
                "truncate",
                "replace",
                "unicode",
            ]
        )
    )
    if kind == "unicode":  # a byte-order mark, or an ASCII digit written in another script
        digits = [j for j, (s, e) in enumerate(tokens) if "0" <= text[s] <= "9"]
        if not digits or draw(st.booleans()):
            return (
                "\ufeff" + text if draw(st.booleans()) else text[:start] + "\ufeff" + text[start:]
            )
        start, end = tokens[draw(st.sampled_from(digits))]
        return text[:start] + _unicode_digits(draw, text[start:end]) + text[end:]
    if kind == "delete":
        return text[:start] + text[end:]
    if kind == "duplicate":
        return text[:end] + " " + text[start:end] + text[end:]
    if kind == "swap" and i + 1 < len(tokens):
        s2, e2 = tokens[i + 1]
        return text[:start] + text[s2:e2] + text[end:s2] + text[start:end] + text[e2:]
    if kind == "number":
        numbers = [j for j, (s, e) in enumerate(tokens) if text[s].isdigit()] or [i]
        start, end = tokens[draw(st.sampled_from(numbers))]
        return text[:start] + draw(st.sampled_from(NUMBERS)) + text[end:]
    if kind == "name":
        names = [j for j, (s, e) in enumerate(tokens) if text[s].isalpha() or text[s] == "_"]
        start, end = tokens[draw(st.sampled_from(names or [i]))]
        return text[:start] + draw(st.sampled_from(NAMES)) + text[end:]
    if kind == "junk":
        return text[:start] + draw(st.sampled_from(JUNK)) + text[start:]
    if kind == "nest":  # deep nesting around one token
        depth = draw(st.sampled_from([50, 99, 150, 1000]))
        opener, closer = draw(st.sampled_from([("(", ")"), ("-", ""), ("(", ",)"), ("not ", "")]))
        return text[:start] + opener * depth + text[start:end] + closer * depth + text[end:]
    if kind == "truncate":
        return text[:start]
    other = tokens[draw(st.integers(0, len(tokens) - 1))]
    return text[:start] + text[other[0] : other[1]] + text[end:]


# Decimal digits of other scripts (`str.isdigit` and the regex `\\d` accept them, `int()`
# reads them), in order 0..9: Bengali, Arabic-Indic, fullwidth, Devanagari, mathematical bold.
UNICODE_DIGITS = ["\u09e6", "\u0660", "\uff10", "\u0966", "\U0001d7ce"]


def _unicode_digits(draw: st.DrawFn, number: str) -> str:
    """``number`` with one or all of its ASCII digits written in another script."""
    zero = ord(draw(st.sampled_from(UNICODE_DIGITS)))
    positions = [i for i, ch in enumerate(number) if "0" <= ch <= "9"]
    if draw(st.booleans()):
        positions = [draw(st.sampled_from(positions))]
    chars = list(number)
    for i in positions:
        chars[i] = chr(zero + int(chars[i]))
    return "".join(chars)


@st.composite
def unicode_digit_specs(draw: st.DrawFn) -> str:
    """A generated spec with one number's digits written in another script (`linear(\u09ea)`):
    numbers are ASCII digits only, so it must be a syntax error."""
    text = draw(specs())
    numbers = [m for m in TOKEN.finditer(text) if "0" <= m.group()[0] <= "9"]
    m = draw(st.sampled_from(numbers))  # every spec has an input shape
    return text[: m.start()] + _unicode_digits(draw, m.group()) + text[m.end() :]


# --- hostile sizes: long literals and deep nesting -------------------------------------------

# Lengths up to several MB, with the boundaries of the usual limits drawn often.
LENGTHS = st.one_of(
    st.integers(0, 300),
    st.sampled_from(
        [99, 100, 101, 999, 1000, 1001, 4300, 4301, 65_536, 2**20, 2**20 + 1, 4 * 2**20]
    ),
    st.integers(0, 6_000_000),
)
# Pieces repeated to fill a string literal: plain text, escapes, template holes and braces,
# non-ASCII and astral characters.
STRING_UNITS = ["a", "ab_", "x9", "\u00e9", "\\n", '\\"', "{i}", "{", "}", "{1 + 1}", " ",
                "\U0001f600", "\\", "\u0000"]  # fmt: skip
NAME_UNITS = ["a", "_", "Z9", "\u00e9", "\u0660"]
HOSTILE_NET = "network fuzz() (x: (3, 6, 6)) {{\n{body}\n    return {ret}\n}}\n"


def _fill(unit: str, length: int) -> str:
    return (unit * (length // max(len(unit), 1) + 1))[:length] if unit else ""


@st.composite
def long_literals(draw: st.DrawFn) -> str:
    """An otherwise valid spec with one to three literals of up to several MB: string labels,
    label and variable names, keyword arguments (strings, integers with leading zeros,
    floats of many digits), assert messages, import paths and module names, comments and
    string values."""
    lines, ret, head = [], "x -> global_avgpool", []
    for _ in range(draw(st.integers(1, 3))):
        n = draw(LENGTHS)
        lit = _fill(draw(st.sampled_from(STRING_UNITS)), n)
        name = "a" + _fill(draw(st.sampled_from(NAME_UNITS)), n)
        digits = _fill(draw(st.sampled_from(["1", "0", "9", "1_0"])), n).strip("_") or "0"
        place = draw(st.sampled_from(["label", "label_name", "kwarg_str", "kwarg_int", "float",
                                      "assert", "import", "std_import", "name", "comment",
                                      "string", "block", "padding_int"]))  # fmt: skip
        if place == "label":
            lines.append(f'    x = x -> "{lit}": relu')
        elif place == "label_name":
            lines.append(f"    x = x -> {name}: relu")
        elif place == "kwarg_str":
            lines.append(f'    x = x -> conv2d(3, 3, padding="{lit}")')
        elif place == "kwarg_int":
            lines.append(f"    x = x -> conv2d(3, 3, padding={'0' * n}1)")  # value 1
        elif place == "padding_int":
            lines.append(f"    x = x -> conv2d(3, 1, padding={digits})")
        elif place == "float":
            lines.append(f"    x = x -> dropout(0.{digits.replace('_', '')})")
        elif place == "assert":
            lines.append(f'    assert x.channels == 3, "{lit}"')
        elif place == "import":
            head.append(f'import "{lit}.res"\n')
        elif place == "std_import":
            head.append(f"import std.{name}\n")
        elif place == "name":
            lines.append(f"    {name} = x -> relu")
            ret = f"{name} -> global_avgpool"
        elif place == "comment":
            lines.append(f"    # {lit}")
        elif place == "string":
            lines.append(f'    s = "{lit}"')
            lines.append("    assert len(s) >= 0")
        else:  # a block, its parameter and its input named at length
            head.append(f"block {name}({name}: int = 1) ({name}) {{\n"
                        f"    return {name} -> relu\n}}\n")  # fmt: skip
            lines.append(f"    x = x -> {name}()")
    return "".join(head) + HOSTILE_NET.format(body="\n".join(lines), ret=ret)


# A nesting operator: text before and after the inner expression, and the kinds of value it
# takes and gives (so that a short run of one operator is valid). `{leaf}` is a value of the
# kind nested.
NESTING = {
    "not": ("not ", "", {"bool"}),
    "neg": ("- ", "", {"int", "tensor"}),
    "neg_glued": ("-", "", {"int", "tensor"}),
    "plus": ("+", "", {"int", "tensor"}),
    "pow": ("1 ** ", "", {"int"}),
    "if_else": ("if true then {leaf} else ", "", {"bool", "int", "tensor", "str"}),
    "if_then": ("if true then ", " else {leaf}", {"bool", "int", "tensor", "str"}),
    "index": ("", "[0]", {"str"}),
    "attribute": ("", ".channels", set()),  # valid once, on a tensor
}
LEAVES = {"bool": "true", "int": "1", "tensor": "x", "str": '"abc"'}
# Where an expression of each kind is valid; `{e}` is the nested expression.
CONTEXTS = {
    "bool": ["    a = {e}", "    assert {e}", "    if {e} {{ x = x -> relu }}",
             '    x = x -> "n{{{e}}}": relu'],
    "int": ["    a = {e}", "    x = x -> conv2d(3, 3, padding={e})",
            "    repeat {e} {{ x = x -> relu }}", "    for i in range({e}) {{ x = x -> relu }}",
            '    x = x -> "n{{{e}}}": relu', "    assert {e} == 1, \"one\""],
    "tensor": ["    x = {e}", "    x = relu({e})", "RETURN"],
    "str": ["    a = {e}", "    assert len({e}) == 1"],
}  # fmt: skip
DEPTHS = st.one_of(
    st.integers(1, 120),
    st.sampled_from([99, 100, 101, 1_000, 10_000, 100_000, 200_000]),
    st.integers(1, 200_000),
)


@st.composite
def deep_nesting(draw: st.DrawFn) -> str:
    """An otherwise valid spec with one expression nested 1 to 200,000 deep by non-bracket
    operators: one operator repeated (valid while shallow) or a short cycle of several."""
    depth = draw(DEPTHS)
    if draw(st.integers(0, 3)):  # one operator
        op = draw(st.sampled_from(sorted(NESTING)))
        kinds = NESTING[op][2] or {"tensor"}
        kind = draw(st.sampled_from(sorted(kinds)))
        if op == "attribute":
            depth = draw(st.sampled_from([1, 2, depth]))
        cycle = [op]
    else:  # a mix: a cycle of operators repeated to the depth
        cycle = draw(st.lists(st.sampled_from(sorted(NESTING)), min_size=2, max_size=5))
        kind = draw(st.sampled_from(sorted(LEAVES)))
    leaf = LEAVES[kind]
    pres = [NESTING[op][0].replace("{leaf}", leaf) for op in cycle]
    sufs = [NESTING[op][1].replace("{leaf}", leaf) for op in cycle]
    full, rest = divmod(depth, len(cycle))
    prefix = "".join(pres) * full + "".join(pres[:rest])
    suffix = "".join(reversed(sufs[:rest])) + "".join(reversed(sufs)) * full
    expr = prefix + leaf + suffix
    context = draw(st.sampled_from(CONTEXTS[kind]))
    if context == "RETURN":
        return HOSTILE_NET.format(body="    y = x -> relu", ret=expr)
    return HOSTILE_NET.format(body=context.format(e=expr), ret="x")


# --- pure syntax -----------------------------------------------------------------------------


def grammar_sentences() -> st.SearchStrategy[str]:
    """Sentences of ``grammars/resdsl.lark`` from ``hypothesis.extra.lark``, tokens spaced
    apart (the grammar's whitespace is ignored, so glued tokens would just lex differently)."""
    from hypothesis.extra.lark import from_lark

    from resdsl.syntax.parser import _parser

    grammar = _parser()
    explicit = {}
    for term in grammar.terminals:
        if term.name in grammar.ignore_tokens:
            continue
        pattern = term.pattern
        token = (st.just(pattern.value) if pattern.type == "str"
                 else st.from_regex(pattern.to_regexp(), fullmatch=True))  # fmt: skip
        explicit[term.name] = token.map(lambda s: f" {s} ")
    return from_lark(grammar, start="start", explicit=explicit)
