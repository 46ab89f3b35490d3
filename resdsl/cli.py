"""The ``resdsl`` command line. Data goes to stdout, diagnostics to stderr.

Exit codes: 0 success, 1 an error in a spec, 2 a usage error, 3 an internal error, 4 the
operating system refused a read or write (disk full, permissions, a missing directory);
130 after Ctrl-C and 143 after SIGTERM, either of which leaves no partial output behind.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from ._io import OutputRefusedError
from ._signals import Terminated, sigterm_as_interrupt
from .backends import MAX_BATCH
from .errors import SpecError, render, to_dicts, use_color

EXIT_OK, EXIT_SPEC, EXIT_USAGE, EXIT_INTERNAL, EXIT_OS = 0, 1, 2, 3, 4


class UsageError(Exception):
    """A bad command line (exit 2)."""


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

    check = sub.add_parser("check", help="parse, elaborate and shape-check specs")
    check.add_argument("files", nargs="+", metavar="FILE", help="a .res file or a directory "
                       "(every .res file below it, hidden ones skipped)")  # fmt: skip
    check.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    check.add_argument(
        "--format", choices=["text", "json"], default="text",
        help="json: every file's result and diagnostics on stdout, for editors and tools",
    )  # fmt: skip
    _spec_options(check)
    check.set_defaults(run=_check)

    info = sub.add_parser("info", help="parameters, MACs, shapes and a per-layer table")
    info.add_argument("file", metavar="FILE")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.add_argument(
        "--report", action="store_true",
        help="add an analysis: per-stage counts, receptive field, input-to-output paths",
    )  # fmt: skip
    info.add_argument(
        "--init-stats", action="store_true",
        help="with --report: activation std per block at initialisation (needs PyTorch)",
    )  # fmt: skip
    _spec_options(info)
    info.set_defaults(run=_info)

    draw = sub.add_parser(
        "draw",
        help="draw the block graph with Graphviz (.dot, .svg, .png)",
        description="Blocks are nested clusters; skip, projection and concatenation edges are "
        "drawn differently; edges show tensor shapes. .dot needs no Graphviz program.",
    )
    draw.add_argument("file", metavar="FILE")
    draw.add_argument(
        "-o", "--output", metavar="OUT",
        help="net.dot, net.svg or net.png (default: DOT on stdout)",
    )  # fmt: skip
    draw.add_argument(
        "--depth", type=int, metavar="N",
        help="collapse blocks nested deeper than N into one box each (default: none)",
    )  # fmt: skip
    _spec_options(draw)
    draw.set_defaults(run=_draw)

    comp = sub.add_parser(
        "compile",
        help="emit a PyTorch file or an ONNX model, or build a CPU/CUDA artifact with TVM",
        description="torch: a self-contained .py file. llvm/cuda: a directory with model.so "
        "(the compiled library, weights included) and model.json (inputs, outputs, target). "
        "onnx: one .onnx file (weights included).",
    )
    comp.add_argument("file", metavar="FILE")
    comp.add_argument(
        "--target", choices=["torch", "llvm", "cuda", "onnx"], default="torch",
        help="default: torch",
    )  # fmt: skip
    comp.add_argument(
        "-o", "--output", metavar="OUT",
        help="torch: output file (default: stdout); llvm/cuda: output directory (required); "
        "onnx: output file (required)",
    )  # fmt: skip
    tvm = comp.add_argument_group("llvm, cuda and onnx targets")
    tvm.add_argument(
        "--weights", metavar="FILE",
        help=".safetensors or PyTorch state_dict keyed by the spec's names (default: --seed)",
    )  # fmt: skip
    tvm.add_argument("--seed", type=seed_arg, default=0, help="initialise weights (default: 0)")
    tvm.add_argument(
        "--strict", action="store_true",
        help="refuse weights holding NaN or infinite values (default: a warning)",
    )  # fmt: skip
    tvm.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    tvm.add_argument(
        "--batch", type=int,
        help="fixed batch size (llvm/cuda default: 1; onnx default: dynamic)",
    )  # fmt: skip
    tvm.add_argument("--cpu", metavar="MCPU", help="llvm: CPU to tune code for (default: host)")
    tvm.add_argument("--arch", metavar="SM", help="cuda: e.g. sm_80 (default), sm_90")
    tvm.add_argument(
        "--no-winograd", dest="winograd", action="store_false",
        help="llvm: compute 3x3 convolutions directly, not with Winograd's algorithm",
    )  # fmt: skip
    tvm.add_argument(
        "--micro-batch", type=int, metavar="N",
        help="llvm: run the batch N samples at a time (N divides --batch; default: as many "
        "as keep the largest activation under 7 MiB, see docs/performance.md)",
    )  # fmt: skip
    tvm.add_argument(
        "--check", action="store_true",
        help="compare the artifact or model with the PyTorch backend on a random input",
    )  # fmt: skip
    tune = comp.add_argument_group("tuning, llvm and cuda targets (docs/deploy.md#tuning)")
    tune.add_argument(
        "--tune-trials", type=int, default=0, metavar="N",
        help="first measure N candidate kernels with MetaSchedule (default: 0, only reuse "
        "the records there are)",
    )  # fmt: skip
    tune.add_argument(
        "--tune-time", type=_duration, metavar="DURATION",
        help="stop tuning after this long, e.g. 30m, 90s, 1h (default: run all N trials)",
    )  # fmt: skip
    tune.add_argument(
        "--tune-db", metavar="DIR",
        help="the tuning records (default: $RESDSL_TUNING_DIR/TARGET, else "
        "~/.cache/resdsl/tuning/TARGET)",
    )  # fmt: skip
    _spec_options(comp)
    comp.set_defaults(run=_compile)

    run = sub.add_parser(
        "run",
        help="run a compiled artifact on .npy inputs",
        description="Runs DIR/model.so with NumPy inputs; needs TVM's runtime only.",
    )
    run.add_argument("artifact", metavar="DIR")
    run.add_argument(
        "--input", action="append", default=[], metavar="[NAME=]FILE",
        help=".npy input, in input order or by name (default: a seeded random input)",
    )  # fmt: skip
    run.add_argument("--output", metavar="FILE", help="write outputs: .npy, or .npz for several")
    run.add_argument("--seed", type=seed_arg, default=0, help="seed of the random input")
    run.add_argument(
        "--strict", action="store_true",
        help="refuse inputs holding NaN or infinite values (default: a warning)",
    )  # fmt: skip
    run.set_defaults(run=_run)

    from .search.cli import add_sample_command  # its own module: resdsl/search/cli.py

    add_sample_command(sub, _spec_options)

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
    return parser


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


def _params(pairs: Sequence[str]) -> dict[str, Any]:
    from .elaborate import constant

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
    from .api import loads

    return loads(_read(path), args.network, path=path, **_params(args.set))


def _check(args: argparse.Namespace) -> int:
    """Check each file; a file without a network is a library: its definitions are checked."""
    from .api import loads
    from .elaborate import check_definitions
    from .loader import load_program

    failed, report = 0, []
    params = _params(args.set)
    for path in (files := _spec_files(args.files)):
        try:
            text = _read(path)
            program = load_program(text, path)
            if any(d.kind == "network" for d in program.main.definitions):
                net = loads(text, args.network, path=path, **params)
                summary = f"{len(net.graph)} ops, {net.num_params:,} params, {_giga(net.macs)} MACs"
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
            report.append({"path": path, "ok": True, "summary": summary, "diagnostics": []})
        elif not args.quiet:
            print(f"{_shown(path)}: ok ({summary})")
    if args.format == "json":
        json.dump({"files": report}, sys.stdout, indent=2)
        print()
    elif len(files) > 1 and failed:
        print(f"{failed} of {len(files)} files have errors", file=sys.stderr)
    return EXIT_SPEC if failed else EXIT_OK


def _read(path: str) -> str:
    """A spec named on the command line; a missing or unreadable file is a usage error."""
    from .loader import read_spec

    return read_spec(_existing(path))  # a regular file: a FIFO or device is never opened


def _giga(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)


def _shape(shape: tuple[int, ...]) -> str:
    from .ops import fmt_shape

    return fmt_shape(shape)


def _info(args: argparse.Namespace) -> int:
    if args.init_stats and not args.report:
        raise UsageError("--init-stats is part of the report: add --report")
    if args.init_stats and importlib.util.find_spec("torch") is None:
        raise UsageError("--init-stats needs PyTorch: pip install 'resdsl[torch]'")
    from .search.cli import space_info

    if space_info(args):  # a search space: its size and choices (docs/search.md)
        return EXIT_OK
    net = _load(args.file, args)
    report = None
    if args.report:
        from .analysis import report as analyse

        report = analyse(net, init=args.init_stats)
    if args.json:
        json.dump({**_info_json(net), **({"report": report} if report else {})}, sys.stdout,
                  indent=2)  # fmt: skip
        print()
        return EXIT_OK
    rows = [("name", "op", "output shape", "params", "MACs")]
    rows += [(la.name, la.op, _shape(la.shape), f"{la.params:,}", f"{la.macs:,}")
             for la in net.layers]  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    out = [
        f"network  {net.name}  ({_shown(args.file)})",
        "inputs   " + ", ".join(f"{k}: {_shape(v)}" for k, v in net.input_shapes.items()),
        "outputs  " + ", ".join(f"{k}: {_shape(v)}" for k, v in net.output_shapes.items()),
        f"params   {net.num_params:,}",
        f"MACs     {net.macs:,} ({_giga(net.macs)})",
        f"ops      {len(net.graph)}",
        "",
    ]
    for i, row in enumerate(rows):
        left = "  ".join(row[c].ljust(widths[c]) for c in range(3))
        right = "  ".join(row[c].rjust(widths[c]) for c in range(3, 5))
        out.append(f"{left}  {right}".rstrip())
        if i == 0:
            out.append("-" * (sum(widths) + 8))
    if report:
        from .analysis import render_report

        out += ["", render_report(report)]
    print("\n".join(out))
    return EXIT_OK


def _info_json(net) -> dict[str, Any]:
    return {
        "network": net.name,
        "source": net.source,
        "parameters": net.params,
        "inputs": {k: list(v) for k, v in net.input_shapes.items()},
        "outputs": {k: list(v) for k, v in net.output_shapes.items()},
        "num_params": net.num_params,
        "macs": net.macs,
        "layers": [
            {"name": la.name, "op": la.op, "shape": list(la.shape), "params": la.params,
             "macs": la.macs}
            for la in net.layers
        ],
    }  # fmt: skip


def _draw(args: argparse.Namespace) -> int:
    from . import draw

    to_stdout = args.output in (None, "-")
    ext = os.path.splitext(args.output or "")[1].lower()
    if not to_stdout and os.path.isdir(args.output):
        raise UsageError(f"{args.output} is a directory; give a file name such as net.svg")
    if not to_stdout and ext not in draw.FORMATS:
        raise UsageError(f"cannot draw to {args.output!r}: name a .dot, .svg or .png file")
    if not to_stdout:
        from ._io import check_target

        check_target(args.output)  # never over a device, FIFO or symlink
    if args.depth is not None and args.depth < 0:
        raise UsageError(f"--depth must be 0 or more, got {args.depth}")
    if importlib.util.find_spec("graphviz") is None:
        raise UsageError("drawing needs the graphviz package: pip install 'resdsl[draw]'")
    net = _load(args.file, args)
    if to_stdout:
        sys.stdout.write(draw.to_dot(net.graph, args.depth))
        return EXIT_OK
    try:
        draw.write(net.graph, args.output, args.depth)
    except draw.DrawError as e:
        raise UsageError(str(e)) from None
    print(f"wrote {args.output}", file=sys.stderr)
    return EXIT_OK


def _compile(args: argparse.Namespace) -> int:
    if args.batch is not None and not 1 <= args.batch <= MAX_BATCH:
        raise UsageError(f"--batch must be at least 1 and at most {MAX_BATCH}, got {args.batch}")
    if args.arch and args.target == "llvm":
        raise UsageError("--arch applies to --target cuda")
    if args.cpu and args.target == "cuda":
        raise UsageError("--cpu applies to --target llvm")
    if args.target in ("torch", "onnx") and (args.tune_trials or args.tune_db or args.tune_time):
        raise UsageError("--tune-trials and --tune-db apply to --target llvm or cuda")
    if args.tune_trials < 0:
        raise UsageError(f"--tune-trials must be 0 or more, got {args.tune_trials}")
    if args.tune_time is not None and not args.tune_trials:
        raise UsageError("--tune-time bounds a tuning run: give --tune-trials N too")
    if not args.winograd and args.target != "llvm":
        raise UsageError("--no-winograd applies to --target llvm")
    if args.micro_batch is not None:
        if args.target != "llvm":
            raise UsageError("--micro-batch applies to --target llvm")
        batch = 1 if args.batch is None else args.batch
        if args.micro_batch < 1 or batch % args.micro_batch:
            raise UsageError(f"--micro-batch must divide --batch ({batch}), got {args.micro_batch}")
    if args.target == "onnx":
        return _compile_onnx(args)
    if args.target != "torch":
        if args.output and args.output != "-":
            _artifact_dir(args.output, ("model.so", "model.json"))
        return _compile_tvm(args)
    from ._io import atomic_write
    from .backends.torch import generate

    for flag in ("weights", "cpu", "arch"):
        if getattr(args, flag):
            raise UsageError(f"--{flag} applies to --target llvm or cuda")
    if args.strict:
        raise UsageError("--strict applies to --target llvm, cuda or onnx (it checks weights)")
    net = _load(args.file, args)
    source = generate(net.graph, source_path=args.file)
    if args.output in (None, "-"):
        sys.stdout.write(source)
    else:
        if os.path.isdir(args.output):
            raise UsageError(f"{args.output} is a directory; give a file name such as model.py")
        atomic_write(args.output, source)  # refuses to replace a device, FIFO or symlink
        print(f"wrote {args.output}", file=sys.stderr)
    return EXIT_OK


def _artifact_dir(path: str, names: Sequence[str] = ()) -> None:
    """An output directory (``compile -o DIR``, ``sample -o DIR``) may not be a symbolic
    link, and the files to be replaced in it must be regular files (or missing)."""
    from ._io import check_target

    if os.path.islink(path):
        raise OutputRefusedError(
            f"refusing to write into {_shown(path)}: it is a symbolic link, not a directory"
        )
    if os.path.isdir(path):
        for name in names:
            check_target(os.path.join(path, name))


def _compile_tvm(args: argparse.Namespace) -> int:
    if not args.output or args.output == "-":
        raise UsageError(f"--target {args.target} writes a directory: give it with -o DIR")
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise UsageError(f"{args.output} exists and is not a directory")
    net = _load(args.file, args)
    args.weights = _weights_arg(args)  # --strict: NaN/Inf weights are an error
    if importlib.util.find_spec("tvm") is None:
        raise UsageError(f"--target {args.target} needs TVM: pip install 'resdsl[tvm]'")
    from .backends.tvm import BuildOptions, compile_network
    from .backends.tvm.check import cross_check

    batch = 1 if args.batch is None else args.batch
    options = BuildOptions(
        args.target, args.cpu, args.arch, args.dtype, batch,
        winograd=args.winograd, micro_batch=args.micro_batch,
    )  # fmt: skip
    print(f"compiling {net.name} for {args.target} ...", file=sys.stderr)
    database = _tuning(net, options, args)
    meta = compile_network(
        net, args.output, options, weights=args.weights, seed=args.seed, database=database
    )
    print(f"wrote {os.path.join(args.output, 'model.so')} and model.json", file=sys.stderr)
    if args.check:
        if meta["device"] == "cuda" and not _has_cuda():
            print("check skipped: no CUDA device on this machine", file=sys.stderr)
            return EXIT_OK
        from .weights import resolve

        weights, _ = resolve(net.graph, args.weights, args.seed)
        results = cross_check(net, args.output, weights, args.seed)
        return _report_checks(results, "the compiled artifact")
    return EXIT_OK


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


def _weights_arg(args: argparse.Namespace) -> Any:
    """``--weights`` as given, or with ``--strict`` a path that refuses NaN/Inf weights."""
    if args.weights and args.strict:
        from .weights import WeightsPath

        return WeightsPath(args.weights, strict=True)
    return args.weights


def _duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``1.5h`` -> seconds (argparse type)."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30m, 90s, 1h)") from None
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"the duration must be positive, got {text!r}")
    return seconds


def _tuning(net, options, args: argparse.Namespace):
    """Tune first when asked; the records database to build with, or None."""
    from .backends.tvm.tune import tune_network

    database, report = tune_network(
        net, options, args.tune_trials, args.tune_db, weights=args.weights, seed=args.seed,
        seconds=args.tune_time,
    )  # fmt: skip
    if report is not None:
        print(report.summary(), file=sys.stderr)
    elif args.tune_db:
        print(f"tuning: no records in {args.tune_db} yet", file=sys.stderr)
    return database


def _report_checks(results: Sequence[Any], what: str) -> int:
    """One line per output on stdout; exit 1 when any is beyond its tolerance."""
    for r in results:
        verdict = "ok" if r.ok else "FAILED"
        print(f"check {r.output}: max abs diff {r.max_abs_diff:.3g} "
              f"(tolerance {r.tolerance:.3g}) {verdict}")  # fmt: skip
    if not all(r.ok for r in results):
        print(f"{what} does not match the PyTorch backend", file=sys.stderr)
        return EXIT_SPEC
    return EXIT_OK


def _compile_onnx(args: argparse.Namespace) -> int:
    """``--target onnx``: one .onnx file (see resdsl/backends/onnx.py)."""
    from ._io import check_target

    for flag in ("cpu", "arch"):
        if getattr(args, flag):
            raise UsageError(f"--{flag} applies to --target llvm or cuda")
    if args.dtype != "float32":
        raise UsageError("--target onnx writes float32 models; --dtype float16 is not supported")
    if args.batch is not None and args.batch < 1:
        raise UsageError(f"--batch must be at least 1, got {args.batch}")
    if not args.output or args.output == "-":
        raise UsageError("--target onnx writes a file: give it with -o FILE, e.g. -o model.onnx")
    if os.path.isdir(args.output):
        raise UsageError(f"{args.output} is a directory; give a file name such as model.onnx")
    check_target(args.output)  # before the export: never over a device, FIFO or symlink
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        raise UsageError(f"no such directory: {os.path.dirname(args.output)}")
    needed = ["onnx", *(["onnxruntime", "torch"] if args.check else [])]
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"--target onnx needs {', '.join(missing)}: pip install 'resdsl[onnx]'")
    net = _load(args.file, args)
    args.weights = _weights_arg(args)  # --strict: NaN/Inf weights are an error
    from .backends.onnx import OPSET, cross_check, export

    export(net, args.output, weights=args.weights, seed=args.seed, batch=args.batch)
    batch = "dynamic batch" if args.batch is None else f"batch {args.batch}"
    print(f"wrote {args.output} (ONNX opset {OPSET}, {batch})", file=sys.stderr)
    if not args.check:
        return EXIT_OK
    from .weights import resolve

    weights, _ = resolve(net.graph, args.weights, args.seed)
    results = cross_check(net, args.output, weights, batch=args.batch or 2, seed=args.seed)
    return _report_checks(results, "the ONNX model")


def _has_cuda() -> bool:
    import tvm

    return bool(tvm.cuda(0).exist)


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from . import runtime

    model = runtime.load(args.artifact)
    if args.input:
        arrays = _read_inputs(args.input, model.inputs, args.strict)
    else:
        rng = np.random.default_rng(args.seed)
        arrays = {}
        for i in model.inputs:
            kind = i["dtype"] if i["dtype"] in ("float32", "float64") else "float32"
            try:
                x = rng.standard_normal(i["shape"], dtype=kind)
            except MemoryError:
                raise UsageError(f"not enough memory for a random input of shape "
                                 f"{tuple(i['shape'])}; give --input") from None  # fmt: skip
            arrays[i["name"]] = x.astype(i["dtype"], copy=False)
    result = model(**arrays)
    outputs = result if isinstance(result, tuple) else (result,)
    named = {o["name"]: y for o, y in zip(model.outputs, outputs, strict=True)}
    for name, y in named.items():
        bad = _non_finite(y)
        if bad:
            print(f"resdsl run: warning: output {name!r} holds {bad} NaN or infinite value(s) "
                  f"(of {y.size})", file=sys.stderr)  # fmt: skip
    if args.output:
        _write_outputs(args.output, named)
        print(f"wrote {args.output}", file=sys.stderr)
        return EXIT_OK
    for name, y in named.items():
        head = ", ".join(f"{v:.6g}" for v in y.reshape(-1)[:5])
        with np.errstate(all="ignore"):  # NaN and Inf are reported above
            mean, std = y.mean(), y.std()
        print(f"{name}: shape {tuple(y.shape)} {y.dtype} mean {mean:.6g} std {std:.6g} "
              f"[{head}{', ...' if y.size > 5 else ''}]")  # fmt: skip
    return EXIT_OK


def _non_finite(array: Any) -> int:
    """How many NaN or infinite values a float array holds."""
    import numpy as np

    if array.dtype.kind != "f":
        return 0
    return int(array.size - np.count_nonzero(np.isfinite(array)))


# The largest .npy header `run --input` reads (NumPy's own default bound).
MAX_NPY_HEADER = 10000


def _read_inputs(
    specs: Sequence[str], inputs: list[dict[str, Any]], strict: bool = False
) -> dict[str, Any]:
    """``--input [NAME=]FILE`` arrays by input name; each file's header (dtype, shape) is
    checked against the model before its data is read."""
    names = [i["name"] for i in inputs]
    arrays: dict[str, Any] = {}
    for i, spec in enumerate(specs):
        name, sep, path = spec.partition("=")
        if not sep:
            if i >= len(names):
                raise UsageError(f"the model takes {len(names)} input(s); got more --input")
            name, path = names[i], spec
        if name not in names:
            raise UsageError(f"--input {name}=...: the model has no input {name!r}; "
                             f"its inputs: {', '.join(names)}")  # fmt: skip
        if name in arrays:
            raise UsageError(f"--input: input {name!r} is given twice")
        array = _read_npy(_existing(path), inputs[names.index(name)])
        bad = _non_finite(array)
        if bad and strict:
            raise UsageError(f"{_shown(path)}: input {name!r} holds {bad} NaN or infinite "
                             f"value(s) (of {array.size}); --strict refuses them")  # fmt: skip
        if bad:
            print(f"resdsl run: warning: input {name!r} ({_shown(path)}) holds {bad} NaN or "
                  f"infinite value(s) (of {array.size})", file=sys.stderr)  # fmt: skip
        arrays[name] = array
    return arrays


def _read_npy(path: str, spec: dict[str, Any]) -> Any:
    """One ``.npy`` file for the input ``spec``: numbers of the input's shape, never
    pickled objects; a usage error naming the file and the reason otherwise."""
    import numpy as np

    from .runtime import shape_error

    def refuse(reason: str) -> UsageError:
        return UsageError(f"cannot read {_shown(path)}: {reason}")

    fmt = np.lib.format
    with open(path, "rb") as f:
        magic = f.read(6)
        if magic != fmt.MAGIC_PREFIX:
            if magic.startswith(b"PK\x03\x04"):
                raise refuse("a .npz archive; give one .npy file per input")
            raise refuse("not a .npy file (it does not start with NumPy's magic string)")
        f.seek(0)
        try:
            version = fmt.read_magic(f)
            read_header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
            if version not in read_header:
                raise ValueError(f"version {version[0]}.{version[1]}, which resdsl does not read")
            shape, _, dtype = read_header[version](f, max_header_size=MAX_NPY_HEADER)
        except ValueError as e:
            if "Header info length" in str(e):
                raise refuse(f"its header is larger than {MAX_NPY_HEADER} bytes") from None
            raise refuse(f"a damaged .npy header ({str(e).splitlines()[0]})") from None
        offset = f.tell()
    if dtype.hasobject:
        raise refuse("it holds Python objects (pickled data), which resdsl never loads")
    if dtype.itemsize == 0:
        raise refuse(f"its dtype {dtype} is empty")
    if dtype.fields is not None:
        raise refuse(f"it holds records of a structured dtype {dtype}, not numbers")
    if dtype.kind == "c":
        raise refuse(f"it holds complex numbers ({dtype}); the input {spec['name']!r} is "
                     f"{spec['dtype']}")  # fmt: skip
    if dtype.kind not in "biuf":
        what = {"U": "text", "S": "bytes", "V": "raw bytes", "M": "dates", "m": "durations"}
        raise refuse(f"it holds {what.get(dtype.kind, 'values')} ({dtype}), not numbers")
    if list(shape) != spec["shape"]:
        raise shape_error(spec, shape)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if os.path.getsize(path) - offset < size:
        raise refuse(f"it is truncated: {size} bytes of data expected after the header")
    try:
        return np.load(path, allow_pickle=False, max_header_size=MAX_NPY_HEADER)
    except (ValueError, EOFError) as e:
        raise refuse(str(e).splitlines()[0] if str(e) else type(e).__name__) from None


def _write_outputs(path: str, named: dict[str, Any]) -> None:
    import io

    import numpy as np

    from ._io import atomic_write

    buffer = io.BytesIO()
    if path.endswith(".npz"):
        np.savez(buffer, **named)
    elif len(named) == 1:
        np.save(buffer, next(iter(named.values())))
    else:
        raise UsageError(f"the model has {len(named)} outputs: write them to a .npz file")
    atomic_write(path, buffer.getvalue())


def _fmt(args: argparse.Namespace) -> int:
    """Format each file; a file with a syntax error is reported and left as it is."""
    from . import fmt
    from ._io import atomic_write

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

    from ._io import file_kind

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
    from .errors import shown_path

    return shown_path(path)


def _existing(path: str) -> str:
    """A file named on the command line: it must exist and be a regular file (exit 2)."""
    import stat

    from ._io import file_kind

    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # ValueError: a NUL in the name
        raise UsageError(f"no such file: {_shown(path)}") from None
    if stat.S_ISDIR(mode):
        raise UsageError(f"no such file: {_shown(path)}")
    if not stat.S_ISREG(mode):
        raise UsageError(f"cannot read {_shown(path)}: it is {file_kind(mode)}, not a regular file")
    return path


def _diff(args: argparse.Namespace) -> int:
    from .diff import compare, render

    result = compare(_load(args.a, args), _load(args.b, args))
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        print(render(result))
    return EXIT_SPEC if args.exit_code and not result["identical"] else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
