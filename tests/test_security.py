"""Untrusted specs and weights: imports stay inside the importing file's directory tree,
nothing from a spec is evaluated as Python, and checkpoints are never unpickled.

tests/test_errors.py already covers the plain escapes (an absolute path, `..`, a symlinked
file, a symlinked directory); these are the other ways out. Positions are exact.
"""

import ast
import os
import pathlib
import subprocess
import sys

import pytest

import resdsl
from resdsl.cli import main
from resdsl.weights import WeightsError, load_file

NET = "network n() (x: (3, 8, 8)) {\n"
BLOCK = "block q() (x) {\n    return x -> relu\n}\n"


def import_error(main_path: pathlib.Path, target: str) -> resdsl.SpecImportError:
    """Write main_path importing `target` on line 2, column 3; return the error it gives."""
    main_path.parent.mkdir(parents=True, exist_ok=True)
    main_path.write_text(f'# header\n  import "{target}"\n' + NET + "    return x -> q()\n}\n")
    with pytest.raises(resdsl.SpecImportError) as info:
        resdsl.load(main_path)
    err = info.value
    assert type(err) is resdsl.SpecImportError
    assert os.path.realpath(err.path) == os.path.realpath(main_path)
    assert (err.line, err.column) == (2, 3)
    return err


@pytest.mark.parametrize(
    "target",
    ["lib/../../secret.res", "./../secret.res", "lib/./../../secret.res", "lib//..//../secret.res"],
)
def test_dotdot_after_a_subdirectory(tmp_path, target):
    (tmp_path / "secret.res").write_text(BLOCK)
    (tmp_path / "sub" / "lib").mkdir(parents=True)
    err = import_error(tmp_path / "sub" / "main.res", target)
    assert err.message == f"cannot import {target!r}: it leaves the directory of the importing file"


@pytest.mark.parametrize("target", ["~/secret.res", "~root/secret.res", "\\\\server\\x.res"])
def test_home_and_windows_paths(tmp_path, target):
    err = import_error(tmp_path / "main.res", target.replace("\\\\", "\\"))
    assert "imports are relative to the importing file" in err.message


def test_nul_byte_in_an_import(tmp_path):
    # was: ValueError("embedded null byte") from os.path.realpath
    err = import_error(tmp_path / "main.res", "a\\x00b.res".replace("\\x00", "\x00"))
    assert err.message == "cannot import 'a\\x00b.res': the path holds a control character"


def test_an_imported_file_is_confined_to_its_own_directory(tmp_path):
    # main.res may import lib/a.res, but lib/a.res may not reach back up to main's directory
    (tmp_path / "helper.res").write_text(BLOCK)
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "a.res").write_text('import "../helper.res"\n')
    main_path = tmp_path / "main.res"
    main_path.write_text('import "lib/a.res"\n' + NET + "    return x -> q()\n}\n")
    with pytest.raises(resdsl.SpecImportError) as info:
        resdsl.load(main_path)
    err = info.value
    assert os.path.realpath(err.path) == os.path.realpath(tmp_path / "lib" / "a.res")
    assert (err.line, err.column) == (1, 1)
    assert "leaves the directory" in err.message


def test_symlink_chain_that_ends_outside(tmp_path):
    # link.res -> inner/hop.res -> ../../outside/secret.res: every hop but the last is inside
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.res").write_text(BLOCK)
    tree = tmp_path / "tree"
    (tree / "inner").mkdir(parents=True)
    os.symlink(outside / "secret.res", tree / "inner" / "hop.res")
    os.symlink(tree / "inner" / "hop.res", tree / "link.res")
    err = import_error(tree / "main.res", "link.res")
    assert "leaves the directory" in err.message


def test_symlink_to_a_device_is_refused_before_reading(tmp_path):
    # /dev/zero would never end: the real path is checked before anything is opened
    os.symlink("/dev/zero", tmp_path / "zero.res")
    err = import_error(tmp_path / "main.res", "zero.res")
    assert "leaves the directory" in err.message


def test_fifo_inside_the_tree_is_not_opened(tmp_path):
    # opening a FIFO blocks until a writer comes: only regular files are read
    os.mkfifo(tmp_path / "pipe.res")
    err = import_error(tmp_path / "main.res", "pipe.res")
    assert err.message == "cannot import 'pipe.res': no such file"


def test_symlink_loop(tmp_path):
    os.symlink(tmp_path / "b.res", tmp_path / "a.res")
    os.symlink(tmp_path / "a.res", tmp_path / "b.res")
    err = import_error(tmp_path / "main.res", "a.res")
    assert err.message in (
        "cannot import 'a.res': no such file",
        "cannot import 'a.res': it leaves the directory of the importing file",
    )


