"""The ``resdsl`` command line. Data goes to stdout, diagnostics to stderr.

Exit codes: 0 success, 1 an error in a spec, 2 a usage error, 3 an internal error, 4 the
operating system refused a read or write (disk full, permissions, a missing directory);
130 after Ctrl-C and 143 after SIGTERM, either of which leaves no partial output behind.

Each command lives in its own module with ``add_<name>_command(sub)``, which registers it
on the subcommand parser, and the function it runs; ``_parser`` assembles them in the
order ``resdsl --help`` lists them. What several commands share is in ``common``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__
from .._io import OutputRefusedError
from .._signals import Terminated, sigterm_as_interrupt
from ..backends import MAX_BATCH
from ..errors import SpecError
from .common import (
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_OS,
    EXIT_SPEC,
    EXIT_USAGE,
    UsageError,
    _artifact_dir,
    _diagnose,
    _load,
    _params,
    _read,
    _spec_options,
    seed_arg,
)
from .compile import add_compile_command
from .importing import add_import_command
from .info import add_draw_command, add_info_command, add_models_command
from .run import _write_outputs, add_run_command
from .sample import add_sample_command
from .specs import add_check_command, add_diff_command, add_fmt_command

__all__ = [
    "EXIT_INTERNAL",
    "EXIT_OK",
    "EXIT_OS",
    "EXIT_SPEC",
    "EXIT_USAGE",
    "MAX_BATCH",
    "UsageError",
    "_artifact_dir",
    "_dispatch",
    "_load",
    "_params",
    "_parser",
    "_read",
    "_spec_options",
    "_write_outputs",
    "main",
    "seed_arg",
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    with sigterm_as_interrupt():
        return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    """Run the command; every failure becomes a message on stderr and an exit code."""
    try:
        return args.run(args)
    except SpecError as e:
        _diagnose(e, args)
        return EXIT_SPEC
    except (UsageError, OutputRefusedError) as e:  # OutputRefusedError: -o names a device, ...
        print(f"resdsl {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except OSError as e:  # not a bug: the disk, permissions or paths; files are left intact
        print(f"resdsl {args.command}: error: {e}", file=sys.stderr)
        return EXIT_OS
    except Exception as e:  # a bug in resdsl: say so plainly, no traceback unless asked
        if os.environ.get("RESDSL_DEBUG"):
            raise
        print(
            f"resdsl: internal error: {type(e).__name__}: {e}\n"
            "This is a bug in resdsl; rerun with RESDSL_DEBUG=1 for the traceback.",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resdsl",
        description="Check, count and compile residual-network specs (.res files).",
        epilog="Run `resdsl COMMAND --help` for a command's options. Docs: docs/cli.md.",
    )
    parser.add_argument("--version", action="version", version=f"resdsl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add_command in (
        add_check_command, add_info_command, add_draw_command, add_compile_command,
        add_run_command, add_sample_command, add_fmt_command, add_diff_command,
        add_models_command, add_import_command,
    ):  # fmt: skip
        add_command(sub)
    return parser
