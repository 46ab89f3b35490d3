"""Candidates compiled in forked children (:class:`InProcessBuilder`, :func:`guarded`) and
kept in memory for :mod:`.runner`."""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import select
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.builder import BuilderInput, BuilderResult, PyBuilder


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


# A candidate that LLVM takes longer than this to compile is dropped: most build in about a
# second, and a few never finish (docs/deploy.md, "Tuning").
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
        yield from _unguarded(count, build, deadline)
    else:
        yield from _in_children(count, build, timeout, workers, deadline)


def _unguarded(
    count: int, build: Callable[[int], Any], deadline: float | None
) -> Iterator[tuple[int, str | None]]:
    """:func:`guarded` in this process, one item after another."""
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


def _in_children(
    count: int,
    build: Callable[[int], Any],
    timeout: float,
    workers: int,
    deadline: float | None,
) -> Iterator[tuple[int, str | None]]:
    """:func:`guarded` in forked children, ``workers`` at a time."""
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
            from ....runtime import physical_cores

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
