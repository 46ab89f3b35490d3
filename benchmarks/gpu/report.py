"""Results of the device run: written after every step, and the closing summary table."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from .settings import PEERS, artifact_name, log


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


def median_time(fn, sync, repeats: int, budget_s: float) -> tuple[float, int]:
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


def first_lines(error: Exception, lines: int = 4) -> str:
    """An error's message without the kernel source TVM appends to a CUDA launch error."""
    text = str(error).split("// CUDA Source")[0].strip()
    return "\n".join(text.splitlines()[:lines])[:1000]


def best_peer(peers: dict[str, float]) -> tuple[str, float] | None:
    """The fastest PyTorch peer measured: (name, ms), or None when none was."""
    return min(peers.items(), key=lambda kv: kv[1]) if peers else None


def summary(report: Report, ready, timings) -> None:
    """One line per artifact: its time, each PyTorch peer's for the same model, dtype and
    batch ("-": not measured), and the ratio against eager and against the fastest peer."""
    cols = [(p, p.replace("compile ", "").replace("eager channels_last", "eager CL"))
            for p in PEERS]  # fmt: skip
    header = (
        f"{'artifact':<24} {'parity':>6} {'resdsl ms':>10} "
        + " ".join(f"{short:>15}" for _, short in cols)
        + f" {'resdsl/eager':>12} {'resdsl/best':>11}  best peer"
    )
    report.say("\n" + header)
    report.say("-" * len(header))
    for a, _ in ready:
        r = report.data["artifacts"].get(a["name"], {})
        peers = timings.get(artifact_name(a["model"], a["dtype"], a["batch"]), {}).get("peers", {})
        ms, eager, best = r.get("ms"), peers.get("eager"), best_peer(peers)

        def f(v, spec=".3f"):
            return "-" if v is None else format(v, spec)

        parity = "-" if "ok" not in r else ("PASS" if r["ok"] else "FAIL")
        r["best_peer"] = None if best is None else {"peer": best[0], "ms": best[1]}
        report.say(
            f"{a['name']:<24} {parity:>6} {f(ms):>10} "
            + " ".join(f"{f(peers.get(p)):>15}" for p, _ in cols)
            + f" {f(ms / eager if ms and eager else None, '.2f'):>11}x "
            f"{f(ms / best[1] if ms and best else None, '.2f'):>10}x  " + (best[0] if best else "-")
        )
    report.say(
        "(PyTorch peers, same model, dtype and batch: eager with cudnn.benchmark in NCHW and in "
        "channels_last (CL); torch.compile in each mode measured. resdsl/best: against the "
        "fastest of those measured; '-': not measured, e.g. past the deadline)"
    )
