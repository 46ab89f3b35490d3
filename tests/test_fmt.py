"""`resdsl fmt`: the canonical layout, comments kept, idempotent, meaning unchanged.

Meaning is checked against the elaborated graph (node names, ops, attributes, shapes,
edges, outputs, counts) of every network in every example, and on fuzzed layouts of them.
"""

import functools
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import resdsl
from resdsl.cli import main
from resdsl.errors import SpecError, SpecSyntaxError
from resdsl.syntax import parse
from resdsl.tools import fmt

from . import specgen
from .conftest import EXAMPLES, ROOT

SPECS = sorted(  # every shipped spec: the examples, the standard library and the zoo
    [*EXAMPLES.rglob("*.res"), *(ROOT / "resdsl" / "std").rglob("*.res"),
     *(ROOT / "resdsl" / "zoo").rglob("*.res")]
)  # fmt: skip


def ids(paths):
    return [str(p.relative_to(ROOT)) for p in paths]


def fingerprints(text: str, path: Path) -> dict:
    """Each network of a file -> everything elaboration decided about its graph."""
    out = {}
    for d in parse(text, str(path)).definitions:
        if d.kind == "network":
            net = resdsl.loads(text, d.name, path=str(path))
            g = net.graph
            nodes = [(n.name, n.op, dict(n.attrs), g.info(n.name).shape, n.scope, n.block)
                     for n in g.nodes()]  # fmt: skip
            edges = sorted((s, t, data["port"]) for s, t, data in g.nx.edges(data=True))
            out[d.name] = (nodes, edges, g.inputs, g.outputs, net.num_params, net.macs)
    return out


def comments(text: str) -> list[str]:
    return [c.value.rstrip() for c in fmt._concrete(text)[1]]


# --- every spec we ship ------------------------------------------------------------------------


SHIPPED = sorted([*SPECS, *(ROOT / "benchmarks" / "specs").rglob("*.res")])


@pytest.mark.parametrize("path", SHIPPED, ids=ids(SHIPPED))
def test_shipped_specs_are_in_the_canonical_layout(path):
    # what `resdsl fmt --check` (the pre-commit hook) asks of a user's specs, ours meet
    text = path.read_text()
    assert fmt.format_text(text, str(path)) == text


@pytest.mark.parametrize("path", SPECS, ids=ids(SPECS))
def test_examples_idempotent_same_graph_same_comments(path):
    text = path.read_text()
    once = fmt.format_text(text, str(path))
    assert fmt.format_text(once, str(path)) == once
    assert comments(once) == comments(text)
    assert fingerprints(once, path) == fingerprints(text, path)
    # every line fits, except where nothing may break (none in the examples)
    assert max(len(line) for line in once.splitlines()) <= fmt.WIDTH
    assert once.endswith("\n") and not once.endswith("\n\n")
    assert not re.search(r"[ \t]$", once, re.MULTILINE)


def test_examples_have_networks_to_compare():
    """The graph comparison above is not vacuous: most files define a network."""
    with_networks = [p for p in SPECS if fingerprints(p.read_text(), p)]
    assert len(with_networks) >= 15


# --- exact layouts -------------------------------------------------------------------------


def check(source: str, expected: str) -> None:
    assert fmt.format_text(source) == expected
    assert fmt.format_text(expected) == expected


def test_spacing_and_one_statement_per_line():
    check(
        "block   tiny ( c : int,d:int=2 ) ( x ) {y=x->conv1:conv2d(c,3,padding = 1)->relu"
        " z = - y ** -2 * (1 + 2) // 3 % 4 t=(1,) u=(1,2,) v=() return y+x}",
        "block tiny(c: int, d: int = 2) (x) {\n"
        "    y = x -> conv1: conv2d(c, 3, padding=1) -> relu\n"
        "    z = -y ** -2 * (1 + 2) // 3 % 4\n"
        "    t = (1,)\n"
        "    u = (\n"  # a magic trailing comma: one item per line
        "        1,\n"
        "        2,\n"
        "    )\n"
        "    v = ()\n"
        "    return y + x\n"
        "}\n",
    )


