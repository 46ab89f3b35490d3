"""``resdsl sample`` and the search-space view of ``resdsl info`` (docs/cli.md).

The search package is imported when a command runs, so building the parser stays light.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ..search.budget import count
from .common import EXIT_OK, UsageError, _artifact_dir, _params, _read, _spec_options, seed_arg


def add_sample_command(sub: Any) -> None:
    """Register ``resdsl sample`` on the ``resdsl`` subcommand parser."""
    p = sub.add_parser(
        "sample",
        help="draw candidates of a search space and write them as concrete .res files",
        description="Draws --n candidates uniformly from the choices of SPACE (with --seed), "
        "rejecting those that do not build or exceed the budget, and writes each as a "
        "self-contained .res file in DIR. stdout: one line per candidate; stderr: the "
        "rejection rate. See docs/search.md.",
    )
    p.add_argument("space", metavar="SPACE")
    p.add_argument("--n", type=int, default=10, help="number of candidates (default: 10)")
    p.add_argument("--seed", type=seed_arg, default=0, help="random seed (default: 0)")
    p.add_argument("--max-params", type=count, metavar="N", help="budget: at most N parameters")
    p.add_argument("--max-macs", type=count, metavar="N", help="budget: at most N MACs (2G, 5e8)")
    p.add_argument("-o", "--output", metavar="DIR", help="write NETWORK_NNN.res files here")
    p.add_argument("--json", action="store_true", help="one JSON object per candidate")
    p.add_argument(
        "--unique", action="store_true",
        help="no two candidates computing the same function (canonical fingerprint)",
    )  # fmt: skip
    p.add_argument(
        "--convention", choices=("function", "benchmark"), default="function",
        help="with --unique: function-preserving classes (default), or the benchmark's "
        "(an op applied to a zero is a zero; NAS-Bench-201)",
    )  # fmt: skip
    _spec_options(p)
    p.set_defaults(run=run_sample)


def run_sample(args: argparse.Namespace) -> int:
    from .._io import atomic_write
    from ..search.fingerprint import fingerprint
    from ..search.space import as_random, describe, loads_space

    if args.n < 1:
        raise UsageError("--n must be at least 1")
    if args.output and os.path.exists(args.output) and not os.path.isdir(args.output):
        raise UsageError(f"{args.output} exists and is not a directory")
    if args.output:
        _artifact_dir(args.output)  # not a symlink; each file is checked as written
    space = loads_space(
        _read(args.space), args.network, path=args.space, max_params=args.max_params,
        max_macs=args.max_macs, **_params(args.set),
    )  # fmt: skip
    if not space.choices:
        print(f"note: {args.space} has no choices: every candidate is the same", file=sys.stderr)
    rng, width = as_random(args.seed), max(3, len(str(args.n - 1)))
    if args.output:
        os.makedirs(args.output, exist_ok=True)
    draw = _unique_draws(space, rng, args.convention) if args.unique else None
    for i in range(args.n):
        if draw is None:
            assignment = space.sample(rng)
            net = space.build(assignment)
            fp = fingerprint(net)
        else:
            assignment, fp = next(draw, (None, None))
            if assignment is None:
                print(f"note: only {i} classes found", file=sys.stderr)
                break
            net = space.build(assignment)
        path = None
        if args.output:
            path = os.path.join(args.output, f"{space.network}_{i:0{width}d}.res")
            header = (
                f"Candidate {i} of {args.space} (network {space.network}), drawn by "
                f"`resdsl sample --seed {args.seed}`.\nchoices: {describe(assignment)}\n"
                f"{net.num_params:,} params, {net.macs:,} MACs, fingerprint {fp}"
            )
            atomic_write(path, space.to_spec(assignment, header))
        _report(args, path, assignment, net, fp)
    print(f"sampled {args.n} of {space.size:,} candidates: {space.stats}", file=sys.stderr)
    return EXIT_OK


def _unique_draws(space, rng, convention: str):
    """(assignment, canonical fingerprint) of uniform draws whose function is new; stops
    after 1000 draws in a row without one (the classes are probably exhausted)."""
    seen: set[str] = set()
    misses = 0
    while misses < 1000:
        assignment = space.sample(rng)
        fp = space.fingerprint(assignment, canonical=True, convention=convention)
        if fp in seen:
            misses += 1
            continue
        misses = 0
        seen.add(fp)
        yield assignment, fp


def _report(args: argparse.Namespace, path: str | None, assignment, net, fp: str) -> None:
    from ..search.space import describe

    if args.json:
        row = {"file": path, "choices": _jsonable(assignment), "params": net.num_params,
               "macs": net.macs, "fingerprint": fp}  # fmt: skip
        print(json.dumps(row))
    else:
        print(
            f"{path or '-'}  {net.num_params:,} params  {net.macs:,} MACs  {describe(assignment)}"
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def space_info(args: argparse.Namespace) -> bool:
    """``resdsl info`` on a search space: print its size and choices; False if the network
    has no choice left open (``--set`` may fix them all), so ``info`` reports it as usual."""
    from ..loader import load_program
    from ..search.space import describe, loads_space
    from ..syntax import ast

    text, params = _read(args.file), _params(args.set)
    networks = [d for d in load_program(text, args.file).main.definitions if d.kind == "network"]
    picked = [d for d in networks if d.name == args.network or len(networks) == 1]
    if len(picked) != 1 or not any(
        isinstance(p.default, ast.Choice) and p.name not in params for p in picked[0].params
    ):
        return False
    space = loads_space(text, args.network, path=args.file, **params)
    choices = space.choices
    if args.json:
        json.dump(_space_json(space, choices), sys.stdout, indent=2)
        print()
        return True
    first = space.build({})
    rows = [("choice", "type", "written", "values")]
    for c in choices.values():
        deps = f"  (depends on {', '.join(c.depends_on)})" if c.depends_on else ""
        rows.append((c.name, c.type, c.text, ", ".join(map(_text, c.values)) + deps))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    out = [
        f"space    {space.network}  ({args.file})",
        f"size     {space.size:,} candidates",
        f"first    {first.num_params:,} params, {first.macs:,} MACs: {describe(space.params({}))}",
        "",
    ]
    out += ["  ".join(r[c].ljust(widths[c]) for c in range(3)) + "  " + r[3] for r in rows]
    print("\n".join(line.rstrip() for line in out))
    return True


def _space_json(space, choices) -> dict[str, Any]:
    return {
        "space": space.network,
        "source": space.path,
        "size": space.size,
        "choices": {
            c.name: {"type": c.type, "written": c.text, "values": _jsonable(c.values),
                     "depends_on": list(c.depends_on)}
            for c in choices.values()
        },
    }  # fmt: skip


def _text(value: Any) -> str:
    from ..ops.core import spec_text

    return spec_text(value)
