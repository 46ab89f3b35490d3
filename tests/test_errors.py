"""Every error class, with exact positions, rendered diagnostics and CLI exit codes.

Expected lines and columns are computed here from the spec text itself (`col(...)`) or
counted by hand, never obtained from resdsl, so a wrong position is caught.
"""

import contextlib
import os

import pytest

import resdsl
from resdsl.cli import main

NET = "network n() (x: (3, 8, 8)) {\n"  # line 1 of most specs below


def col(text: str, line: int, token: str, start: int = 0) -> int:
    """1-based column of the first `token` on 1-based `line` of `text` (from `start`)."""
    return text.splitlines()[line - 1].index(token, start) + 1


def fail(cls: type, text: str, path: str = "spec.res", **kwargs) -> resdsl.SpecError:
    """Load `text` and return the error, which must be exactly of class `cls`."""
    with pytest.raises(cls) as info:
        resdsl.loads(text, path=path, **kwargs)
    assert type(info.value) is cls
    return info.value


def where(err: resdsl.SpecError) -> tuple[int, int]:
    return err.line, err.column


# --- SpecSyntaxError -------------------------------------------------------------------------


def test_syntax_unexpected_token():
    text = NET + "    y = x -> conv2d(4, 3,, 1)\n    return y\n}\n"
    err = fail(resdsl.SpecSyntaxError, text)
    assert err.message == "unexpected `,`"
    assert where(err) == (2, col(text, 2, ",,") + 1)  # the second comma
    assert err.code == "E0101"


def test_syntax_stray_equals_gets_a_keyword_hint():
    text = NET + "    y = x -> conv2d(4, 3) -> stride = 2\n    return y\n}\n"
    err = fail(resdsl.SpecSyntaxError, text)
    assert err.message == "unexpected `=`"
    assert where(err) == (2, col(text, 2, "= 2"))
    assert any("inside a call's parentheses" in h for h in err.hints)


def test_syntax_unexpected_character():
    text = NET + "    y = x -> relu $\n    return y\n}\n"
    err = fail(resdsl.SpecSyntaxError, text, path="char.res")
    assert where(err) == (2, col(text, 2, "$"))
    assert where(err) == (2, 19)  # counted by hand: 4 spaces + "y = x -> relu " is 18
    assert resdsl.render(err) == "\n".join(
        [
            "char.res:2:19: error[E0101]: unexpected character '$'",
            "   2 |     y = x -> relu $",
            " " * (7 + 18) + "^",  # 7-character gutter, then 18 columns before `$`
        ]
    )


EOF_CASES = [
    pytest.param(NET + "    return x -> relu", 2, id="mid-chain-no-newline"),
    pytest.param(NET + "    return x\n", 2, id="missing-brace"),
]


@pytest.mark.parametrize(("text", "line"), EOF_CASES)
def test_syntax_unexpected_end_of_file(text, line):
    err = fail(resdsl.SpecSyntaxError, text)
    assert err.message == "unexpected end of file"
    assert err.line == line


@pytest.mark.parametrize(("text", "line"), EOF_CASES)
def test_syntax_unexpected_end_of_file_column(text, line):
    err = fail(resdsl.SpecSyntaxError, text)
    last = text.splitlines()[-1]
    assert where(err) == (line, len(last) + 1)


def test_syntax_error_in_template_label_points_inside_the_string():
    text = NET + '    y = x -> "l{i +}": relu\n    return y\n}\n'
    err = fail(resdsl.SpecSyntaxError, text)
    assert err.line == 2
    # inside the `{...}` of the string: from `i` up to the closing `}`
    assert col(text, 2, "i +") <= err.column <= col(text, 2, "}")
    open_quote, close_quote = col(text, 2, '"'), col(text, 2, '"', col(text, 2, '"'))
    assert open_quote < err.column < close_quote


