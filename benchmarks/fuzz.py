"""The long fuzzing profile: many random, damaged and hostile inputs, every outcome counted.

Each example is drawn from one strategy of ``tests/specgen.py`` or ``tests/artifactgen.py``:

* ``specs``: a structurally generated network (blocks, loops, skips, projections, concats);
  it must load and its PyTorch forward must give the inferred shapes (batch 1 or 2);
* ``mutants``: a generated spec or an example file with one to four random edits (a BOM and
  digits of other scripts among them);
* ``grammar``: a sentence of ``grammars/resdsl.lark`` from ``hypothesis.extra.lark`` (slow
  to draw, so a small share);
* ``long``: string literals, names, numbers and comments of up to several MB in labels,
  keyword arguments, asserts, imports (``specgen.long_literals``);
* ``deep``: non-bracket nesting (``not``, unary ``-``, ``**``, ``if/then/else``, ``[0]``,
  ``.channels`` and mixes) 1 to 200,000 deep (``specgen.deep_nesting``);
* ``unicode``: a generated spec with a number in another script's digits, which must be a
  syntax error, or behind a BOM, which must load (``specgen.unicode_digit_specs``);
* ``artifact``: a tampered ``model.json`` for a compiled two-conv artifact
  (``artifactgen.hostile_model_json``): it must run with the right outputs or be an
  ``ArtifactError``; each example runs in a forked child, so a segfault is counted;
* ``weights``: a checkpoint with odd tensors (``artifactgen.odd_weights``): the network's
  weights or a ``WeightsError``.

A spec property is ``tests.specgen.check``: a network that runs with its inferred shapes, or
a ``SpecError`` located inside the text. Anything else is a crash: another exception, a
violated property, a killed child, or an example running past ``--timeout`` CPU seconds (a
hang; ``--hostile-timeout`` for ``long`` and ``deep``, whose inputs must be refused within
1 s). Crashing inputs are written to ``--crashes DIR``. ``long``, ``deep``, ``weights`` and
``artifact`` run each example in a forked child, which measures its CPU time and peak memory
exactly; the others run in this process (their memory: growth of this process's peak).

The run prints, per strategy, the examples tried, each outcome (``ok``, ``ok-large`` for a
network too big to run quickly, an error code, ``unrepresentable`` for a checkpoint a format
cannot hold) with its count, the crashes, the worst CPU time and memory of one example, and
the wall time; it exits 1 if there was a crash. Examples run in rounds of 1,000 mixed by
``SHARES`` (or over ``--strategies``); ``--max-seconds`` or Ctrl-C ends the run after the
current round (Ctrl-C: at once) and still prints the figures.

    python benchmarks/fuzz.py                      # 100,000 examples
    nice python benchmarks/fuzz.py --examples 2000 --seed 1
    python benchmarks/fuzz.py --examples 2000 --strategies long,deep,artifact,weights

The quick profile of the same strategies runs in CI: ``python -m pytest tests/test_fuzz.py``.
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import resource
import sys
import tempfile
import time
import traceback
from contextlib import redirect_stderr
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # for tests.specgen

SHARES = {"specs": 0.30, "mutants": 0.45, "grammar": 0.02, "long": 0.05, "deep": 0.08,
          "unicode": 0.02, "artifact": 0.05, "weights": 0.03}  # fmt: skip
FORKED = ("long", "deep", "weights")  # each example in a forked child (artifact: in a worker's)
HOSTILE = ("long", "deep")  # refused within 1 s of CPU time
ROUND = 1_000


@dataclass
class Stats:
    """One strategy's figures."""

    outcomes: collections.Counter = field(default_factory=collections.Counter)
    worst_cpu: float = 0.0
    worst_cpu_input: str = ""
    worst_mem_kb: int = 0
    worst_mem_input: str = ""


class Tally:
    """Outcomes per strategy, crashes, costs, and progress."""

    def __init__(self, total: int, crashes_dir: str | None) -> None:
        self.total, self.crashes_dir = total, crashes_dir
        self.stats: dict[str, Stats] = collections.defaultdict(Stats)
        self.crashes: list[tuple[str, str, str]] = []  # (strategy, summary, input)
        self.tried = 0
        self.start = time.perf_counter()

    def record(self, strategy: str, text: str, outcome: str | None, error: str = "",
               cpu: float = 0.0, mem_kb: int = 0) -> None:  # fmt: skip
        self.tried += 1
        stats = self.stats[strategy]
        if outcome is None:
            self.crashes.append((strategy, error, text))
            stats.outcomes["CRASH"] += 1
            self._save(strategy, error, text)
        else:
            stats.outcomes[outcome] += 1
        if cpu > stats.worst_cpu:
            stats.worst_cpu, stats.worst_cpu_input = cpu, _summary(text)
        if mem_kb > stats.worst_mem_kb:
            stats.worst_mem_kb, stats.worst_mem_input = mem_kb, _summary(text)
        if self.tried % 1000 == 0:
            rate = self.tried / (time.perf_counter() - self.start)
            print(f"  {self.tried:,} / {self.total:,} ({rate:.0f}/s), {len(self.crashes)} "
                  "crashes", file=sys.stderr, flush=True)  # fmt: skip

    def _save(self, strategy: str, error: str, text: str) -> None:
        if not self.crashes_dir:
            return
        from resdsl._io import atomic_write

        os.makedirs(self.crashes_dir, exist_ok=True)
        suffix = {"artifact": "json", "weights": "txt"}.get(strategy, "res")
        path = os.path.join(self.crashes_dir, f"crash{len(self.crashes):04d}-{strategy}.{suffix}")
        comment = "//" if suffix == "json" else "#"
        atomic_write(path, "".join(f"{comment} {line}\n" for line in error.splitlines()) + text)


