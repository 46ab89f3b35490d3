"""``resdsl import``: an existing model as a spec."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import EXIT_OK, UsageError


def add_import_command(sub: Any) -> None:
    """Register ``resdsl import`` on the ``resdsl`` subcommand parser."""
    imp = sub.add_parser(
        "import", help="write an existing model (PyTorch, ONNX, Caffe) as a spec",
        description="Write SOURCE as a spec: torchvision:NAME, timm:NAME, "
        "package.module:factory (runs that Python code: see docs/security.md), model.onnx "
        "or deploy.prototxt. Labels are the source's module paths, so its state_dict loads "
        "into the spec's PyTorch module. The spec goes to stdout, or to -o FILE.",
    )  # fmt: skip
    imp.add_argument("source", metavar="SOURCE")
    imp.add_argument("-o", "--output", metavar="FILE", help="write the spec here (default: stdout)")
    imp.add_argument(
        "--input-shape", metavar="C,H,W", help="a PyTorch source's input shape (default 3,224,224)"
    )
    imp.set_defaults(run=_import)


def _import(args: argparse.Namespace) -> int:
    from .._io import atomic_write
    from ..api import loads
    from ..importers import import_model

    shape = None
    if args.input_shape:
        try:
            shape = tuple(int(v) for v in args.input_shape.split(","))
        except ValueError:
            raise UsageError(
                f"--input-shape takes ints like 3,224,224, not {args.input_shape!r}"
            ) from None
    text = import_model(args.source, input_shape=shape)
    net = loads(text, path=args.output or "<imported>")
    summary = f"imported {args.source}: {len(net.graph)} ops, {net.num_params:,} params"
    if args.output:
        atomic_write(args.output, text)
        print(f"{summary} -> {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
        print(summary, file=sys.stderr)
    return EXIT_OK
