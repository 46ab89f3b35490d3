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
(TVM imports PyTorch) per frame -- 40-50 s on two cores, past the default 30 s timeout, so
every candidate "timed out". :func:`load_tensor_intrinsics` registers only the intrinsics
the target can use (0.3 s on x86), and a forked child starts as a copy of this process,
with everything imported. A compile cannot be stopped inside a process, so the children
compile (:func:`guarded`), one per core, and export each library for this process to load:
a candidate that LLVM takes over :data:`BUILD_TIMEOUT_S` to compile, or that crashes the
compiler, is dropped as a failed build, and under a time budget the candidates not built
when it is spent are left. A candidate that crashes when it *runs* still takes the process
with it.

The records are put in place after every measured batch (a crash loses at most one).
Ctrl-C or SIGTERM stops tuning after the batch being measured and keeps its records: a
``KeyboardInterrupt`` inside MetaSchedule's C++ search crashes the process instead.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import importlib.util
import itertools
import logging
import math
import os
import platform
import re
import select
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import tvm
from tvm import relax
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.builder import BuilderInput, BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
from tvm.s_tir.meta_schedule.runner import (
    EvaluatorConfig,
    PyRunner,
    PyRunnerFuture,
    RunnerInput,
    RunnerResult,
)
from tvm.s_tir.meta_schedule.runner.utils import alloc_argument_common, run_evaluator_common

from ..._io import staged
from ..._signals import Terminated, handling
from ...errors import SpecError

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