def test_keywords_conditions_loops_and_empty_bodies():
    check(
        "block b() (x) { if a and not(b) or c!=1 {} elif d { } else {z=1}\n"
        "for i in range(3){} repeat 2 {x=x->relu} dense x for i in range( 2 ) { x = x }\n"
        "s = if a then (x -> f) else g(x, k = 3,) q = 1 .real w = x[0].shape\n"
        "assert x.rank==3 return x}",
        "block b() (x) {\n"
        "    if a and not (b) or c != 1 {} elif d {} else {\n"
        "        z = 1\n"
        "    }\n"
        "    for i in range(3) {}\n"
        "    repeat 2 {\n"
        "        x = x -> relu\n"
        "    }\n"
        "    dense x for i in range(2) {\n"
        "        x = x\n"
        "    }\n"
        "    s = if a then (x -> f) else g(x, k=3)\n"
        "    q = 1 .real\n"  # `1.real` would read as the float `1.`
        "    w = x[0].shape\n"
        "    assert x.rank == 3\n"
        "    return x\n"
        "}\n",
    )


def test_strings_labels_and_imports_are_kept_as_written():
    check(
        "import 'a.res'\nimport std.blocks\n"
        "network n() (x: 3) { y = x -> \"l{i+1}\": f -> 'q': g() -> h(\"a{b}\", '\\'') "
        "return y }",
        "import 'a.res'\n"
        "import std.blocks\n"
        "\n"
        "network n() (x: 3) {\n"
        "    y = x -> \"l{i+1}\": f -> 'q': g() -> h(\"a{b}\", '\\'')\n"
        "    return y\n"
        "}\n",
    )


def test_inline_blocks_elif_expressions_dotted_labels_and_partials():
    check(
        'inline   block  ln( eps : float = 1e-6 )(x){return x->"{label}" : layernorm(eps)}\n'
        "inline\nblock act()(x){ y = if a==1 then x elif a == 2 then (x->relu)elif b then x "
        "else (x -> gelu) return y }\n"
        "network n()(x: 3){ k = partial( stage , reduction = 8 ) "
        'return x -> "stem.conv": conv2d(8, 1) -> "block1-0": k(8) -> \'head.fc\' : ln }',
        "inline block ln(eps: float = 1e-6) (x) {\n"
        '    return x -> "{label}": layernorm(eps)\n'
        "}\n"
        "\n"
        "inline block act() (x) {\n"
        "    y = if a == 1 then x elif a == 2 then (x -> relu) elif b then x else (x -> gelu)\n"
        "    return y\n"
        "}\n"
        "\n"
        "network n() (x: 3) {\n"
        "    k = partial(stage, reduction=8)\n"
        '    return x -> "stem.conv": conv2d(8, 1) -> "block1-0": k(8) -> \'head.fc\': ln\n'
        "}\n",
    )


def test_comments_around_inline_keep_their_order():
    check(
        "# above\ninline # between\nblock b() (x) { return x }\n",
        "# above\n# between\ninline block b() (x) {\n    return x\n}\n",
    )


def test_blank_lines():
    check(
        "\n\n# header\n\n\nimport 'a.res'\nblock a() (x) {\n\n  y = x\n\n\n  z = y\n\n}\n"
        "# about b\nblock b() (x) { return x }\n\n\n\n# the end\n\n",
        "# header\n"
        "\n"
        "import 'a.res'\n"
        "\n"
        "block a() (x) {\n"
        "    y = x\n"
        "\n"
        "    z = y\n"
        "}\n"
        "\n"
        "# about b\n"
        "block b() (x) {\n"
        "    return x\n"
        "}\n"
        "\n"
        "# the end\n",
    )


def test_empty_and_comment_only_files():
    check("", "")
    assert fmt.format_text("\n \n\t\n") == ""
    check("# only a comment\n", "# only a comment\n")
    assert fmt.format_text("# a   \r\n\r\n\r\n# b") == "# a\n\n# b\n"


def test_long_chain_breaks_before_every_arrow_aligned_under_the_first():
    long = "x -> conv1: conv2d(planes, 3, stride=stride, padding=1, bias=false) -> bn1: batchnorm2d"
    check(
        f"block b(planes: int, stride: int) (x) {{ y = {long} -> relu return y }}",
        "block b(planes: int, stride: int) (x) {\n"
        "    y = x -> conv1: conv2d(planes, 3, stride=stride, padding=1, bias=false)\n"
        "          -> bn1: batchnorm2d\n"
        "          -> relu\n"
        "    return y\n"
        "}\n",
    )
    # a chain written on one line that fits stays on one line
    check(
        "block b() (x) {\n  return x   -> relu ->relu\n}",
        "block b() (x) {\n    return x -> relu -> relu\n}\n",
    )


