"""Hardening of the TVM compile (the hardening issue's items 4, 5, 9, 10 and 14):

4. a large or prime ``--batch`` compiles in bounded time (micro-batches run by a tree of
   functions, never one call per micro-batch), and the batch is bounded;
5. a failed write removes only its own temporary files, never a directory with another
   compile's artifact in it;
9. Ctrl-C and SIGTERM inside TVM's build exit 130 and 143, not 3;
10. a disk that fills up while the library is linked is exit 4;
14. ``--batch 0``, ``--arch`` for llvm and ``--cpu`` for cuda are usage errors at once.
"""

import contextlib
import importlib
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
tvm_ffi = pytest.importorskip("tvm_ffi")

import resdsl  # noqa: E402
from resdsl import cli, runtime  # noqa: E402
from resdsl._signals import Terminated  # noqa: E402
from resdsl.backends.tvm import BuildOptions, TargetError, lower  # noqa: E402
from resdsl.cli import main  # noqa: E402
from resdsl.passes import run_inference_passes  # noqa: E402
from resdsl.weights import resolve  # noqa: E402

from .backend_specs import SMALL  # noqa: E402
from .conftest import EXAMPLES  # noqa: E402

TVM_PACKAGE = importlib.import_module("resdsl.backends.tvm")
BUILD_MODULE = importlib.import_module("resdsl.backends.tvm.build")
ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture
def small(tmp_path) -> str:
    path = tmp_path / "small.res"
    path.write_text(textwrap.dedent(SMALL))
    return str(path)


def leftovers(directory: pathlib.Path) -> list[str]:
    """Temporary files (``.model.so.*.tmp``) anywhere below ``directory``."""
    return [str(p) for p in directory.rglob(".*.tmp")]


# --- 4. a large batch ----------------------------------------------------------------------------


def call_counts(mod: tvm.IRModule) -> dict[str, list[str]]:
    """For each function, the functions of the module it calls, in order."""
    out = {}
    for gv, func in mod.functions.items():
        calls: list[str] = []
        tvm.relax.analysis.post_order_visit(
            func.body,
            lambda e, calls=calls: (
                calls.append(e.op.name_hint)
                if isinstance(e, tvm.relax.Call) and isinstance(e.op, tvm.ir.GlobalVar)
                else None
            ),
        )
        out[gv.name_hint] = calls
    return out


def micro_batches_run(calls: dict[str, list[str]], name: str = "main") -> int:
    """How many times ``main`` (through the tree) runs ``forward``."""
    if name == "forward":
        return 1
    return sum(micro_batches_run(calls, callee) for callee in calls[name])


@pytest.mark.parametrize("batch", [2, 32, 33, 1024, 1057, 10007, 65536])
def test_micro_batches_are_a_tree_of_bounded_calls(batch):
    """A prime batch of 10,007 (micro-batch 1) used to unroll 10,007 calls in ``main``, and
    TVM crashed on them after ~100 s; now the calls form a tree, log(batch) deep."""
    net = resdsl.loads(textwrap.dedent(SMALL))
    weights, _ = resolve(net.graph, None, 0)
    graph, weights = run_inference_passes(net.graph, weights)
    start = time.perf_counter()
    mod = lower.to_relax(graph, weights, batch=batch, micro_batch=1)
    assert time.perf_counter() - start < 10
    calls = call_counts(mod)
    assert max(len(c) for name, c in calls.items() if name != "main") <= lower.MAX_CALLS
    levels = len(calls) - 1  # forward, forward_batch32, ...: main calls < MAX_CALLS of each
    assert len(calls["main"]) <= max(lower.MAX_CALLS, (lower.MAX_CALLS - 1) * levels)
    assert micro_batches_run(calls) == batch
    assert calls["forward"] == []
    if batch <= lower.MAX_CALLS:  # as before: main calls forward once per micro-batch
        assert sorted(calls) == ["forward", "main"]
        assert calls["main"] == ["forward"] * batch
    if batch == 10007:  # 9 x 1024 + 24 x 32 + 23 x 1
        assert sorted(calls) == ["forward", "forward_batch1024", "forward_batch32", "main"]
        assert len(calls["main"]) == 9 + 24 + 23
    if batch == 1024:  # exactly one piece: called directly, without a split
        assert calls["main"] == ["forward_batch1024"]
    assert [int(d) for d in mod["main"].params[0].ty.shape] == [batch, 3, 8, 8]


