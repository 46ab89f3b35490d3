"""Search a space with Optuna: `space.suggest(trial)` makes any Optuna sampler drive it.

TPE (default) maximises the proxy under a MACs budget; `--sampler nsga2` searches the
trade-off between the proxy and MACs (two objectives) and prints the Pareto front.
Trials are asked for in batches of `--workers` and evaluated in parallel (a process pool,
or Ray with `--ray [ADDRESS]`), then told back (Optuna's ask-and-tell interface).

    python examples/search/optuna_search.py --n 100 --max-macs 2G --workers 4
    python examples/search/optuna_search.py --sampler nsga2 --n 200
"""

from __future__ import annotations

import argparse
import os
import sys

import optuna
from tqdm import tqdm

from resdsl.search.scripts import evaluator, open_space, script_parser

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = script_parser(__doc__.split("\n\n")[0], space=os.path.join(HERE, "resnet_space.res"),
                      n=50, n_help="trials", max_macs="2G")  # fmt: skip
    p.add_argument("--sampler", choices=["tpe", "random", "nsga2"], default="tpe")
    return p.parse_args(argv)


def make_study(args: argparse.Namespace) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.sampler == "nsga2":
        sampler = optuna.samplers.NSGAIISampler(seed=args.seed)
        return optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
    return optuna.create_study(direction="maximize", sampler=samplers[args.sampler](seed=args.seed))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    space = open_space(args)
    study = make_study(args)
    multi = args.sampler == "nsga2"
    bar = tqdm(total=args.n, disable=args.quiet, unit="trial")
    with evaluator(space, args) as ev:
        while len(study.trials) < args.n:
            waiting: dict[str, list[optuna.Trial]] = {}  # trials by candidate
            candidates = []
            for _ in range(min(ev.workers, args.n - len(study.trials))):
                trial = study.ask()
                assignment = space.suggest(trial)
                if space.admits(assignment):  # valid and within the budget
                    waiting.setdefault(repr(assignment), []).append(trial)
                    candidates.append(assignment)
                else:  # pruned without spending a worker on it
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    bar.update()
            for result in ev.map(candidates):
                trial = waiting[repr(result.assignment)].pop()
                v = result.value
                study.tell(trial, (v["score"], v["macs"]) if multi else v["score"])
                bar.update()
    bar.close()
    return report(study, multi)


def report(study: optuna.Study, multi: bool) -> int:
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    print(f"{len(done)} of {len(study.trials)} trials complete (the rest over budget or invalid)",
          file=sys.stderr)  # fmt: skip
    if not done:
        return 1
    best = study.best_trials if multi else [study.best_trial]
    for t in best:
        values = ", ".join(f"{v:.4g}" for v in t.values)
        print(f"({values})  {t.user_attrs['candidate']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
