"""Regularized evolution (Real et al., 2019) over a search space under a MACs budget.

A population of candidates ages: each round, `--workers` children are made by mutating
the best of a random sample of the population (`space.mutate` changes one choice), scored
in parallel by a cheap proxy, and added while the oldest members leave. Children over the
budget or invalid are mutated again. A process pool by default, Ray with `--ray [ADDRESS]`.

    python examples/search/evolution.py --n 300 --population 30 --max-macs 1G --workers 4
    python examples/search/evolution.py --ray --workers 2
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections import deque

from tqdm import tqdm

import resdsl
from resdsl.search import SearchSpace, describe
from resdsl.search.cli import count
from resdsl.search.parallel import Evaluator, Result
from resdsl.search.proxies import PROXIES

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default=os.path.join(HERE, "resnet_space.res"))
    p.add_argument("--n", type=int, default=200, help="candidates to evaluate (default: 200)")
    p.add_argument("--population", type=int, default=20, help="population size (default: 20)")
    p.add_argument("--tournament", type=int, default=5, help="sample size (default: 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-macs", type=count, default="1G", help="MACs budget (default: 1G)")
    p.add_argument("--proxy", choices=sorted(PROXIES), default="capacity")
    p.add_argument("--image", type=int, help="input size, if the space has an `image` parameter")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="parallel evaluations")
    p.add_argument(
        "--ray", nargs="?", const="local", metavar="ADDRESS",
        help="evaluate with Ray: a local instance, or the cluster at ADDRESS",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def child(space: SearchSpace, population: deque[Result], k: int, rng: random.Random) -> dict:
    """Mutate the best of ``k`` random members until the child builds and fits the budget."""
    sample = rng.sample(list(population), min(k, len(population)))
    parent = max(sample, key=lambda r: r.value["score"]).assignment
    for _ in range(100):
        candidate = space.mutate(parent, rng)
        if space.admits(candidate):
            return candidate
    return space.sample(rng)  # a corner of the space with no fitting neighbour


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    fixed = {"image": args.image} if args.image else {}
    space = resdsl.load_space(args.space, max_macs=args.max_macs, **fixed)
    rng = random.Random(args.seed)
    population: deque[Result] = deque()
    history: list[Result] = []
    bar = tqdm(total=args.n, disable=args.quiet, unit="cand")
    with Evaluator(space, PROXIES[args.proxy], workers=args.workers, ray=args.ray) as ev:
        while len(history) < args.n:
            batch = min(ev.workers, args.n - len(history))
            if len(population) < args.population:
                batch = min(batch, args.population - len(population))
                candidates = [space.sample(rng) for _ in range(batch)]
            else:
                candidates = [child(space, population, args.tournament, rng) for _ in range(batch)]
            for result in ev.map(candidates):
                history.append(result)
                bar.update()
                if result.ok:
                    population.append(result)
                    if len(population) > args.population:
                        population.popleft()  # the oldest dies, not the worst
    bar.close()
    print(f"sampling and mutation: {space.stats}", file=sys.stderr)
    best = max((r for r in history if r.ok), key=lambda r: r.value["score"], default=None)
    if best is None:
        return 1
    v = best.value
    print(f"best: score {v['score']:.4g}, {v['params']:,} params, {v['macs']:,} MACs: "
          f"{describe(best.assignment)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
