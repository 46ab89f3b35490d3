"""``resdsl info`` and ``resdsl draw``: what a network is made of, as a table or a picture
(docs/cli.md)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from typing import Any

from .common import EXIT_OK, UsageError, _giga, _load, _shown, _spec_options


def add_info_command(sub: Any) -> None:
    """Register ``resdsl info`` on the ``resdsl`` subcommand parser."""
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
    info.add_argument(
        "-v", "--verbose", action="store_true",
        help="list each projection that `shortcut` inserted: where, and its name",
    )  # fmt: skip
    _spec_options(info)
    info.set_defaults(run=_info)


def _info(args: argparse.Namespace) -> int:
    if args.init_stats and not args.report:
        raise UsageError("--init-stats is part of the report: add --report")
    if args.init_stats and importlib.util.find_spec("torch") is None:
        raise UsageError("--init-stats needs PyTorch: pip install 'resdsl[torch]'")
    from .sample import space_info

    if space_info(args):  # a search space: its size and choices (docs/search.md)
        return EXIT_OK
    net = _load(args.file, args)
    report = None
    if args.report:
        from ..tools.analysis import report as analyse

        report = analyse(net, init=args.init_stats)
    if args.json:
        json.dump({**_info_json(net), **({"report": report} if report else {})}, sys.stdout,
                  indent=2)  # fmt: skip
        print()
        return EXIT_OK
    out = _info_text(net, args.file, args.verbose)
    if report:
        from ..tools.analysis import render_report

        out += ["", render_report(report)]
    print("\n".join(out))
    return EXIT_OK


def _info_text(net, path: str, verbose: bool = False) -> list[str]:
    """The summary lines and the per-layer table of ``info`` without ``--json``."""
    from .specs import projection_count, projection_lines

    rows = [("name", "op", "output shape", "params", "MACs")]
    rows += [(la.name, la.op, _shape(la.shape), f"{la.params:,}", f"{la.macs:,}")
             for la in net.layers]  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    out = [
        f"network  {net.name}  ({_shown(path)})",
        "inputs   " + ", ".join(f"{k}: {_shape(v)}" for k, v in net.input_shapes.items()),
        "outputs  " + ", ".join(f"{k}: {_shape(v)}" for k, v in net.output_shapes.items()),
        *_training_line(net),
        f"params   {net.num_params:,}",
        f"MACs     {net.macs:,} ({_giga(net.macs)})",
        f"ops      {len(net.graph)}",
    ]
    if net.projections:  # "shortcut 4 projections": what `check` says, on a line of its own
        out.append("shortcut " + projection_count(net.projections)[2:].replace(" shortcut", ""))
        out += projection_lines(net.projections) if verbose else []
    out.append("")
    for i, row in enumerate(rows):
        left = "  ".join(row[c].ljust(widths[c]) for c in range(3))
        right = "  ".join(row[c].rjust(widths[c]) for c in range(3, 5))
        out.append(f"{left}  {right}".rstrip())
        if i == 0:
            out.append("-" * (sum(widths) + 8))
    return out


def _training_line(net) -> list[str]:
    training = net.training_output_shapes
    if not training:
        return []
    shapes = ", ".join(f"{k}: {_shape(v)}" for k, v in training.items())
    return [f"training {shapes} (training mode only; their MACs are not counted)"]


def _shape(shape: tuple[int, ...]) -> str:
    from ..ops import fmt_shape

    return fmt_shape(shape)


def _info_json(net) -> dict[str, Any]:
    from .specs import projection_dicts

    return {
        "network": net.name,
        "source": net.source,
        "parameters": net.params,
        "inputs": {k: list(v) for k, v in net.input_shapes.items()},
        "outputs": {k: list(v) for k, v in net.output_shapes.items()},
        "training_outputs": {k: list(v) for k, v in net.training_output_shapes.items()},
        "num_params": net.num_params,
        "macs": net.macs,
        "projections": projection_dicts(net.projections),
        "layers": [
            {"name": la.name, "op": la.op, "shape": list(la.shape), "params": la.params,
             "macs": la.macs, **({"training": True} if la.training else {})}
            for la in net.layers
        ],
    }  # fmt: skip


def add_draw_command(sub: Any) -> None:
    """Register ``resdsl draw`` on the ``resdsl`` subcommand parser."""
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


def _draw(args: argparse.Namespace) -> int:
    from ..tools import draw

    to_stdout = args.output in (None, "-")
    ext = os.path.splitext(args.output or "")[1].lower()
    if not to_stdout and os.path.isdir(args.output):
        raise UsageError(f"{args.output} is a directory; give a file name such as net.svg")
    if not to_stdout and ext not in draw.FORMATS:
        raise UsageError(f"cannot draw to {args.output!r}: name a .dot, .svg or .png file")
    if not to_stdout:
        from .._io import check_target

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


def add_models_command(sub: Any) -> None:
    """Register ``resdsl models`` on the ``resdsl`` subcommand parser."""
    models = sub.add_parser(
        "models", help="list the model zoo (names usable as zoo:NAME)",
        description="List the zoo's models, one per line: the names of torchvision's "
        "builders, usable wherever a spec file is (`resdsl info zoo:resnet50`).",
    )  # fmt: skip
    models.add_argument("pattern", nargs="?", default="*",
                        help="a shell-style pattern, e.g. 'resnet*' (default: all)")  # fmt: skip
    models.add_argument("--json", action="store_true",
                        help="one JSON object: name -> family file")  # fmt: skip
    models.set_defaults(run=_models)


def _models(args: argparse.Namespace) -> int:
    from ..api import list_models
    from ..loader import zoo_models

    names = list_models(args.pattern)
    if args.json:
        files = zoo_models()
        print(json.dumps({n: f"zoo/{files[n]}" for n in names}, indent=1))
    else:
        print("\n".join(names))
    return EXIT_OK