def test_syntax_error_in_template_label_exact_column():
    text = NET + '    y = x -> "l{i ) 1}": relu\n    return y\n}\n'
    err = fail(resdsl.SpecSyntaxError, text)
    assert err.message == "unexpected `)`"
    assert where(err) == (2, col(text, 2, ")"))
    assert where(err) == (2, 19)  # by hand: `"` is column 14, so `l{i ` spans 15-18


# --- UnknownNameError ------------------------------------------------------------------------


def test_unknown_variable_with_did_you_mean():
    text = NET + "    features = x -> relu\n    return featurs\n}\n"
    err = fail(resdsl.UnknownNameError, text)
    assert err.message == "unknown name `featurs`"
    assert where(err) == (3, col(text, 3, "featurs"))
    assert err.hints == ["did you mean `features`?"]


def test_unknown_name_inside_template_label():
    text = NET + '    y = x -> "l{j}": relu\n    return y\n}\n'
    err = fail(resdsl.UnknownNameError, text)
    assert where(err) == (2, col(text, 2, "j"))


def test_unknown_op_suggests_relu():
    text = NET + "    y = x -> rleu\n    return y\n}\n"
    err = fail(resdsl.UnknownNameError, text, path="rleu.res")
    assert where(err) == (2, col(text, 2, "rleu"))
    assert where(err) == (2, 14)
    assert err.hints == ["did you mean `relu` or `relu6`?"]
    assert resdsl.render(err) == "\n".join(
        [
            "rleu.res:2:14: error[E0201]: unknown op or block `rleu`",
            "   2 |     y = x -> rleu",
            " " * (7 + 13) + "^^^^",
            "  hint: did you mean `relu` or `relu6`?",
        ]
    )


def test_unknown_keyword_of_a_block_suggests_stride():
    text = (
        "block b(p: int, stride: int = 1) (x) {\n    return x\n}\n"
        + NET
        + "    return x -> b(4, strid=2)\n}\n"
    )
    err = fail(resdsl.UnknownNameError, text)
    assert where(err) == (5, col(text, 5, "strid="))
    assert err.hints == ["did you mean `stride`?"]


def test_unknown_keyword_of_an_op_position_and_hint():
    text = NET + "    y = x -> conv2d(4, 3, strid=2)\n    return y\n}\n"
    with pytest.raises(resdsl.SpecError) as info:
        resdsl.loads(text, path="kw.res")
    err = info.value
    assert "strid" in err.message
    assert where(err) == (2, col(text, 2, "strid="))
    assert "did you mean `stride`?" in err.hints


def test_unknown_keyword_of_an_op_is_an_unknown_name():
    text = NET + "    y = x -> conv2d(4, 3, strid=2)\n    return y\n}\n"
    fail(resdsl.UnknownNameError, text)


def test_unknown_keyword_of_shortcut():
    text = NET + "    y = x -> conv2d(4, 1)\n    return y + shortcut(x, lik=y)\n}\n"
    err = fail(resdsl.UnknownNameError, text)
    assert where(err) == (3, col(text, 3, "lik="))
    assert err.hints == ["did you mean `like`?"]


def test_unknown_tensor_attribute():
    text = NET + "    c = x.chanels\n    return x\n}\n"
    err = fail(resdsl.UnknownNameError, text)
    assert err.message == "tensors have no attribute `chanels`"
    assert where(err) == (2, col(text, 2, "x.chanels"))  # the attribute expression
    assert err.hints == ["did you mean `channels`?"]


def test_unknown_param_type():
    text = "block b(k: itn) (x) {\n    return x\n}\n" + NET + "    return x -> b(1)\n}\n"
    err = fail(resdsl.UnknownNameError, text)
    assert err.message == "unknown type `itn`"
    assert where(err) == (1, col(text, 1, "itn"))
    assert err.hints == ["did you mean `int`?"]


