"""What the search scripts in ``examples/search`` share: their common options, the space they
open, and the evaluator they run candidates with. A script adds its own options."""

from __future__ import annotations

import argparse
import os

from .budget import count
from .parallel import Evaluator
from .proxies import PROXIES
from .space import SearchSpace


def script_parser(description: str, *, space: str, n: int, n_help: str,
                  max_macs: str) -> argparse.ArgumentParser:  # fmt: skip
    """``--space --n --seed --max-macs --proxy --image --workers --ray --quiet``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--space", default=space)
    p.add_argument("--n", type=int, default=n, help=f"{n_help} (default: {n})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-macs", type=count, default=max_macs,
                   help=f"MACs budget (default: {max_macs})")  # fmt: skip
    p.add_argument("--proxy", choices=sorted(PROXIES), default="capacity")
    p.add_argument("--image", type=int, help="input size, if the space has an `image` parameter")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="parallel evaluations")
    p.add_argument(
        "--ray", nargs="?", const="local", metavar="ADDRESS",
        help="evaluate with Ray: a local instance, or the cluster at ADDRESS",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def open_space(args: argparse.Namespace) -> SearchSpace:
    """The space of ``--space`` under the ``--max-macs`` budget, ``--image`` fixed if given."""
    from .space import load_space

    fixed = {"image": args.image} if args.image else {}
    return load_space(args.space, max_macs=args.max_macs, **fixed)


def evaluator(space: SearchSpace, args: argparse.Namespace) -> Evaluator:
    """Candidates scored by ``--proxy`` on ``--workers`` processes, or on Ray with ``--ray``."""
    return Evaluator(space, PROXIES[args.proxy], workers=args.workers, ray=args.ray)
