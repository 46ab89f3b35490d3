"""``resdsl compile``: a PyTorch file, an ONNX model, or a CPU/CUDA artifact built with TVM
(docs/cli.md, docs/deploy.md)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Sequence
from typing import Any

from ..backends import MAX_BATCH
from .common import (
    EXIT_OK,
    EXIT_SPEC,
    UsageError,
    _artifact_dir,
    _load,
    _spec_options,
    seed_arg,
)


def add_compile_command(sub: Any) -> None:
    """Register ``resdsl compile`` on the ``resdsl`` subcommand parser."""
    comp = sub.add_parser(
        "compile",
        help="emit a PyTorch file or an ONNX model, or build a CPU/CUDA artifact with TVM",
        description="torch: a self-contained .py file. llvm/cuda: a directory with model.so "
        "(the compiled library, weights included) and model.json (inputs, outputs, target). "
        "onnx: one .onnx file (weights included).",
    )
    comp.add_argument("file", metavar="FILE")
    comp.add_argument(
        "--target", choices=["torch", "llvm", "cuda", "onnx"], default="torch",
        help="default: torch",
    )  # fmt: skip
    comp.add_argument(
        "-o", "--output", metavar="OUT",
        help="torch: output file (default: stdout); llvm/cuda: output directory (required); "
        "onnx: output file (required)",
    )  # fmt: skip
    comp.add_argument(
        "--flat", action="store_true",
        help="torch: one class, every block instance unrolled (default: a class per block)",
    )  # fmt: skip
    _add_build_options(comp.add_argument_group("llvm, cuda and onnx targets"))
    _add_tuning_options(
        comp.add_argument_group("tuning, llvm and cuda targets (docs/deploy.md#tuning)")
    )
    _spec_options(comp)
    comp.set_defaults(run=_compile)


def _add_build_options(tvm: Any) -> None:
    tvm.add_argument(
        "--weights", metavar="FILE",
        help=".safetensors or PyTorch state_dict keyed by the spec's names (default: --seed)",
    )  # fmt: skip
    tvm.add_argument("--seed", type=seed_arg, default=0, help="initialise weights (default: 0)")
    tvm.add_argument(
        "--strict", action="store_true",
        help="refuse weights holding NaN or infinite values (default: a warning)",
    )  # fmt: skip
    tvm.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    tvm.add_argument(
        "--batch", type=_batch_arg, metavar="N|LOW..HIGH",
        help="batch size: fixed (llvm/cuda default: 1; onnx default: dynamic), or llvm/cuda: "
        "a range, one artifact for every batch in it (e.g. 1..64)",
    )  # fmt: skip
    tvm.add_argument("--cpu", metavar="MCPU", help="llvm: CPU to tune code for (default: host)")
    tvm.add_argument("--arch", metavar="SM", help="cuda: e.g. sm_80 (default), sm_90")
    tvm.add_argument(
        "--no-winograd", dest="winograd", action="store_false",
        help="llvm: compute 3x3 convolutions directly, not with Winograd's algorithm",
    )  # fmt: skip
    tvm.add_argument(
        "--micro-batch", type=int, metavar="N",
        help="llvm: run the batch N samples at a time (N divides --batch; default: as many "
        "as keep the largest activation under 7 MiB, see docs/performance.md); with a "
        "batch range, the most samples run at once (default: up to 8)",
    )  # fmt: skip
    tvm.add_argument(
        "--check", action="store_true",
        help="compare the artifact or model with the PyTorch backend on a random input",
    )  # fmt: skip


def _add_tuning_options(tune: Any) -> None:
    tune.add_argument(
        "--tune-trials", type=int, default=0, metavar="N",
        help="first measure N candidate kernels with MetaSchedule (default: 0, only reuse "
        "the records there are)",
    )  # fmt: skip
    tune.add_argument(
        "--tune-time", type=_duration, metavar="DURATION",
        help="stop tuning after this long, e.g. 30m, 90s, 1h (default: run all N trials)",
    )  # fmt: skip
    tune.add_argument(
        "--tune-db", metavar="DIR",
        help="the tuning records (default: $RESDSL_TUNING_DIR/TARGET, else "
        "~/.cache/resdsl/tuning/TARGET)",
    )  # fmt: skip


def _compile(args: argparse.Namespace) -> int:
    _check_compile_options(args)
    if args.target == "onnx":
        return _compile_onnx(args)
    if args.target != "torch":
        if args.output and args.output != "-":
            _artifact_dir(args.output, ("model.so", "model.json"))
        return _compile_tvm(args)
    return _compile_torch(args)


def _batch_arg(text: str) -> int | tuple[int, int]:
    """``--batch``: ``N``, or ``LOW..HIGH`` for a dynamic batch."""
    low, dots, high = text.partition("..")
    try:
        return (int(low), int(high)) if dots else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a batch size N or a range LOW..HIGH such as 1..64, got {text!r}"
        ) from None


def _check_compile_options(args: argparse.Namespace) -> None:
    """Refuse flags that do not apply to the target, before anything is loaded."""
    if isinstance(args.batch, tuple):
        low, high = args.batch
        if args.target not in ("llvm", "cuda"):
            raise UsageError(
                "--batch LOW..HIGH applies to --target llvm or cuda (an ONNX export has a "
                "dynamic batch without --batch)"
            )
        if not 1 <= low <= high <= MAX_BATCH:
            raise UsageError(
                f"--batch LOW..HIGH needs 1 <= LOW <= HIGH <= {MAX_BATCH}, got {low}..{high}"
            )
    elif args.batch is not None and not 1 <= args.batch <= MAX_BATCH:
        raise UsageError(f"--batch must be at least 1 and at most {MAX_BATCH}, got {args.batch}")
    if args.arch and args.target == "llvm":
        raise UsageError("--arch applies to --target cuda")
    if args.cpu and args.target == "cuda":
        raise UsageError("--cpu applies to --target llvm")
    if args.target in ("torch", "onnx") and (args.tune_trials or args.tune_db or args.tune_time):
        raise UsageError("--tune-trials and --tune-db apply to --target llvm or cuda")
    if args.tune_trials < 0:
        raise UsageError(f"--tune-trials must be 0 or more, got {args.tune_trials}")
    if args.tune_time is not None and not args.tune_trials:
        raise UsageError("--tune-time bounds a tuning run: give --tune-trials N too")
    if not args.winograd and args.target != "llvm":
        raise UsageError("--no-winograd applies to --target llvm")
    if args.flat and args.target != "torch":
        raise UsageError("--flat applies to --target torch")
    if args.micro_batch is not None:
        if args.target != "llvm":
            raise UsageError("--micro-batch applies to --target llvm")
        batch = 1 if args.batch is None else args.batch
        if isinstance(batch, tuple):
            if not 1 <= args.micro_batch <= batch[1]:
                raise UsageError(
                    f"--micro-batch must be between 1 and the largest batch ({batch[1]}), "
                    f"got {args.micro_batch}"
                )
        elif args.micro_batch < 1 or batch % args.micro_batch:
            raise UsageError(f"--micro-batch must divide --batch ({batch}), got {args.micro_batch}")


def _compile_torch(args: argparse.Namespace) -> int:
    """``--target torch``: one self-contained .py file (see resdsl/backends/torch.py)."""
    from .._io import atomic_write
    from ..backends import torch as flat
    from ..backends import torch_structured

    for flag in ("weights", "cpu", "arch"):
        if getattr(args, flag):
            raise UsageError(f"--{flag} applies to --target llvm or cuda")
    if args.strict:
        raise UsageError("--strict applies to --target llvm, cuda or onnx (it checks weights)")
    net = _load(args.file, args)
    generate = flat.generate if args.flat else torch_structured.generate
    source = generate(net.graph, source_path=args.file)
    if args.output in (None, "-"):
        sys.stdout.write(source)
    else:
        if os.path.isdir(args.output):
            raise UsageError(f"{args.output} is a directory; give a file name such as model.py")
        atomic_write(args.output, source)  # refuses to replace a device, FIFO or symlink
        print(f"wrote {args.output}", file=sys.stderr)
    return EXIT_OK


def _compile_tvm(args: argparse.Namespace) -> int:
    if not args.output or args.output == "-":
        raise UsageError(f"--target {args.target} writes a directory: give it with -o DIR")
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise UsageError(f"{args.output} exists and is not a directory")
    net = _load(args.file, args)
    args.weights = _weights_arg(args)  # --strict: NaN/Inf weights are an error
    if importlib.util.find_spec("tvm") is None:
        raise UsageError(f"--target {args.target} needs TVM: pip install 'resdsl[tvm]'")
    from ..backends.tvm import BuildOptions, compile_network
    from ..backends.tvm.check import cross_check

    batch = 1 if args.batch is None else args.batch
    options = BuildOptions(
        args.target, args.cpu, args.arch, args.dtype,
        batch if isinstance(batch, int) else 1,
        winograd=args.winograd, micro_batch=args.micro_batch,
        batch_range=batch if isinstance(batch, tuple) else None,
    )  # fmt: skip
    print(f"compiling {net.name} for {args.target} ...", file=sys.stderr)
    database = _tuning(net, options, args)
    meta = compile_network(
        net, args.output, options, weights=args.weights, seed=args.seed, database=database
    )
    print(f"wrote {os.path.join(args.output, 'model.so')} and model.json", file=sys.stderr)
    if args.check:
        if meta["device"] == "cuda" and not _has_cuda():
            print("check skipped: no CUDA device on this machine", file=sys.stderr)
            return EXIT_OK
        from ..weights import resolve

        weights, _ = resolve(net.graph, args.weights, args.seed)
        results = cross_check(net, args.output, weights, args.seed)
        return _report_checks(results, "the compiled artifact")
    return EXIT_OK


def _weights_arg(args: argparse.Namespace) -> Any:
    """``--weights`` as given, or with ``--strict`` a path that refuses NaN/Inf weights."""
    if args.weights and args.strict:
        from ..weights import WeightsPath

        return WeightsPath(args.weights, strict=True)
    return args.weights


def _duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``1.5h`` -> seconds (argparse type)."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30m, 90s, 1h)") from None
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"the duration must be positive, got {text!r}")
    return seconds


def _tuning(net, options, args: argparse.Namespace):
    """Tune first when asked; the records database to build with, or None."""
    from ..backends.tvm.tune import tune_network

    database, report = tune_network(
        net, options, args.tune_trials, args.tune_db, weights=args.weights, seed=args.seed,
        seconds=args.tune_time,
    )  # fmt: skip
    if report is not None:
        print(report.summary(), file=sys.stderr)
    elif args.tune_db:
        print(f"tuning: no records in {args.tune_db} yet", file=sys.stderr)
    return database


def _report_checks(results: Sequence[Any], what: str) -> int:
    """One line per output on stdout; exit 1 when any is beyond its tolerance."""
    for r in results:
        verdict = "ok" if r.ok else "FAILED"
        print(f"check {r.output}: max abs diff {r.max_abs_diff:.3g} "
              f"(tolerance {r.tolerance:.3g}) {verdict}")  # fmt: skip
    if not all(r.ok for r in results):
        print(f"{what} does not match the PyTorch backend", file=sys.stderr)
        return EXIT_SPEC
    return EXIT_OK


def _compile_onnx(args: argparse.Namespace) -> int:
    """``--target onnx``: one .onnx file (see resdsl/backends/onnx.py)."""
    from .._io import check_target

    for flag in ("cpu", "arch"):
        if getattr(args, flag):
            raise UsageError(f"--{flag} applies to --target llvm or cuda")
    if args.dtype != "float32":
        raise UsageError("--target onnx writes float32 models; --dtype float16 is not supported")
    if args.batch is not None and args.batch < 1:
        raise UsageError(f"--batch must be at least 1, got {args.batch}")
    if not args.output or args.output == "-":
        raise UsageError("--target onnx writes a file: give it with -o FILE, e.g. -o model.onnx")
    if os.path.isdir(args.output):
        raise UsageError(f"{args.output} is a directory; give a file name such as model.onnx")
    check_target(args.output)  # before the export: never over a device, FIFO or symlink
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        raise UsageError(f"no such directory: {os.path.dirname(args.output)}")
    needed = ["onnx", *(["onnxruntime", "torch"] if args.check else [])]
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"--target onnx needs {', '.join(missing)}: pip install 'resdsl[onnx]'")
    net = _load(args.file, args)
    args.weights = _weights_arg(args)  # --strict: NaN/Inf weights are an error
    from ..backends.onnx import OPSET, cross_check, export

    export(net, args.output, weights=args.weights, seed=args.seed, batch=args.batch)
    batch = "dynamic batch" if args.batch is None else f"batch {args.batch}"
    print(f"wrote {args.output} (ONNX opset {OPSET}, {batch})", file=sys.stderr)
    if not args.check:
        return EXIT_OK
    from ..weights import resolve

    weights, _ = resolve(net.graph, args.weights, args.seed)
    results = cross_check(net, args.output, weights, batch=args.batch or 2, seed=args.seed)
    return _report_checks(results, "the ONNX model")


def _has_cuda() -> bool:
    import tvm

    return bool(tvm.cuda(0).exist)
