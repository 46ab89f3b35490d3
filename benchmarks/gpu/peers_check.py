"""``peers-check``: the PyTorch-peer code of ``device`` run on the CPU, on a tiny network.

``device`` compares each artifact with PyTorch eager in channels_last, that eager model
replayed as a CUDA graph, and torch.compile (``max-autotune`` by default, in a subprocess
bounded by the deadline); on the GPU machine that code runs once per lent GPU, so it is
exercised here first, where no GPU is needed: a small residual network (two 3x3
convolutions with batch norm, a shortcut, pooling and a classifier; 16x16 inputs) goes
through the same :func:`.device.reference`, :func:`.device.cheap_peers` (eager NCHW too),
:func:`.device.torch_compile` and :func:`.report.summary`, with a stand-in artifact time. On
the CPU there is no CUDA graph to capture: :func:`.device.graphed` replays the model on the
same static buffers instead, and torch.compile's ``max-autotune`` builds no CUDA graphs;
what is checked is that every peer runs, matches the float32 reference, lands in the
results and in the summary.

    python benchmarks/gpu peers-check [--out DIR] [--compile-modes MODE...]

Exit status 0 when every peer was timed and within 1e-4 of the reference, else 1.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from .device import Bench, cheap_peers, reference, torch_compile
from .report import Report, summary


def tiny_resnet():
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(8), nn.ReLU())  # fmt: skip
            self.branch = nn.Sequential(
                nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
            )  # fmt: skip
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            x = self.stem(x)
            x = torch.relu(x + self.branch(x))
            return self.fc(x.mean((2, 3)))

    torch.manual_seed(0)
    return Tiny().eval()


TINY_MACS = 2 * 8 * 8 * 9 * 16 * 16 + 3 * 8 * 9 * 16 * 16 + 8 * 10


def peers_check(args: argparse.Namespace) -> int:
    out = Path(args.out or tempfile.mkdtemp(prefix="resdsl-peers-check-"))
    report = Report(out)
    module, batch, shape = tiny_resnet(), 2, (3, 16, 16)
    models = {"tiny": {"module": module, "folded": None, "macs": TINY_MACS, "input_shape": shape}}
    entry = {"name": f"tiny-float32-b{batch}", "model": "tiny", "dtype": "float32",
             "batch": batch, "variant": ""}  # fmt: skip
    ready = [(entry, None)]
    bench = Bench(report, models, ready, "cpu", repeats=5, budget=0.2, eager_nchw=True)
    bench.setup(seed=0)
    reference(bench, "tiny", batch)
    cheap_peers(bench, "tiny", "float32", batch)
    report.data["artifacts"][entry["name"]] = {"ms": 1.0, "ok": True}  # a stand-in artifact
    compile_args = argparse.Namespace(
        no_compile=False, compile_modes=args.compile_modes, deadline=float("inf"),
        compile_allowance=0.0,
    )  # fmt: skip
    torch_compile(bench, compile_args, None)
    wanted = ["eager", "eager channels_last", "cuda graph",
              *(f"compile {m}" for m in args.compile_modes)]  # fmt: skip
    summary(report, ready, bench.timings, wanted, None, False)

    timed = bench.timings[f"tiny-float32-b{batch}"]
    missing = [p for p in wanted if p not in timed.get("peers", {})]
    diffs = timed.get("peer_max_abs_diff_vs_fp32", {})
    report.say(f"\npeers timed: {json.dumps(timed.get('peers', {}))}")
    if missing:
        report.say(f"FAILED: no time for {', '.join(missing)}")
        return 1
    if any(v > 1e-4 for v in diffs.values()):
        report.say(f"FAILED: a peer differs from the reference: {diffs}")
        return 1
    report.say(f"OK: every peer ran on the CPU ({', '.join(wanted)}); results in {out}")
    return 0
