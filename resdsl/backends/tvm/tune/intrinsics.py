"""The tensor intrinsics MetaSchedule may use, registered without importing them all."""

from __future__ import annotations

import platform

import tvm

from .... import _compat


def load_tensor_intrinsics(target: tvm.target.Target) -> None:
    """Register the tensor intrinsics MetaSchedule may use for ``target``, without the 40 s.

    ``TuneContext`` imports the package ``tvm.s_tir.tensor_intrin``, whose ``__init__``
    registers the intrinsics of every backend (CUDA's alone take 30 s). For a CPU target on
    an x86 host only its ``x86`` module is imported
    (:func:`resdsl._compat.import_tensor_intrinsics`); other targets get the full import.
    """
    host = platform.machine().lower()
    x86 = target.kind.name == "llvm" and host in ("x86_64", "amd64")
    _compat.import_tensor_intrinsics("x86" if x86 else None)
