"""SIGTERM handled like Ctrl-C, so that the same clean-up runs.

``kill`` (and CI runners, containers and job schedulers stopping a job) send SIGTERM, whose
default action ends the process at once: files being written would stay behind as hidden
temporaries. Raised as :class:`Terminated`, a ``KeyboardInterrupt``, it unwinds through the
code that already cleans up after Ctrl-C.
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


def sigterm_as_interrupt() -> contextlib.AbstractContextManager[dict[int, Any]]:
    """Within the block, SIGTERM raises :class:`Terminated` (main thread only)."""
    return handling((signal.SIGTERM,), _raise_terminated)