def _summary(text: str) -> str:
    """An input in a line: its size and its start."""
    head = text[:70].replace("\n", "\\n")
    return f"{len(text):,} chars: {head}..." if len(text) > 70 else head


def _text(value) -> str:
    return value if isinstance(value, str) else repr(value)


def _maxrss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class Context:
    """What the artifact and weights strategies share across rounds: the compiled artifact,
    the checker's worker, the tiny network's graph and a scratch directory."""

    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="resdsl-fuzz-")
        self._artifact = self._checker = self._graph = None

    @property
    def artifact(self):
        if self._artifact is None:
            from tests import artifactgen

            self._artifact = artifactgen.build_artifact(os.path.join(self.tmp.name, "a"))
            self._checker = artifactgen.ArtifactChecker()
        return self._artifact

    @property
    def checker(self):
        return self.artifact and self._checker

    @property
    def graph(self):
        if self._graph is None:
            import resdsl
            from tests import artifactgen

            self._graph = resdsl.loads(artifactgen.TINY_SPEC, path="tiny.res").graph
        return self._graph

    def close(self) -> None:
        if self._checker is not None:
            self._checker.close()
        self.tmp.cleanup()


def _check_unicode(text: str) -> str:
    from tests import specgen

    if text.startswith("\ufeff"):  # a BOM before a generated spec changes nothing
        outcome = specgen.check(text)
        assert outcome == "ok", f"a BOM before a valid spec gave {outcome}"
        return "bom-ok"
    outcome = specgen.check(text)
    assert outcome == "E0101", f"a number in another script's digits gave {outcome}"
    return outcome


def _check_hostile(text: str, timeout: float) -> str:
    from tests import specgen

    with specgen.cpu_deadline(timeout):
        return specgen.check(text)


def _check_weights(graph, case, tmp: str) -> str:
    from tests import artifactgen

    with redirect_stderr(io.StringIO()):  # notes and NaN warnings
        return artifactgen.check_weights(graph, case, tmp)


def strategy_of(name: str, context: Context):
    from hypothesis import strategies as st

    from tests import artifactgen, specgen

    if name == "specs":
        return st.tuples(specgen.specs(), st.integers(1, 2))
    if name == "unicode":
        return st.one_of(specgen.unicode_digit_specs(), specgen.specs().map(lambda t: "\ufeff" + t))
    if name == "artifact":
        artifact = context.artifact
        libraries = [n for n in artifact.libraries if n not in artifactgen.KNOWN_CRASHES]
        return artifactgen.hostile_model_json(artifact.meta, libraries)
    if name == "weights":
        return artifactgen.odd_weights(context.graph)
    return {"mutants": specgen.mutants, "grammar": specgen.grammar_sentences,
            "long": specgen.long_literals, "deep": specgen.deep_nesting}[name]()  # fmt: skip