def test_unknown_network_parameter_from_the_api():
    text = "network net(num_classes: int = 10) (x: (3, 8, 8)) {\n    return x\n}\n"
    with pytest.raises(resdsl.UnknownNameError) as info:
        resdsl.loads(text, num_clases=3)
    err = info.value
    assert "num_clases" in err.message
    assert where(err) == (1, col(text, 1, "net("))  # the network's name
    assert err.hints == ["did you mean `num_classes`?"]


# --- ArgumentError ---------------------------------------------------------------------------

BLOCK_P = "block b(p: int) (x) {\n    return x -> conv2d(p, 1)\n}\n"  # lines 1-3


def test_too_many_arguments():
    text = BLOCK_P + NET + "    return x -> b(4, 5)\n}\n"
    err = fail(resdsl.ArgumentError, text)
    assert err.message == "`b` takes 1 parameter(s), got 2"
    assert where(err) == (5, col(text, 5, "5)"))  # the first extra argument


def test_missing_argument():
    text = "block b(p: int, q: int) (x) {\n    return x -> conv2d(p, q)\n}\n"
    text += NET + "    return x -> b(4)\n}\n"
    err = fail(resdsl.ArgumentError, text)
    assert err.message == "`b` needs parameter `q`"
    assert where(err) == (5, col(text, 5, "b(4)"))
    assert [n.message for n in err.notes] == ["declared here"]
    assert (err.notes[0].span.line, err.notes[0].span.column) == (1, col(text, 1, "q:"))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("relu()", "`relu` takes 1 tensor input(s), got 0"),
        ("add(x)", "`add` takes at least 2 tensor input(s), got 1"),
        ("relu(x, x)", "`relu` takes 1 tensor input(s), got 2"),
    ],
)
def test_tensor_input_count(call, message):
    text = NET + f"    y = {call}\n    return y\n}}\n"
    err = fail(resdsl.ArgumentError, text)
    assert err.message == message
    assert where(err) == (2, col(text, 2, call))


def test_block_called_without_a_tensor():
    text = BLOCK_P + NET + "    y = b(4)\n    return y\n}\n"
    err = fail(resdsl.ArgumentError, text)
    assert err.message == "block `b` takes 1 tensor input(s) (x) first"
    assert where(err) == (5, col(text, 5, "b(4)"))
    assert err.notes[0].span.line == 1


def test_keyword_given_twice():
    text = NET + "    y = x -> conv2d(4, 3, stride=1, stride=2)\n    return y\n}\n"
    err = fail(resdsl.ArgumentError, text)
    assert where(err) == (2, col(text, 2, "stride=2"))


# --- TypeMismatchError -----------------------------------------------------------------------


def test_str_where_block_expects_int():
    text = BLOCK_P + NET + '    return x -> b("four")\n}\n'
    err = fail(resdsl.TypeMismatchError, text)
    assert err.message == 'parameter `p` is int, got str "four"'
    assert where(err) == (5, col(text, 5, '"four"'))


def test_str_where_op_expects_int():
    text = NET + '    return x -> conv2d("four", 3)\n}\n'
    err = fail(resdsl.TypeMismatchError, text)
    assert err.message == '`out_channels` expects an int, got str "four"'
    assert where(err) == (2, col(text, 2, '"four"'))


def test_str_for_int_network_parameter():
    text = "network n(k: int = 2) (x: (3, 8, 8)) {\n    return x\n}\n"
    with pytest.raises(resdsl.TypeMismatchError) as info:
        resdsl.loads(text, k="two")
    assert where(info.value) == (1, col(text, 1, "k:"))


def test_tensor_in_arithmetic():
    # tensors take + - * (and numbers: x * 2, x / 2, 1 - x), but not ** or //
    text = NET + "    y = x ** 2\n    return y\n}\n"
    err = fail(resdsl.TypeMismatchError, text)
    assert err.message == "`**` is not defined for a tensor of shape (3, 8, 8) and int 2"
    assert where(err) == (2, col(text, 2, "x ** 2"))
    text = NET + "    y = 2 / x\n    return y\n}\n"
    err = fail(resdsl.TypeMismatchError, text)
    assert where(err) == (2, col(text, 2, "2 / x"))


