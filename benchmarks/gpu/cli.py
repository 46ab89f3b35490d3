"""The command line: ``prepare`` (the build machine) and ``device`` (the GPU machine)."""

from __future__ import annotations

import argparse
import os

from . import __doc__ as package_doc
from .settings import (
    ARCH,
    BUNDLE,
    CACHE,
    CARRY_LIMIT_MIB,
    COMPILE_ALLOWANCE,
    COMPILE_MODES,
    DEADLINE,
    DEFAULT_COMPILE_MODES,
    DEVICE_MACHINE,
    DEVICE_PYTHON,
    DRY_RUN_STEPS,
    ROOT,
    SELFTEST,
    SPARE_PYTHONS,
    TIMEOUT,
)


def main(argv: list[str] | None = None) -> int:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["nvrtc-worker"]:  # internal: kernels.precompile's workers
        from .kernels import worker

        return worker(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "peers-check":
        from .peers_check import peers_check

        return peers_check(args)
    if args.command == "dry-run":
        from .dryrun import dry_run

        return dry_run(args)
    if args.command == "compile-peer":
        from .device import compile_child

        return compile_child(args)
    if args.command == "prepare":
        from .prepare import prepare

        return prepare(args)
    from .device import device

    return device(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/gpu", description=package_doc.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _prepare_options(sub.add_parser("prepare", help="here: compile, punch, assemble, self-test"))
    _device_options(
        sub.add_parser("device", help="there: rebuild, load, check and time the artifacts")
    )
    dry = sub.add_parser(
        "dry-run",
        help="here, no GPU: check the options, the configurations, the seeded references, "
        "the bundle, the peer code and the report; exit 0 when all is in order",
    )
    _device_options(dry)
    dry.add_argument(
        "--timeout", type=float, default=float(os.environ.get("GPU_CHECK_TIMEOUT") or TIMEOUT),
        help=f"gpu_check.sh's GPU_CHECK_TIMEOUT the run would get (default {TIMEOUT:g})",
    )  # fmt: skip
    dry.add_argument("--carry-limit-mib", type=float, default=CARRY_LIMIT_MIB)
    dry.add_argument("--skip", nargs="+", default=[], choices=DRY_RUN_STEPS, metavar="STEP",
                     help=f"leave out steps ({', '.join(DRY_RUN_STEPS)})")  # fmt: skip
    peers = sub.add_parser(
        "peers-check", help="here: run the PyTorch-peer code on the CPU on a tiny network"
    )
    peers.add_argument("--out", help="results folder (default: a new temporary one)")
    peers.add_argument(
        "--compile-modes", nargs="+", choices=COMPILE_MODES, default=list(DEFAULT_COMPILE_MODES),
        metavar="MODE", help=f"torch.compile modes (default: {' '.join(DEFAULT_COMPILE_MODES)})",
    )  # fmt: skip
    child = sub.add_parser("compile-peer", help="(internal) one torch.compile peer")
    for name in ("--model", "--spec", "--dtype", "--mode", "--shape", "--device", "--work"):
        child.add_argument(name, required=name != "--spec")
    child.add_argument("--batch", type=int, required=True)
    child.add_argument("--seed", type=int, default=0)
    child.add_argument("--repeats", type=int, default=100)
    child.add_argument("--budget", type=float, default=1.0)
    child.add_argument("--tf32", action="store_true")
    return parser


def _prepare_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="recompile up-to-date artifacts")
    p.add_argument("--only", nargs="+", metavar="NAME", help="e.g. resnet50-float16-b1 "
                   "(adds to the bundle: the other up-to-date artifacts stay in it)")  # fmt: skip
    p.add_argument(
        "--extra",
        action="store_true",
        help="also build the earlier checks' artifacts (settings.EXTRA_CONFIGS)",
    )
    p.add_argument(
        "--bundle",
        default=str(BUNDLE),
        help="where to put what the GPU machine needs (default build/gpu)",
    )
    p.add_argument(
        "--selftest",
        default=str(SELFTEST),
        help="where the CPU self-test builds (default build/gpu-selftest)",
    )
    p.add_argument(
        "--cache", default=str(CACHE), help="downloaded wheels (default build/gpu-cache)"
    )
    p.add_argument(
        "--arch", default=ARCH, help=f"the GPU architecture to compile for (default {ARCH})"
    )
    p.add_argument(
        "--device-python",
        default=DEVICE_PYTHON,
        help=f"CPython version on the GPU machine (default {DEVICE_PYTHON}; tvm_ffi's core "
        f"for {', '.join(SPARE_PYTHONS)} is carried too where its wheel can be had)",
    )
    p.add_argument(
        "--device-machine",
        default=DEVICE_MACHINE,
        help=f"the GPU machine's CPU in wheel tags (default {DEVICE_MACHINE})",
    )
    p.add_argument(
        "--carry-limit-mib",
        type=float,
        default=CARRY_LIMIT_MIB,
        help="fail if the bundle and the working tree exceed this "
        f"(default {CARRY_LIMIT_MIB:g}; 0: no limit)",
    )


def _device_options(d: argparse.ArgumentParser) -> None:
    d.add_argument("--artifacts", default=str(BUNDLE), help="folder with manifest.json")
    d.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "build" / "gpu-results"))
    d.add_argument("--repeats", type=int, default=100, help="most timed repeats (default 100)")
    d.add_argument("--budget", type=float, default=1.0, help="seconds per timing (default 1)")
    d.add_argument(
        "--deadline",
        type=float,
        default=DEADLINE,
        help="seconds from the start after which nothing new starts and a running "
        f"torch.compile is killed (default {DEADLINE:g}; keep it under gpu_check.sh's "
        f"GPU_CHECK_TIMEOUT, default {TIMEOUT:g})",
    )
    d.add_argument(
        "--compile-allowance",
        type=float,
        default=COMPILE_ALLOWANCE,
        help="start no torch.compile with less than this many seconds before the deadline "
        f"(default {COMPILE_ALLOWANCE:g})",
    )
    d.add_argument(
        "--compile-modes",
        nargs="+",
        choices=COMPILE_MODES,
        default=list(DEFAULT_COMPILE_MODES),
        metavar="MODE",
        help=f"torch.compile modes to compare with, in this order ({', '.join(COMPILE_MODES)}; "
        f"default: {' '.join(DEFAULT_COMPILE_MODES)})",
    )
    d.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    d.add_argument(
        "--no-precompile",
        action="store_true",
        help="compile each artifact's CUDA kernels when it is loaded, one after another, "
        "rather than all in parallel processes first (kernels.py)",
    )
    d.add_argument(
        "--tf32",
        action="store_true",
        help="allow TF32 in the float32 peers (default off; never in the reference)",
    )
    d.add_argument(
        "--eager-nchw",
        action="store_true",
        help="also time eager in NCHW (the reference's layout) as a peer",
    )
    d.add_argument(
        "--only",
        nargs="+",
        metavar="TEXT",
        help="run only the artifacts whose names contain one of these",
    )
