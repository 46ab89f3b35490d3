"""The runtime-only copy that travels: TVM without its compiler, tvm_ffi, Lark, resdsl."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from .settings import ROOT, log

# Left out of the runtime-only TVM copy: the compiler library (by far the largest file),
# its sources and headers, vendored third-party code, the web runtime, CMake files,
# bytecode caches.
TVM_EXCLUDE = {"lib/libtvm_compiler.so", "3rdparty", "src", "include", "web", "cmake"}
TVM_FFI_EXCLUDE = {"3rdparty", "include", "src", "cython"}


def tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _copy_package(src: Path, dst: Path, exclude: set[str]) -> None:
    def ignore(directory: str, names: list[str]) -> list[str]:
        rel = Path(directory).relative_to(src)
        return [
            n
            for n in names
            if n == "__pycache__" or n.endswith(".pyc") or (rel / n).as_posix() in exclude
        ]

    shutil.copytree(src, dst, ignore=ignore, dirs_exist_ok=True)


def _ffi_core_for(version: str, cache: Path, machine: str) -> Path:
    """tvm_ffi's compiled core for CPython ``version`` (downloaded once into ``cache``)."""
    import tvm_ffi

    tag = version.replace(".", "")
    local = Path(tvm_ffi.__file__).parent
    mine = list(local.glob(f"core.cpython-{tag}-*.so"))
    if mine:
        return mine[0]
    from importlib.metadata import version as dist_version

    pinned = dist_version("apache-tvm-ffi")
    wheels = cache / f"wheels-cp{tag}"
    found = list(wheels.glob(f"apache_tvm_ffi-{pinned}-cp{tag}-*.whl"))
    if not found:
        log(f"downloading apache-tvm-ffi=={pinned} for CPython {version} (its compiled core)")
        platforms = [f"manylinux_2_28_{machine}", f"manylinux_2_24_{machine}",
                     f"manylinux_2_17_{machine}", f"manylinux2014_{machine}"]  # fmt: skip
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--python-version", version, "--implementation", "cp",
            *(arg for p in platforms for arg in ("--platform", p)),
            "-d", str(wheels), f"apache-tvm-ffi=={pinned}",
        ]  # fmt: skip
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        found = list(wheels.glob(f"apache_tvm_ffi-{pinned}-cp{tag}-*.whl"))
    with zipfile.ZipFile(found[0]) as z:
        (name,) = [n for n in z.namelist() if n.startswith(f"tvm_ffi/core.cpython-{tag}-")]
        out = wheels / Path(name).name
        out.write_bytes(z.read(name))
    return out


def assemble_pylib(pylib: Path, device_python: str, cache: Path, machine: str,
                   spares=()) -> None:  # fmt: skip
    """TVM's runtime (no compiler), tvm_ffi (cores for here, the device and, where their
    wheels can be had, the ``spares``), Lark, resdsl."""
    import lark
    import tvm
    import tvm_ffi

    import resdsl

    if pylib.exists():
        shutil.rmtree(pylib)
    pylib.mkdir(parents=True)
    _copy_package(Path(tvm.__file__).parent, pylib / "tvm", TVM_EXCLUDE)
    _copy_package(Path(tvm_ffi.__file__).parent, pylib / "tvm_ffi", TVM_FFI_EXCLUDE)
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    for version in sorted({here, device_python}):
        core = _ffi_core_for(version, cache, machine)
        shutil.copy2(core, pylib / "tvm_ffi" / core.name)
    for version in sorted(set(spares) - {here, device_python}):
        try:
            core = _ffi_core_for(version, cache, machine)
        except (OSError, subprocess.CalledProcessError, ValueError) as e:
            log(f"   note: no tvm_ffi core for CPython {version} ({type(e).__name__}); "
                "the GPU machine must not run that version")  # fmt: skip
            continue
        shutil.copy2(core, pylib / "tvm_ffi" / core.name)
    _copy_package(Path(lark.__file__).parent, pylib / "lark", set())
    # resdsl whole (the GPU side re-derives the weights with its inference passes), with the
    # grammar where the installed package has it (resdsl.grammars).
    _copy_package(Path(resdsl.__file__).parent, pylib / "resdsl", set())
    _copy_package(ROOT / "grammars", pylib / "resdsl" / "grammars", set())
    assert not (pylib / "tvm" / "lib" / "libtvm_compiler.so").exists()


def working_tree_size() -> int:
    """Tracked and untracked-but-not-ignored files: what travels besides the bundle."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return 0
    names = [n for n in out.decode().split("\0") if n]
    return sum((ROOT / n).stat().st_size for n in names if (ROOT / n).is_file())