def test_non_bool_condition_expression():
    text = NET + "    y = if 1 then x else x\n    return y\n}\n"
    err = fail(resdsl.TypeMismatchError, text)
    assert err.message == "expected true or false, got int 1"
    assert where(err) == (2, col(text, 2, "1 then"))


def test_non_bool_if_statement():
    text = NET + "    if 3 {\n        x = x -> relu\n    }\n    return x\n}\n"
    err = fail(resdsl.TypeMismatchError, text)
    assert where(err) == (2, col(text, 2, "3"))


# --- ShapeError ------------------------------------------------------------------------------


def test_mismatched_add_hint_and_notes():
    text = (
        "network n() (x: (16, 32, 32)) {\n"
        "    y = x -> conv2d(32, 3, stride=2, padding=1)\n"
        "    return y + x\n"
        "}\n"
    )
    err = fail(resdsl.ShapeError, text, path="add.res")
    assert err.message == "cannot add tensors of shape (32, 16, 16) and (16, 32, 32)"
    assert where(err) == (3, col(text, 3, "y + x"))
    assert len(err.hints) == 1
    assert "shortcut(" in err.hints[0]
    assert "conv2d(32, 1, stride=2" in err.hints[0]
    notes = " | ".join(n.message for n in err.notes)
    assert "(32, 16, 16)" in notes and "(16, 32, 32)" in notes
    # 7-character gutter; `y + x` starts at column 12, the conv at 14, `x: (...)` at 14
    assert resdsl.render(err) == "\n".join(
        [
            "add.res:3:12: error[E0301]: cannot add tensors of shape (32, 16, 16) and (16, 32, 32)",
            "   3 |     return y + x",
            " " * (7 + 11) + "^^^^^",
            "  hint: project the shortcut: `y + shortcut(x, like=y)` is identity when the "
            "shapes match and `x -> conv2d(32, 1, stride=2, bias=false) -> batchnorm2d` here",
            "  note: add.res:2:14: `y` has shape (32, 16, 16)",
            "     2 |     y = x -> conv2d(32, 3, stride=2, padding=1)",
            "  " + " " * (7 + 13) + "^" * len("conv2d(32, 3, stride=2, padding=1)"),
            "  note: add.res:1:14: `x` has shape (16, 32, 32)",
            "     1 | network n() (x: (16, 32, 32)) {",
            "  " + " " * (7 + 13) + "^" * len("x: (16, 32, 32)"),
        ]
    )


@pytest.mark.parametrize(
    ("size", "stride", "order", "fix"),
    [
        (32, 2, "y + x", "stride=2"),
        (32, 2, "x + y", "stride=2"),  # the skip is found by graph order, not by side
        (7, 2, "y + x", "stride=2"),  # odd size: ceil(7 / 2) == 4
        (32, 4, "y + x", "stride=4"),
        (32, 1, "y + x", "conv2d(32, 1, bias=false)"),  # channels only: no stride
    ],
)
def test_mismatched_add_hint_names_the_right_stride(size, stride, order, fix):
    text = (
        f"network n() (x: (16, {size}, {size})) {{\n"
        f"    y = x -> conv2d(32, 3, stride={stride}, padding=1)\n"
        f"    return relu({order})\n"
        "}\n"
    )
    err = fail(resdsl.ShapeError, text)
    assert where(err) == (3, col(text, 3, order))
    (hint,) = err.hints
    assert "shortcut(x, like=y)" in hint
    assert fix in hint
    if stride == 1:
        assert "stride=" not in hint


