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
        "--weights", metavar="FILE", help="also write the source's weights (.safetensors), "
        "keyed by the spec's names, for `--weights` of compile and run",
    )  # fmt: skip
    imp.add_argument(
        "--input-shape", metavar="C,H,W", help="a PyTorch source's input shape (default 3,224,224)"
    )
    imp.add_argument(
        "--trace", choices=("auto", "fx", "export"), default="auto",
        help="how a PyTorch source is traced: torch.fx, torch.export, or (auto, the "
        "default) torch.fx and torch.export where fx cannot",
    )  # fmt: skip
    imp.set_defaults(run=_import)


def _import(args: argparse.Namespace) -> int:
    from .._io import atomic_write
    from ..api import loads
    from ..importers import import_graph, write

    shape = None
    if args.input_shape:
        try:
            shape = tuple(int(v) for v in args.input_shape.split(","))
        except ValueError:
            raise UsageError(
                f"--input-shape takes ints like 3,224,224, not {args.input_shape!r}"
            ) from None
    if args.weights and not args.weights.endswith(".safetensors"):
        raise UsageError(f"--weights writes a .safetensors file, not {args.weights!r}")
    graph = import_graph(args.source, input_shape=shape, trace=args.trace)
    text = write(graph)
    net = loads(text, path=args.output or "<imported>")
    if args.weights:
        if graph.weights is None:
            raise UsageError(f"{args.source} holds no weights (a prototxt is the network only)")
        _write_weights(args.weights, net, graph.weights)
        print(f"wrote {args.weights}", file=sys.stderr)
    summary = f"imported {args.source}: {len(net.graph)} ops, {net.num_params:,} params"
    if args.output:
        atomic_write(args.output, text)
        print(f"{summary} -> {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
        print(summary, file=sys.stderr)
    return EXIT_OK


def _write_weights(path: str, net, weights: dict) -> None:
    """The weights the spec's network expects, checked against it, as safetensors."""
    import numpy as np
    from safetensors.numpy import save

    from .._io import atomic_write
    from ..weights import check, expected

    keys = expected(net.graph)
    arrays = {k: np.ascontiguousarray(weights[k]) for k in keys if k in weights}
    check(net.graph, arrays, path)  # every key the spec needs, of the right shape
    atomic_write(path, save(arrays))
