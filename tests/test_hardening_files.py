"""Files resdsl reads and writes that are not what they seem: symbolic links out of a walked
tree, FIFOs and devices, output paths that are not regular files, file names that are not
UTF-8, a byte order mark, and source lines that are secrets or control sequences.

The directory policy (docs/security.md): ``check DIR`` and ``fmt DIR`` read a ``.res`` file
found below DIR only if it is a regular file whose real path stays inside DIR's real path;
anything else is skipped with a note on stderr and does not change the exit code. Outputs
never replace anything but a regular file (exit 2).
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import resdsl
from resdsl import _io, cli
from resdsl.cli import main
from resdsl.errors import Span, SpecError, remember_source, render
from resdsl.tools import fmt

GOOD = "network n() (x: (4,)) {\n    return x -> linear(2)\n}\n"
BAD = "network n() (x: (4,)) {\n    return x -> rleu\n}\n"  # 2:17: `rleu`
MESSY = "network n() (x: (4,)) {\nreturn x->linear(2)\n}\n"
OK = "ok (2 ops, 10 params, 8 MACs)"
SECRET = "TOKEN=ghp_s3cr3t_do_not_print\n"


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """tmp_path as the working directory, with repo/ok.res and an outside/ directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RESDSL_DEBUG", raising=False)
    (tmp_path / "repo").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "repo" / "ok.res").write_text(GOOD)
    return tmp_path