def test_chains_keep_the_authors_line_breaks():
    """As gofmt keeps line breaks: where the author broke a chain, it stays broken, and
    stages the author kept on one line stay together (the tutorial's style)."""
    check(
        "block b() (x) {\n  y = x -> conv1: conv2d(8, 3)\n -> bn1: batchnorm2d -> relu\n"
        "  return y\n}",
        "block b() (x) {\n"
        "    y = x -> conv1: conv2d(8, 3)\n"
        "          -> bn1: batchnorm2d -> relu\n"
        "    return y\n"
        "}\n",
    )
    # a break before the first arrow aligns the arrows under the head
    check(
        "block b() (x) {\n  return x\n   -> relu\n   -> relu\n}",
        "block b() (x) {\n    return x\n           -> relu\n           -> relu\n}\n",
    )
    # a chain in parentheses (a residual branch) breaks the same way
    check(
        "block b() (x) {\n  return x + (x -> n: layernorm\n -> a: attention(2))\n}",
        "block b() (x) {\n"
        "    return x + (x -> n: layernorm\n"
        "                  -> a: attention(2))\n"
        "}\n",
    )


def test_long_calls_and_tuples_split_at_their_brackets():
    """As black: the items on one indented line when they fit, filled when they are plain
    values, one per line with a trailing comma otherwise; a trailing comma written by the
    author (black's magic trailing comma) keeps one item per line."""
    args = ", ".join(f"argument_{i}" for i in range(7))
    check(
        f"block b() (x) {{ y = x -> c: conv2d({args}) -> relu return y }}",
        "block b() (x) {\n"
        "    y = x -> c: conv2d(\n"
        f"                 {args}\n"
        "             )\n"
        "          -> relu\n"
        "    return y\n"
        "}\n",
    )
    numbers = ", ".join(str(1000 + i) for i in range(30))
    check(
        f"block b() (x) {{ t = ({numbers}) return x }}",
        "block b() (x) {\n"
        "    t = (\n"
        "        1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012,"
        " 1013, 1014,\n"
        "        1015, 1016, 1017, 1018, 1019, 1020, 1021, 1022, 1023, 1024, 1025, 1026, 1027,"
        " 1028, 1029\n"
        "    )\n"
        "    return x\n"
        "}\n",
    )
    check(
        "block b() (x) { return buffer((3,), values=(1, 2, 3), persistent=false,) }",
        "block b() (x) {\n"
        "    return buffer(\n"
        "        (3,),\n"
        "        values=(1, 2, 3),\n"
        "        persistent=false,\n"
        "    )\n"
        "}\n",
    )
    long = " ".join(["(i * i + j * j for i in range(100)", *["for j in range(100)"] * 4]) + ")"
    check(
        f"block b() (x) {{ t = {long} return x }}",
        "block b() (x) {\n"
        "    t = (\n"
        "        i * i + j * j\n"
        "        for i in range(100)\n" + "        for j in range(100)\n" * 4 + "    )\n"
        "    return x\n"
        "}\n",
    )


def test_exactly_width_columns_fits_one_more_breaks():
    def spec(n):
        return f"block b() (x) {{\n    return x -> {'a' * n} -> relu\n}}\n"

    fits = spec(fmt.WIDTH - len("    return x -> ") - len(" -> relu"))
    assert max(map(len, fits.splitlines())) == fmt.WIDTH
    check(fits, fits)
    n = fmt.WIDTH - len("    return x -> ") - len(" -> relu") + 1
    assert fmt.format_text(spec(n)).splitlines()[1:3] == [
        "    return x -> " + "a" * n,
        "             -> relu",
    ]


def test_long_headers_fill_and_align():
    check(
        "network a_really_long_network_name(first_parameter: int = 1, second_parameter: int = 2,"
        ' third: tuple = (1, 2, 3), fourth: str = "x") (input_one: (3, 32, 32), input_two: '
        "(3, 32, 32), input_three: (3, 32, 32)) { return input_one }",
        "network a_really_long_network_name(first_parameter: int = 1, second_parameter: int = 2,\n"
        '                                   third: tuple = (1, 2, 3), fourth: str = "x")\n'
        "                                  (input_one: (3, 32, 32), input_two: (3, 32, 32),\n"
        "                                   input_three: (3, 32, 32)) {\n"
        "    return input_one\n"
        "}\n",
    )