def test_prime_batch_compiles_and_runs(small, tmp_path):
    """``compile small.res --target llvm --batch 10007``: micro-batches of 1 (no larger
    divisor), run by the tree; its outputs are those of a whole-batch build."""
    split, whole = tmp_path / "split", tmp_path / "whole"
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "resdsl.cli", "compile", small, "--target", "llvm",
         "--batch", "10007", "-o", str(split)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert seconds < 300  # it crashed after ~100 s; ~11 s on two shared cores now
    flags = ["--target", "llvm", "--batch", "10007", "--micro-batch", "10007"]
    assert main(["compile", small, *flags, "-o", str(whole)]) == 0
    a, b = runtime.load(split), runtime.load(whole)
    assert (a.meta["batch"], a.meta["micro_batch"]) == (10007, 1)
    x = np.random.default_rng(0).standard_normal((10007, 3, 8, 8)).astype(np.float32)
    for got, want in zip(a(x), b(x), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("target", ["llvm", "cuda", "onnx", "torch"])
@pytest.mark.parametrize("batch", ["0", "-3", "65537", "10000000"])
def test_batch_out_of_bounds_is_a_usage_error(small, tmp_path, capsys, target, batch):
    out = tmp_path / "out"
    assert main(["compile", small, "--target", target, "--batch", batch, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--batch must be at least 1 and at most 65536, got {batch}" in err
    assert not out.exists()


def test_batch_bound_is_the_same_everywhere():
    assert cli.MAX_BATCH == BUILD_MODULE.MAX_BATCH == 65536
    BuildOptions("llvm", batch=65536).tvm_target()
    for batch in (0, 65537):
        with pytest.raises(TargetError, match="at least 1 and at most 65536"):
            BuildOptions("llvm", batch=batch).tvm_target()


# --- 14. option checks at once -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--target", "llvm", "--batch", "0"], "--batch must be at least 1"),
        (["--target", "cuda", "--batch", "0"], "--batch must be at least 1"),
        (["--target", "llvm", "--arch", "sm_90"], "--arch applies to --target cuda"),
        (["--target", "cuda", "--cpu", "skylake-avx512"], "--cpu applies to --target llvm"),
    ],
    ids=["llvm-batch-0", "cuda-batch-0", "arch-llvm", "cpu-cuda"],
)
def test_target_options_are_usage_errors_at_once(small, tmp_path, flags, message):
    """Exit 2 before TVM is even imported (the llvm ``--batch 0`` took 5 s and exited 1)."""
    out = tmp_path / "out"
    code = (
        "import sys; from resdsl.cli import main; rc = main(sys.argv[1:]); "
        "print('tvm' in sys.modules); sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "compile", small, *flags, "-o", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert proc.stdout.strip() == "False"
    assert not out.exists()


# --- 5. a failed write removes only its own files ------------------------------------------------


class FailingExport:
    """An executable whose export fails, after ``before()`` ran (another compile's writes)."""

    def __init__(self, before=None, error: BaseException | None = None):
        self.before, self.error = before, error or RuntimeError("export failed")

    def export_library(self, path: str) -> None:
        pathlib.Path(path).write_bytes(b"half a library")
        if self.before:
            self.before()
        raise self.error


def test_failed_write_keeps_what_a_concurrent_compile_wrote(tmp_path):
    """This compile created the directory; while it exported, another compile wrote its
    artifact there; this one's failure must leave that artifact whole."""
    out = tmp_path / "out"

    def other_compile():
        (out / "model.so").write_bytes(b"the other library")
        (out / "model.json").write_text('{"other": true}\n')

    with pytest.raises(RuntimeError, match="export failed"):
        BUILD_MODULE.write_artifact(FailingExport(other_compile), {}, str(out))
    assert (out / "model.so").read_bytes() == b"the other library"
    assert (out / "model.json").read_text() == '{"other": true}\n'
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.so"]


@pytest.mark.parametrize("error", [RuntimeError("export failed"), KeyboardInterrupt()])
def test_failed_write_removes_its_empty_directory_only(tmp_path, error):
    created, existing = tmp_path / "new" / "out", tmp_path / "existing"
    existing.mkdir()
    for out in (created, existing):
        with pytest.raises(type(error)):
            BUILD_MODULE.write_artifact(FailingExport(error=error), {}, str(out))
    assert not created.exists()  # made by the failed write, empty: removed
    assert existing.is_dir() and not list(existing.iterdir())  # there before: kept
    assert not leftovers(tmp_path)


def test_write_artifact_never_removes_a_tree(tmp_path, monkeypatch):
    import shutil

    def refuse(*args, **kwargs):
        raise AssertionError("rmtree called")

    monkeypatch.setattr(shutil, "rmtree", refuse)
    out = tmp_path / "out"

    def other_compile():
        (out / "sub").mkdir()

    with pytest.raises(RuntimeError):
        BUILD_MODULE.write_artifact(FailingExport(other_compile), {}, str(out))
    assert (out / "sub").is_dir()


# --- 9. signals inside TVM -----------------------------------------------------------------------


def compile_and_signal(tmp_path: pathlib.Path, signum: int, delay: float):
    out = tmp_path / "art"
    proc = subprocess.Popen(
        [sys.executable, "-m", "resdsl.cli", "compile", str(EXAMPLES / "resnet18.res"),
         "--target", "llvm", "-o", str(out)],
        stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        first = proc.stderr.readline()
        assert first.startswith("compiling resnet18"), first
        time.sleep(delay)  # inside TVM: lowering, the passes or codegen (the build takes ~15 s)
        proc.send_signal(signum)
        err = first + proc.stderr.read()
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return rc, err, out


@pytest.mark.parametrize(
    ("signum", "code", "word", "delay"),
    [(signal.SIGINT, 130, "interrupted", 6.0), (signal.SIGTERM, 143, "terminated", 3.0)],
    ids=["SIGINT", "SIGTERM"],
)
def test_signal_during_the_tvm_build(tmp_path, signum, code, word, delay):
    """Ctrl-C or SIGTERM 3-8 s into an llvm compile exited 3 with an empty RuntimeError
    (TVM wraps the KeyboardInterrupt its Python callback raised). The handler runs when the
    C++ next returns to Python, so the exit can take a few seconds (LLVM's codegen)."""
    rc, err, out = compile_and_signal(tmp_path, signum, delay)
    assert rc == code, err
    assert err.rstrip().endswith(word), err
    assert "internal error" not in err and "RuntimeError" not in err
    assert not out.exists()
    assert not leftovers(tmp_path)


def _through_the_ffi(signum: int):
    """A build whose Python callback, called from C++ through TVM's FFI, gets ``signum``."""

    def build(*args, **kwargs):
        tvm_ffi.convert(lambda: signal.raise_signal(signum))()
        raise AssertionError("the signal did not stop the build")

    return build


def _wrapped(signum: int):
    """A build that gets ``signum`` and turns the interrupt into an empty RuntimeError, as
    TVM does for kinds of error it does not know."""

    def build(*args, **kwargs):
        try:
            signal.raise_signal(signum)
            time.sleep(5)  # the handler runs before this ends
        except KeyboardInterrupt:
            raise RuntimeError("") from None
        raise AssertionError("the signal did not stop the build")

    return build


def _swallowed(signum: int):
    """A build that gets ``signum``, swallows the interrupt and carries on."""
    real = TVM_PACKAGE.build

    def build(*args, **kwargs):
        with contextlib.suppress(KeyboardInterrupt):
            signal.raise_signal(signum)
            time.sleep(5)
        return real(*args, **kwargs)

    return build


@pytest.mark.parametrize("fake", [_through_the_ffi, _wrapped, _swallowed])
@pytest.mark.parametrize(
    ("signum", "code", "word"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
    ids=["SIGINT", "SIGTERM"],
)
def test_interrupt_in_the_build_is_an_interrupt(
    small, tmp_path, capsys, monkeypatch, fake, signum, code, word
):
    monkeypatch.setattr(TVM_PACKAGE, "build", fake(signum))
    before = signal.getsignal(signal.SIGINT)
    out = tmp_path / "out"
    assert main(["compile", small, "--target", "llvm", "-o", str(out)]) == code
    assert capsys.readouterr().err.rstrip().endswith(word)
    assert not out.exists()
    assert signal.getsignal(signal.SIGINT) is before  # restored


def test_interrupt_through_the_ffi_keeps_its_type():
    """Registered with tvm_ffi, a KeyboardInterrupt raised in a callback comes back out of
    the C++ as itself (unregistered, it was an empty RuntimeError)."""

    def interrupted():
        raise KeyboardInterrupt

    def terminated():
        raise Terminated

    with pytest.raises(KeyboardInterrupt) as info:
        tvm_ffi.convert(interrupted)()
    assert type(info.value) is KeyboardInterrupt
    with pytest.raises(Terminated):
        tvm_ffi.convert(terminated)()


# --- 10. a full disk -----------------------------------------------------------------------------


@pytest.fixture
def full_linker(tmp_path, monkeypatch):
    """A C++ compiler that fails to link as ld does on a full disk (TVM's export_library
    runs $CXX and wraps its failure in a RuntimeError with the output)."""
    script = tmp_path / "bin" / "c++"
    script.parent.mkdir()
    script.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do [ "$a" = -shared ] && { '
        'echo "/usr/bin/ld: final link failed: No space left on device"; '
        'echo "collect2: error: ld returned 1 exit status"; exit 1; }; done\n'
        'exec g++ "$@"\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("CXX", str(script))
    return script


def test_disk_full_during_the_link_is_an_os_error(small, tmp_path, capsys, full_linker):
    out = tmp_path / "out"
    assert main(["compile", small, "--target", "llvm", "-o", str(out)]) == 4
    err = capsys.readouterr().err
    assert f"cannot write {out / 'model.so'}: No space left on device" in err
    assert "final link failed" in err
    assert "internal error" not in err
    assert not out.exists()
    assert not leftovers(tmp_path)


def test_disk_full_during_the_link_keeps_an_earlier_artifact(small, tmp_path, full_linker):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.so").write_bytes(b"old library")
    (out / "model.json").write_text("{}\n")
    assert main(["compile", small, "--target", "llvm", "-o", str(out)]) == 4
    assert (out / "model.so").read_bytes() == b"old library"
    assert (out / "model.json").read_text() == "{}\n"
    assert not leftovers(tmp_path)


@pytest.mark.parametrize("where", ["out", "tmp"])
def test_too_little_room_is_refused_before_the_export(small, tmp_path, capsys, monkeypatch, where):
    """With less room than the weights take, nothing is tried: where TVM writes its objects
    a failed write ends the process (LLVM ERROR: IO failure on output stream, exit 1)."""
    import shutil

    real = shutil.disk_usage
    full = tmp_path / "tmp" if where == "tmp" else tmp_path
    full.mkdir(exist_ok=True)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(BUILD_MODULE.tempfile, "tempdir", None)  # read TMPDIR again

    def usage(path):
        got = real(path)
        return got._replace(free=100) if os.path.samefile(path, full) else got

    monkeypatch.setattr(BUILD_MODULE.shutil, "disk_usage", usage)
    out = tmp_path / "out"
    assert main(["compile", small, "--target", "llvm", "-o", str(out)]) == 4
    err = capsys.readouterr().err
    assert "No space left on device" in err
    assert "MiB free; the library needs at least" in err
    assert ("set TMPDIR" in err) == (where == "tmp")
    assert not out.exists()


def _can_mount_tmpfs(path: pathlib.Path) -> bool:
    if os.geteuid() != 0 or sys.platform != "linux":
        return False
    path.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(path)], capture_output=True
    )
    return proc.returncode == 0


def test_a_really_full_disk(small, tmp_path, capsys):
    """On a real 64 KiB file system (root only): the small spec's weights fit, its library
    (~90 KiB) does not, so the linker itself runs out of space."""
    disk = tmp_path / "disk"
    if not _can_mount_tmpfs(disk):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        out = disk / "out"
        assert main(["compile", small, "--target", "llvm", "-o", str(out)]) == 4
        err = capsys.readouterr().err
        assert "No space left on device" in err and "internal error" not in err
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)
