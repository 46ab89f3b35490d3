"""The TVM seam (resdsl/_compat.py): what it relies on still exists in the pinned TVM,
and nothing else in resdsl reaches into TVM's or NetworkX's internals.

A failure here after a TVM upgrade names the seam function to rewrite.
"""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys

import pytest

from resdsl import _compat as compat

from .conftest import ROOT

SEAM = ROOT / "resdsl" / "_compat.py"


def _changed(what: str, function: str) -> str:
    return f"TVM changed {what}: see resdsl/_compat.py {function}()"


# --------------------------------------------------------------------------- the grep test

# Module roots whose private names only the seam may touch.
FOREIGN = ("tvm", "tvm_ffi", "networkx")
# Modules whose names are not exported by their package (the seam reads them).
UNEXPORTED = (
    "tvm.s_tir.dlight.gpu.matmul",
    "tvm.s_tir.dlight.gpu.base",
    "tvm.s_tir.dlight.cpu.base",
    "tvm.s_tir.meta_schedule.runner.utils",
    "tvm.base",
)
# Private names of TVM/NetworkX objects reached through an attribute whose owner a scan
# cannot type (``self._vm._get_function_arity``, ``self.nx._pred``).
PRIVATE_NAMES = (
    "_RUNTIME_ONLY", "_LOADED_LIBS", "_ffi_api", "_get_function_arity",
    "_get_function_param_name", "_pred", "_succ", "_adj", "_node",
)  # fmt: skip
# Files that use TVM and so may not change its environment variables outside the seam.
TVM_FILES = ("resdsl/runtime.py", "resdsl/backends/tvm/")


def _is_foreign(module: str) -> bool:
    return module.split(".")[0] in FOREIGN


def _root(node: ast.expr) -> ast.expr:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node


def _dotted(node: ast.expr) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _violations(path: str, text: str) -> list[str]:
    """Reaches into TVM/NetworkX internals in one file: ``line: what``."""
    tree = ast.parse(text, path)
    foreign: set[str] = {"nx"}  # names bound to foreign modules or objects in this file
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_foreign(alias.name):
                    foreign.add((alias.asname or alias.name).split(".")[0])
                    if alias.name in UNEXPORTED or any(map(_private, alias.name.split("."))):
                        found.append(f"{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and _is_foreign(node.module):
            for alias in node.names:
                foreign.add(alias.asname or alias.name)
                hidden = node.module in UNEXPORTED or any(map(_private, node.module.split(".")))
                if hidden or _private(alias.name):
                    found.append(f"{node.lineno}: from {node.module} import {alias.name}")
    tvm_file = any(path.startswith(p) for p in TVM_FILES)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root, owner = _root(node), node.value
            on_foreign = isinstance(root, ast.Name) and root.id in foreign
            on_graph = isinstance(owner, ast.Attribute) and owner.attr == "nx"  # Graph.nx
            if on_foreign or on_graph or node.attr in PRIVATE_NAMES:
                found.append(f"{node.lineno}: {_dotted(node)}")
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Attribute):
                root = _root(target)
                if isinstance(root, ast.Name) and root.id in foreign:
                    found.append(f"{node.lineno}: assigns {_dotted(target)} (monkeypatching)")
            if isinstance(target, ast.Subscript):
                name = _dotted(target.value)
                if name == "sys.modules" or (tvm_file and name == "os.environ"):
                    found.append(f"{node.lineno}: assigns {name}[...]")
        if (
            tvm_file
            and isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and _dotted(node.func.value) == "os.environ"
            and node.func.attr in ("setdefault", "update", "pop", "__setitem__")
        ):
            found.append(f"{node.lineno}: os.environ.{node.func.attr}(...)")
    return found


def test_no_internals_outside_the_seam():
    problems = []
    for path in sorted((ROOT / "resdsl").rglob("*.py")):
        if path == SEAM:
            continue
        rel = path.relative_to(ROOT).as_posix()
        problems += [f"{rel}:{v}" for v in _violations(rel, path.read_text())]
    assert not problems, (
        "non-public TVM/NetworkX API used outside resdsl/_compat.py (move it behind a "
        "function there, naming the public API it stands in for):\n" + "\n".join(problems)
    )


def test_the_scan_finds_what_it_looks_for():
    text = (
        "import tvm\nimport networkx as nx\nfrom tvm.target import _ffi_api\n"
        "from tvm.s_tir.dlight.gpu.matmul import get_index_map\n"
        "tvm.base._RUNTIME_ONLY\nself.nx._pred\nself._vm._get_function_arity('main')\n"
        "tvm.s_tir.tensor_intrin = None\nimport sys\nsys.modules['x'] = None\n"
        "import os\nos.environ['TVM_NUM_THREADS'] = '1'\n"
        "self._cache._items\nel._typed(1)\n"  # resdsl's own privates: not flagged
    )
    found = _violations("resdsl/runtime.py", text)
    lines = sorted(int(v.split(":")[0]) for v in found)
    assert lines == [3, 4, 5, 6, 7, 8, 10, 12], found


# --------------------------------------------------------------------------- each seam function

tvm = pytest.importorskip("tvm")


