"""Editor and pre-commit support: the TextMate grammar and `.pre-commit-hooks.yaml`.

The grammar's keyword and op lists are copies of the parser's KEYWORDS and the op table;
these tests fail when either changes without the other.
"""

import json
import re
import shlex

import pytest

from resdsl.cli import _parser, main
from resdsl.ops import OPS
from resdsl.syntax.parser import KEYWORDS
from resdsl.syntax.parser import _parser as lark_parser

from .conftest import EXAMPLES, ROOT

GRAMMAR = ROOT / "editors" / "resdsl.tmLanguage.json"


@pytest.fixture(scope="module")
def grammar() -> dict:
    return json.loads(GRAMMAR.read_text())


def alternatives(pattern: str) -> set[str]:
    """The words of a ``\\b(?:a|b|c)\\b`` pattern."""
    m = re.fullmatch(r"\\b\(\?:([\w|]+)\)\\b", pattern)
    assert m, f"not a word list: {pattern}"
    return set(m.group(1).split("|"))


def patterns(node) -> list[tuple[str, str]]:
    """Every regex in a grammar (sub)tree, with its key: match, begin or end."""
    if isinstance(node, dict):
        own = [(k, node[k]) for k in ("match", "begin", "end") if k in node]
        return own + [p for v in node.values() for p in patterns(v)]
    if isinstance(node, list):
        return [p for v in node for p in patterns(v)]
    return []


def test_grammar_identity(grammar):
    assert grammar["scopeName"] == "source.resdsl"
    assert grammar["fileTypes"] == ["res"]
    for ref in re.findall(r'"include": "#([\w-]+)"', GRAMMAR.read_text()):
        assert ref in grammar["repository"], f"#{ref} is not defined"


def test_every_regex_compiles(grammar):
    found = patterns(grammar)
    assert len(found) > 20
    for key, p in found:
        if key == "end" and re.fullmatch(r"\\[1-9]", p):  # the quote `begin` captured
            continue
        re.compile(p)


def test_keywords_are_exactly_the_parsers(grammar):
    words = set()
    for p in grammar["repository"]["keywords"]["patterns"]:
        words |= alternatives(p["match"])
    assert words == KEYWORDS


def test_parser_keywords_are_exactly_the_grammar_files():
    """KEYWORDS itself cannot drift from grammars/resdsl.lark."""
    literal_words = {
        t.pattern.value
        for t in lark_parser().terminals
        if t.pattern.type == "str" and t.pattern.value.isidentifier()
    }
    assert literal_words == KEYWORDS


def test_op_names_are_exactly_the_op_table(grammar):
    op = grammar["repository"]["op"]["match"]
    assert alternatives(op) == set(OPS)
    for name in OPS:
        assert re.fullmatch(op, name), name
    for other in ("relu2", "conv", "my_conv2d", "addx"):
        assert not re.search(op, other), other


def test_numbers(grammar):
    floats, ints = (p["match"] for p in grammar["repository"]["number"]["patterns"])
    for text in ("0.5", ".5", "1.", "1e-5", "2.5E+3", "1_000.25"):
        assert re.fullmatch(floats, text), text
        assert not re.fullmatch(ints, text), text
    for text in ("64", "1_000", "0"):
        assert re.fullmatch(ints, text), text
        assert not re.fullmatch(floats, text), text
    for name in ("conv2d", "x_1", "layer4"):  # digits inside names are not numbers
        assert not re.search(ints, name) and not re.search(floats, name), name


def test_template_labels_interpolate_and_plain_strings_do_not(grammar):
    label = grammar["repository"]["label-string"]["begin"]
    assert re.match(label, '"layer{i + 1}": basic(64)')
    assert re.match(label, "'{i}' : f")
    assert not re.match(label, '"a{b}")')  # an ordinary string argument
    assert not re.match(label, '"x", "y": z')  # the colon is after another string
    interpolation = grammar["repository"]["interpolation"]
    assert (interpolation["begin"], interpolation["end"]) == (r"\{", r"\}")
    assert {"include": "#interpolation"} in grammar["repository"]["label-string"]["patterns"]
    plain = grammar["repository"]["string"]["patterns"]
    assert all({"include": "#interpolation"} not in p["patterns"] for p in plain)


def test_comments_definitions_and_chain_arrow(grammar):
    repo = grammar["repository"]
    assert re.match(repo["comment"]["match"], "# a comment").group(0) == "# a comment"
    m = re.match(repo["definition"]["begin"], "network resnet18(")
    assert m.groups() == ("network", "resnet18")
    arrow = repo["operator"]["patterns"][0]
    assert (arrow["match"], arrow["name"]) == ("->", "keyword.operator.chain.resdsl")


# --- pre-commit ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hooks() -> list[dict]:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())


def test_hooks_run_real_subcommands(hooks):
    assert [h["id"] for h in hooks] == ["resdsl-check", "resdsl-fmt"]
    commands = _parser()._subparsers._group_actions[0].choices
    for hook in hooks:
        program, command, *options = shlex.split(hook["entry"])
        assert program == "resdsl" and command in commands
        assert hook["language"] == "python"
        assert re.search(hook["files"], "nets/resnet.res")
        assert not re.search(hook["files"], "resnet.res.bak")
        _parser().parse_args([command, *options, "x.res"])  # the options exist


def test_hooks_pass_and_fail_like_pre_commit_runs_them(hooks, spec, capsys):
    """pre-commit appends the staged files' paths to the entry."""
    formatted = EXAMPLES / "highway.res"
    entries = {h["id"]: shlex.split(h["entry"])[1:] for h in hooks}
    assert main([*entries["resdsl-check"], str(formatted)]) == 0
    messy = spec("network n() (x: 3) {return x->relu}", "messy.res")
    assert main([*entries["resdsl-check"], messy]) == 0
    assert main([*entries["resdsl-fmt"], messy]) == 1
    broken = spec("network n() (x: 3) { return y }", "broken.res")
    assert main([*entries["resdsl-check"], broken]) == 1
    capsys.readouterr()
