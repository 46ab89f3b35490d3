"""Single-layer kernels: the CPU rules' choices, each layer timed with and without one of them.

Each layer is a one-convolution spec compiled for ``--target llvm`` at batch 1 (NHWC, the
default pipeline); the time is that of the convolution's fused kernel alone (the Relax VM's
instrument around each call, CPU time of the calling thread on one TVM thread), median of
``--repeats`` calls after a warm-up, so the layout changes at the network's edges are not
counted. ``--without`` builds each layer a second time with one rule switched off
(``resdsl.backends.tvm.schedules.cpu.Conv2d``'s flags) and prints the ratio:

* ``group-vectors``: a grouped convolution's vectors within one group (``group_machine``);
* ``short-tile``: every output channel by 2 columns on a 1 x 1 convolution over at most 32
  input channels (``short_tile``);
* ``narrow-tiles``: 3 or 5 vectors of 8 lanes with 32 registers (``register_tile``).

Every output is checked against the PyTorch backend (relative difference printed). The
figures depend on the CPU: the target (``--cpu``, default the host's) decides the lanes and
registers, so ``--cpu haswell`` measures AVX2's tiles on an AVX-512 host.

    python benchmarks/kernels.py                              # the default layers
    python benchmarks/kernels.py --without group-vectors      # each layer, and its ratio
    python benchmarks/kernels.py --layer 'conv2d(96, 1) @ 16x112x112'
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TVM_NUM_THREADS", "1")

import numpy as np
import torch

import resdsl
from resdsl.backends.tvm import BuildOptions, compile_network
from resdsl.backends.tvm.schedules import cpu

# A layer: an op call (the spec's syntax) on an input of C x H x W, as the docs quote them.
LAYERS = [
    "conv2d(208, 3, padding=1, groups=26) -> relu @ 208x14x14",  # RegNetY-400MF, groups of 8
    "conv2d(128, 3, padding=1, groups=32) -> relu @ 128x56x56",  # ResNeXt's groups of 4
    "conv2d(24, 1) @ 144x56x56",  # MobileNetV2's projection to 24 channels
    "conv2d(40, 1) @ 240x28x28",  # EfficientNet-B0's to 40
    "conv2d(96, 1) -> relu6 @ 16x112x112",  # MobileNetV2's expansion over 16 channels
    "conv2d(48, 1) -> relu @ 32x112x112",  # RegNetY-400MF's first 1 x 1
    "conv2d(16, 1) @ 32x112x112",
    "conv2d(144, 1) -> relu6 @ 24x56x56",
    "conv2d(192, 1) -> relu6 @ 32x28x28",
]
SWITCHES = {
    "group-vectors": "group_vectors",
    "short-tile": "short_tiles",
    "narrow-tiles": "narrow_tiles",
}
LAYER = re.compile(r"\s*(?P<op>.+?)\s*@\s*(?P<c>\d+)x(?P<h>\d+)x(?P<w>\d+)\s*")


def spec_of(layer: str) -> str:
    m = LAYER.fullmatch(layer)
    if m is None:
        raise SystemExit(f"kernels.py: error: a layer is `OP @ CxHxW`, not {layer!r}")
    shape = f"({m['c']}, {m['h']}, {m['w']})"
    return f"network layer() (x: {shape}) {{\n    return x -> k: {m['op']}\n}}\n"


def kernel_seconds(net, module, x: np.ndarray, cpu_name: str | None, repeats: int):
    """(median seconds of the convolution's kernel per call, relative difference)."""
    with tempfile.TemporaryDirectory() as out:
        options = BuildOptions(target="llvm", batch=1, cpu=cpu_name)
        compile_network(net, out, options, weights=module)
        artifact = resdsl.runtime.load(out)
        with torch.no_grad():
            want = module(torch.from_numpy(x)).numpy()
        got = np.asarray(artifact(x))
        rel = float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-30))
        calls: dict[str, list[float]] = {}
        started: list[float] = []

        def instrument(func, symbol, before, ret, *args):
            if before:
                started.append(time.thread_time())
            else:
                calls.setdefault(str(symbol), []).append(time.thread_time() - started.pop())
            return 0

        for _ in range(3):
            artifact(x)
        artifact._vm.set_instrument(instrument)
        try:
            for _ in range(repeats):
                artifact(x)
        finally:
            artifact._vm.set_instrument(None)
        kernel = [times for name, times in calls.items() if "conv2d" in name]
        if len(kernel) != 1:
            raise SystemExit(f"kernels.py: error: expected one convolution kernel, got {calls}")
        return statistics.median(kernel[0]), rel


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time single convolution kernels under resdsl's CPU rules."
    )
    parser.add_argument("--layer", action="append", help="OP @ CxHxW (repeatable)")
    parser.add_argument("--without", choices=sorted(SWITCHES), help="also time without it")
    parser.add_argument("--cpu", help="LLVM -mcpu (default: the host's)")
    parser.add_argument("--repeats", type=int, default=60, help="timed calls (default 60)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    target = BuildOptions(target="llvm", cpu=args.cpu).tvm_target()
    machine = cpu.Machine.of(target)
    print(
        f"target {target.attrs.get('mcpu', 'host')}: {machine.lanes} float32 lanes, "
        f"{machine.registers} vector registers; 1 thread, CPU time, median of {args.repeats}",
        flush=True,
    )
    worst = 0.0
    for layer in args.layer or LAYERS:
        net = resdsl.loads(spec_of(layer), path="layer.res")
        module = net.to_torch().eval()
        generator = torch.Generator().manual_seed(args.seed)
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
        ((_, shape),) = net.input_shapes.items()
        x = np.random.default_rng(args.seed).standard_normal((1, *shape)).astype(np.float32)
        seconds, rel = kernel_seconds(net, module, x, args.cpu, args.repeats)
        worst = max(worst, rel)
        line = f"{layer:<58} {seconds * 1e3:7.3f} ms {2 * net.macs / seconds / 1e9:6.1f} GFLOP/s"
        if args.without:
            flag = SWITCHES[args.without]
            setattr(cpu.Conv2d, flag, False)
            try:
                without, rel = kernel_seconds(net, module, x, args.cpu, args.repeats)
            finally:
                setattr(cpu.Conv2d, flag, True)
            worst = max(worst, rel)
            line += f" | without {args.without} {without * 1e3:7.3f} ms: {without / seconds:5.2f}x"
        print(line, flush=True)
    print(f"every output within {worst:.1e} relative of the PyTorch backend")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
