"""Every use of a non-public TVM or NetworkX API in resdsl, in one place (pinned: apache-tvm
0.27; networkx 3).

Each function here stands in for a public API that TVM lacks or that does not do what
resdsl needs; its comment names which. ``tests/test_compat.py`` calls each one against
the installed TVM and fails naming the function when an upgrade changes what it relies on,
and checks that nothing outside this module reaches into TVM's (or NetworkX's) internals.

The module sits at the top of the package, not in :mod:`resdsl.backends.tvm`, because
:mod:`resdsl.runtime` uses it and must run with TVM's runtime alone: importing
``resdsl.backends.tvm`` imports TVM's compiler. So it imports nothing from TVM at module
level; each function imports what it needs when called.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType, SimpleNamespace
from typing import Any

__all__ = [
    "DLIGHT_MATMUL_HELPERS",
    "RUNNER_HELPERS",
    "CompatError",
    "dlight_matmul_helpers",
    "import_tensor_intrinsics",
    "in_adjacency",
    "load_runtime_library",
    "prefer_runtime_library",
    "runner_helpers",
    "runtime_only",
    "set_default_threads",
    "vm_param_names",
    "without_current_target",
]

HERE = "resdsl/_compat.py"


class CompatError(RuntimeError):
    """The installed TVM no longer has what a function of this module relies on."""


def _changed(what: str, function: str) -> CompatError:
    return CompatError(f"TVM changed {what}: see {HERE} {function}()")


# --------------------------------------------------------------------------- environment


def set_default_threads(threads: int) -> None:
    """Size TVM's CPU thread pool to ``threads``, unless ``TVM_NUM_THREADS`` or
    ``OMP_NUM_THREADS`` is set; it must run before the pool starts.

    Public API: none that takes effect before the pool starts. The environment variable is
    what the pool reads (once, when it starts); the global function
    ``runtime.config_threadpool`` would resize a started pool instead.
    """
    if "TVM_NUM_THREADS" not in os.environ and "OMP_NUM_THREADS" not in os.environ:
        os.environ["TVM_NUM_THREADS"] = str(threads)


def prefer_runtime_library() -> None:
    """Before ``import tvm``: import it runtime-only where ``libtvm_compiler.so`` is absent.

    Public API: none. ``tvm/base.py`` reads ``TVM_USE_RUNTIME_LIB=1`` at import; without it
    a package lacking the compiler library fails to import.
    """
    if "tvm" in sys.modules or "TVM_USE_RUNTIME_LIB" in os.environ:
        return
    spec = importlib.util.find_spec("tvm")
    lib = os.path.join(os.path.dirname(spec.origin), "lib") if spec and spec.origin else ""
    if lib and not os.path.exists(os.path.join(lib, "libtvm_compiler.so")):
        os.environ["TVM_USE_RUNTIME_LIB"] = "1"


# --------------------------------------------------------------------------- runtime-only TVM


def runtime_only(tvm: ModuleType) -> bool:
    """Whether ``tvm`` was imported without its compiler library.

    Public API: none; ``tvm.base._RUNTIME_ONLY`` is what TVM's own modules test.
    """
    try:
        return bool(tvm.base._RUNTIME_ONLY)
    except AttributeError:
        raise _changed("`tvm.base._RUNTIME_ONLY`", "runtime_only") from None


def load_runtime_library(tvm: ModuleType, name: str, path: str) -> None:
    """Load one of TVM's runtime libraries (``libtvm_runtime_cuda.so``) once, as TVM's own
    backends do; raises :class:`OSError` where it cannot be loaded.

    Public API: none. ``import tvm`` loads device runtimes only with the compiler library;
    ``tvm.base._LOADED_LIBS`` is the table TVM keeps them in (keeping the handle there keeps
    the library loaded, and a second call loads nothing).
    """
    import ctypes

    try:
        loaded = tvm.base._LOADED_LIBS
    except AttributeError:
        raise _changed("`tvm.base._LOADED_LIBS`", "load_runtime_library") from None
    if name not in loaded:
        loaded[name] = ctypes.CDLL(path, ctypes.RTLD_LOCAL)


def without_current_target(tvm: ModuleType) -> None:
    """Make ``tvm.target.Target.current()`` answer ``None`` where the runtime-only package
    lacks the FFI function behind it (``tvm.support.nvcc`` asks it for the CUDA arch).

    Public API: ``Target.current``, which here calls the missing
    ``tvm.target._ffi_api.TargetCurrent``; it is replaced process-wide, so this runs only
    in a runtime-only TVM, where no compiler code uses it.
    """
    from tvm.target import Target

    try:
        from tvm.target import _ffi_api
    except ImportError:
        raise _changed("`tvm.target._ffi_api`", "without_current_target") from None
    if not hasattr(_ffi_api, "TargetCurrent"):
        Target.current = staticmethod(lambda allow_none=True: None)


def vm_param_names(vm: Any, function: str) -> list[str]:
    """The parameter names of ``function`` in a Relax ``VirtualMachine``.

    Public API: none; ``VirtualMachine._get_function_arity`` and
    ``_get_function_param_name`` are the VM's own accessors. Raises whatever they raise for
    an executable that cannot be inspected.
    """
    arity = vm._get_function_arity(function)
    return [vm._get_function_param_name(function, i) for i in range(arity)]


# --------------------------------------------------------------------------- compiler internals


def import_tensor_intrinsics(only: str | None = None) -> None:
    """Import ``tvm.s_tir.tensor_intrin``, or with ``only`` (``"x86"``) just that submodule.

    Public API: ``import tvm.s_tir.tensor_intrin``, whose ``__init__`` registers the
    intrinsics of every backend (CUDA's alone take 30 s). With ``only``, the package is
    entered into ``sys.modules`` (and bound on ``tvm.s_tir``, as a completed import would)
    without running its ``__init__``; its submodules still import normally on demand.
    """
    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name) if only else None
    if spec is None:
        importlib.import_module(name)
        return
    import tvm.s_tir

    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    tvm.s_tir.tensor_intrin = package
    importlib.import_module(f"{name}.{only}")


def _names(module: str, names: tuple[str, ...], function: str) -> SimpleNamespace:
    found = importlib.import_module(module)
    missing = [n for n in names if not hasattr(found, n)]
    if missing:
        raise _changed(f"`{module}` (no {', '.join(missing)})", function)
    return SimpleNamespace(**{n: getattr(found, n) for n in names})


# dlight's matmul analyses; tvm.s_tir.dlight.gpu exports only the rules (Matmul, GEMV, ...).
DLIGHT_MATMUL_HELPERS = (
    "auto_inline_consumer_chain",
    "auto_inline_producers",
    "check_sm_version",
    "get_in_out_dtypes",
    "get_index_map",
    "get_reduction_blocks",
)


def dlight_matmul_helpers() -> SimpleNamespace:
    """The helpers of ``tvm.s_tir.dlight.gpu.matmul`` that :mod:`.backends.tvm.schedules.cuda`
    builds its tensor-core rule from (:data:`DLIGHT_MATMUL_HELPERS`).

    Public API: none; dlight exports its rules, not the analyses they share.
    """
    return _names("tvm.s_tir.dlight.gpu.matmul", DLIGHT_MATMUL_HELPERS, "dlight_matmul_helpers")


# MetaSchedule's argument allocation and timing, as its LocalRunner uses them.
RUNNER_HELPERS = ("alloc_argument_common", "run_evaluator_common")


def runner_helpers() -> SimpleNamespace:
    """``alloc_argument_common`` and ``run_evaluator_common`` of
    ``tvm.s_tir.meta_schedule.runner.utils``, for timing candidates in this process.

    Public API: ``ms.runner.LocalRunner``, which times them in a separate process only.
    """
    return _names("tvm.s_tir.meta_schedule.runner.utils", RUNNER_HELPERS, "runner_helpers")


# --- NetworkX --------------------------------------------------------------------------------


def in_adjacency(graph: Any) -> dict[Any, dict[Any, dict[Any, dict[str, Any]]]]:
    """``graph._pred`` of a NetworkX ``MultiDiGraph``: ``{node: {source: {key: data}}}``.

    Stands in for the public ``graph.pred``, which holds the same dicts but wraps every
    lookup in view objects (a ``MultiAdjacencyView``, then one view per source):
    ``ir.Graph.inputs_of`` reads it for every node in counting and in every pass, and the
    views cost 4 % of loading ResNet-50 and 15-20 % of scoring a search candidate
    (``benchmarks/search.py``). Read only; never written through.
    """
    return graph._pred


def install_module(name: str, module: ModuleType) -> None:
    """Make ``module`` importable as ``name``: ``sys.modules[name] = module``, as the
    importlib documentation does for a module built by hand ("Importing a source file
    directly"). The PyTorch backend's generated modules live there so that pickle finds
    their classes (``resdsl.backends.torch._load``)."""
    sys.modules[name] = module
