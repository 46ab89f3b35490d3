"""MetaSchedule tuning (``resdsl compile --tune-trials N``) and its records database.

Tuning measures candidate schedules of every fused kernel (a MetaSchedule *task*) on this
machine and keeps the results in a persistent JSON database, one per target::

    ~/.cache/resdsl/tuning/<target-key>/database_{workload,tuning_record}.json

(``$RESDSL_TUNING_DIR/<target-key>/`` when that is set; ``--tune-db DIR`` names the database
directory itself). A build with the database in scope (:mod:`.build`) gives every kernel
that has a record its best measured schedule; the rest keep the default schedules. Records
are keyed by the kernel's TIR, so a kernel tuned for one spec is reused by any other spec
that has the same kernel.

Candidates are timed **in this process** (:class:`InProcessRunner`) and compiled in forked
children (:class:`InProcessBuilder`). MetaSchedule's own ``LocalBuilder`` starts a fresh pool
of ``python -m tvm.exec.popen_worker`` processes for every batch, and its build function
imports ``tvm.s_tir.tensor_intrin`` inside the timed region; that import parses about 500
TVMScript functions, each calling ``inspect.stack()``, which scans all of ``sys.modules``
(TVM imports PyTorch) per frame, longer than the default 30 s timeout, so every candidate
"timed out" (figures: docs/deploy.md, "Tuning"). :func:`load_tensor_intrinsics` registers
only the intrinsics the target can use, and a forked child starts as a copy of this
process, with everything imported. A compile cannot be stopped inside a process, so the children
compile (:func:`guarded`), one per core, and export each library for this process to load:
a candidate that LLVM takes over :data:`BUILD_TIMEOUT_S` to compile, or that crashes the
compiler, is dropped as a failed build, and under a time budget the candidates not built
when it is spent are left. A candidate that crashes when it *runs* still takes the process
with it.

The records are put in place after every measured batch (a crash loses at most one).
Ctrl-C or SIGTERM stops tuning after the batch being measured and keeps its records: a
``KeyboardInterrupt`` inside MetaSchedule's C++ search crashes the process instead.

One module per concern: :mod:`.database` (where records live), :mod:`.tasks` (the kernels
to tune), :mod:`.intrinsics`, :mod:`.builder` and :mod:`.runner` (in-process measuring),
:mod:`.progress` and :mod:`.signals`; this module runs the search. The settings read when a
run starts (:data:`STRATEGY`, :data:`COST_MODEL`, :data:`BUILD_TIMEOUT_S`) are read from this
module, so setting them here takes effect.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

import tvm
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.builder import BuilderInput
from tvm.s_tir.meta_schedule.runner import RunnerInput

from ...._signals import Terminated
from ..schedules import database_pipeline as database_pipeline
from ..schedules import fuse_passes as fuse_passes
from .builder import BUILD_TIMEOUT_S as BUILD_TIMEOUT_S
from .builder import COMPILE_TIMED_OUT as COMPILE_TIMED_OUT
from .builder import COMPILER_CRASHED as COMPILER_CRASHED
from .builder import OUT_OF_TIME as OUT_OF_TIME
from .builder import InProcessBuilder, _Artifacts, guarded
from .database import (
    ENV_DIR,
    TuningError,
    _covered,
    _writable_database,
    database_dir,
    open_database,
)
from .database import RECORD_FILE as RECORD_FILE
from .database import WORKLOAD_FILE as WORKLOAD_FILE
from .database import target_key as target_key
from .intrinsics import load_tensor_intrinsics
from .progress import Log, _BuiltOnly, _Progress, _stderr
from .runner import EVALUATOR as EVALUATOR
from .runner import InProcessRunner
from .signals import _stop_on_interrupt
from .tasks import _relax_module, extract_tasks, tuning_target

__all__ = [
    "ENV_DIR",
    "InProcessBuilder",
    "InProcessRunner",
    "TuneReport",
    "TuningError",
    "database_dir",
    "extract_tasks",
    "guarded",
    "load_tensor_intrinsics",
    "open_database",
    "tune",
    "tune_network",
    "tuning_target",
]

# MetaSchedule's search: evolution guided by an XGBoost model of measured kernels.
STRATEGY = "evolutionary"
COST_MODEL = "xgb"
# Threads for the search and the cost model: half the cores. The measurements use all of
# them, and a search thread that has to share a core mostly waits (docs/deploy.md, "Tuning").
SEARCH_THREADS = max(1, (os.cpu_count() or 2) // 2)
# Candidates the evolutionary search keeps per round (MetaSchedule's default: 512); the
# search's cost per batch grows with it. 64 per core, 128 to 512.
POPULATION = min(512, max(128, 64 * (os.cpu_count() or 2)))


@dataclass
class TuneReport:
    """What a tuning run did; ``covered`` kernels of ``tasks`` have records afterwards."""

    directory: str
    tasks: int
    covered: int
    trials: int
    seconds: float
    records: int
    failed: int = 0  # trials that did not build or run

    def summary(self) -> str:
        rate = f", {self.trials / self.seconds:.2f}/s" if self.trials and self.seconds else ""
        failed = f", {self.failed} failed" if self.failed else ""
        return (
            f"tuning: {self.trials} trials run in {self.seconds:.1f} s{rate}{failed}; "
            f"{self.covered} of {self.tasks} kernels have records ({self.records} records "
            f"in {self.directory})"
        )


def _contexts(tasks: list[ms.ExtractedTask], strategy: Any, seed: int) -> list[ms.TuneContext]:
    # MetaSchedule's own helper also opens per-task log files in the work directory; its
    # messages go to a quiet logger here instead (warnings still reach stderr).
    logger = logging.getLogger("resdsl.tune.metaschedule")
    logger.setLevel(logging.WARNING)
    return [
        ms.TuneContext(
            mod=task.dispatched[0],
            target=task.target,
            space_generator="post-order-apply",
            search_strategy=strategy,
            task_name=task.task_name,
            logger=logger,
            rand_state=task_seed,
            num_threads=SEARCH_THREADS,
        ).clone()
        for task, task_seed in zip(tasks, ms.utils.fork_seed(seed, n=len(tasks)), strict=True)
    ]


def _strategy(kind: Any) -> Any:
    if kind == "evolutionary":
        return ms.search_strategy.EvolutionarySearch(population_size=POPULATION)
    return kind


def _cost_model(kind: Any) -> Any:
    if kind == "xgb":  # MetaSchedule's own would train on every core
        return ms.cost_model.XGBModel(num_tuning_cores=SEARCH_THREADS)
    return kind


def _trials_per_batch(trials: int, tasks: int) -> int:
    """Enough trials per batch to amortise a search round, few enough to reach every task."""
    return max(8, min(64, math.ceil(trials / max(tasks, 1))))


def tune(
    tasks: list[ms.ExtractedTask],
    target: tvm.target.Target,
    directory: str,
    trials: int,
    *,
    builder: Any = None,
    runner: Any = None,
    strategy: Any = None,
    cost_model: Any = None,
    seed: int = 0,
    seconds: float | None = None,
    log: Log = _stderr,
) -> TuneReport:
    """Run ``trials`` MetaSchedule trials over ``tasks``, adding the records to ``directory``.

    ``seconds``: a time budget for the whole run (the default schedules' measurement
    included); the search stops when it is spent, keeping every record. The in-process
    builder leaves the candidates it has not built by then unbuilt, so the last batch ends
    on time too (a batch of slow-to-compile candidates took 12 minutes here).

    ``builder``/``runner`` default to the in-process pair; MetaSchedule's ``LocalBuilder``
    and ``LocalRunner`` (or any other) can be passed instead. ``strategy``: a MetaSchedule
    search strategy or its name (default :data:`STRATEGY`); ``cost_model`` likewise
    (:data:`COST_MODEL`; ``"random"`` trains none).
    """
    if target.kind.name != "llvm" and not tvm.device(target.kind.name, 0).exist:
        raise TuningError(
            f"tuning for {target.kind.name} measures kernels on the device, and this machine "
            "has none; tune where the device is and bring the records (--tune-db)"
        )
    load_tensor_intrinsics(target)
    artifacts = _Artifacts()
    builder = builder or InProcessBuilder(artifacts, timeout=BUILD_TIMEOUT_S)  # this module's
    runner = runner or InProcessRunner(artifacts)
    progress = _Progress(trials, log, seconds)
    start = time.perf_counter()
    if seconds is not None and isinstance(builder, InProcessBuilder):
        builder.deadline = time.monotonic() + seconds  # no batch outlasts the budget
    try:
        with (
            _writable_database(directory) as (database, checkpoint),
            _stop_on_interrupt(progress, log),
        ):
            _record_defaults(tasks, target, database, builder, runner, log)
            checkpoint()
            progress.checkpoint = checkpoint
            search = {"strategy": strategy, "cost_model": cost_model, "seed": seed}
            _search(tasks, trials, builder, runner, database, progress, **search)
            seconds = time.perf_counter() - start
            count, covered = len(database), _covered(database, tasks, directory)
    except KeyboardInterrupt:
        log(f"tuning: stopped after {progress.done} trials; their records are in {directory}")
        if progress.signal == signal.SIGTERM:
            raise Terminated from None
        raise
    return TuneReport(
        directory, len(tasks), covered, progress.done, seconds, count, progress.failed
    )


def _default_rules(target: tvm.target.Target) -> list[Any]:
    """The rules that schedule a kernel without records (as :mod:`.build` applies them)."""
    if target.kind.name == "llvm":
        from ..schedules import cpu_rules

        return cpu_rules()
    from ..schedules import cuda_rules

    return cuda_rules()


def _default_schedule(func: tvm.tirx.PrimFunc, target: tvm.target.Target) -> Any:
    for rule in _default_rules(target):
        schedule = rule.apply(func, target, False)
        if schedule is not None:
            return schedule
    return None


def _record_defaults(tasks, target, database, builder, runner, log: Log) -> None:
    """Measure each kernel's default schedule and record it like any candidate.

    With a small budget MetaSchedule's best candidate is often slower than the default
    schedule, and the build would take it; recorded, the default stays the best until a
    faster schedule is measured (and seeds the search, which starts from the best records).
    """
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    start, pending = time.perf_counter(), []
    for task in tasks:  # again in every run: a database may come from elsewhere or be old
        mod = task.dispatched[0]
        schedule = _default_schedule(mod["main"], target)
        if schedule is not None:
            pending.append((mod, schedule))
    built = builder.build([BuilderInput(s.mod, target) for _, s in pending])
    ok = [(p, b) for p, b in zip(pending, built, strict=True) if b.error_msg is None]
    args = [ArgInfo.from_entry_func(s.mod) for (_, s), _ in ok]
    device = "cpu" if target.kind.name == "llvm" else target.kind.name
    inputs = [RunnerInput(b.artifact_path, device, a) for (_, b), a in zip(ok, args, strict=True)]
    recorded = 0
    for ((mod, schedule), _), arg, future in zip(ok, args, runner.run(inputs), strict=True):
        result = future.result()
        if result.error_msg is None and result.run_secs:
            workload = database.commit_workload(mod)
            record = ms.database.TuningRecord(
                schedule.trace, workload, result.run_secs, target, arg
            )
            database.commit_tuning_record(record)
            recorded += 1
    if pending:
        log(f"tuning: measured the default schedules of {recorded} of {len(pending)} kernels, "
            f"{time.perf_counter() - start:.0f} s")  # fmt: skip


def _search(tasks, trials, builder, runner, database, progress, *, strategy, cost_model, seed):
    """MetaSchedule's task scheduler over ``tasks``; a stop requested by Ctrl-C re-raised."""
    try:
        ms.tune_tasks(
            tasks=_contexts(tasks, _strategy(strategy or STRATEGY), seed),
            task_weights=[float(task.weight) for task in tasks],
            work_dir=os.curdir,  # only for databases MetaSchedule makes itself
            max_trials_global=trials,
            num_trials_per_iter=_trials_per_batch(trials, len(tasks)),
            builder=builder,
            runner=runner,
            database=database,
            cost_model=_cost_model(cost_model or COST_MODEL),
            measure_callbacks=[
                _BuiltOnly(ms.measure_callback.AddToDatabase()),
                _BuiltOnly(ms.measure_callback.UpdateCostModel()),
                progress,
            ],
            # Tasks take turns. MetaSchedule's gradient scheduler records nothing until all
            # tasks had a batch: no progress and, on Ctrl-C, no records for a whole round.
            task_scheduler=ms.task_scheduler.RoundRobin(),
        )
    except (Exception, KeyboardInterrupt):
        if progress.out_of_time:
            return
        if not progress.stop.is_set():
            raise
        raise KeyboardInterrupt from None  # TVM hands the callback's interrupt back as an error