def run(name: str, count: int, tally: Tally, args, seed: int | None, context: Context) -> None:
    """Draw ``count`` examples with hypothesis and check each; never stop at a failure."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as fix_seed

    from tests import artifactgen, specgen

    strategy = strategy_of(name, context)

    @settings(max_examples=count, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(strategy)
    def example(value) -> None:
        if name == "artifact":
            result = context.checker.check(context.artifact.dir, value)
            text = value if isinstance(value, str) else value.decode("utf-8", "replace")
            mem = max(0, result.peak_kb - result.base_kb)
            tally.record(name, text, result.outcome, result.error, result.cpu_s, mem)
            return
        if name in FORKED:
            if name == "weights":
                fn, fargs, text = (
                    _check_weights,
                    (context.graph, value, context.tmp.name),
                    repr(value),
                )
                limit = args.timeout
            else:
                fn, fargs, text = _check_hostile, (value, args.hostile_timeout), value
                limit = args.hostile_timeout
            result = artifactgen.run_forked(fn, fargs, limit + 1, 10 * (limit + 1))
            mem = max(0, result.peak_kb - result.base_kb)
            tally.record(name, text, result.outcome, result.error, result.cpu_s, mem)
            return
        text = value[0] if name == "specs" else value
        before_cpu, before_mem = time.process_time(), _maxrss_kb()
        try:
            with specgen.cpu_deadline(args.timeout):
                if name == "specs":
                    outcome = specgen.check(*value)
                    if outcome != "ok":
                        raise AssertionError(f"a generated spec was rejected with {outcome}")
                elif name == "unicode":
                    outcome = _check_unicode(text)
                else:
                    outcome = specgen.check(text)
        except Exception as e:  # the property failed: record it and go on
            lines = traceback.format_exception_only(type(e), e)
            outcome, error = None, "".join(lines).strip()
        else:
            error = ""
        cpu, mem = time.process_time() - before_cpu, _maxrss_kb() - before_mem
        tally.record(name, text, outcome, error, cpu, mem)

    (fix_seed(seed)(example) if seed is not None else example)()


def report(tally: Tally, args) -> None:
    wall = time.perf_counter() - tally.start
    per = ", ".join(f"{s} {sum(st.outcomes.values()):,}" for s, st in tally.stats.items())
    print(f"examples tried: {tally.tried:,} ({per})")
    total: collections.Counter = collections.Counter()
    for stats in tally.stats.values():
        total.update(stats.outcomes)
    codes = sorted(k for k in total if k.startswith("E"))
    print(f"distinct error codes hit: {len(codes)}")
    for name, stats in tally.stats.items():
        tried = sum(stats.outcomes.values())
        ranked = sorted(stats.outcomes.items(), key=lambda kv: (-kv[1], kv[0]))
        outcomes = ", ".join(f"{k} {n:,}" for k, n in ranked)
        crashes, mb = stats.outcomes["CRASH"], stats.worst_mem_kb / 1024
        print(f"  {name:<9} tried {tried:>7,}  crashes {crashes:>3}  "
              f"worst CPU {stats.worst_cpu:6.2f} s  worst memory {mb:7.1f} MB")  # fmt: skip
        print(f"            {outcomes}")
        print(f"            slowest: {stats.worst_cpu_input}")
        if stats.worst_mem_kb:
            print(f"            largest: {stats.worst_mem_input}")
    hostile = [tally.stats[s].worst_cpu for s in HOSTILE if s in tally.stats]
    if hostile:
        print(f"worst CPU time of a long or deep input: {max(hostile):.2f} s (target: 1 s)")
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(
        f"peak memory: this process {_maxrss_kb() / 1024:.0f} MB, "
        f"largest child {children / 1024:.0f} MB "
        "(a forked child's figure includes the pages it shares with this process)"
    )
    print(f"crashes: {len(tally.crashes)}")
    for strategy, error, text in tally.crashes[:10]:
        print(f"--- {strategy}: {error}\n{text[:2000]}")
    print(f"wall time: {wall:.0f} s ({tally.tried / max(wall, 1e-9):.1f} examples/s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100_000, help="default: 100,000")
    parser.add_argument(
        "--timeout", type=int, default=20, help="CPU seconds per example (a hang); default: 20"
    )
    parser.add_argument("--hostile-timeout", type=float, default=2.0,
                        help="CPU seconds per `long` or `deep` example (a hang; the target is 1 "
                        "s); default: 2")  # fmt: skip
    parser.add_argument("--strategies", default=",".join(SHARES),
                        help=f"comma-separated, of {', '.join(SHARES)}; default: all, mixed "
                        "by their shares")  # fmt: skip
    parser.add_argument("--crashes", metavar="DIR", help="write each crashing input here")
    parser.add_argument("--max-seconds", type=float, help="stop after this much wall time")
    parser.add_argument("--seed", type=int, help="hypothesis seed (default: random)")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SHARES]
    if unknown or not chosen:
        parser.error(f"unknown strategy {unknown[0] if unknown else '(none)'}; "
                     f"choose from {', '.join(SHARES)}")  # fmt: skip
    shares = {s: SHARES[s] / sum(SHARES[c] for c in chosen) for s in chosen}

    import torch

    torch.set_num_threads(1)  # tiny tensors: threads only add contention
    tally = Tally(args.examples, args.crashes)
    context = Context()
    # rounds of ROUND examples, each split by the shares, so that a run cut short has the mix
    try:
        for start in range(0, args.examples, ROUND):
            if args.max_seconds and time.perf_counter() - tally.start > args.max_seconds:
                print("stopped: --max-seconds reached", file=sys.stderr)
                break
            size = min(ROUND, args.examples - start)
            counts = {s: round(size * share) for s, share in shares.items()}
            counts[max(shares, key=shares.get)] += size - sum(counts.values())
            for strategy, count in counts.items():
                if count > 0:
                    seed = None if args.seed is None else args.seed + start
                    run(strategy, count, tally, args, seed, context)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        context.close()
    report(tally, args)
    return 1 if tally.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
