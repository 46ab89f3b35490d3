"""The GPU check's Python: ``prepare`` runs here, ``device`` runs on the GPU machine.

Driven by ``benchmarks/gpu_check.sh`` (``prepare`` / ``run``), whose header says what is
built, what is carried and why. In short:

* ``prepare`` (here, with TVM's compiler) compiles the CUDA artifacts, checks that their
  kernels compile with NVRTC for the target GPU, punches the weights out of each
  ``model.so`` (they are re-derived on the GPU side from a seed, see :func:`seeded_weights`),
  assembles a runtime-only TVM plus resdsl into ``build/gpu/pylib`` and tests all of that
  on the CPU: the same ``device`` code, run on an llvm artifact in a subprocess that imports
  only the carried copy.
* ``device`` (there, with PyTorch and the carried copy on ``PYTHONPATH``) rebuilds each
  artifact byte for byte (its sha256 is checked), loads it with ``resdsl.runtime``, checks
  it against torchvision on the GPU and times it next to PyTorch eager and torch.compile.

This file imports only the standard library and NumPy at the top, so ``device`` starts on
a machine without TVM's compiler, Lark or resdsl installed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import lzma
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "build" / "gpu"  # everything the GPU side needs; carried as one path
SELFTEST = ROOT / "build" / "gpu-selftest"  # CPU self-test of the bundle; not carried
CACHE = ROOT / "build" / "gpu-cache"  # downloaded wheels; not carried
CARRY_LIMIT = 64 * 1024 * 1024
FORMAT = "resdsl-gpu-check/1"
ARCH = "sm_90"  # the lent GPUs are H100/H200
DEVICE_PYTHON = "3.12"  # python3 on the GPU machines (see /work/.library/device/KINDS.md)
# Where each model's spec comes from; torchvision's models are the reference for theirs, the
# others are compared with resdsl's own PyTorch backend (net.to_torch).
SPECS = {
    "resnet18": ROOT / "examples" / "resnet18.res",  # imports std.resnet (ships in resdsl)
    "resnet50": ROOT / "examples" / "resnet50.res",
    "edges": ROOT / "benchmarks" / "specs" / "edges.res",  # edge shapes for the CUDA rule
}
TORCHVISION = {"resnet18", "resnet50"}
# (model, dtype, batch, variant). A variant is resdsl's default build ("") or one that differs
# from it in one BuildOptions field, for comparison in the same run (see VARIANTS).
CONFIGS = [
    ("resnet18", "float32", 1, ""),
    ("resnet18", "float16", 1, ""),
    ("resnet50", "float32", 1, ""),
    ("resnet50", "float16", 1, ""),
    ("resnet50", "float32", 32, ""),
    ("resnet50", "float16", 32, ""),
    *(("resnet50", "float16", b, v) for b in (1, 32) for v in ("tvm", "nchw")),
    ("edges", "float32", 3, ""),
    ("edges", "float16", 1, ""),
    ("edges", "float16", 3, ""),
]
VARIANTS: dict[str, dict[str, Any]] = {
    "": {},
    "tvm": {"schedules": "tvm"},  # TVM's default GPU pipeline (dlight), no CUDA graph
    "nchw": {"layout": "NCHW"},  # float16 convolutions in NCHW (the default is NHWC)
}
HOLE_MIN_BYTES = 1024  # smaller constants stay in the skeleton
FP32_ABS_TOL = 1e-3
FP16_REL_TOL = 1e-2
# Left out of the runtime-only TVM copy: the compiler (255 MB), its sources and headers,
# vendored third-party code, the web runtime, CMake files, bytecode caches.
TVM_EXCLUDE = {"lib/libtvm_compiler.so", "3rdparty", "src", "include", "web", "cmake"}
TVM_FFI_EXCLUDE = {"3rdparty", "include", "src", "cython"}


def log(*parts: Any) -> None:
    print(*parts, flush=True)


# =========================================================================== the weights


def seeded_weights(model: str, seed: int, spec: Path | None = None):
    """torchvision's ``model`` with weights drawn from ``seed``; returns (module, state).

    A model torchvision does not have is built from ``spec`` by resdsl's PyTorch backend
    and filled by the same rules.

    The values come from NumPy's PCG64 (``default_rng([seed, crc32(key)])``, one stream
    per state_dict key) through ``Generator.random`` and exact float64 arithmetic, so both
    machines derive the same bits whatever their torch version or CPU (torch's own
    initialisers take vectorised, CPU-dependent paths). The scales follow torchvision's
    initialisation: convolutions uniform with the std of kaiming_normal(fan_out), the
    classifier uniform(+-1/sqrt(fan_in)); batch norms are drawn away from the identity
    (weight and running_var in [0.5, 1.5), bias and running_mean in [-0.1, 0.1)) so that
    the compiler's batch-norm folding is exercised, except that the weight of the last one
    in each residual branch is in [0.2, 0.5): the logits stay O(1) (fp32's 1e-3 abs
    tolerance means something) and the activations far from fp16's range.
    """
    import torch
    import torchvision

    if model in TORCHVISION:
        module = getattr(torchvision.models, model)()
    else:
        import resdsl

        module = resdsl.load(spec or SPECS[model]).to_torch(seed=0)
    # The last batch norm of each residual branch (bn2 of a BasicBlock, bn3 of a Bottleneck):
    # drawn small (cf. torchvision's zero_init_residual), or the activations double with
    # every block (no batch statistics hold them back) and resnet50's logits reach ~1e3.
    branch_ends = set()
    for m in module.modules():
        norms = [c for n, c in m.named_children() if isinstance(c, torch.nn.BatchNorm2d)]
        if hasattr(m, "downsample") and norms:
            branch_ends.add(norms[-1])
    owner: dict[str, torch.nn.Module] = {}
    for prefix, m in module.named_modules():
        for name, _ in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]:
            owner[f"{prefix}.{name}" if prefix else name] = m
    state: dict[str, np.ndarray] = {}
    for key, tensor in module.state_dict().items():
        shape, leaf, m = tuple(tensor.shape), key.rsplit(".", 1)[-1], owner[key]
        if leaf == "num_batches_tracked":
            state[key] = np.zeros(shape, np.int64)
            continue
        u = np.random.default_rng([seed, zlib.crc32(key.encode())]).random(shape)
        if isinstance(m, torch.nn.BatchNorm2d) and leaf == "weight" and m in branch_ends:
            a = 0.2 + 0.3 * u
        elif isinstance(m, torch.nn.BatchNorm2d):
            a = 0.5 + u if leaf in ("weight", "running_var") else 0.2 * u - 0.1
        elif isinstance(m, torch.nn.Conv2d):
            fan_out = shape[0] * math.prod(shape[2:])
            a = (2.0 * u - 1.0) * math.sqrt(6.0 / fan_out)
        elif isinstance(m, torch.nn.Linear):
            a = (2.0 * u - 1.0) / math.sqrt(m.in_features)
        else:
            raise TypeError(f"no rule for {key} ({type(m).__name__})")
        state[key] = a.astype(np.float32)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return module.eval(), state


def source_sha256() -> str:
    """resdsl's code and grammar: artifacts compiled by other code are rebuilt."""
    h = hashlib.sha256()
    files = [*(ROOT / "resdsl").rglob("*.py"), *(ROOT / "resdsl").rglob("*.res"),
             *(ROOT / "grammars").glob("*.lark")]  # fmt: skip
    for f in sorted(files):
        h.update(f.relative_to(ROOT).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def state_sha256(state: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(np.ascontiguousarray(state[key]).tobytes())
    return h.hexdigest()


def seeded_input(batch: int, seed: int, shape: tuple[int, ...] = (3, 224, 224)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, *shape)).astype(np.float32)


def folded_weights(spec: Path, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The weights after resdsl's inference passes: what the lowering turns into constants."""
    import resdsl
    from resdsl.passes import run_inference_passes
    from resdsl.weights import resolve

    net = resdsl.load(spec)
    weights, _ = resolve(net.graph, state)
    _, folded = run_inference_passes(net.graph, weights)
    return folded


def constant_bytes(array: np.ndarray, transform: str, dtype: str) -> bytes:
    """A constant as the lowering writes it (``lower.Context.weight``/``const``)."""
    if transform == "T":
        array = array.T
    elif transform == "OHWI":  # a conv weight in an NHWC build
        array = array.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(array.astype(dtype)).tobytes()


# =========================================================================== skeletons
#
# A skeleton is model.so with the weight constants cut out (xz-compressed), plus a list of
# holes: (offset, length, state_dict key, transform). Filling each hole with
# constant_bytes(folded[key], transform, dtype) gives model.so back, byte for byte.


def punch(so: bytes, folded: dict[str, np.ndarray], dtype: str) -> list[dict[str, Any]]:
    holes: list[dict[str, Any]] = []
    taken: list[tuple[int, int]] = []
    cursor = 0
    for key, array in folded.items():
        transforms = {2: ("plain", "T"), 4: ("plain", "OHWI")}.get(array.ndim, ("plain",))
        for transform in transforms:
            blob = constant_bytes(array, transform, dtype)
            if len(blob) < HOLE_MIN_BYTES:
                break
            at = so.find(blob, cursor)  # constants are usually stored in order
            if at < 0:
                at = so.find(blob)
            if at < 0 or any(at < e and s < at + len(blob) for s, e in taken):
                continue
            holes.append({"offset": at, "length": len(blob), "key": key, "transform": transform})
            taken.append((at, at + len(blob)))
            cursor = at + len(blob)
            break
    return sorted(holes, key=lambda h: h["offset"])


def skeleton_of(so: bytes, holes: list[dict[str, Any]]) -> bytes:
    parts, pos = [], 0
    for h in holes:
        parts.append(so[pos : h["offset"]])
        pos = h["offset"] + h["length"]
    parts.append(so[pos:])
    return lzma.compress(b"".join(parts), preset=6)


def fill(skeleton: bytes, holes: list[dict[str, Any]], folded, dtype: str) -> bytes:
    data, out, read = lzma.decompress(skeleton), bytearray(), 0
    for h in holes:
        take = h["offset"] - len(out)
        out += data[read : read + take]
        read += take
        blob = constant_bytes(folded[h["key"]], h["transform"], dtype)
        if len(blob) != h["length"]:
            raise ValueError(f"hole {h['key']}: {len(blob)} bytes, expected {h['length']}")
        out += blob
    out += data[read:]
    return bytes(out)


# =========================================================================== prepare (here)


def _capture_executable():
    """Let compile_network hand us its executable (to read the CUDA source it exports)."""
    import resdsl.backends.tvm as backend

    captured: dict[str, Any] = {}
    original = backend.write_artifact

    def write_artifact(executable, meta, out_dir):
        captured["executable"] = executable
        return original(executable, meta, out_dir)

    backend.write_artifact = write_artifact
    return captured


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a parent package is missing
        return False


def find_cuda_path() -> str | None:
    """A CUDA toolkit with headers (what TVM's NVRTC path needs), or None."""
    candidates = [os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates += ["/usr/local/cuda", *sorted(map(str, Path("/usr/local").glob("cuda-*")))]
    for c in candidates:
        if not c:
            continue
        for inc in ("include", "targets/x86_64-linux/include"):
            if os.path.isfile(os.path.join(c, inc, "cuda_runtime.h")):
                return c
    return None


def nvrtc_check(source: str) -> dict[str, Any]:
    """Compile the artifact's kernels with NVRTC for ARCH, as the GPU side will on load."""
    if not _has_module("cuda.bindings"):
        return {"ok": None, "note": "cuda-bindings not installed here: NVRTC check skipped"}
    cuda_path = find_cuda_path()
    if cuda_path is None:
        return {"ok": None, "note": "no CUDA headers here: NVRTC check skipped"}
    os.environ["CUDA_PATH"] = cuda_path
    from tvm.support import nvcc

    start = time.perf_counter()
    try:
        # the GPU side compiles for the device's sm_90 as sm_90a (TVM adds the 'a' from sm_90 on)
        arch = ARCH + "a" if int(ARCH[3:]) >= 90 else ARCH
        cubin = nvcc.compile_cuda(source, target_format="cubin", arch=arch, compiler="nvrtc")
    except Exception as e:
        return {"ok": False, "note": f"NVRTC failed: {str(e)[:2000]}"}
    seconds = round(time.perf_counter() - start, 2)
    return {"ok": True, "arch": arch, "seconds": seconds, "cubin_bytes": len(cubin)}


def _tree_size(path: Path) -> int:
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


def _ffi_core_for(version: str) -> Path:
    """tvm_ffi's compiled core for CPython ``version`` (downloaded once into build/)."""
    import tvm_ffi

    tag = version.replace(".", "")
    local = Path(tvm_ffi.__file__).parent
    mine = list(local.glob(f"core.cpython-{tag}-*.so"))
    if mine:
        return mine[0]
    from importlib.metadata import version as dist_version

    pinned = dist_version("apache-tvm-ffi")
    wheels = CACHE / f"wheels-cp{tag}"
    found = list(wheels.glob(f"apache_tvm_ffi-{pinned}-cp{tag}-*.whl"))
    if not found:
        log(f"downloading apache-tvm-ffi=={pinned} for CPython {version} (its compiled core)")
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--python-version", version, "--implementation", "cp",
            "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_24_x86_64",
            "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
            "-d", str(wheels), f"apache-tvm-ffi=={pinned}",
        ]  # fmt: skip
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        found = list(wheels.glob(f"apache_tvm_ffi-{pinned}-cp{tag}-*.whl"))
    import zipfile

    with zipfile.ZipFile(found[0]) as z:
        (name,) = [n for n in z.namelist() if n.startswith(f"tvm_ffi/core.cpython-{tag}-")]
        out = wheels / Path(name).name
        out.write_bytes(z.read(name))
    return out


def assemble_pylib(pylib: Path, device_python: str) -> None:
    """TVM's runtime (no compiler), tvm_ffi (cores for here and the device), Lark, resdsl."""
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
        core = _ffi_core_for(version)
        shutil.copy2(core, pylib / "tvm_ffi" / core.name)
    _copy_package(Path(lark.__file__).parent, pylib / "lark", set())
    # resdsl whole (the GPU side re-derives the weights with its inference passes), with the
    # grammar where the installed package has it (resdsl.grammars).
    _copy_package(Path(resdsl.__file__).parent, pylib / "resdsl", set())
    _copy_package(ROOT / "grammars", pylib / "resdsl" / "grammars", set())
    assert not (pylib / "tvm" / "lib" / "libtvm_compiler.so").exists()


def artifact_name(model: str, dtype: str, batch: int, variant: str = "") -> str:
    return f"{model}-{dtype}-b{batch}" + (f"-{variant}" if variant else "")


def compile_one(model, dtype, batch, variant, target, module, state, out_dir, seed) -> dict:
    """Compile, NVRTC-check, punch; writes out_dir/{model.json,model.so.xz,holes.json}."""
    import resdsl
    from resdsl.backends.tvm import BuildOptions, compile_network, cuda_source

    name = out_dir.name
    spec = SPECS[model]
    net = resdsl.load(spec)
    captured = _capture_executable()
    options = BuildOptions(target=target, arch=ARCH if target == "cuda" else None, dtype=dtype,
                           batch=batch, **VARIANTS[variant])  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        compile_network(net, tmp, options, weights=module)
        compile_s = time.perf_counter() - start
        so = Path(tmp, "model.so").read_bytes()
        meta_text = Path(tmp, "model.json").read_text()
    entry: dict[str, Any] = {
        "name": name, "model": model, "dtype": dtype, "batch": batch, "variant": variant,
        "target": target,
        "arch": options.arch, "seed": seed, "compile_s": round(compile_s, 1),
        "so_bytes": len(so), "so_sha256": hashlib.sha256(so).hexdigest(),
    }  # fmt: skip
    if target == "cuda":
        source = cuda_source(captured["executable"]) if "executable" in captured else None
        entry["kernels"] = source.count("__global__") if source else None
        entry["nvrtc"] = (
            nvrtc_check(source) if source else {"ok": None, "note": "no CUDA source found"}
        )
    folded = folded_weights(spec, state)
    holes = punch(so, folded, dtype)
    skeleton = skeleton_of(so, holes)
    rebuilt = fill(skeleton, holes, folded, dtype)
    if hashlib.sha256(rebuilt).hexdigest() != entry["so_sha256"]:
        raise RuntimeError(f"{name}: the skeleton does not rebuild model.so")
    entry["holes"] = len(holes)
    entry["hole_bytes"] = sum(h["length"] for h in holes)
    entry["skeleton_bytes"] = len(skeleton)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    (out_dir / "model.json").write_text(meta_text)
    (out_dir / "model.so.xz").write_bytes(skeleton)
    (out_dir / "holes.json").write_text(json.dumps(holes) + "\n")
    (out_dir / "entry.json").write_text(json.dumps(entry, indent=1) + "\n")
    return entry


def build_set(where: Path, configs, target: str, seed: int, force: bool) -> dict[str, Any]:
    """Compile ``configs`` into ``where/artifacts`` and write ``where/manifest.json``."""
    import tvm

    import resdsl

    source = source_sha256()
    specs = where / "specs"
    specs.mkdir(parents=True, exist_ok=True)
    for name in {c[0] for c in configs}:
        shutil.copy2(SPECS[name], specs / f"{name}.res")
    old = {}
    if (where / "manifest.json").is_file() and not force:
        old = {a["name"]: a for a in json.loads((where / "manifest.json").read_text())["artifacts"]}
    models: dict[str, Any] = {}
    artifacts = []
    cache: dict[str, Any] = {}
    for model, dtype, batch, variant in configs:
        if model not in cache:
            cache[model] = seeded_weights(model, seed)
            module, state = cache[model]
            net = resdsl.load(specs / f"{model}.res")
            models[model] = {
                "spec": f"specs/{model}.res",
                "input_shape": list(net.graph.info(net.graph.inputs[0]).shape),
                "spec_sha256": net.spec_hash,
                "state_sha256": state_sha256(state),
                "params": net.num_params,
                "macs": net.macs,
            }
        module, state = cache[model]
        name = artifact_name(model, dtype, batch, variant) + (
            "" if target == "cuda" else f"-{target}"
        )
        out_dir = where / "artifacts" / name
        prev = old.get(name)
        if (
            prev
            and prev.get("state_sha256") == models[model]["state_sha256"]
            and prev.get("spec_sha256") == models[model]["spec_sha256"]
            and prev.get("source_sha256") == source
            and prev.get("tvm_version") == tvm.__version__
            and (out_dir / "model.so.xz").is_file()
        ):
            log(f"  {name}: up to date (use --force to rebuild)")
            artifacts.append(prev)
            continue
        log(f"  {name}: compiling ...")
        entry = compile_one(model, dtype, batch, variant, target, module, state, out_dir, seed)
        entry.update(
            state_sha256=models[model]["state_sha256"],
            spec_sha256=models[model]["spec_sha256"],
            resdsl_version=resdsl.__version__,
            source_sha256=source,
            tvm_version=tvm.__version__,
        )
        nv = entry.get("nvrtc", {})
        log(
            f"  {name}: compiled in {entry['compile_s']} s, model.so {entry['so_bytes'] / 1e6:.1f}"
            f" MB, {entry['holes']} constants punched out ({entry['hole_bytes'] / 1e6:.1f} MB), "
            f"skeleton {entry['skeleton_bytes'] / 1e6:.2f} MB"
            + (f"; {entry['kernels']} kernels" if "kernels" in entry else "")
            + (f"; NVRTC {nv['arch']}: ok in {nv['seconds']} s" if nv.get("ok") else "")
            + (f"; NVRTC: {nv['note']}" if nv and not nv.get("ok") else "")
        )
        if nv and nv.get("ok") is False:
            raise RuntimeError(f"{name}: {nv['note']}")
        artifacts.append(entry)
    manifest = {
        "format": FORMAT, "seed": seed, "arch": ARCH, "tvm_version": tvm.__version__,
        "resdsl_version": resdsl.__version__, "models": models, "artifacts": artifacts,
        "tolerances": {"float32_abs": FP32_ABS_TOL, "float16_rel": FP16_REL_TOL},
    }  # fmt: skip
    (where / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def prepare(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    log(f"== assembling the runtime-only copy in {BUNDLE / 'pylib'}")
    assemble_pylib(BUNDLE / "pylib", args.device_python)
    log(f"   {_tree_size(BUNDLE / 'pylib') / 2**20:.1f} MiB")
    log(f"== compiling {len(CONFIGS)} CUDA artifacts for {ARCH} into {BUNDLE / 'artifacts'}")
    configs = [c for c in CONFIGS if not args.only or artifact_name(*c) in args.only]
    build_set(BUNDLE, configs, "cuda", args.seed, args.force)

    log("== self-test: the carried copy runs llvm artifacts (device code, CPU, subprocess)")
    selftest = [("resnet18", "float32", 1, ""), ("edges", "float32", 3, "")]
    build_set(SELFTEST, selftest, "llvm", args.seed, args.force)
    env = device_env()
    cmd = [sys.executable, __file__, "device", "--artifacts", str(SELFTEST),
           "--out", str(SELFTEST / "out"), "--repeats", "3", "--no-compile"]  # fmt: skip
    rc = subprocess.run(cmd, env=env).returncode
    if rc != 0:
        log(f"FAILED: the self-test exited {rc}")
        return 1

    log("== dry run of the GPU step on the carried artifacts (no GPU here: must stop cleanly)")
    cmd = [sys.executable, __file__, "device", "--artifacts", str(BUNDLE),
           "--out", str(SELFTEST / "dry-run")]  # fmt: skip
    rc = subprocess.run(cmd, env=env).returncode
    if rc != EXIT_NO_GPU:
        log(f"FAILED: the dry run exited {rc}, expected {EXIT_NO_GPU} (no GPU)")
        return 1

    size = _tree_size(BUNDLE)
    tree = _working_tree_size()
    log(
        f"\n== ready: {BUNDLE.relative_to(ROOT)} is {size / 2**20:.1f} MiB "
        f"(pylib {_tree_size(BUNDLE / 'pylib') / 2**20:.1f} MiB, artifacts "
        f"{_tree_size(BUNDLE / 'artifacts') / 2**20:.1f} MiB); with the working tree "
        f"({tree / 2**20:.1f} MiB) {(size + tree) / 2**20:.1f} MiB of the 64 MiB that travel"
        f" ({time.perf_counter() - start:.0f} s)"
    )
    if size + tree > CARRY_LIMIT:
        log("FAILED: over the 64 MiB limit")
        return 1
    return 0


def _working_tree_size() -> int:
    """Tracked and untracked-but-not-ignored files: what travels besides the carry."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return 0
    names = [n for n in out.decode().split("\0") if n]
    return sum((ROOT / n).stat().st_size for n in names if (ROOT / n).is_file())


def device_env() -> dict[str, str]:
    """The environment the GPU step runs in (gpu_check.sh sets the same)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(BUNDLE / "pylib")
    env["TVM_USE_RUNTIME_LIB"] = "1"
    env["TVM_FFI_DISABLE_TORCH_C_DLPACK"] = "1"  # else tvm_ffi JIT-builds a torch extension
    env["PYTHONUNBUFFERED"] = "1"
    return env


# =========================================================================== device (there)

EXIT_FAIL, EXIT_NO_GPU, EXIT_ENV = 1, 2, 3


class Report:
    """Results, written (JSON and text) after every step so a killed run leaves them."""

    def __init__(self, out: Path) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.data: dict[str, Any] = {"env": {}, "artifacts": {}, "torch": {}, "problems": []}
        self.lines: list[str] = []

    def say(self, line: str = "") -> None:
        log(line)
        self.lines.append(line)
        self.flush()

    def problem(self, text: str) -> None:
        self.data["problems"].append(text)
        self.say(f"PROBLEM: {text}")

    def flush(self) -> None:
        (self.out / "gpu_results.json").write_text(json.dumps(self.data, indent=1) + "\n")
        (self.out / "gpu_results.txt").write_text("\n".join(self.lines) + "\n")


def _median_time(fn, sync, repeats: int, budget_s: float) -> tuple[float, int]:
    """Warm up (3 calls, or 1 s), then time each call with a sync; (median s, repeats)."""
    start = time.perf_counter()
    for _ in range(3):
        fn()
        sync()
        if time.perf_counter() - start > 1.0:
            break
    times: list[float] = []
    spent = 0.0
    while len(times) < repeats and (spent < budget_s or len(times) < min(5, repeats)):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
        spent += times[-1]
    return statistics.median(times), len(times)


def _environment(report: Report, want_cuda: bool) -> dict[str, Any]:
    """Versions, the GPU, NVRTC, the CUDA headers; None values are problems."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "numpy": np.__version__,
    }
    import torch
    import torchvision

    env["torch"] = torch.__version__
    env["torchvision"] = torchvision.__version__
    env["cuda_available"] = torch.cuda.is_available()
    if env["cuda_available"]:
        env["gpu"] = torch.cuda.get_device_name(0)
        env["capability"] = "sm_{}{}".format(*torch.cuda.get_device_capability(0))
    if want_cuda:
        try:
            from cuda.bindings import nvrtc

            _, major, minor = nvrtc.nvrtcVersion()
            env["nvrtc"] = f"{major}.{minor}"
        except Exception as e:  # ImportError, or a missing libnvrtc
            env["nvrtc"] = None
            env["nvrtc_error"] = f"{type(e).__name__}: {e}"
        env["cuda_path"] = find_cuda_path()
        env["nvcc"] = shutil.which("nvcc")
    report.data["env"] = env
    return env


def _import_runtime(report: Report, bundle_pylib: Path | None, want_cuda: bool):
    """Import the carried TVM runtime and resdsl; load TVM's CUDA runtime library."""
    # resdsl.runtime uses tvm.runtime.vm, which only `import tvm.relax` imports, and a
    # runtime-only TVM skips relax: import it here.
    import tvm
    import tvm.runtime.vm
    import tvm_ffi

    import resdsl
    import resdsl.runtime

    where = {
        "tvm": tvm.__file__, "tvm_ffi": tvm_ffi.__file__, "resdsl": resdsl.__file__,
        "runtime_only": bool(tvm.base._RUNTIME_ONLY), "tvm_version": tvm.__version__,
    }  # fmt: skip
    report.data["env"]["imported"] = where
    report.say(f"tvm {tvm.__version__} from {Path(tvm.__file__).parent} "
               f"(runtime only: {where['runtime_only']}); resdsl from "
               f"{Path(resdsl.__file__).parent}")  # fmt: skip
    if bundle_pylib is not None:
        for mod in ("tvm", "tvm_ffi", "resdsl"):
            if not Path(where[mod]).resolve().is_relative_to(bundle_pylib.resolve()):
                report.problem(f"{mod} was imported from {where[mod]}, not the carried copy")
    if want_cuda:
        # resdsl.runtime loads TVM's CUDA runtime library for a runtime-only TVM; the
        # libcudart it links comes from torch (imported first), else from NVIDIA's wheels.
        try:
            resdsl.runtime._cuda_runtime(tvm)
        except resdsl.runtime.ArtifactError as first:
            try:
                _preload_cudart()
                resdsl.runtime._cuda_runtime(tvm)
            except (OSError, resdsl.runtime.ArtifactError) as e:
                report.problem(f"{first}; after preloading libcudart: {e}")
    return tvm, resdsl.runtime


def _preload_cudart() -> None:
    import ctypes

    try:
        import nvidia  # the namespace package of NVIDIA's CUDA wheels
    except ImportError as e:
        raise OSError("no NVIDIA CUDA wheels installed") from e

    for base in nvidia.__path__:
        for lib in sorted(Path(base).glob("*/lib/libcudart.so.*")):
            ctypes.CDLL(str(lib), ctypes.RTLD_GLOBAL)
            return
    raise OSError("no libcudart.so in the nvidia wheels")


def device(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    where = Path(args.artifacts)
    manifest = json.loads((where / "manifest.json").read_text())
    report = Report(Path(args.out))
    want_cuda = any(a["target"] == "cuda" for a in manifest["artifacts"])
    os.environ.setdefault("TVM_FFI_DISABLE_TORCH_C_DLPACK", "1")

    import torch  # before tvm: it loads libcudart, which TVM's CUDA library links

    env = _environment(report, want_cuda)
    report.say(
        f"python {env['python']} | torch {env['torch']} | torchvision {env['torchvision']} | "
        f"numpy {env['numpy']} | GPU: {env.get('gpu', 'none')} {env.get('capability', '')}"
    )
    has_gpu = env["cuda_available"]
    if want_cuda:
        report.say(
            f"NVRTC (cuda-bindings): {env['nvrtc'] or 'MISSING'} | CUDA headers: "
            f"{env['cuda_path'] or 'MISSING'} | nvcc: {env['nvcc'] or 'none'}"
        )
        if env["nvrtc"] is None:
            if env["nvcc"] and env["cuda_path"]:
                os.environ["TVM_CUDA_COMPILE_MODE"] = "nvcc"
                report.say(
                    "NOTE: cuda-bindings (NVRTC) is missing: TVM compiles the artifacts' CUDA "
                    "kernels with nvcc instead (TVM_CUDA_COMPILE_MODE=nvcc)"
                )
            else:
                report.problem(
                    "TVM 0.27 compiles an artifact's CUDA kernels when it is loaded, with NVRTC "
                    "from the `cuda-bindings` package (PyTorch's CUDA wheels bring it) or with "
                    "nvcc; neither is here. Install cuda-bindings matching the driver's CUDA "
                    f"({env.get('nvrtc_error', '')})"
                )
        if env["cuda_path"] is None:
            report.problem(
                "no CUDA toolkit headers (include/cuda_runtime.h) found: NVRTC needs them; "
                "set CUDA_PATH"
            )
        else:
            os.environ["CUDA_PATH"] = env["cuda_path"]
    pylib = os.environ.get("PYTHONPATH", "").split(os.pathsep)[0]
    tvm, runtime = _import_runtime(report, Path(pylib) if pylib else None, want_cuda and has_gpu)

    # The weights: re-derived from the seed, checked against what prepare compiled.
    seed = manifest["seed"]
    models: dict[str, Any] = {}
    for name, info in manifest["models"].items():
        start = time.perf_counter()
        module, state = seeded_weights(name, seed, where / info["spec"])
        sha = state_sha256(state)
        if sha != info["state_sha256"]:
            report.problem(
                f"{name}: the weights re-derived from seed {seed} differ from prepare's "
                f"(sha256 {sha[:12]} vs {info['state_sha256'][:12]}): NumPy draws differently here"
            )
            continue
        folded = folded_weights(where / info["spec"], state)
        models[name] = {"module": module, "folded": folded, "macs": info["macs"],
                        "input_shape": tuple(info.get("input_shape", (3, 224, 224)))}  # fmt: skip
        report.say(f"{name}: weights re-derived and checked in {time.perf_counter() - start:.1f} s")

    # Rebuild every artifact's model.so and check it byte for byte.
    built = Path(tempfile.mkdtemp(prefix="resdsl-gpu-"))
    ready = []
    selected = [
        a for a in manifest["artifacts"] if not args.only or any(w in a["name"] for w in args.only)
    ]
    for a in manifest["artifacts"]:
        if a["model"] not in models:
            continue
        if a not in selected:
            continue
        src, dst = where / "artifacts" / a["name"], built / a["name"]
        dst.mkdir(parents=True)
        holes = json.loads((src / "holes.json").read_text())
        so = fill((src / "model.so.xz").read_bytes(), holes, models[a["model"]]["folded"],
                  a["dtype"])  # fmt: skip
        if hashlib.sha256(so).hexdigest() != a["so_sha256"]:
            report.problem(f"{a['name']}: rebuilt model.so differs from the compiled one")
            continue
        (dst / "model.so").write_bytes(so)
        shutil.copy2(src / "model.json", dst / "model.json")
        ready.append((a, dst))
    report.say(f"{len(ready)} of {len(selected)} artifacts rebuilt byte for byte "
               f"({time.perf_counter() - t0:.0f} s so far)")  # fmt: skip

    if want_cuda and not has_gpu:
        report.say("no CUDA GPU here (torch.cuda.is_available() is False): dry run ends before "
                   "the GPU checks")  # fmt: skip
        return EXIT_NO_GPU
    if report.data["problems"]:
        report.say("stopping: fix the problems above first")
        return EXIT_ENV

    dev = "cuda" if want_cuda else "cpu"
    if dev == "cuda":
        torch.backends.cudnn.allow_tf32 = False  # strict fp32 for the reference
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True

    def sync() -> None:
        if dev == "cuda":
            torch.cuda.synchronize()

    budget = args.budget
    inputs: dict[tuple[str, int], np.ndarray] = {}
    refs: dict[tuple[str, int], np.ndarray] = {}
    torch_modules: dict[tuple[str, str], Any] = {}
    timings: dict[str, dict[str, Any]] = report.data["torch"]
    for a, _ in ready:
        shape = models[a["model"]]["input_shape"]
        inputs.setdefault((a["model"], a["batch"]), seeded_input(a["batch"], seed, shape))

    # PyTorch eager: the fp32 reference and fp32/fp16 timings.
    report.say("\n-- PyTorch eager")
    for name in models:
        for dtype in ("float32", "float16") if dev == "cuda" else ("float32",):
            m = models[name]["module"]
            m = m.to(dev) if dtype == "float32" else _copy_module(m).to(dev).half()
            torch_modules[(name, dtype)] = m
        for batch in sorted({a["batch"] for a, _ in ready if a["model"] == name}):
            x32 = torch.from_numpy(inputs[(name, batch)]).to(dev)
            for dtype in ("float32", "float16") if dev == "cuda" else ("float32",):
                m = torch_modules[(name, dtype)]
                x = x32 if dtype == "float32" else x32.half()
                with torch.inference_mode():
                    out = m(x).float().cpu().numpy()
                    if dtype == "float32":
                        refs[(name, batch)] = out
                    diff = float(np.abs(out - refs[(name, batch)]).max())
                    med, n = _median_time(lambda m=m, x=x: m(x), sync, args.repeats, budget)
                key = f"{name}-{dtype}-b{batch}"
                gfl = 2 * models[name]["macs"] * batch / med / 1e9
                timings.setdefault(key, {})["eager_ms"] = med * 1e3
                timings[key]["eager_max_abs_diff_vs_fp32"] = diff
                report.say(f"{key:<24} eager {med * 1e3:8.3f} ms (n={n}, {gfl:8.1f} GFLOP/s)"
                           f"  max|diff| vs fp32 ref {diff:.2e}")  # fmt: skip

    # resdsl artifacts: load (compiles the kernels), parity, timing.
    report.say("\n-- resdsl artifacts (resdsl.runtime)")
    failed = []
    for a, path in ready:
        key = a["name"]
        res: dict[str, Any] = {"compile_here_s": a["compile_s"]}
        report.data["artifacts"][key] = res
        start = time.perf_counter()
        try:
            model = runtime.load(path)
        except Exception as e:
            res["error"] = f"load: {e}"
            report.problem(f"{key}: cannot load: {_first_lines(e)}")
            failed.append(key)
            continue
        res["load_s"] = time.perf_counter() - start
        x = inputs[(a["model"], a["batch"])]
        start = time.perf_counter()
        try:
            out = model(x)
        except Exception as e:
            res["error"] = f"run: {e}"
            report.problem(f"{key}: first run failed: {_first_lines(e)}")
            failed.append(key)
            continue
        res["first_run_s"] = time.perf_counter() - start
        ref = refs[(a["model"], a["batch"])]
        diff = float(np.abs(out.astype(np.float32) - ref).max())
        scale = float(np.abs(ref).max())
        if a["dtype"] == "float32":
            tol, rule = FP32_ABS_TOL, f"abs <= {FP32_ABS_TOL:g}"
        else:
            tol = FP16_REL_TOL * scale
            rule = f"<= {FP16_REL_TOL:g} * max|ref| = {tol:.3g}"
        ok = bool(np.isfinite(out).all()) and diff <= tol
        res.update(max_abs_diff=diff, ref_max_abs=scale, tolerance=tol, ok=ok)
        if not ok:
            failed.append(key)
        # Timing: the numpy call (copies in and out) and the VM on device-resident tensors.
        med_np, _ = _median_time(lambda m=model, x=x: m(x), sync, args.repeats, budget)
        tdev = model.device
        xt = tvm.runtime.tensor(np.ascontiguousarray(x.astype(a["dtype"])), tdev)
        main = model._main  # the VM's "main"; resdsl.runtime keeps it there
        med, n = _median_time(lambda f=main, t=xt: f(t), tdev.sync, args.repeats, budget)
        gfl = 2 * models[a["model"]]["macs"] * a["batch"] / med / 1e9
        eager = timings.get(artifact_name(a["model"], a["dtype"], a["batch"]), {}).get("eager_ms")
        res.update(ms=med * 1e3, numpy_call_ms=med_np * 1e3, repeats=n, gflops=gfl,
                   eager_ms=eager)  # fmt: skip
        report.say(
            f"{key:<24} load {res['load_s']:5.1f} s | parity {'PASS' if ok else 'FAIL'}: "
            f"max|diff| {diff:.2e} ({rule}) | {med * 1e3:8.3f} ms on device "
            f"(n={n}, {gfl:8.1f} GFLOP/s), {med_np * 1e3:8.3f} ms numpy in/out"
            + (f" | eager {eager:.3f} ms" if eager else "")
        )

    # torch.compile, while time is left (the slowest part: each shape compiles anew).
    report.say(f"\n-- torch.compile (default mode), while under {args.deadline:.0f} s")
    for name in models if not args.no_compile else []:
        for batch in sorted({a["batch"] for a, _ in ready if a["model"] == name}):
            for dtype in ("float16", "float32") if dev == "cuda" else ("float32",):
                key = f"{name}-{dtype}-b{batch}"
                if not any(a["name"].startswith(key) for a, _ in ready):
                    continue
                if time.perf_counter() - t0 > args.deadline - args.compile_allowance:
                    report.say(f"{key:<24} torch.compile skipped: time budget")
                    continue
                m = torch_modules[(name, dtype)]
                x = torch.from_numpy(inputs[(name, batch)]).to(dev)
                x = x.half() if dtype == "float16" else x
                try:
                    compiled = torch.compile(m)
                    start = time.perf_counter()
                    with torch.inference_mode():
                        out = compiled(x).float().cpu().numpy()
                        compile_s = time.perf_counter() - start
                        med, n = _median_time(lambda c=compiled, x=x: c(x), sync, args.repeats,
                                              budget)  # fmt: skip
                except Exception as e:
                    report.say(f"{key:<24} torch.compile failed: {type(e).__name__}: "
                               f"{str(e)[:300]}")  # fmt: skip
                    continue
                diff = float(np.abs(out - refs[(name, batch)]).max())
                gfl = 2 * models[name]["macs"] * batch / med / 1e9
                timings.setdefault(key, {}).update(compile_ms=med * 1e3, compile_s=compile_s)
                report.say(f"{key:<24} torch.compile {med * 1e3:8.3f} ms (n={n}, {gfl:8.1f} "
                           f"GFLOP/s; compiled in {compile_s:.0f} s) max|diff| vs fp32 ref "
                           f"{diff:.2e}")  # fmt: skip

    _summary(report, ready, timings)
    report.say(f"\n{len(ready) - len(failed)} of {len(selected)} artifacts passed"
               f"{': FAILED ' + ', '.join(failed) if failed else ''} "
               f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    return EXIT_FAIL if failed or len(ready) < len(selected) else 0


def _first_lines(error: Exception, lines: int = 4) -> str:
    """An error's message without the kernel source TVM appends to a CUDA launch error."""
    text = str(error).split("// CUDA Source")[0].strip()
    return "\n".join(text.splitlines()[:lines])[:1000]


def _copy_module(m):
    import copy

    return copy.deepcopy(m)


def _summary(report: Report, ready, timings) -> None:
    header = (
        f"{'artifact':<24} {'parity':>6} {'resdsl ms':>10} {'eager ms':>9} {'compile ms':>10} "
        f"{'resdsl/eager':>12} {'resdsl/compile':>14}"
    )
    report.say("\n" + header)
    report.say("-" * len(header))
    for a, _ in ready:
        r = report.data["artifacts"].get(a["name"], {})
        t = timings.get(artifact_name(a["model"], a["dtype"], a["batch"]), {})
        ms, eager, comp = r.get("ms"), t.get("eager_ms"), t.get("compile_ms")

        def f(v, spec=".3f"):
            return "-" if v is None else format(v, spec)

        parity = "-" if "ok" not in r else ("PASS" if r["ok"] else "FAIL")
        report.say(
            f"{a['name']:<24} {parity:>6} {f(ms):>10} {f(eager):>9} {f(comp):>10} "
            f"{f(ms / eager if ms and eager else None, '.2f'):>11}x "
            f"{f(ms / comp if ms and comp else None, '.2f'):>13}x"
        )


# =========================================================================== command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="here: compile, punch, assemble, self-test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="recompile up-to-date artifacts")
    p.add_argument("--only", nargs="+", metavar="NAME", help="e.g. resnet18-float32-b1")
    p.add_argument(
        "--device-python",
        default=DEVICE_PYTHON,
        help=f"CPython version on the GPU machine (default {DEVICE_PYTHON})",
    )
    d = sub.add_parser("device", help="there: rebuild, load, check and time the artifacts")
    d.add_argument("--artifacts", default=str(BUNDLE), help="folder with manifest.json")
    d.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "build" / "gpu-results"))
    d.add_argument("--repeats", type=int, default=100, help="most timed repeats (default 100)")
    d.add_argument("--budget", type=float, default=2.0, help="seconds per timing (default 2)")
    d.add_argument(
        "--deadline",
        type=float,
        default=330.0,
        help="start no torch.compile after this many seconds, less the allowance",
    )
    d.add_argument("--compile-allowance", type=float, default=90.0,
                   help="seconds one torch.compile may take (default 90)")  # fmt: skip
    d.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    d.add_argument("--only", nargs="+", metavar="TEXT",
                   help="run only the artifacts whose names contain one of these")  # fmt: skip
    args = parser.parse_args(argv)
    return prepare(args) if args.command == "prepare" else device(args)


if __name__ == "__main__":
    sys.exit(main())