# --- nothing is evaluated --------------------------------------------------------------------

PAYLOAD = "__import__('os').system('touch PWNED')"


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in tmp_path; after the test, no PWNED file may exist there."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert not (tmp_path / "PWNED").exists()


def col(text: str, line: int, token: str) -> int:
    return text.split("\n")[line - 1].index(token) + 1


def test_python_in_an_expression_is_a_spec_expression(in_tmp):
    # `__import__(...)` is a call of an op that does not exist
    text = NET + "    a = __import__('os')\n    return x\n}\n"
    with pytest.raises(resdsl.UnknownNameError) as info:
        resdsl.loads(text)
    assert info.value.message == "unknown op or block `__import__`"
    assert (info.value.line, info.value.column) == (2, col(text, 2, "__import__"))
    # and calling an attribute is not even in the grammar
    text = NET + f"    a = {PAYLOAD}\n    return x\n}}\n"
    with pytest.raises(resdsl.SpecSyntaxError) as info:
        resdsl.loads(text)
    assert (info.value.line, info.value.column) == (2, col(text, 2, "('touch"))


def test_python_in_a_template_label_is_a_spec_expression(in_tmp):
    text = NET + '    return x -> "a{' + PAYLOAD + '}": relu\n}\n'
    with pytest.raises(resdsl.SpecSyntaxError) as info:
        resdsl.loads(text)
    assert info.value.message == "unexpected `(`"
    assert (info.value.line, info.value.column) == (2, col(text, 2, "('touch"))


def test_python_in_a_string_stays_a_string(in_tmp):
    text = NET + f'    s = "{PAYLOAD}"\n    p = parameter((4,), init=s)\n    return x\n}}\n'
    with pytest.raises(resdsl.ValueRangeError) as info:
        resdsl.loads(text)
    assert (info.value.line, info.value.column) == (3, col(text, 3, "init=s"))
    # an assert message is printed, never run
    text = NET + f'    assert false, "{PAYLOAD}"\n    return x\n}}\n'
    with pytest.raises(resdsl.ValueRangeError) as info:
        resdsl.loads(text)
    assert info.value.message == PAYLOAD


def test_python_in_a_set_value_is_a_usage_error(in_tmp, capsys):
    (in_tmp / "n.res").write_text("network n(k: str = 'a') (x: 4) {\n    return x\n}\n")
    assert main(["check", "n.res", "--set", f"k={PAYLOAD}"]) == 2
    assert f"--set k: cannot read {PAYLOAD!r}" in capsys.readouterr().err


def test_file_name_cannot_inject_code_into_generated_python(in_tmp):
    # was: the spec's path went verbatim into the generated module's docstring, so a file
    # named `a"""<newline>code<newline>"""b.res` put `code` into the module
    name = 'a"""\nimport os; os.system("touch PWNED")\n"""b.res'
    (in_tmp / name).write_text(NET + "    return x -> relu\n}\n")
    assert main(["compile", name, "--target", "torch", "-o", "out.py"]) == 0
    source = (in_tmp / "out.py").read_text()
    module = ast.parse(source)
    assert ast.get_docstring(module).splitlines()[0] == (
        f"n: generated by resdsl {resdsl.__version__} from {name.splitlines()[0]}"
    )
    top = [type(node).__name__ for node in module.body]
    # the docstring, then imports, classes and `build` only: no statement of the name's
    assert top[0] == "Expr" and set(top[1:]) <= {"Import", "ImportFrom", "ClassDef", "FunctionDef"}
    run = subprocess.run([sys.executable, "-c", "import out"], cwd=in_tmp, capture_output=True)
    assert run.returncode == 0, run.stderr


# --- weights are never unpickled -------------------------------------------------------------


class Exploit:
    """A pickle whose loading runs a shell command."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_malicious_checkpoint_is_refused(in_tmp):
    torch = pytest.importorskip("torch")
    path = in_tmp / "evil.pth"
    torch.save({"fc.weight": torch.zeros(2, 2), "payload": Exploit()}, path)
    with pytest.raises(WeightsError) as info:
        load_file(str(path))
    assert info.value.message.startswith(f"cannot read {path} as a PyTorch state_dict:")
    assert not (in_tmp / "PWNED").exists()
    # the payload is live: plain unpickling would have run it
    torch.load(path, weights_only=False)
    assert (in_tmp / "PWNED").exists()
    (in_tmp / "PWNED").unlink()
