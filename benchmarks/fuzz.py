"""The long fuzzing profile: many random and damaged specs, every outcome counted.

Each example is one spec text from a strategy of ``tests/specgen.py``:

* ``specs``: a structurally generated network (blocks, loops, skips, projections, concats);
  it must load and its PyTorch forward must give the inferred shapes (batch 1 or 2);
* ``mutants``: a generated spec or an example file with one to four random edits;
* ``grammar``: a sentence of ``grammars/resdsl.lark`` from ``hypothesis.extra.lark`` (slow
  to draw, so a small share).

The property is ``tests.specgen.check``: a network that runs with its inferred shapes, or a
``SpecError`` located inside the text. Anything else is a crash: another exception, a
violated property, or an example running past ``--timeout`` CPU seconds (a hang). Crashing
texts are written to ``--crashes DIR``. The run prints the examples tried, each outcome
(``ok``, ``ok-large`` for a network too big to run quickly, or an error code) with its
count, the crashes and the wall time, and exits 1 if there was a crash. Examples run in
rounds of 1,000 mixed as above; ``--max-seconds`` or Ctrl-C ends the run after the current
round (Ctrl-C: at once) and still prints the figures.

    python benchmarks/fuzz.py                      # 100,000 examples
    nice python benchmarks/fuzz.py --examples 2000 --seed 1

The quick profile of the same strategies runs in CI: ``python -m pytest tests/test_fuzz.py``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # for tests.specgen

SHARES = {"specs": 0.40, "mutants": 0.58, "grammar": 0.02}
ROUND = 1_000


class HangError(Exception):
    """An example ran past the timeout."""


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Raise HangError after ``seconds`` of CPU time (not wall time: under ``nice`` on a busy
    machine an example may wait long for a core without being slow itself)."""

    def expire(signum, frame):
        # re-armed first: raised inside a garbage-collector callback the error is ignored
        signal.setitimer(signal.ITIMER_PROF, 0.5)
        raise HangError(f"no result after {seconds} s of CPU time")

    previous = signal.signal(signal.SIGPROF, expire)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


class Tally:
    """Outcomes per strategy, crashes, and progress."""

    def __init__(self, total: int, crashes_dir: str | None) -> None:
        self.total, self.crashes_dir = total, crashes_dir
        self.outcomes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.crashes: list[tuple[str, str, str]] = []  # (strategy, summary, text)
        self.tried = 0
        self.start = time.perf_counter()

    def record(self, strategy: str, text: str, outcome: str | None, error: str = "") -> None:
        self.tried += 1
        if outcome is None:
            self.crashes.append((strategy, error, text))
            self.outcomes[strategy]["CRASH"] += 1
            self._save(strategy, error, text)
        else:
            self.outcomes[strategy][outcome] += 1
        if self.tried % 1000 == 0:
            rate = self.tried / (time.perf_counter() - self.start)
            print(f"  {self.tried:,} / {self.total:,} ({rate:.0f}/s), {len(self.crashes)} "
                  "crashes", file=sys.stderr, flush=True)  # fmt: skip

    def _save(self, strategy: str, error: str, text: str) -> None:
        if not self.crashes_dir:
            return
        from resdsl._io import atomic_write

        os.makedirs(self.crashes_dir, exist_ok=True)
        path = os.path.join(self.crashes_dir, f"crash{len(self.crashes):04d}-{strategy}.res")
        atomic_write(path, "".join(f"# {line}\n" for line in error.splitlines()) + text)


def run(strategy_name: str, count: int, tally: Tally, timeout: int, seed: int | None) -> None:
    """Draw ``count`` examples with hypothesis and check each; never stop at a failure."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as fix_seed
    from hypothesis import strategies as st

    from tests import specgen

    strategy = {"specs": specgen.specs(), "mutants": specgen.mutants(),
                "grammar": specgen.grammar_sentences()}[strategy_name]  # fmt: skip

    @settings(max_examples=count, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(strategy, st.integers(1, 2))
    def example(text: str, batch: int) -> None:
        try:
            with deadline(timeout):
                outcome = specgen.check(text, batch)
            if strategy_name == "specs" and outcome != "ok":
                raise AssertionError(f"a generated spec was rejected with {outcome}")
        except Exception as e:  # the property failed: record it and go on
            lines = traceback.format_exception_only(type(e), e)
            tally.record(strategy_name, text, None, "".join(lines).strip())
            return
        tally.record(strategy_name, text, outcome)

    (fix_seed(seed)(example) if seed is not None else example)()


def report(tally: Tally) -> None:
    wall = time.perf_counter() - tally.start
    per = ", ".join(f"{s} {sum(c.values()):,}" for s, c in tally.outcomes.items())
    print(f"examples tried: {tally.tried:,} ({per})")
    total: collections.Counter = collections.Counter()
    for counter in tally.outcomes.values():
        total.update(counter)
    codes = sorted(k for k in total if k.startswith("E"))
    print(f"distinct error codes hit: {len(codes)}")
    for key, n in sorted(total.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {key:<8} {n:>9,}")
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
    parser.add_argument("--crashes", metavar="DIR", help="write each crashing text here")
    parser.add_argument("--max-seconds", type=float, help="stop after this much wall time")
    parser.add_argument("--seed", type=int, help="hypothesis seed (default: random)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)  # tiny tensors: threads only add contention
    tally = Tally(args.examples, args.crashes)
    # rounds of ROUND examples, each split by SHARES, so that a run cut short has the mix too
    try:
        for start in range(0, args.examples, ROUND):
            if args.max_seconds and time.perf_counter() - tally.start > args.max_seconds:
                print("stopped: --max-seconds reached", file=sys.stderr)
                break
            size = min(ROUND, args.examples - start)
            counts = {s: round(size * share) for s, share in SHARES.items()}
            counts["mutants"] += size - sum(counts.values())
            for strategy, count in counts.items():
                if count:
                    seed = None if args.seed is None else args.seed + start
                    run(strategy, count, tally, args.timeout, seed)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    report(tally)
    return 1 if tally.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
