"""SIGTERM handled like Ctrl-C, so that the same clean-up runs.

``kill`` (and CI runners, containers and job schedulers stopping a job) send SIGTERM, whose
default action ends the process at once: files being written would stay behind as hidden
temporaries. Raised as :class:`Terminated`, a ``KeyboardInterrupt``, it unwinds through the
code that already cleans up after Ctrl-C.

Code that calls into C++ which calls back into Python (TVM's compiler) can get the
exception back wrapped in another one: :func:`noting_signals` records which signal came, so
that the caller can raise the interrupt it stands for (:func:`interrupt_for`).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class Terminated(KeyboardInterrupt):
    """The process was sent SIGTERM (exit status 143, as the shell reports a killed job)."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated


@contextlib.contextmanager
def handling(signums: tuple[int, ...], handler: Any) -> Iterator[dict[int, Any]]:
    """Within the block, ``handler`` handles each of ``signums``; yields the handlers it
    replaced, which are back after the block. Signal handlers can only be set from the main
    thread: elsewhere nothing changes and the dict is empty."""
    if threading.current_thread() is not threading.main_thread():
        yield {}
        return
    previous = {signum: signal.getsignal(signum) for signum in signums}
    for signum in signums:
        signal.signal(signum, handler)
    try:
        yield previous
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def noting_signals() -> Iterator[list[int]]:
    """Within the block, SIGINT and SIGTERM are handled as before and also recorded, in the
    list this yields, in the order they came.

    TVM's compiler is C++ that calls back into Python; a ``KeyboardInterrupt`` (or
    :class:`Terminated`) raised by the handler inside such a callback comes back out of the
    C++ as an empty ``RuntimeError``, or is swallowed. A caller that finds the list
    non-empty knows an interrupt is what ended (or should end) the work. A signal whose
    handler is not a Python function (ignored, or the default action) is left alone.
    Main thread only: elsewhere nothing is recorded.
    """
    noted: list[int] = []

    def noting(old: Any) -> Any:
        def handler(signum: int, frame: Any) -> Any:
            noted.append(signum)
            return old(signum, frame)

        return handler

    if threading.current_thread() is not threading.main_thread():
        yield noted
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    previous = {s: old for s, old in previous.items() if callable(old)}
    for signum, old in previous.items():
        signal.signal(signum, noting(old))
    try:
        yield noted
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def interrupt_for(signum: int) -> KeyboardInterrupt:
    """The exception a signal stands for: :class:`Terminated` for SIGTERM, else
    ``KeyboardInterrupt``."""
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def sigterm_as_interrupt() -> contextlib.AbstractContextManager[dict[int, Any]]:
    """Within the block, SIGTERM raises :class:`Terminated` (main thread only)."""
    return handling((signal.SIGTERM,), _raise_terminated)
