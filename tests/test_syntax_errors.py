"""Syntax errors that help: each common mistake is reported where it is, with a hint (and a
note at the unclosed `{`). Positions are counted by hand or from the spec text itself."""

import pytest

import resdsl
from resdsl.cli import main
from resdsl.errors import Span

NET = "network n() (x: (3, 8, 8)) {\n"  # line 1 of most specs below


def col(text: str, line: int, token: str) -> int:
    """1-based column of the first `token` on 1-based `line` of `text`."""
    return text.splitlines()[line - 1].index(token) + 1


def syntax_error(text: str, path: str = "spec.res") -> resdsl.SpecSyntaxError:
    with pytest.raises(resdsl.SpecSyntaxError) as info:
        resdsl.loads(text, path=path)
    assert info.value.code == "E0101"
    return info.value


def where(err: resdsl.SpecError) -> tuple[int, int, int, int]:
    s = err.span
    return s.line, s.column, s.end_line, s.end_column


# --- a `for` body without its `}` ----------------------------------------------------------

UNCLOSED_FOR = """\
block basic(c: int) (x) {
    y = x -> conv2d(c, 3, padding=1)
    for i in range(2) {
        y = y -> conv2d(c, 3, padding=1)
    return y
}

network net() (x: (3, 8, 8)) {
    return x -> basic(3)
}
"""


def test_unclosed_for_points_at_network_and_notes_the_opener():
    err = syntax_error(UNCLOSED_FOR, "loop.res")
    assert err.message == "unexpected `network`"
    assert where(err) == (8, 1, 8, 8)  # where the parser noticed
    assert err.hints == ["a `{` is not closed: add the `}` that ends the `for` body of line 3"]
    (note,) = err.notes
    assert note.span == Span("loop.res", 3, 23, 3, 24)  # the `{` of `for i in range(2) {`
    assert col(UNCLOSED_FOR, 3, "{") == 23
    assert note.message == (
        "this `{` is not closed (the `}` on line 6 is indented as for an outer `{`)"
    )


def test_unclosed_for_rendered():
    err = syntax_error(UNCLOSED_FOR, "loop.res")
    assert resdsl.render(err) == "\n".join(
        [
            "loop.res:8:1: error[E0101]: unexpected `network`",
            "   8 | network net() (x: (3, 8, 8)) {",
            "       ^^^^^^^",
            "  hint: a `{` is not closed: add the `}` that ends the `for` body of line 3",
            "  note: loop.res:3:23: this `{` is not closed (the `}` on line 6 is indented as "
            "for an outer `{`)",
            "     3 |     for i in range(2) {",
            "                               ^",
        ]
    )


def test_unclosed_body_at_end_of_file_notes_the_innermost_opener():
    text = NET + "    return x\n"
    err = syntax_error(text)
    assert err.message == "unexpected end of file"
    assert where(err) == (2, 13, 2, 13)
    assert err.hints == ["a `{` is not closed: add the `}` that ends the `network` body of line 1"]
    assert [(n.message, n.span) for n in err.notes] == [
        ("this `{` is not closed", Span("spec.res", 1, 28, 1, 29))
    ]


def test_unclosed_for_at_end_of_file_found_by_indentation():
    text = NET + "    for i in range(2) {\n        x = x -> relu\n    return x\n}\n"
    err = syntax_error(text)
    assert (err.message, err.line, err.column) == ("unexpected end of file", 5, 2)
    assert err.hints == ["a `{` is not closed: add the `}` that ends the `for` body of line 2"]
    assert err.notes[0].span == Span("spec.res", 2, 23, 2, 24)


# --- Python's conditional -----------------------------------------------------------------

CONDITIONAL = "the conditional is written `if c then a else b`, not Python's `a if c else b`"


def test_python_conditional_in_an_argument():
    text = NET + "    for i in range(2) {\n"
    text += "        x = x -> conv2d(8, 3, stride=2 if i == 0 else 1)\n    }\n    return x\n}\n"
    err = syntax_error(text)
    assert err.message == "unexpected `if`"
    assert where(err) == (3, 40, 3, 42)
    assert err.column == col(text, 3, "if")
    assert err.hints == [CONDITIONAL]


