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
    COMPILE_MODES,
    DEVICE_MACHINE,
    DEVICE_PYTHON,
    ROOT,
    SELFTEST,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/gpu", description=package_doc.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _prepare_options(sub.add_parser("prepare", help="here: compile, punch, assemble, self-test"))
    _device_options(
        sub.add_parser("device", help="there: rebuild, load, check and time the artifacts")
    )
    peers = sub.add_parser(
        "peers-check", help="here: run the PyTorch-peer code on the CPU on a tiny network"
    )
    peers.add_argument("--out", help="results folder (default: a new temporary one)")
    peers.add_argument(
        "--compile-modes", nargs="+", choices=COMPILE_MODES, default=list(COMPILE_MODES),
        metavar="MODE", help=f"torch.compile modes (default: {' '.join(COMPILE_MODES)})",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.command == "peers-check":
        from .peers_check import peers_check

        return peers_check(args)
    if args.command == "prepare":
        from .prepare import prepare

        return prepare(args)
    from .device import device

    return device(args)


def _prepare_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="recompile up-to-date artifacts")
    p.add_argument("--only", nargs="+", metavar="NAME", help="e.g. resnet18-float32-b1")
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
        help=f"CPython version on the GPU machine (default {DEVICE_PYTHON})",
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
    d.add_argument("--budget", type=float, default=2.0, help="seconds per timing (default 2)")
    d.add_argument(
        "--deadline",
        type=float,
        default=450.0,
        help="start no torch.compile after this many seconds, less its allowance "
        "(default 450; keep it under gpu_check.sh's GPU_CHECK_TIMEOUT)",
    )
    d.add_argument(
        "--compile-allowance",
        type=float,
        default=90.0,
        help="seconds one torch.compile may take (default 90)",
    )
    d.add_argument(
        "--autotune-allowance",
        type=float,
        default=240.0,
        help="seconds one torch.compile in max-autotune mode may take (default 240)",
    )
    d.add_argument(
        "--compile-modes",
        nargs="+",
        choices=COMPILE_MODES,
        default=list(COMPILE_MODES),
        metavar="MODE",
        help="torch.compile modes to compare with, in this order "
        f"(default: {' '.join(COMPILE_MODES)})",
    )
    d.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    d.add_argument(
        "--only",
        nargs="+",
        metavar="TEXT",
        help="run only the artifacts whose names contain one of these",
    )
