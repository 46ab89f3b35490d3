"""Tuning throughput: resdsl's in-process builder/runner against MetaSchedule's popen pools.

The kernel is one convolution -- by default 64 -> 64 channels, 3x3, on 56x56, ResNet's
commonest. Two measurements, each setup in turn (``--rounds`` times):

* ``--mode measure`` (default): the same ``--trials`` candidates (random schedules from the
  kernel's design space, drawn once) are built and timed by each setup. The search is not
  involved, so this compares the building and measuring machinery alone, candidate for
  candidate.
* ``--mode tune``: ``--trials`` trials of a full tuning run per setup, into fresh databases,
  with the search ``resdsl compile --tune-trials`` uses (evolutionary search, XGBoost).
  Search time is included, and each setup measures different candidates.

The setups:

* ``in-process``: :class:`resdsl.backends.tvm.tune.InProcessBuilder` / ``InProcessRunner``,
  candidates compiled in forked children, one per physical core;
* ``in-process-1``: the same with one child (``InProcessBuilder(workers=1)``);
* ``in-process-unguarded``: the same without children, every candidate compiled in the
  tuning process (``InProcessBuilder(guard=False)``), to show what the children cost;
* ``popen``: MetaSchedule's ``LocalBuilder(max_workers=1)`` and ``LocalRunner`` with 180 s
  timeouts, whose build workers import all of ``tvm.s_tir.tensor_intrin`` (40-50 s here);
* ``popen+light``: the same with an initializer that registers only the x86 intrinsics
  (:func:`resdsl.backends.tvm.tune.load_tensor_intrinsics`) and the default 30 s timeouts;
* ``popen-default``: ``LocalBuilder()``/``LocalRunner()`` as MetaSchedule makes them.

    python benchmarks/tuning.py --trials 32 --rounds 2
    python benchmarks/tuning.py --mode tune --setups in-process popen --trials 32

The machine is shared and has two cores: treat the figures as noisy, and compare setups
from the same run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import resdsl
from resdsl.backends.tvm import BuildOptions
from resdsl.backends.tvm import tune as tuning

SETUPS = [
    "in-process", "in-process-1", "in-process-unguarded", "popen", "popen+light", "popen-default",
]  # fmt: skip


def _light_worker() -> None:
    """Popen-worker initializer: the x86 intrinsics only (runs before any timed build)."""
    import tvm

    from resdsl.backends.tvm.tune import load_tensor_intrinsics

    load_tensor_intrinsics(tvm.target.Target({"kind": "llvm"}))


def measuring(setup: str):
    """(builder, runner) for a setup."""
    from tvm.s_tir import meta_schedule as ms

    if setup.startswith("in-process"):
        artifacts = tuning._Artifacts()
        builder = tuning.InProcessBuilder(
            artifacts,
            guard=setup != "in-process-unguarded",
            workers=1 if setup == "in-process-1" else None,
        )
        return builder, tuning.InProcessRunner(artifacts)
    if setup == "popen":
        return (
            ms.builder.LocalBuilder(max_workers=1, timeout_sec=180),
            ms.runner.LocalRunner(timeout_sec=180),
        )
    if setup == "popen+light":
        return (
            ms.builder.LocalBuilder(max_workers=1, initializer=_light_worker),
            ms.runner.LocalRunner(),
        )
    return ms.builder.LocalBuilder(), ms.runner.LocalRunner()


def candidates(task, target, count: int) -> list:
    """``count`` random schedules of the task's design space (MetaSchedule's replay-trace)."""
    from tvm.s_tir import meta_schedule as ms

    context = ms.TuneContext(
        task.dispatched[0], target=target, space_generator="post-order-apply",
        search_strategy="replay-trace", rand_state=0, num_threads=1,
    )  # fmt: skip
    strategy = context.search_strategy
    strategy.pre_tuning(count, count, context.generate_design_space(), None, None)
    drawn = list(strategy.generate_measure_candidates())
    strategy.post_tuning()
    return drawn


def measure_once(builder, runner, drawn: list, target) -> tuple[float, list[float | None]]:
    """Build and time every candidate; (seconds taken, mean run time or None per candidate)."""
    from tvm.s_tir.meta_schedule.builder import BuilderInput
    from tvm.s_tir.meta_schedule.runner import RunnerInput

    start = time.perf_counter()
    built = builder.build([BuilderInput(c.sch.mod, target) for c in drawn])
    ok = [(b, c) for b, c in zip(built, drawn, strict=True) if b.error_msg is None]
    inputs = [RunnerInput(b.artifact_path, "cpu", c.args_info) for b, c in ok]
    results = [future.result() for future in runner.run(inputs)]
    seconds = time.perf_counter() - start
    times = [statistics.mean(float(s) for s in r.run_secs) if r.run_secs else None
             for r in results]  # fmt: skip
    return seconds, times + [None] * (len(drawn) - len(ok))


def tune_once(builder, runner, task, target, trials: int) -> tuple[float, list[float | None]]:
    """A full tuning run; (seconds, run time of each measured candidate)."""
    with tempfile.TemporaryDirectory() as directory:
        report = tuning.tune([task], target, directory, trials, builder=builder, runner=runner)
        database = tuning.open_database(directory)
        records = database.get_all_tuning_records() if database is not None else []
        times = [statistics.mean(float(s) for s in r.run_secs) if r.run_secs else None
                 for r in records]  # fmt: skip
    return report.seconds, times + [None] * (report.trials - len(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["measure", "tune"], default="measure")
    parser.add_argument("--setups", nargs="+", choices=SETUPS, default=SETUPS[:4])
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=56)
    args = parser.parse_args()

    c, s = args.channels, args.size
    net = resdsl.loads(
        f"network conv() (x: ({c}, {s}, {s})) {{\n"
        f"    return x -> c: conv2d({c}, 3, padding=1, bias=false)\n}}\n"
    )
    options = BuildOptions(winograd=False)  # Winograd's kernels are not tuned
    target = tuning.tuning_target(options.tvm_target())
    tuning.load_tensor_intrinsics(target)
    tasks = tuning.extract_tasks(tuning._relax_module(net, options, None, 0), target, options)
    (task,) = [t for t in tasks if "conv2d" in t.task_name]  # not the layout changes around it
    drawn = candidates(task, target, args.trials) if args.mode == "measure" else []
    flop = 2 * net.macs
    print(f"conv2d {c}->{c} 3x3 on {s}x{s} ({flop / 1e9:.3f} GFLOP), mode {args.mode}, "
          f"{args.trials} trials\n")  # fmt: skip
    print(f"{'setup':<21} {'start s':>7} {'run s':>7} {'trials/s':>8} {'ok':>4} {'best ms':>8} "
          f"{'GFLOP/s':>8}")  # fmt: skip
    for setup in args.setups * args.rounds:
        start = time.perf_counter()
        builder, runner = measuring(setup)
        ready = time.perf_counter() - start
        if args.mode == "measure":
            seconds, times = measure_once(builder, runner, drawn, target)
        else:
            seconds, times = tune_once(builder, runner, task, target, args.trials)
        valid = [t for t in times if t]
        best = min(valid) if valid else None
        best_text = f"{best * 1e3:8.3f} {flop / best / 1e9:8.1f}" if best else f"{'-':>8} {'-':>8}"
        print(f"{setup:<21} {ready:7.1f} {seconds:7.1f} {len(times) / seconds:8.2f} "
              f"{len(valid):>4} {best_text}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
