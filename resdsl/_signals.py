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
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