@contextlib.contextmanager
def no_hang(seconds: int = 10):
    """Fail (rather than hang the test run) if a FIFO is opened and blocks."""

    def expired(signum, frame):
        raise AssertionError("blocked: a FIFO or device was opened")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def mknull(path: Path) -> None:
    """A character device like /dev/null (1, 3) at ``path``; skip without CAP_MKNOD."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating a device node needs root")


# --- 1. check DIR / fmt DIR and symbolic links out of the tree --------------------------------


def test_check_dir_does_not_print_the_environment_through_proc_self_environ(tree):
    os.symlink("/proc/self/environ", tree / "repo" / "env.res")
    env = {**os.environ, "CI_TOKEN": "ghp_environ_secret_4242"}
    env.pop("RESDSL_DEBUG", None)
    done = subprocess.run(
        [sys.executable, "-m", "resdsl.cli", "check", "repo"],
        cwd=tree, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "ghp_environ_secret_4242" not in done.stdout + done.stderr
    assert done.returncode == 0
    assert done.stdout == f"repo/ok.res: {OK}\n"
    assert done.stderr == "note: skipped repo/env.res: symlink leaves the tree\n"


def test_check_dir_does_not_read_a_symlink_to_a_secret_outside(tree, capsys):
    (tree / "outside" / "credentials").write_text(SECRET + "second line\n")
    os.symlink("../outside/credentials", tree / "repo" / "creds.res")
    assert main(["check", "repo"]) == 0
    out, err = capsys.readouterr()
    assert "s3cr3t" not in out + err
    assert out == f"repo/ok.res: {OK}\n"
    assert err == "note: skipped repo/creds.res: symlink leaves the tree\n"
    assert main(["check", "--format", "json", "repo"]) == 0
    out, err = capsys.readouterr()
    assert "s3cr3t" not in out + err and '"path": "repo/creds.res"' not in out


def test_fmt_dir_does_not_rewrite_a_file_outside_the_tree(tree, capsys):
    victim = tree / "outside" / "victim.res"
    victim.write_text(MESSY)
    before = victim.read_bytes()
    os.symlink("../outside/victim.res", tree / "repo" / "victim.res")
    (tree / "repo" / "messy.res").write_text(MESSY)
    assert main(["fmt", "repo"]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "note: skipped repo/victim.res: symlink leaves the tree\nreformatted repo/messy.res\n"
    )
    assert victim.read_bytes() == before
    assert (tree / "repo" / "victim.res").is_symlink()
    assert (tree / "repo" / "messy.res").read_text() == GOOD
    for flag in ("--check", "--diff"):  # neither lists nor diffs the outside file
        assert main(["fmt", flag, "repo"]) == 0
        out, err = capsys.readouterr()
        assert out == "" and "victim" not in out
        assert err == "note: skipped repo/victim.res: symlink leaves the tree\n"
    assert victim.read_bytes() == before


def test_symlinks_that_stay_inside_the_tree_are_followed(tree, capsys):
    (tree / "repo" / "sub").mkdir()
    (tree / "repo" / "real.res").write_text(MESSY)
    os.symlink("../real.res", tree / "repo" / "sub" / "link.res")
    os.symlink("ok.res", tree / "repo" / "alias.res")
    assert main(["check", "repo"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines() == [f"repo/{p}: {OK}" for p in ("alias.res", "ok.res", "real.res",
                                                            "sub/link.res")]  # fmt: skip
    assert main(["fmt", "repo"]) == 0  # through the link, to the file in the tree
    assert capsys.readouterr().err == "reformatted repo/real.res\n"
    assert (tree / "repo" / "real.res").read_text() == GOOD
    assert (tree / "repo" / "sub" / "link.res").is_symlink()


def test_the_tree_is_the_real_path_of_the_directory_argument(tree, capsys):
    # repo reached through a symlinked directory: links inside it are judged against its
    # real path, so a link to a sibling in the real tree is inside
    os.symlink("repo", tree / "via")
    os.symlink("ok.res", tree / "repo" / "alias.res")
    assert main(["check", "via"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"via/alias.res: {OK}", f"via/ok.res: {OK}"]


def test_symlinked_directories_are_not_walked_into(tree, capsys):
    (tree / "outside" / "secret.res").write_text(SECRET)
    os.symlink("../outside", tree / "repo" / "linked")
    assert main(["check", "repo"]) == 0
    out, err = capsys.readouterr()
    assert out == f"repo/ok.res: {OK}\n" and err == ""


def test_dangling_symlink_is_skipped_with_a_note(tree, capsys):
    os.symlink("nowhere.res", tree / "repo" / "dangling.res")
    os.symlink("loop.res", tree / "repo" / "loop.res")
    assert main(["check", "repo"]) == 0
    out, err = capsys.readouterr()
    assert out == f"repo/ok.res: {OK}\n"
    assert err == (
        "note: skipped repo/dangling.res: broken symlink\n"
        "note: skipped repo/loop.res: broken symlink\n"
    )


def test_fifo_in_the_tree_is_skipped_and_the_others_checked(tree, capsys):
    os.mkfifo(tree / "repo" / "pipe.res")
    (tree / "repo" / "z_bad.res").write_text(BAD)
    with no_hang():
        assert main(["check", "repo"]) == 1  # z_bad.res, not the FIFO
    out, err = capsys.readouterr()
    assert out == f"repo/ok.res: {OK}\n"
    assert err.startswith(
        "note: skipped repo/pipe.res: a FIFO, not a regular file\n"
        "repo/z_bad.res:2:17: error[E0201]: unknown op or block `rleu`\n"
    )
    assert err.endswith("1 of 2 files have errors\n")
    with no_hang():
        assert main(["fmt", "--check", "repo"]) == 0
    assert capsys.readouterr() == ("", "note: skipped repo/pipe.res: a FIFO, not a regular file\n")
    assert stat.S_ISFIFO(os.lstat(tree / "repo" / "pipe.res").st_mode)


def test_symlink_to_a_fifo_in_the_tree_is_skipped(tree, capsys):
    os.mkfifo(tree / "repo" / "pipe")
    os.symlink("pipe", tree / "repo" / "pipe.res")
    with no_hang():
        assert main(["check", "repo"]) == 0
    assert capsys.readouterr() == (
        f"repo/ok.res: {OK}\n",
        "note: skipped repo/pipe.res: a FIFO, not a regular file\n",
    )


def test_device_in_the_tree_is_skipped(tree, capsys):
    mknull(tree / "repo" / "null.res")
    os.symlink("/dev/zero", tree / "repo" / "zero.res")  # leaves the tree
    with no_hang():
        assert main(["check", "repo"]) == 0
        assert capsys.readouterr() == (
            f"repo/ok.res: {OK}\n",
            "note: skipped repo/null.res: a character device, not a regular file\n"
            "note: skipped repo/zero.res: symlink leaves the tree\n",
        )
        assert main(["fmt", "repo"]) == 0
    assert stat.S_ISCHR(os.lstat(tree / "repo" / "null.res").st_mode)


def test_a_fifo_named_on_the_command_line_is_a_usage_error_not_a_hang(tree, capsys):
    os.mkfifo(tree / "pipe.res")
    for command in ("check", "fmt", "info", "compile"):
        with no_hang():
            assert main([command, "pipe.res"]) == 2
        assert capsys.readouterr().err == (
            f"resdsl {command}: error: cannot read pipe.res: it is a FIFO, not a regular file\n"
        )


def test_read_spec_refuses_a_fifo_without_blocking(tree):
    os.mkfifo(tree / "pipe.res")
    with no_hang(), pytest.raises(SpecError) as info:
        resdsl.load(tree / "pipe.res")
    assert info.value.message == f"cannot read {tree / 'pipe.res'}: a FIFO, not a regular file"


def test_a_named_symlink_is_the_users_choice_but_the_excerpt_is_bounded(tree, capsys):
    # an explicitly named file is read wherever it is; its diagnostic shows at most
    # EXCERPT_WIDTH characters of the line, control characters escaped
    (tree / "outside" / "credentials").write_text("TOKEN=" + "x" * 500 + "\x1b[2J\n")
    os.symlink("outside/credentials", tree / "named.res")
    assert main(["check", "named.res"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "named.res:1:1: error[E0101]: unexpected `TOKEN`"
    assert err[1] == "   1 | TOKEN=" + "x" * 194 + "…"
    assert err[2] == " " * 7 + "^^^^^"
    assert "\x1b" not in "\n".join(err)


# --- bounded, printable excerpts ----------------------------------------------------------------


def excerpt(text: str, column: int, end_column: int) -> list[str]:
    remember_source("excerpt.res", text)
    lines = render(SpecError("boom", Span("excerpt.res", 1, column, 1, end_column))).splitlines()
    return lines[1:]


def test_excerpt_escapes_control_characters_and_keeps_the_caret_aligned():
    assert excerpt("a\x00b\x1b[31m $ x", 10, 11) == [
        "   1 | a\\x00b\\x1b[31m $ x",
        " " * 7 + " " * 15 + "^",
    ]
    # a bidi override is escaped too, and a caret over it is as wide as its escape
    assert excerpt("ab\u202ecd", 3, 5) == ["   1 | ab\\u202ecd", " " * 9 + "^" * 7]


def test_excerpt_of_a_long_line_is_a_window_around_the_caret():
    text = "a" * 500 + "$" + "b" * 500
    line, caret = excerpt(text, 501, 502)
    assert line == "   1 | …" + "a" * 60 + "$" + "b" * 139 + "…"
    assert caret == " " * 7 + " " * 61 + "^"
    # the caret near the end: the window ends there
    line, caret = excerpt("a" * 500 + "$", 501, 502)
    assert line == "   1 | …" + "a" * 199 + "$"
    assert caret == " " * 7 + " " * 200 + "^"
    # at the start: nothing cut on the left; a span longer than the window is cut with it
    line, caret = excerpt("b" * 1000, 1, 1001)
    assert line == "   1 | " + "b" * 200 + "…"
    assert caret == " " * 7 + "^" * 201


def test_excerpt_window_is_cut_between_escapes_not_inside_one():
    line, caret = excerpt("\x00" * 300 + "$" + "\x01" * 300, 301, 302)
    assert line == "   1 | …" + "\\x00" * 15 + "$" + "\\x01" * 34 + "…"
    assert caret == " " * 7 + " " * 61 + "^"


def test_normal_lines_render_as_before():
    assert excerpt("    return y + x", 12, 17) == ["   1 |     return y + x", " " * 18 + "^^^^^"]


def test_message_quoting_a_huge_token_is_cut():
    text = 'network n() (x: (4,)) {\n    return x "' + "A" * 1000 + '"\n}\n'
    with pytest.raises(resdsl.SpecSyntaxError) as info:
        resdsl.loads(text, path="long.res")
    first, line, caret = render(info.value).splitlines()[:3]
    assert first == 'long.res:2:14: error[E0101]: unexpected `"' + "A" * 487 + "…"
    assert line == '   2 |     return x "' + "A" * 186 + "…"  # 200 characters
    assert caret == " " * 7 + " " * 13 + "^" * 188


# --- 8. -o on a device node, FIFO or symlink ------------------------------------------------


def special(tree: Path, kind: str, name: str) -> Path:
    """A FIFO, a symlink to a regular file, or a /dev/null-like device at tree/name."""
    path = tree / name
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink":
        (tree / "outside" / "target").write_bytes(b"previous\n")
        os.symlink(tree / "outside" / "target", path)
    else:
        mknull(path)
    return path


KINDS = {"fifo": "a FIFO", "symlink": "a symbolic link", "device": "a character device"}


def assert_unchanged(path: Path, kind: str) -> None:
    mode = os.lstat(path).st_mode
    assert {"fifo": stat.S_ISFIFO, "symlink": stat.S_ISLNK, "device": stat.S_ISCHR}[kind](mode)
    if kind == "symlink":
        assert (path.parent / "outside" / "target").read_bytes() == b"previous\n"
    assert not [p for p in os.listdir(path.parent) if p.endswith(".tmp")]


@pytest.mark.parametrize("kind", KINDS)
def test_compile_torch_refuses_to_replace_a_special_file(tree, capsys, kind):
    out = special(tree, kind, "model.py")
    with no_hang():
        assert main(["compile", "repo/ok.res", "-o", "model.py"]) == 2
    assert capsys.readouterr().err == (
        f"resdsl compile: error: refusing to replace model.py: it is {KINDS[kind]}, "
        "not a regular file\n"
    )
    assert_unchanged(out, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_draw_refuses_to_replace_a_special_file(tree, capsys, kind):
    pytest.importorskip("graphviz")
    out = special(tree, kind, "net.dot")
    with no_hang():
        assert main(["draw", "repo/ok.res", "-o", "net.dot"]) == 2
    assert capsys.readouterr().err == (
        f"resdsl draw: error: refusing to replace net.dot: it is {KINDS[kind]}, "
        "not a regular file\n"
    )
    assert_unchanged(out, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_compile_onnx_refuses_before_exporting(tree, capsys, monkeypatch, kind):
    pytest.importorskip("onnx")
    out = special(tree, kind, "net.onnx")
    monkeypatch.setattr("resdsl.backends.onnx.export", lambda *a, **k: pytest.fail("exported"))
    with no_hang():
        assert main(["compile", "repo/ok.res", "--target", "onnx", "-o", "net.onnx"]) == 2
    assert capsys.readouterr().err == (
        f"resdsl compile: error: refusing to replace net.onnx: it is {KINDS[kind]}, "
        "not a regular file\n"
    )
    assert_unchanged(out, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_run_output_refuses_to_replace_a_special_file(tree, kind):
    import numpy as np

    out = special(tree, kind, "y.npy")
    with no_hang(), pytest.raises(_io.OutputRefusedError) as info:
        cli._write_outputs("y.npy", {"y": np.zeros(2, dtype="float32")})
    assert str(info.value) == f"refusing to replace y.npy: it is {KINDS[kind]}, not a regular file"
    assert_unchanged(out, kind)


def test_artifact_directory_may_not_be_a_symlink(tree, capsys):
    (tree / "outside" / "art").mkdir()
    os.symlink(tree / "outside" / "art", tree / "art")
    assert main(["compile", "repo/ok.res", "--target", "llvm", "-o", "art"]) == 2
    assert capsys.readouterr().err == (
        "resdsl compile: error: refusing to write into art: it is a symbolic link, "
        "not a directory\n"
    )
    assert os.listdir(tree / "outside" / "art") == []


def test_artifact_files_must_be_regular(tree, capsys):
    (tree / "art").mkdir()
    os.mkfifo(tree / "art" / "model.so")
    with no_hang():
        assert main(["compile", "repo/ok.res", "--target", "llvm", "-o", "art"]) == 2
    assert capsys.readouterr().err == (
        "resdsl compile: error: refusing to replace art/model.so: it is a FIFO, "
        "not a regular file\n"
    )
    assert os.listdir(tree / "art") == ["model.so"]


SPACE = "network s(c: int = choice(2, 3)) (x: (4,)) {\n    return x -> linear(c)\n}\n"


def test_sample_refuses_a_symlinked_directory_and_special_files_in_it(tree, capsys):
    (tree / "space.res").write_text(SPACE)
    (tree / "outside" / "dir").mkdir()
    os.symlink(tree / "outside" / "dir", tree / "out")
    assert main(["sample", "space.res", "--n", "1", "-o", "out"]) == 2
    assert capsys.readouterr().err == (
        "resdsl sample: error: refusing to write into out: it is a symbolic link, not a directory\n"
    )
    (tree / "out2").mkdir()
    victim = tree / "outside" / "victim.res"
    victim.write_bytes(b"previous\n")
    os.symlink(victim, tree / "out2" / "s_000.res")
    assert main(["sample", "space.res", "--n", "1", "-o", "out2"]) == 2
    assert capsys.readouterr().err == (
        "resdsl sample: error: refusing to replace out2/s_000.res: it is a symbolic link, "
        "not a regular file\n"
    )
    assert victim.read_bytes() == b"previous\n"
    assert (tree / "out2" / "s_000.res").is_symlink()


def test_staged_refuses_dev_null_without_writing():
    # only the check: nothing is ever staged next to the real /dev/null
    with pytest.raises(_io.OutputRefusedError) as info:
        _io.check_target("/dev/null")
    assert str(info.value) == (
        "refusing to replace /dev/null: it is a character device, not a regular file"
    )
    assert isinstance(info.value, OSError)


def test_staged_replaces_a_regular_file_and_creates_a_missing_one(tmp_path):
    _io.atomic_write(str(tmp_path / "new.txt"), "a")
    (tmp_path / "old.txt").write_text("old")
    _io.atomic_write(str(tmp_path / "old.txt"), "b")
    assert (tmp_path / "new.txt").read_text() == "a" and (tmp_path / "old.txt").read_text() == "b"


def test_staged_refuses_a_target_swapped_for_a_symlink_while_writing(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    (tmp_path / "elsewhere").write_text("keep")
    with pytest.raises(_io.OutputRefusedError), _io.staged(str(target)) as tmp:
        Path(tmp).write_text("new")
        target.unlink()
        os.symlink(tmp_path / "elsewhere", target)
    assert target.is_symlink() and (tmp_path / "elsewhere").read_text() == "keep"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


# --- 10. file names that are not UTF-8 ----------------------------------------------------------


def bytes_name(directory: Path, name: bytes, text: str) -> str:
    path = os.path.join(os.fsencode(directory), name)
    with open(path, "wb") as f:
        f.write(text.encode())
    return os.fsdecode(path)


def test_check_dir_with_a_file_name_that_is_not_utf8(tree, capsys):
    bytes_name(tree / "repo", b"caf\xe9.res", GOOD)
    bytes_name(tree / "repo", b"m\xffauvais.res", BAD)
    (tree / "repo" / "z.res").write_text(GOOD)
    assert main(["check", "repo"]) == 1
    out, err = capsys.readouterr()
    assert out == f"repo/caf\\xe9.res: {OK}\nrepo/ok.res: {OK}\nrepo/z.res: {OK}\n"
    assert err.startswith("repo/m\\xffauvais.res:2:17: error[E0201]: unknown op or block `rleu`\n")
    assert err.endswith("1 of 4 files have errors\n")
    assert "Traceback" not in err and "internal error" not in err


def test_named_file_that_is_not_utf8_and_fmt(tree, capsys):
    path = bytes_name(tree, b"caf\xe9.res", MESSY)
    assert main(["check", path]) == 0
    assert capsys.readouterr().out == f"{tree}/caf\\xe9.res: {OK}\n"
    assert main(["fmt", "--check", path]) == 1
    assert capsys.readouterr().out == f"{tree}/caf\\xe9.res\n"
    assert main(["fmt", "--diff", path]) == 0
    diff = capsys.readouterr().out.splitlines()
    assert diff[:2] == [f"--- {tree}/caf\\xe9.res", f"+++ {tree}/caf\\xe9.res"]
    assert main(["fmt", path]) == 0
    assert capsys.readouterr().err == f"reformatted {tree}/caf\\xe9.res\n"
    assert Path(path).read_text() == GOOD
    assert main(["check", "--format", "json", str(tree)]) == 0  # JSON escapes the name


# --- 14. a UTF-8 byte order mark ------------------------------------------------------------


BOM = b"\xef\xbb\xbf"


def test_bom_is_skipped_by_check_load_and_loads(tree, capsys):
    (tree / "bom.res").write_bytes(BOM + GOOD.encode())
    assert main(["check", "bom.res"]) == 0
    assert capsys.readouterr().out == f"bom.res: {OK}\n"
    assert resdsl.load(tree / "bom.res").num_params == 10
    assert resdsl.loads("\ufeff" + GOOD).num_params == 10
    assert resdsl.loads("\ufeff" + GOOD).spec_hash == resdsl.loads(GOOD).spec_hash


def test_positions_after_a_bom_count_from_the_first_real_character(tree, capsys):
    (tree / "bad.res").write_bytes(BOM + b"network n() (x: (4,)) { return x -> rleu }\n")
    assert main(["check", "bad.res"]) == 1
    assert capsys.readouterr().err.splitlines()[:3] == [
        "bad.res:1:37: error[E0201]: unknown op or block `rleu`",
        "   1 | network n() (x: (4,)) { return x -> rleu }",
        " " * 7 + " " * 36 + "^^^^",
    ]


def test_imported_file_with_a_bom(tree, capsys):
    (tree / "lib.res").write_bytes(BOM + b"block b() (x) {\n    return x -> relu\n}\n")
    (tree / "main.res").write_text(
        'import "lib.res"\n\nnetwork n() (x: (4,)) {\n    return x -> b -> linear(2)\n}\n'
    )
    assert main(["check", "main.res"]) == 0
    assert capsys.readouterr().out == f"main.res: {OK.replace('2 ops', '3 ops')}\n"
    assert main(["check", "lib.res"]) == 0
    assert capsys.readouterr().out == "lib.res: ok (library, 1 definitions)\n"


def test_fmt_drops_the_bom(tree, capsys):
    # the canonical layout has no byte order mark: like \r\n, a BOM counts as a change
    assert fmt.format_text("\ufeff" + GOOD) == GOOD
    (tree / "bom.res").write_bytes(BOM + GOOD.encode())
    assert main(["fmt", "--check", "bom.res"]) == 1
    assert capsys.readouterr() == ("bom.res\n", "1 of 1 files would be reformatted\n")
    assert (tree / "bom.res").read_bytes() == BOM + GOOD.encode()
    assert main(["fmt", "bom.res"]) == 0
    assert capsys.readouterr().err == "reformatted bom.res\n"
    assert (tree / "bom.res").read_bytes() == GOOD.encode()
    (tree / "messy.res").write_bytes(BOM + MESSY.encode())
    assert main(["fmt", "messy.res"]) == 0
    assert (tree / "messy.res").read_bytes() == GOOD.encode()
