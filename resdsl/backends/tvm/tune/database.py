"""Where tuning records live, and the MetaSchedule JSON database over them."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable, Iterator

import tvm
from tvm.s_tir import meta_schedule as ms

from ...._io import staged
from ....errors import SpecError

ENV_DIR = "RESDSL_TUNING_DIR"
WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"


class TuningError(SpecError):
    """Tuning cannot run here, or the records database cannot be read or written."""

    code = "E0702"


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
