"""``prepare`` (the build machine): assemble the bundle, compile, self-test, dry-run."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from .build import build_set
from .bundle import assemble_pylib, tree_size, working_tree_size
from .environment import device_env
from .settings import (
    CONFIGS,
    EXIT_NO_GPU,
    EXTRA_CONFIGS,
    PACKAGE,
    ROOT,
    SELFTEST_CONFIGS,
    SPARE_PYTHONS,
    artifact_name,
    log,
)

MIB = 2**20


def prepare(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    bundle, selftest = Path(args.bundle).resolve(), Path(args.selftest).resolve()
    every = [*CONFIGS, *(EXTRA_CONFIGS if args.extra else [])]
    configs = [c for c in every if not args.only or artifact_name(*c) in args.only]
    unknown = sorted(set(args.only or ()) - {artifact_name(*c) for c in every})
    if unknown:
        log(f"error: --only {' '.join(unknown)}: not among the configurations "
            f"({', '.join(artifact_name(*c) for c in every)})")  # fmt: skip
        return 2
    log(f"== assembling the runtime-only copy in {bundle / 'pylib'}")
    assemble_pylib(bundle / "pylib", args.device_python, Path(args.cache), args.device_machine,
                   SPARE_PYTHONS)  # fmt: skip
    log(f"   {tree_size(bundle / 'pylib') / MIB:.1f} MiB")
    log(f"== compiling {len(configs)} CUDA artifacts for {args.arch} into {bundle / 'artifacts'}")
    manifest = build_set(bundle, configs, "cuda", args.seed, args.force, args.arch, keep=every)

    log("== self-test: the carried copy runs llvm artifacts (device code, CPU, subprocess)")
    build_set(selftest, SELFTEST_CONFIGS, "llvm", args.seed, args.force, args.arch)
    env = device_env(bundle)
    cmd = [sys.executable, str(PACKAGE), "device", "--artifacts", str(selftest),
           "--out", str(selftest / "out"), "--repeats", "3", "--no-compile"]  # fmt: skip
    rc = subprocess.run(cmd, env=env).returncode
    if rc != 0:
        log(f"FAILED: the self-test exited {rc}")
        return 1

    log("== dry run of the GPU step on the carried artifacts (no GPU here: must stop cleanly)")
    cmd = [sys.executable, str(PACKAGE), "device", "--artifacts", str(bundle),
           "--out", str(selftest / "dry-run")]  # fmt: skip
    rc = subprocess.run(cmd, env=env).returncode
    if rc != EXIT_NO_GPU:
        log(f"FAILED: the dry run exited {rc}, expected {EXIT_NO_GPU} (no GPU)")
        return 1
    rc = _check_size(bundle, args.carry_limit_mib, start)
    if manifest["failed"]:
        log("FAILED to compile (resdsl errors; the run reports them as rows): "
            + "; ".join(f"{f['name']}: {f['error']}" for f in manifest["failed"]))  # fmt: skip
        return 1
    return rc


def _check_size(bundle: Path, limit_mib: float, start: float) -> int:
    """What travels (the bundle and the working tree) against the carry limit (0: none)."""
    size, tree = tree_size(bundle), working_tree_size()
    shown = bundle.relative_to(ROOT) if bundle.is_relative_to(ROOT) else bundle
    limit = f" of the {limit_mib:g} MiB that travel" if limit_mib else ""
    log(
        f"\n== ready: {shown} is {size / MIB:.1f} MiB "
        f"(pylib {tree_size(bundle / 'pylib') / MIB:.1f} MiB, artifacts "
        f"{tree_size(bundle / 'artifacts') / MIB:.1f} MiB); with the working tree "
        f"({tree / MIB:.1f} MiB) {(size + tree) / MIB:.1f} MiB{limit}"
        f" ({time.perf_counter() - start:.0f} s)"
    )
    if limit_mib and size + tree > limit_mib * MIB:
        log(f"FAILED: over the {limit_mib:g} MiB limit")
        return 1
    return 0