def tune_network(
    net: Any,
    options: Any,
    trials: int,
    directory: str | None = None,
    *,
    weights: Any = None,
    seed: int = 0,
    log: Log = _stderr,
    **tune_options: Any,
) -> tuple[ms.database.JSONDatabase | None, TuneReport | None]:
    """Tune ``net``'s kernels for ``options`` (a :class:`.BuildOptions`), then open the records.

    ``directory``: the database (default: :func:`database_dir`). With ``trials`` 0 nothing is
    measured; existing records are still found. Returns the database to build with -- ``None``
    when it has no record for any of the network's kernels -- and a report (``None`` when
    there was nothing to tune or reuse). ``tune_options`` go to :func:`tune`.
    """
    if trials < 0:
        raise TuningError(f"the number of tuning trials must be 0 or more, got {trials}")
    directory = database_dir(options.tvm_target(), directory)
    if trials == 0 and open_database(directory) is None:
        return None, None
    target = tuning_target(options.tvm_target())
    tasks = extract_tasks(_relax_module(net, options, weights, seed), target, options)
    report = None
    if trials > 0 and tasks:  # a network that computes nothing has no kernel to tune
        log(f"tuning {net.name} for {target.kind.name}: {len(tasks)} kernels, {trials} trials, "
            f"records in {directory}")  # fmt: skip
        report = tune(tasks, target, directory, trials, log=log, **tune_options)
    database = open_database(directory)
    if report is None:
        count = len(database) if database is not None else 0
        covered = _covered(database, tasks, directory) if database is not None else 0
        report = TuneReport(directory, len(tasks), covered, 0, 0.0, count)
    return (database if report.covered else None), report