def test_conv_on_rank_1_tensor():
    text = "network n() (x: (16,)) {\n    return x -> conv2d(4, 3)\n}\n"
    err = fail(resdsl.ShapeError, text)
    assert err.message == "`conv2d` expects a feature map of rank 3, got shape (16,)"
    assert where(err) == (2, col(text, 2, "conv2d"))


def test_conv_with_empty_output():
    text = NET + "    return x -> conv2d(4, 9)\n}\n"
    err = fail(resdsl.ShapeError, text)
    assert "empty output (0x0)" in err.message
    assert where(err) == (2, col(text, 2, "conv2d"))


def test_concat_mismatch():
    text = NET + "    y = x -> conv2d(4, 3)\n    return concat(x, y)\n}\n"
    err = fail(resdsl.ShapeError, text)
    assert err.message == "cannot concatenate (3, 8, 8) and (4, 6, 6) on axis 0"
    assert where(err) == (3, col(text, 3, "concat"))


def test_groups_must_divide_channels():
    text = NET + "    return x -> conv2d(4, 3, groups=2)\n}\n"
    err = fail(resdsl.ShapeError, text)
    assert "groups=2 must divide" in err.message
    assert where(err) == (2, col(text, 2, "conv2d"))


def test_block_input_shape_mismatch():
    text = "block b() (x: (4, 8, 8)) {\n    return x\n}\n" + NET + "    return x -> b()\n}\n"
    err = fail(resdsl.ShapeError, text)
    assert where(err) == (5, col(text, 5, "x ->"))  # the tensor passed in


# --- ValueRangeError -------------------------------------------------------------------------


def test_non_positive_out_channels():
    text = NET + "    return x -> conv2d(0, 3)\n}\n"
    err = fail(resdsl.ValueRangeError, text)
    assert err.message == "`out_channels` must be >= 1, got 0"
    assert where(err) == (2, col(text, 2, "0, 3"))


@pytest.mark.parametrize("op", ["//", "/", "%"])
def test_division_by_zero(op):
    text = NET + f"    k = 4 {op} 0\n    return x\n}}\n"
    err = fail(resdsl.ValueRangeError, text)
    assert err.message == "division by zero"
    assert where(err) == (2, col(text, 2, "4 "))


def test_negative_repeat():
    text = NET + "    repeat -1 {\n        x = x -> relu\n    }\n    return x\n}\n"
    err = fail(resdsl.ValueRangeError, text)
    assert where(err) == (2, col(text, 2, "-1"))


def test_failing_assert_with_message():
    text = NET + '    assert x.channels == 4, "need 4 channels"\n    return x\n}\n'
    err = fail(resdsl.ValueRangeError, text, path="assert.res")
    assert err.message == "need 4 channels"
    assert where(err) == (2, col(text, 2, "x.channels"))
    assert resdsl.render(err) == "\n".join(
        [
            "assert.res:2:12: error[E0302]: need 4 channels",
            '   2 |     assert x.channels == 4, "need 4 channels"',
            " " * (7 + 11) + "^" * len("x.channels == 4"),
        ]
    )


def test_failing_assert_without_message():
    text = NET + "    assert x.channels == 4\n    return x\n}\n"
    err = fail(resdsl.ValueRangeError, text)
    assert err.message == "assertion failed"
    assert where(err) == (2, col(text, 2, "x.channels"))


# --- DuplicateNameError ----------------------------------------------------------------------


def test_same_label_twice():
    text = NET + "    y = x -> c: relu\n    z = y -> c: relu\n    return z\n}\n"
    err = fail(resdsl.DuplicateNameError, text, path="dup.res")
    assert err.message == "the name `c` is already used"
    assert where(err) == (3, col(text, 3, "c:"))
    (note,) = err.notes
    assert (note.span.line, note.span.column) == (2, col(text, 2, "c:"))
    assert resdsl.render(err) == "\n".join(
        [
            "dup.res:3:14: error[E0204]: the name `c` is already used",
            "   3 |     z = y -> c: relu",
            " " * (7 + 13) + "^",
            '  hint: inside a loop, put the index in the name: `"conv{i}": conv2d(...)`',
            "  note: dup.res:2:14: first used here",
            "     2 |     y = x -> c: relu",
            "  " + " " * (7 + 13) + "^" * len("c: relu"),
        ]
    )