def test_python_conditional_in_an_assignment_points_at_its_if():
    # `if` after `2` starts an `if` statement here; the parser notices at `else`
    text = NET + "    k = 2 if true else 1\n    return x\n}\n"
    err = syntax_error(text)
    assert (err.message, where(err)) == ("unexpected `if`", (2, 11, 2, 13))
    assert err.hints == [CONDITIONAL]


# --- a missing `->` -----------------------------------------------------------------------

ARROW = "did you mean `->`? a chain goes on with `... -> relu`"


@pytest.mark.parametrize(
    ("stage", "hint"),
    [
        ("relu", ARROW),  # the parser noticed at `return`, one line late
        ("relu -> relu", ARROW),
        ("relu()", ARROW),
        ("c: relu", "did you mean `->`? a chain goes on with `... -> c: ...`"),
    ],
)
def test_missing_arrow_before_a_stage_on_the_next_line(stage, hint):
    text = NET + "    y = x -> conv2d(8, 3)\n        " + stage + "\n    return y\n}\n"
    err = syntax_error(text)
    name = stage.split(":")[0].split(" ")[0].split("(")[0]
    assert err.message == f"unexpected `{name}`"
    assert where(err) == (3, 9, 3, 9 + len(name))
    assert err.hints == [hint]


def test_missing_arrow_on_one_line():
    text = NET + "    y = x -> conv2d(8, 3) relu\n    return y\n}\n"
    err = syntax_error(text)
    assert (err.message, where(err)) == ("unexpected `relu`", (2, 27, 2, 31))
    assert err.column == col(text, 2, "relu")
    assert err.hints == [ARROW]


def test_missing_equals_is_not_taken_for_a_missing_arrow():
    text = NET + "    z y\n    return x\n}\n"
    err = syntax_error(text)
    assert (err.message, where(err)) == ("unexpected `y`", (2, 7, 2, 8))
    assert err.hints == ["expected `,` or `=`"]


# --- misspelt keywords --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "word", "keyword"),
    [("retrun y", "retrun", "return"), ("fro i in range(2) {\n    }", "fro", "for")],
)
def test_misspelt_statement_keyword(line, word, keyword):
    text = NET + "    y = x -> conv2d(8, 3)\n    " + line + "\n    return y\n}\n"
    err = syntax_error(text)
    assert err.message == f"`{word}` is not a keyword"
    assert where(err) == (3, 5, 3, 5 + len(word))
    assert err.hints == [f"did you mean `{keyword}`?"]


def test_misspelt_definition_keyword():
    err = syntax_error("netwrok n() (x: (3, 8, 8)) {\n    return x\n}\n")
    assert (err.message, where(err)) == ("`netwrok` is not a keyword", (1, 1, 1, 8))
    assert err.hints == ["did you mean `network`?"]


def test_misspelt_keyword_rendered_by_the_cli(tmp_path, capsys):
    spec = tmp_path / "typo.res"
    spec.write_text(NET + "    y = x -> relu\n    retrun y\n}\n")
    assert main(["check", str(spec), "--color", "never"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[:4] == [
        f"{spec}:3:5: error[E0101]: `retrun` is not a keyword",
        "   3 |     retrun y",
        "           ^^^^^^",
        "  hint: did you mean `return`?",
    ]


# --- expected tokens in words -------------------------------------------------------------


def test_expected_tokens_in_words():
    err = syntax_error(NET + "    y = (3 + )\n    return y\n}\n")
    assert (err.message, err.line, err.column) == ("unexpected `)`", 2, 14)
    assert err.hints == ["expected a name, a number, a string, `(`, `+`, `-`, `false` or `true`"]


def test_expected_end_of_file_in_words():
    err = syntax_error(NET + "    return x\n}\nfoo\n")
    assert (err.message, err.line, err.column) == ("unexpected `foo`", 4, 1)
    assert err.hints == ["expected end of file, `block`, `import`, `inline` or `network`"]


def test_one_expected_token():
    err = syntax_error(NET + "    for i im range(2) {\n    }\n    return x\n}\n")
    assert (err.message, err.line, err.column) == ("unexpected `im`", 2, 11)
    assert err.hints == ["expected `in`"]
