"""Docs that cannot drift: every ```console block of README.md and docs/*.md is run and its
output compared with what the block shows.

A console block is a sequence of ``$ COMMAND`` lines, each followed by the output it prints
(stdout and stderr together, as a terminal shows them). Each block runs on its own, in a
fresh temporary directory that stands for the root of a clone: it holds a copy of
``examples/`` and of the standard library's specs (``resdsl/std/*.res``), plus the files the
doc created before the block (below). Nothing in the repository is written.

How a command runs:

- ``resdsl ARGS`` runs in-process (``resdsl.cli.main``), its stdout and stderr captured in
  the order they were written. ``ARGS`` is split as a shell does (quotes; a ``# comment`` is
  dropped); a word with ``*``, ``?`` or ``[`` is expanded to the sorted matching paths when
  there are any, as bash does. ``resdsl ARGS | head -N`` keeps the first N lines of stdout.
- ``echo $?`` prints the exit status of the command before it.
- Anything else (``python -c ...``) runs with ``bash -c`` in the block's directory, with the
  test's Python first on PATH (and ``PYTHONSAFEPATH=1``, so that the copy of ``resdsl/std``
  does not hide the installed package), and must finish within 5 minutes.

Markers, each an HTML comment on the line directly above a fence (GitHub does not show them):

- ``<!-- file: NAME -->`` above any fenced block (```res, ```python, ...): the block's text is
  the file NAME that the doc asks the reader to create; every later console block of that
  doc starts with the file written (a later block with the same NAME replaces it).
- ``<!-- console: slow -->`` above a console block: it takes long (TVM builds a model for
  half a minute and more), so it runs only with ``RESDSL_SLOW=1`` (``@pytest.mark.slow``, see
  conftest.py).
- ``<!-- console: skip (REASON) -->`` above a console block: it is not run, for the reason
  given (a download, a GPU, minutes of tuning). Shell lines shown without output should
  rather be a ```sh block, which is never run.

Normalisation, applied before comparing (nothing else is forgiven):

- Trailing whitespace of every line and blank lines at the end are ignored.
- The absolute path of the block's directory (with its ``/``) and of the repository's root
  are removed from the output, so paths read as relative to the clone.
- A line that is only ``...`` (indentation allowed) matches any run of lines, none included;
  ``...`` within a line matches any text on that line (doctest's ELLIPSIS, one line at a time).
- A number with a fraction or exponent (``1.04e-07``, ``0.4352``, ``2.80``) matches the number
  printed in its place if they differ by at most 1% (relative) or 1e-6 (absolute): rounding
  errors, which vary with the CPU and the library versions, are ``max abs diff 8.2e-08`` in
  size. A number followed by a unit of time or a rate (``27.4 s``, ``0.013 ms``, ``0.58/s``,
  ``17.9 GFLOP/s``) matches any number: it is a measurement.
- Integers (parameter and MAC counts, shapes, exit codes) must be equal.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import glob
import io
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Docs whose console blocks this harness does not run, and why (each a doc to fix there).
NOT_RUN_HERE: dict[str, str] = {}  # doc -> why its console blocks cannot run here

MARKER = re.compile(r"<!--\s*(?P<kind>file|console):\s*(?P<arg>.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<fence>```+|~~~+)(?P<info>[^`]*)$")


@dataclasses.dataclass
class Block:
    doc: str  # relative path of the doc
    line: int  # line number of the opening fence
    text: str
    files: dict[str, str]  # the files the doc created before this block
    mark: str | None  # None, "slow" or "skip (reason)"

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def console_blocks(path: Path) -> list[Block]:
    """The console blocks of one doc, in order, each with the files created before it."""
    doc = path.relative_to(ROOT).as_posix()
    lines = path.read_text().splitlines()
    files: dict[str, str] = {}
    blocks = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        info = m["info"].strip()
        start = i
        end = start + 1
        while end < len(lines) and lines[end].strip() != m["fence"]:
            end += 1
        body = "".join(line + "\n" for line in lines[start + 1 : end])
        marker = MARKER.match(lines[start - 1].strip()) if start else None
        if marker and marker["kind"] == "file":
            files[marker["arg"]] = body
        if info == "console":
            mark = marker["arg"] if marker and marker["kind"] == "console" else None
            blocks.append(Block(doc, start + 1, body, dict(files), mark))
        elif marker and marker["kind"] == "console":
            raise AssertionError(f"{doc}:{start + 1}: a console marker above a ```{info} block")
        i = end + 1
    return blocks


def all_blocks() -> list[Block]:
    return [block for path in DOCS for block in console_blocks(path)]


NEEDS_DOT = pytest.mark.skipif(
    shutil.which("dot") is None, reason="drawing SVG or PNG needs Graphviz's `dot`"
)


def _params():
    out = []
    for block in all_blocks():
        marks = []
        if block.doc in NOT_RUN_HERE:
            marks.append(pytest.mark.skip(reason=NOT_RUN_HERE[block.doc]))
        elif block.mark == "slow":
            marks.append(pytest.mark.slow)
        elif block.mark is not None:
            reason = re.fullmatch(r"skip \((.+)\)", block.mark)
            assert reason, f"{block.id}: unknown marker `console: {block.mark}`"
            marks.append(pytest.mark.skip(reason=reason[1]))
        if re.search(r"^\$ resdsl draw .*\.(svg|png)\b", block.text, re.M):
            marks.append(NEEDS_DOT)  # as tests/test_draw.py: .ci/run installs Graphviz
        out.append(pytest.param(block, id=block.id, marks=marks))
    return out


# --- running a command ---------------------------------------------------------------------


class _Chunks(io.TextIOBase):
    """A text stream that records what is written to it, tagged with its name, in a list
    shared with the other stream: stdout and stderr interleaved as a terminal shows them."""

    def __init__(self, name: str, chunks: list[tuple[str, str]]):
        self.name_ = name
        self.chunks = chunks

    def write(self, s: str) -> int:
        self.chunks.append((self.name_, s))
        return len(s)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False


def _expand(word: str) -> list[str]:
    if any(c in word for c in "*?["):
        matches = sorted(glob.glob(word))
        if matches:
            return matches
    return [word]


def _run_resdsl(words: list[str], head: int | None) -> tuple[str, int]:
    from resdsl.cli import main

    chunks: list[tuple[str, str]] = []
    out, err = _Chunks("out", chunks), _Chunks("err", chunks)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(words)
        except SystemExit as e:  # argparse: --help, usage errors
            rc = e.code if isinstance(e.code, int) else 1
    if head is None:
        return "".join(text for _, text in chunks), rc
    stdout = "".join(text for name, text in chunks if name == "out")
    stderr = "".join(text for name, text in chunks if name == "err")
    return stderr + "".join(stdout.splitlines(True)[:head]), rc


def run_command(command: str, last_rc: int) -> tuple[str, int]:
    """Run one command in the current directory: (what it printed, its exit status)."""
    if command.strip() == "echo $?":
        return f"{last_rc}\n", 0
    words = shlex.split(command, comments=True)
    head = None
    if "|" in words:
        pipe = words.index("|")
        tail = words[pipe + 1 :]
        m = re.fullmatch(r"-n?(\d+)", tail[1]) if len(tail) == 2 and tail[0] == "head" else None
        if m and words[0] == "resdsl":
            words, head = words[:pipe], int(m[1])
    if words[0] == "resdsl" and "|" not in words:
        return _run_resdsl([w for word in words[1:] for w in _expand(word)], head)
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    # PYTHONSAFEPATH: the copy of resdsl/std/ must not shadow the installed package
    env = dict(os.environ, PATH=path, PYTHONSAFEPATH="1")
    done = subprocess.run(
        ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=300
    )
    return done.stderr + done.stdout, done.returncode


def commands(block: Block) -> list[tuple[int, str, str]]:
    """(line, command, expected output) for each `$ ` line of a console block."""
    out: list[tuple[int, str, str]] = []
    for k, line in enumerate(block.text.splitlines(True)):
        if line.startswith("$ "):
            out.append((block.line + 1 + k, line[2:].strip(), ""))
        else:
            assert out, f"{block.id}: a console block starts with a `$ ` command line"
            n, command, expected = out[-1]
            out[-1] = (n, command, expected + line)
    return out


# --- comparing -----------------------------------------------------------------------------

_NUMBER = r"[-+]?(?:\d[\d,]*\.?\d*(?:[eE][-+]?\d+)?|nan|inf)"
_FLOAT = re.compile(
    r"(?<![\w.])[-+]?(?:\d+\.\d+(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+)(?!\w|\.\d)"
    r"|(?<![\w.])\d+(?:\.\d+)?(?=\s?(?:ms|s|min|h|/s|[GMk]?FLOP/s)\b)"
)
_UNIT = re.compile(r"\s?(?:ms|s|min|h|/s|[GMk]?FLOP/s)\b")


def normalise(text: str, cwd: Path) -> str:
    for prefix in (f"{cwd}{os.sep}", str(cwd), f"{ROOT}{os.sep}"):
        text = text.replace(prefix, "" if prefix.endswith(os.sep) else ".")
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return "".join(line + "\n" for line in lines)


def _line_pattern(line: str, numbers: list[tuple[str, bool]]) -> str:
    """A regex for one expected line; its floats become groups (appended to `numbers`, with
    whether each is a measurement that matches any number)."""
    out = []
    pos = 0
    for m in _FLOAT.finditer(line):
        out.append(_literal(line[pos : m.start()]))
        out.append(f"({_NUMBER})")
        numbers.append((m[0], bool(_UNIT.match(line, m.end()))))
        pos = m.end()
    out.append(_literal(line[pos:]))
    return "".join(out)


def _literal(text: str) -> str:
    return ".*?".join(re.escape(part) for part in text.split("..."))


def matches(expected: str, actual: str) -> str | None:
    """None if `actual` is what `expected` shows (after normalising both), else why not."""
    numbers: list[tuple[str, bool]] = []
    pattern = []
    for line in expected.splitlines():
        if line.strip() == "...":
            pattern.append(r"(?:.*\n)*?")
        else:
            pattern.append(_line_pattern(line, numbers) + r"\n")
    m = re.fullmatch("".join(pattern), actual)
    if m is None:
        return "the output differs"
    for k, (shown, measured) in enumerate(numbers, 1):
        got = m[k]
        if measured:
            continue
        want, have = float(shown.replace(",", "")), float(got.replace(",", ""))
        if not math.isclose(want, have, rel_tol=1e-2, abs_tol=1e-6):
            return f"the number {shown} is {got} now"
    return None


# --- the workspace and the tests -----------------------------------------------------------


def workspace(tmp: Path, block: Block) -> None:
    """A clone's root as far as the docs need it: examples/, the std specs, the doc's files."""
    shutil.copytree(
        ROOT / "examples", tmp / "examples", ignore=shutil.ignore_patterns("__pycache__")
    )
    std = tmp / "resdsl" / "std"
    std.mkdir(parents=True)
    for spec in (ROOT / "resdsl" / "std").glob("*.res"):
        shutil.copy(spec, std / spec.name)
    for name, text in block.files.items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize("block", _params())
def test_console_block(block: Block, tmp_path, monkeypatch):
    workspace(tmp_path, block)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("RESDSL_TUNING_DIR", str(tmp_path / ".tuning"))
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("RESDSL_DEBUG", raising=False)
    rc = 0
    for line, command, expected in commands(block):
        printed, rc = run_command(command, rc)
        actual = normalise(printed, tmp_path)
        why = matches(normalise(expected, tmp_path), actual)
        if why is not None:
            diff = difflib.unified_diff(
                normalise(expected, tmp_path).splitlines(True),
                actual.splitlines(True),
                "shown in the doc",
                "printed",
            )
            pytest.fail(
                f"{block.doc}:{line}: `$ {command}`: {why} (exit status {rc})\n{''.join(diff)}",
                pytrace=False,
            )


def test_markers_are_known_and_blocks_are_found():
    """Every console marker is `slow` or `skip (reason)`, and the docs have blocks to run."""
    blocks = all_blocks()
    for block in blocks:
        assert block.mark in (None, "slow") or re.fullmatch(r"skip \(.+\)", block.mark), block.id
        assert block.text.startswith("$ "), f"{block.id}: a console block starts with `$ `"
    run = [b for b in blocks if b.mark is None and b.doc not in NOT_RUN_HERE]
    assert len(run) >= 20


@pytest.mark.parametrize(
    "shown, printed, same",
    [
        ("a\n...\nd\n", "a\nb\nc\nd\n", True),
        ("a\n...\nb\n", "a\nb\n", True),
        ("x = ..., z\n", "x = 1, y, z\n", True),
        ("x = ..., z\n", "x = 1,\ny, z\n", False),
        ("diff 8.2e-08 (tolerance 2.66e-05)\n", "diff 6.71e-08 (tolerance 2.66e-05)\n", True),
        ("std 0.4352\n", "std 0.4353\n", True),
        ("std 0.4352\n", "std 0.5352\n", False),
        ("27.4 s, 0.58/s, 12.910 ms\n", "3.0 s, 2.5/s, 1.000 ms\n", True),
        ("(17.9 GFLOP/s), 5 s\n", "(1.0 GFLOP/s), 60 s\n", True),
        ("11,689,512 params\n", "11,689,513 params\n", False),
        ("3 shortcut projections\n", "4 shortcut projections\n", False),
    ],
)
def test_harness_matching(shown, printed, same):
    assert (matches(shown, printed) is None) == same


def test_harness_normalisation():
    assert normalise("/tmp/x/out/model.so  \n\n", Path("/tmp/x")) == "out/model.so\n"