def test_same_label_inside_a_loop_without_index():
    text = NET + "    for i in range(2) {\n        x = x -> act: relu\n    }\n    return x\n}\n"
    err = fail(resdsl.DuplicateNameError, text)
    assert err.message == "the name `act` is already used"
    assert where(err) == (3, col(text, 3, "act"))
    assert any("{i}" in h for h in err.hints)


def test_block_defined_twice():
    text = "block b() (x) {\n    return x\n}\nblock b() (x) {\n    return x\n}\n"
    text += NET + "    return x -> b()\n}\n"
    err = fail(resdsl.DuplicateNameError, text)
    assert where(err) == (4, col(text, 4, "b("))
    assert err.notes[0].span.line == 1


# --- CycleError ------------------------------------------------------------------------------


def test_blocks_calling_each_other():
    text = (
        "block a() (x) {\n    return x -> b()\n}\n"
        "block b() (x) {\n    return x -> a()\n}\n" + NET + "    return x -> a()\n}\n"
    )
    err = fail(resdsl.CycleError, text)
    assert err.message == "block `a` calls itself: a -> b -> a"
    assert where(err) == (5, col(text, 5, "a()"))  # inside b, where the cycle closes


def test_import_cycle_between_two_files(tmp_path):
    a = tmp_path / "a.res"
    b = tmp_path / "b.res"
    a.write_text('import "b.res"\n' + NET + "    return x\n}\n")
    b.write_text('# b imports a back\n  import "a.res"\n')
    with pytest.raises(resdsl.CycleError) as info:
        resdsl.load(a)
    err = info.value
    assert err.message == "import cycle: a.res -> b.res -> a.res"
    assert os.path.realpath(err.path) == os.path.realpath(b)
    assert where(err) == (2, 3)


# --- SpecImportError -------------------------------------------------------------------------


def import_error(tmp_path, target: str) -> resdsl.SpecImportError:
    """Import `target` from tmp_path/sub/main.res (line 2, column 3) and return the error."""
    (tmp_path / "sub").mkdir(exist_ok=True)
    text = f'# header\n  import "{target}"\n' + NET + "    return x\n}\n"
    main_path = tmp_path / "sub" / "main.res"
    main_path.write_text(text)
    with pytest.raises(resdsl.SpecImportError) as info:
        resdsl.load(main_path)
    err = info.value
    assert type(err) is resdsl.SpecImportError
    assert os.path.realpath(err.path) == os.path.realpath(main_path)
    assert where(err) == (2, col(text, 2, "import"))
    assert where(err) == (2, 3)
    return err


def test_import_missing_file(tmp_path):
    err = import_error(tmp_path, "nope.res")
    assert err.message == "cannot import 'nope.res': no such file"


def test_import_absolute_path(tmp_path):
    (tmp_path / "abs.res").write_text("block q() (x) {\n    return x\n}\n")
    err = import_error(tmp_path, str(tmp_path / "abs.res"))
    assert "relative to the importing file" in err.message


def test_import_dotdot_escape(tmp_path):
    (tmp_path / "other.res").write_text("block q() (x) {\n    return x\n}\n")
    err = import_error(tmp_path, "../other.res")
    assert "leaves the directory" in err.message


