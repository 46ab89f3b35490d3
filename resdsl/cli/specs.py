"""``resdsl check``, ``resdsl fmt`` and ``resdsl diff``: commands that read specs and report
on them (docs/cli.md)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ..errors import SpecError, to_dicts
from .common import (
    EXIT_OK,
    EXIT_SPEC,
    _diagnose,
    _existing,
    _giga,
    _is_zoo,
    _load,
    _params,
    _read,
    _shown,
    _spec_files,
    _spec_options,
)


def add_check_command(sub: Any) -> None:
    """Register ``resdsl check`` on the ``resdsl`` subcommand parser."""
    check = sub.add_parser("check", help="parse, elaborate and shape-check specs")
    check.add_argument("files", nargs="+", metavar="FILE", help="a .res file or a directory "
                       "(every .res file below it, hidden ones skipped)")  # fmt: skip
    check.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    check.add_argument(
        "-v", "--verbose", action="store_true",
        help="list each projection that `shortcut` inserted: where, and its name",
    )  # fmt: skip
    check.add_argument(
        "--format", choices=["text", "json"], default="text",
        help="json: every file's result and diagnostics on stdout, for editors and tools",
    )  # fmt: skip
    _spec_options(check)
    check.set_defaults(run=_check)


def _check(args: argparse.Namespace) -> int:
    """Check each file; a file without a network is a library: its definitions are checked."""
    from ..api import loads
    from ..elaborate import check_definitions
    from ..loader import load_program, resolve_spec

    failed, report = 0, []
    params = _params(args.set)
    for path in (files := _spec_files(args.files)):
        projections = []
        try:
            text, shown, picked = resolve_spec(path) if _is_zoo(path) else (_read(path), path,
                                                                            None)  # fmt: skip
            program = load_program(text, shown)
            networks = [d.name for d in program.main.definitions if d.kind == "network"]
            chosen = args.network or picked
            if len(networks) > 1 and chosen is None:  # a family of networks: each one
                for name in networks:
                    projections += loads(text, name, path=shown, **params).projections
                summary = f"{len(networks)} networks: {', '.join(networks)}"
                summary += projection_count(projections)
            elif networks:
                net = loads(text, chosen, path=shown, **params)
                projections = list(net.projections)
                summary = f"{len(net.graph)} ops, {net.num_params:,} params, {_giga(net.macs)} MACs"
                summary += projection_count(projections)
            else:
                check_definitions(program)
                summary = f"library, {len(program.main.definitions)} definitions"
        except SpecError as e:
            failed += 1
            if args.format == "json":
                report.append({"path": path, "ok": False, "diagnostics": to_dicts(e)})
            else:
                _diagnose(e, args)
            continue
        if args.format == "json":
            report.append({"path": path, "ok": True, "summary": summary, "diagnostics": [],
                           "projections": projection_dicts(projections)})  # fmt: skip
        elif not args.quiet:
            print(f"{_shown(path)}: ok ({summary})")
            for line in projection_lines(projections) if args.verbose else []:
                print(line)
    if args.format == "json":
        json.dump({"files": report}, sys.stdout, indent=2)
        print()
    elif len(files) > 1 and failed:
        print(f"{failed} of {len(files)} files have errors", file=sys.stderr)
    return EXIT_SPEC if failed else EXIT_OK


def projection_count(projections) -> str:
    """``", 4 shortcut projections"`` for a summary line; nothing when there are none."""
    n = len(projections)
    return f", {n} shortcut projection{'s' if n != 1 else ''}" if n else ""


def projection_lines(projections) -> list[str]:
    """One indented line per projection ``shortcut`` inserted: where, name, shapes."""
    from ..errors import shown_path
    from ..ops import fmt_shape

    return [
        f"  {shown_path(p.span.path)}:{p.span.line}:{p.span.column}: {p.name}: projects "
        f"{fmt_shape(p.source)} to {fmt_shape(p.target)}"
        for p in projections
    ]


def projection_dicts(projections) -> list[dict]:
    """The projections as JSON-ready objects (``check --format json``, ``info --json``)."""
    return [
        {"name": p.name, "path": p.span.path, "line": p.span.line, "column": p.span.column,
         "source": list(p.source), "target": list(p.target)}
        for p in projections
    ]  # fmt: skip


def add_fmt_command(sub: Any) -> None:
    """Register ``resdsl fmt`` on the ``resdsl`` subcommand parser."""
    fmt = sub.add_parser(
        "fmt",
        help="rewrite specs in the canonical layout (comments kept)",
        description="Rewrites each file in place when its layout changes. FILE '-' reads "
        "stdin and writes stdout. The layout is described in docs/cli.md.",
    )
    fmt.add_argument("files", nargs="+", metavar="FILE", help="a .res file, a directory "
                     "(every .res file below it, hidden ones skipped) or - for stdin")  # fmt: skip
    fmt.add_argument(
        "--check", action="store_true",
        help="write nothing; list the files that would change and exit 1 if there are any",
    )  # fmt: skip
    fmt.add_argument("--diff", action="store_true", help="write nothing; print a unified diff")
    fmt.set_defaults(run=_fmt)


def _fmt(args: argparse.Namespace) -> int:
    """Format each file; a file with a syntax error is reported and left as it is."""
    from .._io import atomic_write
    from ..tools import fmt

    failed, changed = 0, []
    files = _spec_files(args.files)
    for path in files:
        try:
            old = sys.stdin.read() if path == "-" else fmt.read_source(_existing(path))
            new = fmt.format_text(old, "<stdin>" if path == "-" else path)
        except SpecError as e:
            _diagnose(e, args)
            failed += 1
            continue
        if path == "-" and not (args.check or args.diff):
            sys.stdout.write(new)
        if new == old:
            continue
        changed.append(path)
        if args.diff:
            sys.stdout.write(fmt.unified_diff(old, new, _shown(path)))
        elif args.check:
            print(_shown(path))
        elif path != "-":
            # through a symlink, not over it; one found in a directory stays in its tree
            atomic_write(os.path.realpath(path), new)
            print(f"reformatted {_shown(path)}", file=sys.stderr)
    if args.check and changed:
        print(f"{len(changed)} of {len(files)} files would be reformatted", file=sys.stderr)
    return EXIT_SPEC if failed or (args.check and changed) else EXIT_OK


def add_diff_command(sub: Any) -> None:
    """Register ``resdsl diff`` on the ``resdsl`` subcommand parser."""
    diff = sub.add_parser(
        "diff",
        help="compare two specs' networks: blocks, ops, connections, params and MACs per stage",
    )
    diff.add_argument("a", metavar="A")
    diff.add_argument("b", metavar="B")
    diff.add_argument("--json", action="store_true", help="machine-readable output")
    diff.add_argument(
        "--exit-code", action="store_true", help="exit 1 if the networks differ (default: 0)"
    )
    _spec_options(diff)
    diff.set_defaults(run=_diff)


def _diff(args: argparse.Namespace) -> int:
    from ..tools.diff import compare, render

    result = compare(_load(args.a, args), _load(args.b, args))
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        print(render(result))
    return EXIT_SPEC if args.exit_code and not result["identical"] else EXIT_OK