def test_long_assert_message_goes_under_the_condition():
    check(
        "block b() (x) { assert x.rank == 3 and x.channels > 0 and x.height > 0 and "
        'x.width > 0, "a long message here to go past" return x }',
        "block b() (x) {\n"
        "    assert x.rank == 3 and x.channels > 0 and x.height > 0 and x.width > 0,\n"
        '           "a long message here to go past"\n'
        "    return x\n"
        "}\n",
    )


# --- comments in awkward places --------------------------------------------------------------


def test_comments_at_ends_of_lines_between_statements_and_before_braces():
    check(
        '  # header\nimport "a.res"   # trailing import\n'
        "block tiny(c: int) (x) {  # after brace\n"
        "  y=x->relu # after chain\n  # before return\n\n  \n  return y+x # end\n"
        "  # before close brace\n}  # after close brace\n# end of file",
        "# header\n"
        'import "a.res"  # trailing import\n'
        "\n"
        "block tiny(c: int) (x) {  # after brace\n"
        "    y = x -> relu  # after chain\n"
        "    # before return\n"
        "\n"
        "    return y + x  # end\n"
        "    # before close brace\n"
        "}  # after close brace\n"
        "\n"
        "# end of file\n",
    )


def test_comments_of_consecutive_statements_are_aligned():
    check(
        "block b() (x) {\n  a = x # one\n  bb = a -> relu       # two\n\n  c = bb # three\n"
        "  return c\n}",
        "block b() (x) {\n"
        "    a = x           # one\n"
        "    bb = a -> relu  # two\n"
        "\n"
        "    c = bb  # three\n"
        "    return c\n"
        "}\n",
    )


def test_trailing_comma_or_comment_puts_one_parameter_per_line():
    expected = "network n(\n    k: int = 1,\n    w: int = 2,\n) (x: 3) {\n    return x\n}\n"
    check("network n(k: int = 1, w: int = 2,) (x: 3) { return x }", expected)
    # without the trailing comma the list is filled again
    check(expected.replace("2,\n", "2\n"), "network n(k: int = 1, w: int = 2) (x: 3) {\n"
          "    return x\n}\n")  # fmt: skip
    check(
        "block b() (x, y,) { return x }",
        "block b() (\n    x,\n    y,\n) {\n    return x\n}\n",
    )


def test_comments_inside_parameter_lists():
    check(
        "network n( # the list\nk: int = 1 # the first\n, w: int = 2,\n  # about v\n"
        " v: int = 3  # the last\n) (x: 3) {\nreturn x }",
        "network n(  # the list\n"
        "    k: int = 1,  # the first\n"
        "    w: int = 2,\n"
        "    # about v\n"
        "    v: int = 3,  # the last\n"
        ") (x: 3) {\n"
        "    return x\n"
        "}\n",
    )
    # A comment where a header has no line break moves, with the header's others, above
    # the definition, in order; one before `{` goes to the top of the body.
    check(
        "block # odd place\n c(x: # in a parameter\n int, y: int) (z # in inputs\n)"
        " # before brace\n{ # after brace\n return z }",
        "# odd place\n"
        "# in a parameter\n"
        "# in inputs\n"
        "block c(x: int, y: int) (z) {  # before brace\n"
        "    # after brace\n"
        "    return z\n"
        "}\n",
    )


def test_comments_inside_expressions_move_above_the_statement():
    check(
        "block b() (x) {\n    y = f(x,   # inside call\n          2)  # after\n"
        "    z = (x  # first\n  + # second\n y)\n    return y\n}",
        "block b() (x) {\n"
        "    # inside call\n"
        "    y = f(x, 2)  # after\n"
        "    # first\n"
        "    # second\n"
        "    z = (x + y)\n"
        "    return y\n"
        "}\n",
    )


