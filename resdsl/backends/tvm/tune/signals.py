"""Ctrl-C and SIGTERM during tuning: stop after the batch being measured."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

from ...._signals import handling
from .progress import Log, _Progress


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
