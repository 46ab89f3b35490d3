"""Results of the device run: written after every step, and the closing summary table."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from .settings import artifact_name, log


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


def summary(report: Report, ready, timings) -> None:
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