def test_import_symlink_escape(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.res").write_text("block q() (x) {\n    return x\n}\n")
    (tmp_path / "sub").mkdir()
    os.symlink(outside / "secret.res", tmp_path / "sub" / "link.res")
    err = import_error(tmp_path, "link.res")
    assert "leaves the directory" in err.message


def test_import_through_symlinked_directory_escape(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.res").write_text("block q() (x) {\n    return x\n}\n")
    (tmp_path / "sub").mkdir()
    os.symlink(outside, tmp_path / "sub" / "lib", target_is_directory=True)
    err = import_error(tmp_path, "lib/secret.res")
    assert "leaves the directory" in err.message


def test_import_symlink_inside_the_directory_is_allowed(tmp_path):
    (tmp_path / "real.res").write_text("block q() (x) {\n    return x -> relu\n}\n")
    os.symlink(tmp_path / "real.res", tmp_path / "link.res")
    main_path = tmp_path / "main.res"
    main_path.write_text('import "link.res"\n' + NET + "    return x -> q()\n}\n")
    assert resdsl.load(main_path).output_shapes == {"output": (3, 8, 8)}


# --- LimitError ------------------------------------------------------------------------------


def test_huge_repeat():
    text = NET + "    repeat 1000000000 {\n        x = x -> relu\n    }\n    return x\n}\n"
    err = fail(resdsl.LimitError, text)
    assert where(err) == (2, col(text, 2, "1000000000"))


def test_huge_range():
    text = NET + "    for i in range(1000000000) {\n        x = x -> relu\n    }\n    return x\n}\n"
    err = fail(resdsl.LimitError, text)
    assert where(err) == (2, col(text, 2, "range"))


def test_huge_input_shape():
    text = "network n() (x: (1000000, 1000000, 1000)) {\n    return x\n}\n"
    err = fail(resdsl.LimitError, text)
    assert "exceeds" in err.message
    assert where(err) == (1, col(text, 1, "x:"))


def test_custom_node_limit():
    text = NET + "    repeat 20 {\n        x = x -> relu\n    }\n    return x\n}\n"
    assert len(resdsl.loads(text).graph) == 21  # fine with the default limits
    err = fail(resdsl.LimitError, text, limits=resdsl.Limits(max_nodes=10))
    assert err.message == "the network has more than 10 ops"
    assert where(err) == (3, col(text, 3, "relu"))


def test_integer_too_large():
    text = NET + "    k = 2 ** 100\n    return x\n}\n"
    err = fail(resdsl.LimitError, text)
    assert where(err) == (2, col(text, 2, "2 **"))


def test_integer_power_too_large_is_a_limit_error():
    text = NET + "    k = 2 ** 300\n    return x\n}\n"
    err = fail(resdsl.LimitError, text)
    assert where(err) == (2, col(text, 2, "2 **"))


LONG_CHAIN = NET + "    y = x" + " -> relu" * 1000 + "\n    return y\n}\n"


def test_long_chain_never_crashes():
    with contextlib.suppress(resdsl.SpecError):
        resdsl.loads(LONG_CHAIN)


# --- the command line ------------------------------------------------------------------------


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run the CLI; return (exit code, stdout, stderr). Never a traceback on stderr."""
    monkeypatch.delenv("RESDSL_DEBUG", raising=False)

    def run(*argv: str) -> tuple[int, str, str]:
        rc = main(list(argv))
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return rc, out, err

    return run


GOOD = "network n(k: int = 2) (x: (3, 8, 8)) {\n    return x -> relu\n}\n"
BAD = "network n(k: int = 2) (x: (3, 8, 8)) {\n    return x -> rleu\n}\n"


def test_cli_spec_error(tmp_path, cli):
    path = tmp_path / "bad.res"
    path.write_text(BAD)
    rc, out, err = cli("check", str(path))
    assert rc == 1
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == f"{path}:2:{col(BAD, 2, 'rleu')}: error[E0201]: unknown op or block `rleu`"
    assert lines[1] == "   2 |     return x -> rleu"
    assert lines[2] == " " * (7 + 16) + "^^^^"


def test_cli_ok(tmp_path, cli):
    path = tmp_path / "good.res"
    path.write_text(GOOD)
    rc, out, err = cli("check", str(path))
    assert rc == 0
    assert out.startswith(f"{path}: ok")
    assert err == ""
    assert cli("check", "-q", str(path)) == (0, "", "")


def test_cli_several_files_one_bad(tmp_path, cli):
    good, bad = tmp_path / "good.res", tmp_path / "bad.res"
    good.write_text(GOOD)
    bad.write_text(BAD)
    rc, out, err = cli("check", str(good), str(bad))
    assert rc == 1
    assert out.startswith(f"{good}: ok")
    assert f"{bad}:2:" in err
    assert err.rstrip().endswith("1 of 2 files have errors")


def test_cli_library_with_bad_type(tmp_path, cli):
    path = tmp_path / "lib.res"
    text = "block b(k: itn) (x) {\n    return x\n}\n"
    path.write_text(text)
    rc, _, err = cli("check", str(path))
    assert rc == 1
    assert err.startswith(f"{path}:1:{col(text, 1, 'itn')}: error[E0201]: unknown type `itn`")


@pytest.mark.parametrize("command", ["info", "compile"])
def test_cli_other_commands_report_spec_errors(tmp_path, cli, command):
    path = tmp_path / "bad.res"
    path.write_text(BAD)
    rc, _, err = cli(command, str(path))
    assert rc == 1
    assert err.startswith(f"{path}:2:{col(BAD, 2, 'rleu')}: error[E0201]")


def test_cli_unknown_parameter_via_set(tmp_path, cli):
    path = tmp_path / "good.res"
    path.write_text(GOOD)
    rc, _, err = cli("check", str(path), "--set", "kk=3")
    assert rc == 1
    assert err.startswith(f"{path}:1:{col(GOOD, 1, 'n(')}: error[E0201]")


def test_cli_missing_file_is_a_usage_error(tmp_path, cli):
    missing = tmp_path / "nope.res"
    rc, out, err = cli("check", str(missing))
    assert rc == 2
    assert out == ""
    assert err.strip() == f"resdsl check: error: no such file: {missing}"


@pytest.mark.parametrize("value", ["n=1+", "n", "n=(1,", "=3", "1n=3"])
def test_cli_bad_set_is_a_usage_error(tmp_path, cli, value):
    path = tmp_path / "good.res"
    path.write_text(GOOD)
    rc, out, err = cli("check", str(path), "--set", value)
    assert rc == 2
    assert out == ""
    assert err.startswith("resdsl check: error: --set")


@pytest.mark.parametrize(
    "argv",
    [["check"], ["frob"], ["check", "x.res", "--bogus"], ["compile", "x.res", "--target", "tf"]],
)
def test_cli_argparse_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_cli_no_command(cli):
    rc, _, err = cli()
    assert rc == 2
    assert "usage:" in err


def test_cli_crash_shows_no_traceback(tmp_path, cli):
    path = tmp_path / "long.res"
    path.write_text(LONG_CHAIN)
    rc, _, err = cli("check", str(path))
    assert rc in (0, 1, 3)  # 3 (internal error) while the recursion bug above stands
    if rc == 3:
        assert "This is a bug in resdsl" in err


def test_projection_hint_projects_the_narrower_operand_whichever_came_first():
    """The skip is the operand a projection widens (fewer channels, at least as many pixels),
    even when it was computed after the branch."""
    text = (
        "network n() (x: (16, 32, 32)) {\n"
        "    y = x -> conv2d(32, 3, stride=2, padding=1)\n"
        "    s = x -> slice(1, step=2) -> slice(2, step=2)\n"
        "    return y + s\n"
        "}\n"
    )
    with pytest.raises(resdsl.ShapeError) as e:
        resdsl.loads(text)
    assert e.value.hints == [
        "project the shortcut: `y + shortcut(s, like=y)` is identity when the shapes match "
        "and `s -> conv2d(32, 1, bias=false) -> batchnorm2d` here"
    ]
