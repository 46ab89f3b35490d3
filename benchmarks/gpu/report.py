"""Results of the device run: written after every step, and the closing summary table."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from .settings import PEERS, artifact_name, log, peak_for, target_for, tflops


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


def verdict(ratio: float | None, target: float | None, parity_ok: bool | None) -> str:
    """Issue 20's target for one artifact: "met", "NOT met", "unmeasured" (no ratio),
    "parity FAIL" (a fast wrong answer meets nothing) or "-" (no target for it)."""
    if target is None:
        return "-"
    if parity_ok is False:
        return "parity FAIL"
    if ratio is None:
        return "unmeasured"
    return "met" if ratio <= target else "NOT met"


def judge(a: dict, res: dict, peers: dict[str, float], expected: list[str], macs: int | None,
          peaks: dict[str, float] | None) -> dict[str, Any]:  # fmt: skip
    """One artifact's row: its ratio against the best peer measured, the target and verdict,
    achieved TFLOP/s and the share of the peak that applies (float16: tensor cores; float32:
    CUDA cores, resdsl having no TF32 path), and the expected peers that were not measured."""
    ms, best = res.get("ms"), best_peer(peers)
    ratio = ms / best[1] if ms and best else None
    target = target_for(a["model"], a["dtype"], a["batch"], a.get("variant", ""))
    tf = tflops(macs, a["batch"], ms / 1e3) if ms and macs else None
    peak = (peaks or {}).get("fp16" if a["dtype"] == "float16" else "fp32")
    return {
        "ms": ms, "parity_ok": res.get("ok"), "best_peer": best[0] if best else None,
        "best_ms": best[1] if best else None, "ratio": ratio, "target": target,
        "verdict": verdict(ratio, target, res.get("ok")), "tflops": tf, "peak_tflops": peak,
        "pct_of_peak": 100.0 * tf / peak if tf and peak else None,
        "missing_peers": [p for p in expected if p not in peers],
    }  # fmt: skip


def summary(report: Report, ready, timings, expected: list[str], gpu: str | None = None,
            tf32: bool = False, macs: dict[str, int] | None = None,
            failed_builds: list[dict] = ()) -> list[dict]:  # fmt: skip
    """The closing table: one line per artifact with its time, each PyTorch peer's for the
    same model, dtype and batch ("-": not measured), the ratio against the fastest peer
    measured, issue 20's target and whether it is met, and the achieved TFLOP/s against
    the GPU's datasheet peak. Returns the rows (also in the JSON, per artifact)."""
    found = peak_for(gpu)
    peaks = found[1] if found else None
    shown = [p for p in PEERS if p in expected or any(p in t.get("peers", {})
                                                      for t in timings.values())]  # fmt: skip
    short = {p: p.replace("compile ", "").replace("eager channels_last", "eager CL")
             for p in shown}  # fmt: skip
    header = (
        f"{'artifact':<28} {'parity':>6} {'resdsl ms':>10} "
        + " ".join(f"{short[p]:>14}" for p in shown)
        + f"  {'best peer':<14} {'ratio':>6} {'target':>6}  {'verdict':<12} {'TFLOP/s':>8} "
        f"{'% peak':>6}"
    )
    report.say("\n" + header)
    report.say("-" * len(header))
    rows = []
    for a, _ in ready:
        r = report.data["artifacts"].setdefault(a["name"], {})
        peers = timings.get(artifact_name(a["model"], a["dtype"], a["batch"]), {}).get("peers", {})
        m = (macs or {}).get(a["model"], a.get("macs"))
        row = judge(a, r, peers, expected, m, peaks)
        r["summary"] = row
        rows.append({"name": a["name"], **row})

        def f(v, spec=".3f"):
            return "-" if v is None else format(v, spec)

        def fx(v, spec):
            return "-" if v is None else format(v, spec) + "x"

        parity = "-" if row["parity_ok"] is None else ("PASS" if row["parity_ok"] else "FAIL")
        note = f" ({len(row['missing_peers'])} peer(s) missing)" if row["missing_peers"] else ""
        report.say(
            f"{a['name']:<28} {parity:>6} {f(row['ms']):>10} "
            + " ".join(f"{f(peers.get(p)):>14}" for p in shown)
            + f"  {short.get(row['best_peer'], row['best_peer'] or '-'):<14} "
            f"{fx(row['ratio'], '.2f'):>6} {fx(row['target'], '.1f'):>6}  {row['verdict']:<12} "
            f"{f(row['tflops'], '.2f'):>8} {f(row['pct_of_peak'], '.1f'):>6}" + note
        )
    for fb in failed_builds:  # configurations resdsl could not compile on the build machine
        target = target_for(fb["model"], fb["dtype"], fb["batch"], fb.get("variant", ""))
        rows.append({"name": fb["name"], "target": target, "ratio": None, "ms": None,
                     "verdict": "build FAIL" if target is not None else "-"})  # fmt: skip
        report.say(f"{fb['name']:<28} {'-':>6} {'-':>10}  FAILED to compile on the build "
                   f"machine: {fb['error'][:160]}")  # fmt: skip
    judged = [r for r in rows if r["target"] is not None]
    count = {v: sum(r["verdict"] == v for r in judged) for v in
             ("met", "NOT met", "unmeasured", "parity FAIL", "build FAIL")}  # fmt: skip
    report.data["targets"] = {**count, "of": len(judged)}
    report.say(
        f"targets (issue 20: resdsl / best peer <= 1.0x float16 batch 1, <= 1.2x float16 "
        f"batch 32, <= 1.2x float32): {count['met']} of {len(judged)} met, "
        f"{count['NOT met']} not met, {count['unmeasured']} unmeasured, "
        f"{count['parity FAIL']} failed parity, {count['build FAIL']} failed to compile"
    )
    report.say(
        "Peers, same model, dtype and batch: " + ", ".join(shown) + " (eager CL: "
        "channels_last with cudnn.benchmark; cuda graph: that model captured with "
        "torch.cuda.graph and replayed; compile MODE: torch.compile(mode=MODE) in "
        "channels_last). ratio: resdsl / the fastest peer measured ('-': not measured, e.g. "
        "past the deadline; 'N peer(s) missing': the best of those measured)."
    )
    report.say(
        f"TF32: {'on' if tf32 else 'off'} for the float32 peers (--tf32), off for the "
        "reference; resdsl's float32 kernels do not use TF32 (no TF32 path), its float16 "
        "ones use tensor cores with float32 accumulation."
    )
    if found:
        report.say(
            f"TFLOP/s: 2 x MACs (resdsl's count) x batch / resdsl's latency. % peak: of "
            f"{gpu}'s datasheet dense peak (row '{found[0]}'): float16 tensor cores "
            f"{peaks['fp16']:g}, float32 CUDA cores {peaks['fp32']:g} (TF32 tensor cores "
            f"{peaks['tf32']:g}, unused) TFLOP/s"
        )
    else:
        report.say(f"TFLOP/s: 2 x MACs x batch / latency; no datasheet peak known for "
                   f"{gpu or 'this device'} (settings.PEAKS): % peak left out")  # fmt: skip
    return rows