ENV_DIR = "RESDSL_TUNING_DIR"
WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
# Each candidate runs `number` times (more until `min_repeat_ms` have passed) after a warm-up;
# MetaSchedule's LocalRunner waits 100 ms, half of that keeps tuning moving on a slow machine.
EVALUATOR = EvaluatorConfig(number=3, repeat=1, min_repeat_ms=50, enable_cpu_cache_flush=False)
# MetaSchedule's search: evolution guided by an XGBoost model of measured kernels.
STRATEGY = "evolutionary"
COST_MODEL = "xgb"
# Threads for the search and the cost model: half the cores. The measurements use all of
# them, and a search thread that has to share a core mostly waits: on this 2-core machine
# under load, XGBoost trained 4.6x slower with 2 OpenMP threads than with 1.
SEARCH_THREADS = max(1, (os.cpu_count() or 2) // 2)
# Candidates the evolutionary search keeps per round (MetaSchedule's default: 512). The
# search's cost per batch grows with it; profiled here at 128, evolving took a quarter of
# the time and XGBoost training 39 %, measuring the rest. 64 per core, 128 to 512.
POPULATION = min(512, max(128, 64 * (os.cpu_count() or 2)))

Log = Callable[[str], None]


class TuningError(SpecError):
    """Tuning cannot run here, or the records database cannot be read or written."""

    code = "E0702"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- where records live


def target_key(target: tvm.target.Target) -> str:
    """A directory name for the target: ``llvm-znver4``, ``cuda-sm_80``."""
    detail = target.attrs.get("mcpu") or target.attrs.get("arch") or "generic"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{target.kind.name}-{detail}")


def database_dir(target: tvm.target.Target, override: str | None = None) -> str:
    """``override`` (``--tune-db``), else ``$RESDSL_TUNING_DIR`` or the user cache, per target."""
    if override:
        return override
    root = os.environ.get(ENV_DIR)
    if not root:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(cache, "resdsl", "tuning")
    return os.path.join(root, target_key(target))


def _files(directory: str) -> tuple[str, str]:
    return os.path.join(directory, WORKLOAD_FILE), os.path.join(directory, RECORD_FILE)


def open_database(directory: str) -> ms.database.JSONDatabase | None:
    """The records in ``directory``, or ``None`` where there are none (yet)."""
    workloads, records = _files(directory)
    if not (os.path.isfile(workloads) and os.path.isfile(records)):
        return None
    try:
        database = ms.database.JSONDatabase(workloads, records, allow_missing=False)
    except Exception as e:  # TVM raises plain errors for unreadable or foreign files
        raise TuningError(f"cannot read the tuning records in {directory}: {e}") from None
    return database if len(database) else None


@contextlib.contextmanager
def _writable_database(
    directory: str,
) -> Iterator[tuple[ms.database.JSONDatabase, Callable[[], None]]]:
    """A database over copies of the files in ``directory``, renamed into place at the end,
    and a ``checkpoint()`` that puts the records so far in place meanwhile.

    An error leaves the files as they were at the last checkpoint. Ctrl-C keeps the records
    measured so far: each is a complete line by then. Tuning checkpoints after every batch,
    so a crash (a candidate kernel that faults takes the process with it) loses at most
    one batch. Workloads are put in place before records; records point at workloads by
    line number and new workloads are only appended, so the pair is always consistent.
    """
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise TuningError(f"cannot create the tuning directory {directory}: {e}") from None
    workloads, records = _files(directory)
    interrupted: KeyboardInterrupt | None = None
    with staged(records) as records_tmp, staged(workloads) as workloads_tmp:
        for source, copy in ((workloads, workloads_tmp), (records, records_tmp)):
            if os.path.isfile(source):
                shutil.copyfile(source, copy)

        def checkpoint() -> None:
            for copy, final in ((workloads_tmp, workloads), (records_tmp, records)):
                with staged(final) as snapshot:
                    shutil.copyfile(copy, snapshot)

        try:
            yield (
                ms.database.JSONDatabase(workloads_tmp, records_tmp, allow_missing=True),
                checkpoint,
            )
        except KeyboardInterrupt as e:
            interrupted = e
    if interrupted is not None:
        raise interrupted


# --------------------------------------------------------------------------- tasks


def tuning_target(target: tvm.target.Target) -> tvm.target.Target:
    """The build target plus the core count that MetaSchedule's CPU rules require."""
    if target.kind.name != "llvm" or "num-cores" in target.attrs:
        return target
    return tvm.target.Target({**target.export(), "num-cores": ms.utils.cpu_count(logical=False)})


def fuse_passes(target: tvm.target.Target, options: Any = None) -> list[tvm.transform.Pass]:
    """Legalise and fuse, exactly as the build does before it applies records.

    ``options``: the :class:`.BuildOptions` of the build (for llvm, whether it uses
    Winograd; for CUDA, its layout and schedules); without them, the llvm default or TVM's
    default CUDA fusion in NCHW.
    """
    if target.kind.name == "llvm":
        from .schedules import fuse_passes as llvm_fuse_passes

        return llvm_fuse_passes(target, winograd=options is None or options.winograd)
    from .build import CUDA_LAYOUTS
    from .schedules import cuda_fuse_passes

    nhwc = options is not None and options.schedules == "resdsl" and options.cuda_layout() == "NHWC"
    return cuda_fuse_passes(target, CUDA_LAYOUTS if nhwc else None)


def extract_tasks(
    mod: tvm.IRModule, target: tvm.target.Target, options: Any = None
) -> list[ms.ExtractedTask]:
    """One task per distinct fused kernel of ``mod``, weighted by how often it is called.

    Winograd's kernels (:mod:`.winograd`) are left out: they keep resdsl's rules. Tuning
    ResNet-50 at batch 8, MetaSchedule candidates for the input transform crashed the
    process (a segfault inside the kernel, twice, 16 and 26 minutes in); until that is
    understood they are not measured.
    """
    from .winograd import is_winograd

    with target, tvm.transform.PassContext(opt_level=3):
        fused = tvm.transform.Sequential(fuse_passes(target, options))(mod)
    tasks = ms.relax_integration.extract_tasks(fused, target)
    return [task for task in tasks if not is_winograd(task.dispatched[0]["main"])]


def database_pipeline(target: tvm.target.Target) -> tvm.transform.Pass:
    """A Relax pipeline for ``cuda`` that applies the current database's records.

    For ``BuildOptions(schedules="tvm")``: TVM's default CUDA pipeline ignores the
    database: fuse, apply the records, give the remaining kernels the default GPU schedules
    (dlight), then lower as the default does. resdsl's own CUDA pipeline applies records
    itself (:func:`.schedules.cuda_pipeline`).
    """
    from tvm.relax.backend.cuda import pipeline as cuda  # the package omits two of these
    from tvm.s_tir import dlight

    from .schedules.cuda import dlight_rules

    @tvm.transform.module_pass(opt_level=0, name="ResdslTunedGPUPipeline")
    def pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        passes = [
            *fuse_passes(target),
            relax.transform.MetaScheduleApplyDatabase(),
            dlight.ApplyDefaultSchedule(*dlight_rules()),
            *cuda.dataflow_lower_passes(target),
            *cuda.finalize_passes(target),
        ]
        with target:
            return tvm.transform.Sequential(passes)(mod)

    return pipeline


def load_tensor_intrinsics(target: tvm.target.Target) -> None:
    """Register the tensor intrinsics MetaSchedule may use for ``target``, without the 40 s.

    ``TuneContext`` imports the package ``tvm.s_tir.tensor_intrin``, whose ``__init__``
    registers the intrinsics of every backend (CUDA's alone take 30 s here). For a CPU
    target on an x86 host, the package is entered into ``sys.modules`` without running its
    ``__init__`` and only its ``x86`` module is imported; submodules still import normally
    on demand. Other targets get the full import.
    """
    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        return
    host = platform.machine().lower()
    if target.kind.name == "llvm" and host in ("x86_64", "amd64"):
        spec = importlib.util.find_spec(name)
        if spec is not None:
            package = importlib.util.module_from_spec(spec)
            sys.modules[name] = package
            tvm.s_tir.tensor_intrin = package  # what a completed import would bind
            importlib.import_module(f"{name}.x86")
            return
    importlib.import_module(name)


# --------------------------------------------------------------------------- in-process measuring


class _Artifacts:
    """Built candidates kept in memory between the builder and the runner.

    MetaSchedule passes an artifact *path* from builder to runner; here the path is a key
    into this table of loaded modules.
    """

    def __init__(self) -> None:
        self._modules: dict[str, tvm.runtime.Module] = {}
        self._ids = itertools.count()

    def put(self, module: tvm.runtime.Module) -> str:
        key = f"in-process:{next(self._ids)}"
        self._modules[key] = module
        return key

    def take(self, key: str) -> tvm.runtime.Module:
        return self._modules.pop(key)


# A candidate that LLVM takes longer than this to compile is dropped (a build takes 0.1-1 s;
# one ResNet-50 candidate was still compiling after 13 minutes).
BUILD_TIMEOUT_S = 60.0
# How guarded() says why it dropped a candidate.
COMPILE_TIMED_OUT = "compiling took over {:.0f} s"
COMPILER_CRASHED = "the compiler crashed"
OUT_OF_TIME = "the time budget is spent"
_ERROR_BYTES = 4000  # the most of a build error a child sends back


def guarded(
    count: int,
    build: Callable[[int], Any],
    timeout: float | None,
    *,
    workers: int = 1,
    deadline: float | None = None,
) -> Iterator[tuple[int, str | None]]:
    """Run ``build(i)`` for ``i`` in ``0..count-1`` in forked children, ``workers`` at a
    time; yield ``(i, None)`` for each built, ``(i, reason)`` for each not: the error it
    raised, or that it took over ``timeout`` seconds, crashed its child, or was not done by
    ``deadline`` (a :func:`time.monotonic` time). Results come in the order they finish.

    A compile cannot be interrupted inside the process, so every compile happens in a
    child: a child that hangs or crashes is killed and the next item goes to a new one, and
    at the deadline the children are stopped and the items left are yielded as not built.
    ``build`` runs in the child, so it must leave its result somewhere the caller can
    read (a file). With ``timeout`` None, or where ``os.fork`` does not exist, ``build``
    runs here, one item after another.
    """
    if timeout is None or not hasattr(os, "fork"):
        for i in range(count):
            if deadline is not None and time.monotonic() >= deadline:
                yield i, OUT_OF_TIME
                continue
            try:
                build(i)
            except Exception as e:  # a candidate that does not build is a result, not a crash
                yield i, _error_text(e)
                continue
            yield i, None
        return
    pending = collections.deque(range(count))
    busy: dict[int, _Worker] = {}  # by the pipe its answers come on
    idle: list[_Worker] = []
    try:
        while pending or busy:
            if deadline is not None and time.monotonic() >= deadline:
                stopped = sorted([w.item for w in busy.values()] + list(pending))
                for worker in busy.values():
                    worker.stop()
                busy.clear()
                yield from ((i, OUT_OF_TIME) for i in stopped)
                return
            while pending and len(busy) < workers:
                worker = idle.pop() if idle else _Worker(build)
                worker.send(pending.popleft())
                busy[worker.replies] = worker
            now = time.monotonic()
            wait = min(w.since for w in busy.values()) + timeout - now
            if deadline is not None:
                wait = min(wait, deadline - now)
            ready, _, _ = select.select(list(busy), [], [], max(wait, 0.0))
            for fd in ready:
                worker = busy.pop(fd)
                error = worker.receive()
                if error is None:  # the pipe closed: the child died
                    worker.stop()
                    yield worker.item, COMPILER_CRASHED
                else:
                    idle.append(worker)
                    yield worker.item, error or None
            now = time.monotonic()
            for fd, worker in list(busy.items()):
                if now - worker.since >= timeout:
                    del busy[fd]
                    worker.stop()
                    yield worker.item, COMPILE_TIMED_OUT.format(timeout)
    finally:  # also when the caller stops early
        for worker in [*busy.values(), *idle]:
            worker.stop()


def _error_text(e: Exception) -> str:
    return f"{type(e).__name__}: {e}"


class _Worker:
    """A forked child that runs ``build(i)`` for each ``i`` it is sent and answers with the
    error's text, empty when it built."""

    def __init__(self, build: Callable[[int], Any]) -> None:
        requests, self.requests = os.pipe()
        self.replies, replies = os.pipe()
        self.item, self.since = -1, 0.0
        self.pid = os.fork()
        if self.pid == 0:  # the child: serve, and leave without Python's clean-up
            try:
                # Ctrl-C reaches the whole process group: the caller stops the child. Not
                # the caller's SIGTERM handler either: a SIGTERM sent here ends the child.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.close(self.requests)
                os.close(self.replies)
                _serve(build, requests, replies)
            finally:
                os._exit(0)
        os.close(requests)
        os.close(replies)

    def send(self, item: int) -> None:
        self.item, self.since = item, time.monotonic()
        os.write(self.requests, item.to_bytes(4, "little"))

    def receive(self) -> str | None:
        """The answer for the item sent; None if the child died first."""
        size = _read_exactly(self.replies, 4)
        text = _read_exactly(self.replies, int.from_bytes(size, "little")) if size else None
        return None if text is None else text.decode("utf-8", "replace")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        os.close(self.requests)
        os.close(self.replies)


def _serve(build: Callable[[int], Any], requests: int, replies: int) -> None:
    while (data := _read_exactly(requests, 4)) is not None:
        try:
            build(int.from_bytes(data, "little"))
            text = b""
        except Exception as e:  # reported to the caller, which records a failed build
            text = _error_text(e).encode("utf-8", "replace")[:_ERROR_BYTES]
        message = len(text).to_bytes(4, "little") + text
        while message:
            message = message[os.write(replies, message) :]


def _read_exactly(fd: int, size: int) -> bytes | None:
    """``size`` bytes from a pipe; None at its end."""
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


@derived_object
class InProcessBuilder(PyBuilder):
    """Builds each candidate with ``tvm.tirx.build`` (as ``default_build``) in forked
    children, one per core (see :func:`guarded`), and loads the libraries they export.

    ``timeout``: a child's seconds for one candidate (default :data:`BUILD_TIMEOUT_S`);
    ``guard=False`` builds here, one candidate after another, without children (a compile
    that hangs hangs the process). ``deadline`` (a :func:`time.monotonic` time, which
    :func:`tune` sets from its time budget): the candidates not built by then are dropped.
    """

    def __init__(
        self,
        artifacts: _Artifacts,
        timeout: float | None = None,
        guard: bool = True,
        workers: int | None = None,
    ) -> None:
        super().__init__()
        self.artifacts = artifacts
        self.timeout = BUILD_TIMEOUT_S if timeout is None else timeout
        self.guard = guard
        if workers is None:
            from ...runtime import physical_cores

            workers = physical_cores()
        self.workers = workers
        self.deadline: float | None = None

    def build(self, build_inputs: list[BuilderInput]) -> list[BuilderResult]:
        from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

        results: list[BuilderResult | None] = [None] * len(build_inputs)
        with tempfile.TemporaryDirectory(prefix="resdsl-tune-") as directory:

            def library(i: int) -> str:
                return os.path.join(directory, f"{i}.so")

            def compile_one(i: int) -> None:
                item = build_inputs[i]
                # As MetaSchedule's default_build: measure without the weight-repacking block.
                mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(item.mod)
                tvm.tirx.build(mod, target=item.target).export_library(library(i))

            timeout = self.timeout if self.guard else None
            built = guarded(
                len(build_inputs), compile_one, timeout, workers=self.workers,
                deadline=self.deadline,
            )  # fmt: skip
            for i, failure in built:
                if failure is None:
                    try:
                        module = tvm.runtime.load_module(library(i))
                        results[i] = BuilderResult(self.artifacts.put(module), None)
                        continue
                    except Exception as e:
                        failure = _error_text(e)
                results[i] = BuilderResult(None, failure)
        return results  # type: ignore[return-value]  # every index was filled


@derived_object
class _Measured(PyRunnerFuture):
    """A measurement that is already complete (the in-process runner is synchronous)."""

    def __init__(self, seconds: list[float] | None, error: str | None) -> None:
        super().__init__()
        self.seconds, self.error = seconds, error

    def done(self) -> bool:
        return True

    def result(self) -> RunnerResult:
        return RunnerResult(self.seconds, self.error)


@derived_object
class InProcessRunner(PyRunner):
    """Times each built candidate with ``time_evaluator`` on random inputs, in this process."""

    def __init__(self, artifacts: _Artifacts, evaluator: EvaluatorConfig = EVALUATOR) -> None:
        super().__init__()
        self.artifacts = artifacts
        self.evaluator = evaluator

    def run(self, runner_inputs: list[RunnerInput]) -> list[_Measured]:
        fill = tvm.get_global_func("tvm.contrib.random.random_fill_for_measure")
        futures = []
        for item in runner_inputs:
            try:
                module = self.artifacts.take(str(item.artifact_path))
                device = tvm.runtime.device(str(item.device_type), 0)
                args_info = [arg.as_json() for arg in item.args_info]
                args = alloc_argument_common(fill, device, args_info, 1)
                seconds = run_evaluator_common(module, device, self.evaluator, args)
                futures.append(_Measured(seconds, None))
            except Exception as e:  # e.g. a kernel that fails at run time
                futures.append(_Measured(None, f"{type(e).__name__}: {e}"))
        return futures


# --------------------------------------------------------------------------- progress


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


# --------------------------------------------------------------------------- tuning


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


def _covered(database: ms.database.Database, tasks: list[ms.ExtractedTask], where: str) -> int:
    """How many of ``tasks`` have a measured schedule in ``database``.

    A schedule is only valid for the kind of target it was measured on (a CPU schedule has
    no GPU thread bindings), so records for another kind are an error, not a fallback.
    """
    covered = 0
    for task in tasks:
        record = database.query_tuning_record(task.dispatched[0], task.target, task.task_name)
        if record is None:
            continue
        kind, wanted = record.target.kind.name, task.target.kind.name
        if kind != wanted:
            raise TuningError(f"the tuning records in {where} are for {kind}, not {wanted}")
        covered += 1
    return covered


@contextlib.contextmanager
def _stop_on_interrupt(progress: _Progress, log: Log) -> Iterator[None]:
    """Turn Ctrl-C (or SIGTERM) into "stop after this batch"; a second one stops at once.

    A KeyboardInterrupt raised while MetaSchedule's C++ search runs ends in std::terminate
    (a crash, seen here), so the first signal only sets a flag that the progress callback
    acts on between batches, where the exception unwinds through TVM cleanly. The guard
    bounds a batch's compiles, so the stop comes within a minute or two.
    """

    def handler(signum: int, frame: Any) -> None:
        progress.stop.set()
        progress.signal = signum
        for s, old in previous.items():  # the next one stops at once
            signal.signal(s, old)
        name = "interrupted" if signum == signal.SIGINT else "terminated"
        log(f"tuning: {name}; stopping after this batch (Ctrl-C again to stop now)")

    with handling((signal.SIGINT, signal.SIGTERM), handler) as previous:
        yield


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
    builder = builder or InProcessBuilder(artifacts)
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
        from .schedules import cpu_rules

        return cpu_rules()
    from .schedules import cuda_rules

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


def _relax_module(net: Any, options: Any, weights: Any, seed: int) -> tvm.IRModule:
    """The module the build compiles (kernels depend on shapes only, not on weight values)."""
    from ...passes import run_inference_passes
    from ...weights import resolve
    from .build import micro_batch_size
    from .lower import to_relax

    checked, _ = resolve(net.graph, weights, seed)
    graph, checked = run_inference_passes(net.graph, checked)
    micro = micro_batch_size(net.graph, options)
    return to_relax(graph, checked, batch=options.batch, dtype=options.dtype, micro_batch=micro)


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
