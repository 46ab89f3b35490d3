"""Random search over a search space under a MACs budget, scored by a cheap proxy.

Candidates are drawn uniformly from the space's choices; those over the budget or invalid
are rejected by `space.sample` (the rejection rate is printed), duplicates are skipped by
fingerprint, and the rest are scored in parallel: a local process pool (`--workers`), or Ray
(`--ray` starts a local instance, `--ray ADDRESS` joins a cluster). See docs/search.md.

    python examples/search/random_search.py --n 200 --max-macs 2G --workers 4
    python examples/search/random_search.py --ray --workers 2
    python examples/search/random_search.py --proxy train --image 32 --n 8
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections.abc import Iterator

from tqdm import tqdm

from resdsl.search import SearchSpace, describe
from resdsl.search.scripts import evaluator, open_space, script_parser

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = script_parser(__doc__.split("\n\n")[0], space=os.path.join(HERE, "resnet_space.res"),
                      n=100, n_help="candidates to evaluate", max_macs="2G")  # fmt: skip
    p.add_argument("--top", type=int, default=5, help="how many of the best to print")
    return p.parse_args(argv)


def load(args: argparse.Namespace) -> SearchSpace:
    return open_space(args)


def unique_candidates(space: SearchSpace, n: int, rng: random.Random) -> Iterator[dict]:
    """Up to ``n`` within-budget candidates, no two building the same network."""
    seen: set[str] = set()
    for _ in range(20 * n):  # a small space runs out of new candidates
        assignment = space.sample(rng)
        fp = space.fingerprint(assignment)  # free: sample() just built it
        if fp not in seen:
            seen.add(fp)
            yield assignment
            if len(seen) == n:
                return


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    space = load(args)
    print(f"{space.network}: {space.size:,} candidates, budget {args.max_macs:,} MACs, "
          f"proxy {args.proxy}", file=sys.stderr)  # fmt: skip
    candidates = unique_candidates(space, args.n, random.Random(args.seed))
    results = []
    with evaluator(space, args) as ev:
        for result in tqdm(ev.map(candidates), total=args.n, disable=args.quiet, unit="cand"):
            results.append(result)
    print(f"sampling: {space.stats}", file=sys.stderr)
    ok = sorted((r for r in results if r.ok), key=lambda r: r.value["score"], reverse=True)
    print(f"{'score':>10} {'params':>12} {'MACs':>15}  choices")
    for r in ok[: args.top]:
        v = r.value
        print(f"{v['score']:>10.4g} {v['params']:>12,} {v['macs']:>15,}  {describe(r.assignment)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
