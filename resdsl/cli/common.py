"""What several ``resdsl`` commands share: exit codes, ``UsageError``, the spec options
(``--set``, ``--network``, ``--color``) and reading the files named on the command line.

This module imports nothing from the rest of ``resdsl.cli``, so every command module can
depend on it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from .._io import OutputRefusedError
from ..errors import SpecError, render, use_color

EXIT_OK, EXIT_SPEC, EXIT_USAGE, EXIT_INTERNAL, EXIT_OS = 0, 1, 2, 3, 4


class UsageError(Exception):
    """A bad command line (exit 2)."""


def _spec_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="K=V",
        help="set a network parameter, e.g. --set num_classes=10 (repeatable)",
    )
    p.add_argument("--network", metavar="NAME", help="which network, if the file has several")
    p.add_argument(
        "--color", choices=["auto", "always", "never"], default="auto",
        help="colour diagnostics (default: auto, on a terminal unless NO_COLOR is set)",
    )  # fmt: skip


def seed_arg(text: str) -> int:
    """``--seed``: an integer from 0 to 2**32-1, what NumPy and PyTorch both take (argparse
    type)."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= seed <= 2**32 - 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2**32-1, got {seed}")
    return seed


def _params(pairs: Sequence[str]) -> dict[str, Any]:
    from ..elaborate import constant

    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"--set expects NAME=VALUE, got {pair!r}")
        try:
            params[key] = constant(text)
        except ValueError as e:
            raise UsageError(f"--set {key}: {e}") from None
    return params


def _diagnose(error: SpecError, args: argparse.Namespace) -> None:
    """Print a spec error (all of its diagnostics) to stderr, coloured on a terminal."""
    color = use_color(sys.stderr, getattr(args, "color", "auto"))
    print(render(error, color), file=sys.stderr)


def _load(path: str, args: argparse.Namespace):
    from ..api import loads
    from ..loader import resolve_spec

    text, shown, picked = resolve_spec(path if _is_zoo(path) else _existing(path))
    return loads(text, args.network or picked, path=shown, **_params(args.set))


def _is_zoo(path: str) -> bool:
    from ..loader import ZOO

    return path.startswith(ZOO)


def _read(path: str) -> str:
    """A spec named on the command line (a file, or a zoo model ``zoo:NAME``); a missing or
    unreadable file is a usage error."""
    from ..loader import read_spec, resolve_spec

    if _is_zoo(path):
        return resolve_spec(path)[0]
    return read_spec(_existing(path))  # a regular file: a FIFO or device is never opened


def _giga(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)


def _spec_files(paths: Sequence[str]) -> list[str]:
    """Files as given; a directory stands for every ``.res`` file below it, sorted.

    In a directory, hidden files and directories are left out, symbolic links to
    directories are not descended into, and an entry that would read outside the tree or
    block is skipped with a note on stderr (the exit code is not affected): a symbolic link
    whose real path leaves the directory's real path, a broken link, and anything that is
    not a regular file (FIFO, device, socket). A file named on the command line is read
    wherever it is (the user chose it), but only if it is a regular file (see ``_read``).
    """
    out: list[str] = []
    for path in paths:
        if path != "-" and os.path.isdir(path):
            real_top = os.path.realpath(path)
            found = []
            for root, dirs, names in os.walk(path):
                dirs[:] = [d for d in dirs if not _hidden(d)]  # not walked into
                found += [os.path.join(root, n) for n in names if n.endswith(".res")
                          and not _hidden(n)]  # fmt: skip
            for file in sorted(found):
                why = _unsafe(file, real_top)
                if why:
                    print(f"note: skipped {_shown(file)}: {why}", file=sys.stderr)
                else:
                    out.append(file)
        else:
            out.append(path)
    return out


def _unsafe(path: str, real_top: str) -> str | None:
    """Why a file found in the tree ``real_top`` must not be read, or None."""
    import stat

    from .._io import file_kind

    try:
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            if os.path.commonpath([real_top, os.path.realpath(path)]) != real_top:
                return "symlink leaves the tree"
            mode = os.stat(path).st_mode
    except OSError:  # a dangling link, a loop, or removed since the walk
        return "broken symlink"
    return None if stat.S_ISREG(mode) else f"{file_kind(mode)}, not a regular file"


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _shown(path: str) -> str:
    """A file name as it can be printed (a name that is not UTF-8 gets ``\\xNN`` escapes)."""
    from ..errors import shown_path

    return shown_path(path)


def _existing(path: str) -> str:
    """A file named on the command line: it must exist and be a regular file (exit 2)."""
    import stat

    from .._io import file_kind

    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # ValueError: a NUL in the name
        raise UsageError(f"no such file: {_shown(path)}") from None
    if stat.S_ISDIR(mode):
        raise UsageError(f"no such file: {_shown(path)}")
    if not stat.S_ISREG(mode):
        raise UsageError(f"cannot read {_shown(path)}: it is {file_kind(mode)}, not a regular file")
    return path


def _artifact_dir(path: str, names: Sequence[str] = ()) -> None:
    """An output directory (``compile -o DIR``, ``sample -o DIR``) may not be a symbolic
    link, and the files to be replaced in it must be regular files (or missing)."""
    from .._io import check_target

    if os.path.islink(path):
        raise OutputRefusedError(
            f"refusing to write into {_shown(path)}: it is a symbolic link, not a directory"
        )
    if os.path.isdir(path):
        for name in names:
            check_target(os.path.join(path, name))