def test_comments_inside_chains_stay_on_their_stage():
    check(
        "block b() (x) {\n    y = x -> a  # c1\n          # own line in chain\n"
        "          -> b ->  # after arrow\n          c\n    return y\n}",
        "block b() (x) {\n"
        "    y = x -> a  # c1\n"
        "          # own line in chain\n"
        "          -> b  # after arrow\n"
        "          -> c\n"
        "    return y\n"
        "}\n",
    )
    # ... unless one of them is inside a stage: then they all go above
    check(
        "block b() (x) {\n    return x -> a  # c1\n      -> f(1, # c2\n 2)\n}",
        "block b() (x) {\n    # c1\n    # c2\n    return x -> a\n             -> f(1, 2)\n}\n",
    )


def test_comments_around_if_clauses_and_headers():
    check(
        "block b() (x) {\n    if a  # in if header\n    { z = 1 }  # after if body\n"
        "    else { # after else brace\n    }\n"
        "    for i # in for\n in range(2) { }\n    return x\n}",
        "block b() (x) {\n"
        "    if a {  # in if header\n"
        "        z = 1\n"
        "    } else {  # after if body\n"
        "        # after else brace\n"
        "    }\n"
        "    for i in range(2) {  # in for\n"
        "    }\n"
        "    return x\n"
        "}\n",
    )


def test_assert_comment_at_the_comma():
    check(
        'block b() (x) {\n    assert x.rank == 3,  # why\n        "m"\n    return x\n}',
        'block b() (x) {\n    assert x.rank == 3,  # why\n           "m"\n    return x\n}\n',
    )


# --- fuzzed layouts ------------------------------------------------------------------------

FUZZ = [EXAMPLES / "highway.res", EXAMPLES / "long_skips.res"]
SPACES = [" ", "\n", "\t ", " \n      ", "\r\n"]  # never a blank line
COMMENTS = [*SPACES, "  # fuzz\n", "\n# fuzz on its own line\n", "\n\n # fuzz after a blank\n"]


@functools.cache
def tokens(path: Path) -> list[str]:
    tree, _ = fmt._concrete(path.read_text())
    return [str(t) for t in tree.scan_values(lambda v: hasattr(v, "type"))]


@functools.cache
def formatted_tokens(path: Path) -> str:
    """The file's tokens, one space apart, formatted: what any layout without comments or
    blank lines formats to."""
    return fmt.format_text(" ".join(tokens(path)))


@functools.cache
def original_fingerprints(path: Path) -> dict:
    return fingerprints(path.read_text(), path)


def interleave(toks: list[str], seps: list[str]) -> str:
    return "".join(s + t for s, t in zip(seps, toks, strict=False)) + seps[-1]


@pytest.mark.parametrize("path", FUZZ, ids=ids(FUZZ))
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_whitespace_gives_one_layout(path, data):
    """Without comments or blank lines, the layout depends on the input's only through the
    line breaks before arrows (an authored chain layout): with none, it is one layout."""
    toks = tokens(path)
    seps = data.draw(st.lists(st.sampled_from(SPACES), min_size=len(toks) + 1,
                              max_size=len(toks) + 1))  # fmt: skip
    seps = [" " if k < len(toks) and toks[k] == "->" else s for k, s in enumerate(seps)]
    assert fmt.format_text(interleave(toks, seps)) == formatted_tokens(path)


@pytest.mark.parametrize("path", FUZZ, ids=ids(FUZZ))
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_comments_survive_and_meaning_is_kept(path, data):
    toks = tokens(path)
    seps = data.draw(st.lists(st.sampled_from(COMMENTS), min_size=len(toks) + 1,
                              max_size=len(toks) + 1))  # fmt: skip
    text = interleave(toks, seps)
    once = fmt.format_text(text, str(path))
    assert fmt.format_text(once, str(path)) == once
    assert comments(once) == comments(text) == [c.strip() for c in seps if "#" in c]
    assert fingerprints(once, path) == original_fingerprints(path)


# --- errors and the safety net -----------------------------------------------------------------


def test_syntax_error_is_the_usual_spec_error():
    with pytest.raises(SpecSyntaxError) as e:
        fmt.format_text("network n() (x: 3) {\n  return x ->\n}\n", "bad.res")
    assert (e.value.line, e.value.column) == (3, 1)