def test_set_default_threads(monkeypatch):
    monkeypatch.delenv("TVM_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    compat.set_default_threads(3)
    assert os.environ["TVM_NUM_THREADS"] == "3"
    compat.set_default_threads(5)  # set already: kept
    assert os.environ["TVM_NUM_THREADS"] == "3"


def test_prefer_runtime_library():
    source = inspect.getsource(tvm.base)
    assert "TVM_USE_RUNTIME_LIB" in source, _changed(
        "how `tvm.base` chooses a runtime-only import", "prefer_runtime_library"
    )
    lib = os.path.join(os.path.dirname(tvm.__file__), "lib")
    assert os.path.exists(os.path.join(lib, "libtvm_compiler.so")), _changed(
        "the compiler library's name", "prefer_runtime_library"
    )
    compat.prefer_runtime_library()  # tvm is imported: nothing to do


def test_runtime_only():
    assert hasattr(tvm.base, "_RUNTIME_ONLY"), _changed("`tvm.base._RUNTIME_ONLY`", "runtime_only")
    assert compat.runtime_only(tvm) is False  # the test environment has the compiler


def test_load_runtime_library():
    loaded = getattr(tvm.base, "_LOADED_LIBS", None)
    assert isinstance(loaded, dict) and "tvm_runtime" in loaded, _changed(
        "`tvm.base._LOADED_LIBS`", "load_runtime_library"
    )
    before = dict(loaded)
    compat.load_runtime_library(tvm, "tvm_runtime", "/nonexistent.so")  # loaded: nothing
    assert loaded == before
    with pytest.raises(OSError):
        compat.load_runtime_library(tvm, "resdsl_test_missing", "/nonexistent.so")
    assert "resdsl_test_missing" not in loaded


def test_without_current_target():
    from tvm.target import Target

    try:
        from tvm.target import _ffi_api
    except ImportError:
        pytest.fail(_changed("`tvm.target._ffi_api`", "without_current_target"))
    assert hasattr(_ffi_api, "TargetCurrent"), _changed(
        "`tvm.target._ffi_api.TargetCurrent`", "without_current_target"
    )
    assert "TargetCurrent" in inspect.getsource(Target.current), _changed(
        "`Target.current`", "without_current_target"
    )
    current = Target.current
    compat.without_current_target(tvm)  # the full TVM has the function: nothing replaced
    assert Target.current is current


def test_vm_param_names():
    from tvm import relax

    builder = relax.BlockBuilder()
    x, y = (relax.Var(n, relax.TensorType((2,), "float32")) for n in "xy")
    with builder.function("main", [x, y]):
        builder.emit_func_output(builder.emit(relax.op.add(x, y)))
    vm = relax.VirtualMachine(tvm.compile(builder.get(), "llvm"), tvm.cpu())
    try:
        names = compat.vm_param_names(vm, "main")
    except AttributeError as e:
        pytest.fail(_changed(f"the VM's function accessors ({e})", "vm_param_names"))
    assert names == ["x", "y"]


def test_import_tensor_intrinsics():
    # In a fresh process: this one may have imported the package already.
    code = (
        "import sys; from resdsl import _compat as c; c.import_tensor_intrinsics('x86'); "
        "import tvm.s_tir.tensor_intrin.x86 as x; import tvm.s_tir; "
        "assert tvm.s_tir.tensor_intrin is sys.modules['tvm.s_tir.tensor_intrin']; "
        "assert 'tvm.s_tir.tensor_intrin.cuda' not in sys.modules; "
        "from tvm.s_tir import TensorIntrin; TensorIntrin.get(x.VNNI_DOT_16x4_INTRIN)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, (
        _changed("the package `tvm.s_tir.tensor_intrin`", "import_tensor_intrinsics")
        + "\n"
        + result.stderr[-2000:]
    )


@pytest.mark.parametrize(
    ("function", "names"),
    [
        (compat.dlight_matmul_helpers, compat.DLIGHT_MATMUL_HELPERS),
        (compat.runner_helpers, compat.RUNNER_HELPERS),
    ],
)
def test_unexported_helpers(function, names):
    try:
        helpers = function()
    except compat.CompatError as e:
        pytest.fail(str(e))
    for name in names:
        assert callable(getattr(helpers, name)), _changed(name, function.__name__)


def test_rules_check_targets_as_dlight_does():
    # The rules subclass dlight's public ScheduleRule and repeat the target test of the
    # CPU/GPU base classes dlight does not export; they must agree.
    from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
    from tvm.s_tir.dlight.gpu.base import GPUScheduleRule

    from resdsl.backends.tvm.schedules.cpu import Elementwise
    from resdsl.backends.tvm.schedules.cuda import TensorCoreMatmul

    kinds = ({"kind": "llvm"}, {"kind": "cuda", "arch": "sm_80"}, {"kind": "c"}, "opencl")
    for kind in kinds:
        target = tvm.target.Target(kind)
        assert Elementwise().is_target_available(target) == (
            CPUScheduleRule().is_target_available(target)
        ), target
        assert TensorCoreMatmul().is_target_available(target) == (
            GPUScheduleRule().is_target_available(target)
        ), target


def test_in_adjacency():
    import networkx as nx

    g = nx.MultiDiGraph()
    g.add_edge("a", "b", port=0)
    adjacency = compat.in_adjacency(g)
    assert adjacency["b"] == {"a": {0: {"port": 0}}}, (
        "NetworkX changed `MultiDiGraph._pred`: see resdsl/_compat.py in_adjacency()"
    )
    g.add_edge("c", "b", port=1)  # the graph's own dicts, not a copy: edits show
    assert {src: dict(keys) for src, keys in g.pred["b"].items()} == adjacency["b"]
