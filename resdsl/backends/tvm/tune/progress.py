"""Progress lines and the measure callbacks of a tuning run."""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

from .builder import COMPILE_TIMED_OUT, COMPILER_CRASHED, OUT_OF_TIME

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@derived_object
class _Progress(PyMeasureCallback):
    """One stderr line per measured batch: trials so far, the task, its best kernel."""

    def __init__(self, total: int, log: Log, seconds: float | None = None) -> None:
        super().__init__()
        self.total, self.log, self.seconds = total, log, seconds
        self.stop = threading.Event()  # set by Ctrl-C or SIGTERM: stop after this batch
        self.signal: int | None = None  # the one that did
        self.out_of_time = False  # the time budget ran out: stop after this batch
        self.done = self.failed = 0
        self.best: dict[int, float] = {}
        self.start = time.perf_counter()
        self.checkpoint: Callable[[], None] | None = None  # put the records so far in place

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        if not measure_candidates:  # a task whose design space is exhausted
            return
        # candidates the time budget left unbuilt are not trials (nor records: _BuiltOnly)
        unbuilt = sum(r.error_msg == OUT_OF_TIME for r in builder_results)
        measured = len(measure_candidates) - unbuilt
        self.done += measured
        seconds = [
            sum(float(s) for s in r.run_secs) / len(r.run_secs)
            for r in runner_results
            if r.error_msg is None and r.run_secs
        ]
        self.failed += measured - len(seconds)
        if seconds:
            self.best[task_id] = min(self.best.get(task_id, math.inf), *seconds)
        record = task_scheduler.tasks_[task_id]
        total = max(self.total, self.done)  # the last batch of a task may overshoot
        line = (
            f"tuning [{self.done:>{len(str(total))}}/{total}] "
            f"task {task_id + 1}/{len(task_scheduler.tasks_)} {record.ctx.task_name}: "
            f"{len(seconds)}/{measured} ok"
        )
        dropped = [r.error_msg for r in builder_results if _was_dropped(r.error_msg)]
        if dropped:
            line += f", {len(dropped)} dropped ({dropped[0]})"
        if unbuilt:
            line += f", {unbuilt} not built ({OUT_OF_TIME})"
        if task_id in self.best:
            best = self.best[task_id]
            line += f", best {best * 1e3:.3f} ms"
            if record.flop >= 1e6:  # not for layout changes, which do no arithmetic
                line += f" ({record.flop / best / 1e9:.1f} GFLOP/s)"
        elapsed = time.perf_counter() - self.start
        self.log(f"{line}, {elapsed:.0f} s")
        if self.checkpoint is not None:
            self.checkpoint()
        if self.stop.is_set():  # raised here, between batches, it unwinds TVM cleanly
            raise KeyboardInterrupt
        if self.seconds is not None and elapsed >= self.seconds:
            self.out_of_time = True
            self.log(f"tuning: the time budget ({self.seconds:.0f} s) is spent; stopping")
            raise KeyboardInterrupt  # the same clean unwinding; not an interrupt to callers


@derived_object
class _BuiltOnly(PyMeasureCallback):
    """A MetaSchedule callback applied to a batch without the candidates the time budget left
    unbuilt: they were not tried, so they are neither recorded nor learnt from as failures."""

    def __init__(self, callback: ms.measure_callback.MeasureCallback) -> None:
        super().__init__()
        self.callback = callback

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        keep = [i for i, r in enumerate(builder_results) if r.error_msg != OUT_OF_TIME]
        if keep:
            self.callback.apply(
                task_scheduler, task_id, [measure_candidates[i] for i in keep],
                [builder_results[i] for i in keep], [runner_results[i] for i in keep],
            )  # fmt: skip


def _was_dropped(error: str | None) -> bool:
    """Whether a build error is :func:`guarded`'s: a compile that hung or crashed."""
    if error is None:
        return False
    prefix = COMPILE_TIMED_OUT.split("{")[0]
    return error.startswith(prefix) or error == COMPILER_CRASHED
