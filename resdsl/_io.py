"""Atomic file output: write a temporary file beside the target, then rename it into place.

Readers (and an interrupted run) see the old file or the new one, never half of one.

Only a regular file is ever replaced: a target that exists as anything else — a symbolic
link (even one to a regular file), a FIFO, a device such as ``/dev/null``, a socket or a
directory — is refused with :class:`OutputRefusedError` before anything is written. The
command line reports it as a usage error (exit 2).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator


class OutputRefusedError(OSError):
    """The output path exists and is not a regular file: resdsl will not replace it."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_kind(mode: int) -> str:
    """What ``mode`` (an ``os.lstat`` result's ``st_mode``) is, in words."""
    kinds = [
        (stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
        (stat.S_ISREG, "a regular file"),
    ]  # fmt: skip
    return next((word for test, word in kinds if test(mode)), "not a regular file")


def check_target(path: str) -> None:
    """Raise :class:`OutputRefusedError` unless ``path`` is missing or a regular file.

    Checked with ``os.lstat``: a symbolic link is refused whatever it points to.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError:  # e.g. a path through a file; the write itself reports it
        return
    if not stat.S_ISREG(mode):
        raise OutputRefusedError(
            f"refusing to replace {path}: it is {file_kind(mode)}, not a regular file"
        )


@contextlib.contextmanager
def staged(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched. A
    ``path`` that exists and is not a regular file is refused (:func:`check_target`).
    """
    check_target(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory
        )
    except OSError as e:  # name the file asked for, not the temporary one
        raise OSError(e.errno, f"cannot write {path}: {e.strerror}") from None
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        check_target(path)  # again: it may have been swapped while the data was written
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write(path: str, data: str | bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with staged(path) as tmp, open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
