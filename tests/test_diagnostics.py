"""Editor-grade diagnostics: every independent error in one run, in source order, with codes,
exact positions, notes and hints; JSON for tools; colour only where asked for."""

from __future__ import annotations

import json
import textwrap

import pytest

import resdsl
from resdsl.cli import main
from resdsl.errors import ArgumentError, ShapeError, UnknownNameError, render, use_color

THREE = textwrap.dedent("""\
    block basic(c: int) (x) {
        y = x -> conv2d(c, 3, padding=1) -> relu
        return y + x
    }

    network net() (x: (3, 8, 8)) {
        a = x -> conv2d(8, 3, padding=1)
        b = a -> basic(16)
        c = x -> conv2d(8, 3, paddin=1)
        d = a -> relux
        e = a -> basic(8)
        return e
    }
""")


def errors_of(text: str, **params) -> list[resdsl.SpecError]:
    with pytest.raises(resdsl.SpecError) as info:
        resdsl.loads(text, path="net.res", **params)
    return info.value.errors


def positions(errors) -> list[tuple[str, int, int]]:
    return [(e.code, e.line, e.column) for e in errors]


def test_three_independent_errors_in_source_order():
    errors = errors_of(THREE)
    # the add in `basic` (found while running line 8), the keyword on line 9, the op on line 10
    assert positions(errors) == [("E0301", 3, 12), ("E0201", 9, 27), ("E0201", 10, 14)]
    assert [type(e) for e in errors] == [ShapeError, UnknownNameError, UnknownNameError]
    assert errors[1].message == "`conv2d` has no argument `paddin`"
    assert errors[1].hints[0] == "did you mean `padding`?"
    assert errors[2].message == "unknown op or block `relux`"
    assert errors[2].hints == ["did you mean `relu` or `relu6` or `gelu`?"]
    # the error in the block names the instance it was found in
    assert errors[0].notes[-1].message == "in `basic_0`, an instance of `basic`"
    assert (errors[0].notes[-1].span.line, errors[0].notes[-1].span.column) == (8, 14)


def test_the_raised_error_is_the_first_and_render_shows_all():
    with pytest.raises(ShapeError) as info:
        resdsl.loads(THREE, path="net.res")
    text = render(info.value)
    assert text.startswith("net.res:3:12: error[E0301]: cannot add tensors")
    assert text.index("net.res:9:27: error[E0201]") < text.index("net.res:10:14: error[E0201]")
    assert text.endswith("\n\n3 errors")


def test_a_failed_statement_poisons_its_names_without_more_errors():
    errors = errors_of("""
network net() (x: (3, 8, 8)) {
    a = x -> conv2d(8, 3, padding=1) -> relux
    b = a -> relu
    c, d = (a, a)
    for i in range(2) { b = b + a }
    return b + c
}""")
    assert positions(errors) == [("E0201", 3, 41)]  # uses of `a`, `b`, `c` stay silent


def test_one_error_in_a_block_body_is_reported_once_for_all_instances():
    errors = errors_of("""
block bad() (x) {
    return x -> conv2d(4, 3, stride=0)
}
network net() (x: (3, 8, 8)) {
    y = x
    repeat 5 { y = y -> bad }
    z = x -> bad
    return z
}""")
    assert positions(errors) == [("E0302", 3, 30)]


def test_errors_in_several_block_statements_are_all_found():
    errors = errors_of("""
block two() (x) {
    a = x -> conv2d(4, 3, strid=2)
    b = x -> maxpool2d(0)
    return x
}
network net() (x: (3, 8, 8)) {
    return x -> two
}""")
    assert positions(errors) == [("E0201", 3, 27), ("E0302", 4, 24)]


def test_every_unknown_parameter_type_is_reported():
    errors = errors_of("""
block a(n: integer) (x) { return x }
block b(m: flaot, k: int = 1) (x) { return x }
network net() (x: 3) { return x }""")
    assert positions(errors) == [("E0201", 2, 12), ("E0201", 3, 12)]
    assert errors[1].hints == ["did you mean `float`?"]


def test_collection_stops_at_twenty_errors():
    body = "\n".join(f"    v{i} = x -> nope{i}" for i in range(30))
    errors = errors_of(f"network net() (x: 3) {{\n{body}\n    return x\n}}")
    assert len(errors) == 20
    assert [e.line for e in errors] == list(range(2, 22))


def test_limits_are_not_recovered_from():
    errors = errors_of("""
network net() (x: 3) {
    a = x -> relux
    repeat 10**12 { x = x -> relu }
    b = x -> nope
    return x
}""")
    assert positions(errors) == [("E0501", 4, 12)]  # stops at once; what came before is dropped


def test_argument_errors_keep_their_class():
    errors = errors_of("network net() (x: 3) { return x -> linear() }")
    assert [type(e) for e in errors] == [ArgumentError]


def test_check_format_json(tmp_path, capsys):
    bad, good = tmp_path / "bad.res", tmp_path / "good.res"
    bad.write_text(THREE)
    good.write_text("network n() (x: (4,)) { return x -> linear(2) }\n")
    assert main(["check", str(bad), str(good), "--format", "json"]) == 1
    captured = capsys.readouterr()
    assert captured.err == ""
    files = json.loads(captured.out)["files"]
    assert [f["ok"] for f in files] == [False, True]
    assert files[1]["summary"] == "2 ops, 10 params, 8 MACs"  # input and linear
    diags = files[0]["diagnostics"]
    assert [(d["code"], d["span"]["line"], d["span"]["column"]) for d in diags] == [
        ("E0301", 3, 12), ("E0201", 9, 27), ("E0201", 10, 14)
    ]  # fmt: skip
    assert diags[0]["span"] == {"path": str(bad), "line": 3, "column": 12, "end_line": 3,
                                "end_column": 17}  # fmt: skip
    assert diags[0]["notes"][0]["message"] == "`y` has shape (16, 8, 8)"
    assert diags[2]["hints"] == ["did you mean `relu` or `relu6` or `gelu`?"]


def test_colour_only_when_asked(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.res"
    bad.write_text(THREE)
    assert main(["check", str(bad)]) == 1  # captured stderr is not a terminal
    assert "\x1b[" not in capsys.readouterr().err
    assert main(["check", str(bad), "--color", "always"]) == 1
    err = capsys.readouterr().err
    assert "\x1b[1;31merror[E0301]\x1b[0m" in err

    class Tty:
        def isatty(self):
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_color(Tty()) is True
    monkeypatch.setenv("NO_COLOR", "1")
    assert use_color(Tty()) is False
    assert use_color(Tty(), "always") is True