def test_output_that_would_change_meaning_is_refused(monkeypatch):
    real = fmt._Printer.expr

    def drop_unary(self, node):  # a bug: `-x` printed as `x`
        text = real(self, node)
        return text[1:] if getattr(node, "data", "") == "unary" else text

    monkeypatch.setattr(fmt._Printer, "expr", drop_unary)
    with pytest.raises(fmt.FormatterError, match="different syntax tree"):
        fmt.format_text("block b() (x) { return -x }")


def test_output_that_would_lose_a_comment_is_refused(monkeypatch):
    monkeypatch.setattr(fmt._Printer, "own_lines", lambda self, comments, indent: None)
    with pytest.raises(fmt.FormatterError, match="comment"):
        fmt.format_text("block b() (x) { y = f(x, # lost\n 1) return y }")


# --- the command line ----------------------------------------------------------------------

MESSY = "block b() (x) {return x->relu}\n"
TIDY = "block b() (x) {\n    return x -> relu\n}\n"


def test_cli_rewrites_only_changed_files(spec, capsys):
    messy, tidy = spec(MESSY, "messy.res"), spec(TIDY, "tidy.res")
    inode = os.stat(tidy).st_ino
    assert main(["fmt", messy, tidy]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"reformatted {messy}\n"
    assert Path(messy).read_text() == TIDY
    assert os.stat(tidy).st_ino == inode  # not rewritten


def test_cli_check_fails_then_passes_after_formatting(spec, capsys):
    messy, tidy = spec(MESSY, "messy.res"), spec(TIDY, "tidy.res")
    assert main(["fmt", "--check", messy, tidy]) == 1
    out, err = capsys.readouterr()
    assert out == f"{messy}\n"
    assert err == "1 of 2 files would be reformatted\n"
    assert Path(messy).read_text() == MESSY  # --check writes nothing
    assert main(["fmt", messy]) == 0
    assert main(["fmt", "--check", messy, tidy]) == 0
    assert capsys.readouterr().out == ""


def test_cli_diff(spec, capsys):
    messy = spec(MESSY, "messy.res")
    assert main(["fmt", "--diff", messy]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        f"--- {messy}", f"+++ {messy}", "@@ -1 +1,3 @@",
        "-block b() (x) {return x->relu}", "+block b() (x) {", "+    return x -> relu", "+}",
    ]  # fmt: skip
    assert Path(messy).read_text() == MESSY


def test_cli_crlf_counts_as_a_change(spec):
    path = spec("", "crlf.res")
    Path(path).write_bytes(TIDY.replace("\n", "\r\n").encode())
    assert main(["fmt", "--check", path]) == 1
    assert main(["fmt", path]) == 0
    assert Path(path).read_bytes() == TIDY.encode()


def test_cli_stdin_to_stdout(monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(MESSY))
    assert main(["fmt", "-"]) == 0
    assert capsys.readouterr().out == TIDY
    monkeypatch.setattr("sys.stdin", io.StringIO(MESSY))
    assert main(["fmt", "--check", "-"]) == 1
    assert capsys.readouterr().out == "-\n"


def test_cli_syntax_error_leaves_the_file_and_formats_the_others(spec, capsys):
    bad = spec("network n() (x: 3) {\n  return x ->\n}\n", "bad.res")
    messy = spec(MESSY, "messy.res")
    assert main(["fmt", bad, messy]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:3:1: error[E0101]: unexpected `}}`" in err
    assert "Traceback" not in err
    assert Path(bad).read_text() == "network n() (x: 3) {\n  return x ->\n}\n"
    assert Path(messy).read_text() == TIDY


def test_cli_missing_file_is_a_usage_error(tmp_path, capsys):
    assert main(["fmt", str(tmp_path / "nope.res")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_formatter_bug_is_an_internal_error_and_writes_nothing(spec, monkeypatch, capsys):
    path = spec(MESSY, "messy.res")
    monkeypatch.setattr(fmt._Printer, "own_lines", lambda self, comments, indent: None)
    Path(path).write_text("block b() (x) { y = f(x, # lost\n 1) return y }")
    assert main(["fmt", path]) == 3
    assert "internal error" in capsys.readouterr().err
    assert "# lost" in Path(path).read_text()


def test_cli_writes_through_symlinks(spec):
    target = spec(MESSY, "real.res")
    link = Path(target).parent / "link.res"
    link.symlink_to(target)
    assert main(["fmt", str(link)]) == 0
    assert link.is_symlink()
    assert Path(target).read_text() == TIDY


def test_directories_stand_for_their_res_files(tmp_path, capsys):
    (tmp_path / "sub").mkdir()
    (tmp_path / ".hidden").mkdir()
    messy = "network n() (x: (4,)) {\nreturn x->linear(2)\n}\n"
    for rel in ("a.res", "sub/b.res", ".hidden/c.res", "sub/notes.txt"):
        (tmp_path / rel).write_text(messy)
    assert main(["fmt", "--check", str(tmp_path)]) == 1
    listed = capsys.readouterr().out.split()
    assert listed == [str(tmp_path / "a.res"), str(tmp_path / "sub" / "b.res")]
    assert main(["check", "-q", str(tmp_path)]) == 0
    assert main(["fmt", str(tmp_path)]) == 0
    assert main(["fmt", "--check", str(tmp_path)]) == 0
    assert (tmp_path / ".hidden" / "c.res").read_text() == messy


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=specgen.specs())
def test_generated_specs_keep_their_meaning(text):
    """Specs from the fuzzer's generator (random blocks, loops, skips, projections, concats):
    formatting is idempotent and the graph is unchanged."""
    path = Path("gen.res")
    try:
        before = fingerprints(text, path)
    except resdsl.SpecError:
        return  # only the layout of valid specs is compared here; errors are test_fuzz's
    once = fmt.format_text(text, str(path))
    assert fmt.format_text(once, str(path)) == once
    assert fingerprints(once, path) == before


# --- code in the docs --------------------------------------------------------------------------

DOC_FENCE = re.compile(r"(?:<!-- from (?P<source>\S+) -->\n)?```res\n(?P<body>.*?)```", re.S)
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def doc_snippets() -> list[tuple[str, str]]:
    """Every ```res block of README.md and docs/*.md that is not an excerpt of a shipped
    file (an excerpt is checked against its file): (where, text)."""
    out = []
    for path in DOCS:
        text = path.read_text()
        for m in DOC_FENCE.finditer(text):
            if m["source"] is None:
                line = text[: m.start("body")].count("\n") + 1
                out.append((f"{path.relative_to(ROOT)}:{line}", m["body"]))
    return out


def _wrapped(body: str) -> str:
    """Statements shown on their own, as the body of a block (to format them)."""
    inner = "".join(f"    {line}" if line.strip() else line for line in body.splitlines(True))
    return f"block doc() (x) {{\n{inner}}}\n"


@pytest.mark.parametrize("where, body", doc_snippets(), ids=[w for w, _ in doc_snippets()])
def test_docs_code_is_in_the_canonical_layout(where, body):
    """A whole file is formatted as it is; statements shown on their own as a block body.
    `{ ... }` stands for a body the text leaves out."""
    body = body.replace("{ ... }", "{}")
    try:
        fmt.format_text(body)
    except SpecError:
        body = _wrapped(body)
    assert fmt.format_text(body) == body, f"{where}: run resdsl fmt on it"


def test_docs_have_code_to_check():
    assert len(doc_snippets()) >= 15


def test_negative_numbers_fill_lines_and_a_one_element_tuple_keeps_its_comma():
    """Imported specs hold long tuples of negative numbers (one per line made Swin V2's
    spec too large to parse) and `(n,)` shapes in calls too wide for a line (split, it
    lost its comma: `(n)` is a number)."""
    numbers = ", ".join(str(-1000 - i) for i in range(24))
    check(
        f"block b() (x) {{ t = ({numbers}) return x }}",
        "block b() (x) {\n"
        "    t = (\n"
        "        -1000, -1001, -1002, -1003, -1004, -1005, -1006, -1007, -1008, -1009, -1010,"
        " -1011, -1012,\n"
        "        -1013, -1014, -1015, -1016, -1017, -1018, -1019, -1020, -1021, -1022, -1023\n"
        "    )\n"
        "    return x\n"
        "}\n",
    )
    label = "a" * 70
    check(
        f'block b() (x) {{ y = x -> "{label}": reshape((2304,)) -> relu return y }}',
        "block b() (x) {\n"
        f'    y = x -> "{label}": reshape(\n'
        "                 (2304,)\n"
        "             )\n"
        "          -> relu\n"
        "    return y\n"
        "}\n",
    )
