"""``dry-run`` (here, no GPU): everything of the device run that can be checked without one.

    bash benchmarks/gpu_check.sh --dry-run [RUN OPTIONS]     # = run --dry-run
    python benchmarks/gpu dry-run [RUN OPTIONS] [--timeout S] [--skip STEP...]

It takes the options ``run`` would get (``--only``, ``--deadline``, ``--compile-modes``,
``--tf32`` ...) and goes through these steps, each reported ok / FAILED / skipped:

* ``options``: the options parse as ``device`` would parse them, and the time budget holds
  (``--deadline`` + a margin under gpu_check.sh's ``GPU_CHECK_TIMEOUT``, the allowance
  under the deadline); prints the order in which the run measures.
* ``configs``: issue 20's matrix (settings.CONFIGS), its specs and targets; ``--only``
  selects something.
* ``references``: each selected model's seeded weights (every floating tensor drawn) load
  strictly into torchvision's model and into the spec's PyTorch module, whose outputs agree
  on the CPU (1e-4 of the scale), with logits of a sane size; resdsl's inference passes
  fold them (what the device run re-derives).
* ``bundle``: the manifest lists every selected artifact, built from this tree's resdsl,
  specs and weights and this TVM, with its files; the carried tvm_ffi has a core for the
  GPU machine's CPython; the bundle and the working tree fit the carry limit.
* ``rebuild``: ``device`` on the bundle in a subprocess that imports only the carried pylib
  (as gpu_check.sh sets it up): re-derives the weights, refills every selected model.so
  byte for byte and stops on "no GPU" (exit status 2).
* ``peers``: :mod:`.peers_check`: the reference, eager (NCHW, channels_last), the CUDA-graph
  peer (a CPU stand-in) and torch.compile in a subprocess, on a tiny network.
* ``report``: the summary table of the full matrix on made-up times and a known GPU name:
  ratios, targets, verdicts, TFLOP/s and % of peak for every configuration.

Exit status 0 when every step that ran is ok, else 1 (2 for a usage error).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .settings import (
    CONFIGS,
    DEVICE_PYTHON,
    DRY_RUN_STEPS,
    EXIT_NO_GPU,
    MODELS,
    PACKAGE,
    ROOT,
    SPECS,
    TORCHVISION,
    artifact_name,
    log,
    target_for,
)

MIB = 2**20
TIMEOUT_MARGIN = 25.0  # seconds gpu_check.sh's timeout must leave after --deadline


class CheckFailedError(Exception):
    """A step found something out of order (the message says what)."""


def dry_run(args: argparse.Namespace) -> int:
    out = Path(args.out) / "dry-run"
    out.mkdir(parents=True, exist_ok=True)
    steps = {
        "options": check_options, "configs": check_configs, "references": check_references,
        "bundle": check_bundle, "rebuild": check_rebuild, "peers": check_peers,
        "report": check_report,
    }  # fmt: skip
    assert tuple(steps) == DRY_RUN_STEPS
    state: dict[str, Any] = {"out": out}
    results = []
    for name, step in steps.items():
        if name in args.skip:
            results.append((name, "skipped", "--skip"))
            continue
        log(f"\n== dry run: {name}")
        start = time.perf_counter()
        try:
            note = step(args, state) or ""
            status = "ok"
        except CheckFailedError as e:
            status, note = "FAILED", str(e)
        except Exception as e:  # a bug in the check code is a failure too, with its type
            status, note = "FAILED", f"{type(e).__name__}: {e}"
        seconds = time.perf_counter() - start
        log(f"   {status}: {note} ({seconds:.0f} s)")
        results.append((name, status, f"{note} ({seconds:.0f} s)"))
    log("\n== dry run summary (no GPU here; see benchmarks/gpu/dryrun.py for what each checks)")
    for name, status, note in results:
        log(f"  {name:<11} {status:<8} {note}")
    failed = [name for name, status, _ in results if status == "FAILED"]
    (out / "dry_run.json").write_text(json.dumps(results, indent=1) + "\n")
    log(f"dry run: {'FAILED: ' + ', '.join(failed) if failed else 'all in order'}")
    return 1 if failed else 0


def selected_configs(only: list[str] | None) -> list[tuple]:
    """settings.CONFIGS whose names contain one of ``only`` (all without it): what ``run
    --only`` would measure of a bundle built from CONFIGS."""
    return [c for c in CONFIGS if not only or any(w in artifact_name(*c) for w in only)]


def budget_problems(deadline: float, timeout: float, allowance: float) -> list[str]:
    """What is wrong with the device run's time budget (empty: nothing)."""
    problems = []
    if deadline + TIMEOUT_MARGIN > timeout:
        problems.append(
            f"--deadline {deadline:g} s leaves under {TIMEOUT_MARGIN:g} s before "
            f"GPU_CHECK_TIMEOUT {timeout:g} s for the summary and clean-up"
        )
    if timeout > 600:
        problems.append(f"GPU_CHECK_TIMEOUT {timeout:g} s is over one device call's 600 s")
    if allowance >= deadline:
        problems.append(f"--compile-allowance {allowance:g} s is not under the deadline")
    return problems


def check_options(args: argparse.Namespace, state: dict) -> str:
    from .device import peers_expected

    # the options parsed already, by the parser ``device`` uses (cli._device_options)
    if args.repeats < 1 or args.budget <= 0:
        raise CheckFailedError("--repeats must be >= 1 and --budget > 0")
    problems = budget_problems(args.deadline, args.timeout, args.compile_allowance)
    if problems:
        raise CheckFailedError("; ".join(problems))
    peers = peers_expected(args)
    modes = [] if args.no_compile else args.compile_modes
    log(f"   peers: {', '.join(peers)}; TF32 for float32 peers: {'on' if args.tf32 else 'off'}")
    log(f"   time: nothing new after {args.deadline:g} s (torch.compile killed then, none "
        f"started with < {args.compile_allowance:g} s left); gpu_check.sh kills the run at "
        f"{args.timeout:g} s")  # fmt: skip
    configs = selected_configs(args.only)
    log("   order: (1) by shape: reference, artifact, eager channels_last, cuda graph:")
    log("      " + ", ".join(artifact_name(*c) for c in configs))
    if modes:
        log(f"   (2) torch.compile {', '.join(modes)}, the same order, while time is left")
    return f"{len(peers)} peers, deadline {args.deadline:g} s < timeout {args.timeout:g} s"


def check_configs(args: argparse.Namespace, state: dict) -> str:
    names = [artifact_name(*c) for c in CONFIGS]
    if len(set(names)) != len(names):
        raise CheckFailedError("duplicate configurations in settings.CONFIGS")
    want = {(m, d, b) for m in MODELS for d in ("float16", "float32") for b in (1, 32)}
    have = {(m, d, b) for m, d, b, v in CONFIGS if not v}
    if want - have:
        raise CheckFailedError(f"issue 20's matrix lacks {sorted(want - have)}")
    missing = [m for m in MODELS if not SPECS[m].is_file() or m not in TORCHVISION]
    if missing:
        raise CheckFailedError(f"no spec or no torchvision reference for {missing}")
    configs = selected_configs(args.only)
    if not configs:
        raise CheckFailedError(f"--only {' '.join(args.only)} selects none of {', '.join(names)}")
    for c in configs:
        target = target_for(*c)
        log(f"   {artifact_name(*c):<26} target resdsl/best <= {target:g}x")
    state["configs"] = configs
    return f"{len(configs)} of {len(CONFIGS)} configurations selected"


def check_references(args: argparse.Namespace, state: dict) -> str:
    import numpy as np
    import torch

    import resdsl

    from .weights import folded_weights, seeded_input, seeded_weights, state_sha256

    configs = state.get("configs") or selected_configs(args.only)
    shas, notes = {}, []
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for model in dict.fromkeys(c[0] for c in configs):
        start = time.perf_counter()
        module, drawn = seeded_weights(model, 0)  # strict load into torchvision's model
        untouched = [k for k, v in module.state_dict().items()
                     if v.is_floating_point() and k not in drawn]  # fmt: skip
        if untouched:
            raise CheckFailedError(f"{model}: not drawn: {untouched[:3]}")
        spec_module = resdsl.load(SPECS[model]).to_torch(seed=0)
        spec_module.load_state_dict({k: torch.from_numpy(v) for k, v in drawn.items()},
                                    strict=True)  # fmt: skip
        x = torch.from_numpy(seeded_input(1, 0))
        with torch.inference_mode():
            ref, ours = module(x).numpy(), spec_module.eval()(x).numpy()
        scale = float(np.abs(ref).max())
        diff = float(np.abs(ref - ours).max())
        if not np.isfinite(ref).all() or not 0.01 < scale < 100:
            raise CheckFailedError(f"{model}: logits max|.| {scale:.3g}: not O(1)")
        if diff > 1e-4 * scale:
            raise CheckFailedError(
                f"{model}: spec and torchvision differ by {diff:.2e} (scale {scale:.3g})"
            )
        folded_weights(SPECS[model], drawn)
        shas[model] = state_sha256(drawn)
        notes.append(f"{model} {diff / scale:.0e}")
        log(f"   {model}: strict loads, logits max|.| {scale:.3f}, spec vs torchvision "
            f"{diff:.2e}, folded ({time.perf_counter() - start:.0f} s)")  # fmt: skip
        del module, spec_module
    state["state_sha256"] = shas
    return "spec/torchvision rel. diff: " + ", ".join(notes)


def check_bundle(args: argparse.Namespace, state: dict) -> str:
    import tvm

    from .build import _up_to_date
    from .bundle import tree_size, working_tree_size

    bundle = Path(args.artifacts)
    path = bundle / "manifest.json"
    if not path.is_file():
        raise CheckFailedError(f"{path} is missing: bash benchmarks/gpu_check.sh prepare")
    manifest = json.loads(path.read_text())
    configs = state.get("configs") or selected_configs(args.only)
    by_name = {a["name"]: a for a in manifest["artifacts"]}
    build_failed = {f["name"]: f["error"] for f in manifest.get("failed", [])}
    problems, nvrtc, known = [], [], []
    for c in configs:
        name = artifact_name(*c)
        a, model = by_name.get(name), manifest["models"].get(c[0], {})
        if a is None and name in build_failed:  # a result (the run reports it), not a flaw
            known.append(name)
            log(f"   {name}: FAILED to compile on this machine: {build_failed[name][:200]}")
            continue
        if a is None:
            problems.append(f"{name}: not built (prepare --only {name})")
            continue
        sha = state.get("state_sha256", {}).get(c[0], model.get("state_sha256"))
        record = {**model, "state_sha256": sha}
        if not _up_to_date(a, record, tvm.__version__, bundle / "artifacts" / name):
            problems.append(f"{name}: out of date (prepare rebuilds it)")
        nvrtc.append(a.get("nvrtc", {}).get("ok"))
    tag = DEVICE_PYTHON.replace(".", "")
    if not list((bundle / "pylib" / "tvm_ffi").glob(f"core.cpython-{tag}-*.so")):
        problems.append(f"pylib/tvm_ffi has no core for CPython {DEVICE_PYTHON}")
    size, tree = tree_size(bundle), working_tree_size()
    total = (size + tree) / MIB
    log(f"   {bundle}: {size / MIB:.1f} MiB (pylib {tree_size(bundle / 'pylib') / MIB:.1f}, "
        f"artifacts {tree_size(bundle / 'artifacts') / MIB:.1f}); working tree "
        f"{tree / MIB:.1f} MiB; together {total:.1f} of {args.carry_limit_mib:g} MiB")  # fmt: skip
    if args.carry_limit_mib and total > args.carry_limit_mib:
        problems.append(f"{total:.1f} MiB to carry, over {args.carry_limit_mib:g} MiB")
    if problems:
        raise CheckFailedError("; ".join(problems))
    checked = sum(v is True for v in nvrtc)
    state["build_failed"] = known
    return (f"{len(nvrtc)} artifacts up to date ({checked} NVRTC-checked for "
            f"{manifest['arch']}), {total:.1f} MiB to carry"
            + (f"; resdsl failed to compile {', '.join(known)} (reported as such)"
               if known else ""))  # fmt: skip


def check_rebuild(args: argparse.Namespace, state: dict) -> str:
    from .environment import device_env

    bundle = Path(args.artifacts).resolve()
    if not (bundle / "manifest.json").is_file():
        raise CheckFailedError("no bundle to rebuild")
    cmd = [sys.executable, str(PACKAGE), "device", "--artifacts", str(bundle),
           "--out", str(state["out"] / "rebuild")]  # fmt: skip
    if args.only:
        cmd += ["--only", *args.only]
    rc = subprocess.run(cmd, env=device_env(bundle), cwd=ROOT).returncode
    if rc != EXIT_NO_GPU:
        raise CheckFailedError(f"device exited {rc}, expected {EXIT_NO_GPU} (no GPU) after rebuild")
    text = (state["out"] / "rebuild" / "gpu_results.txt").read_text()
    rebuilt = [line for line in text.splitlines() if "rebuilt byte for byte" in line]
    return rebuilt[-1] if rebuilt else "rebuilt"


def check_peers(args: argparse.Namespace, state: dict) -> str:
    from .peers_check import peers_check

    modes = [] if args.no_compile else args.compile_modes
    ns = argparse.Namespace(out=str(state["out"] / "peers"), compile_modes=modes)
    if peers_check(ns) != 0:
        raise CheckFailedError(f"peers-check failed (see {state['out'] / 'peers'})")
    return "reference, eager NCHW/channels_last, cuda graph (CPU stand-in)" + "".join(
        f", compile {m}" for m in modes
    )


def synthetic_run(configs: list[tuple], macs: dict[str, int], peak: dict[str, float]):
    """Made-up results for ``configs``: (ready, artifacts, timings), the peers at 30% of the
    ``peak`` and resdsl at 0.9, 1.1 or 1.3 times that, one artifact in four unmeasured,
    one in seven failing parity, max-autotune missing every other row; so that every
    verdict occurs. A check of the report's rendering, not a measurement."""
    ready, artifacts, timings = [], {}, {}
    for i, (model, dtype, batch, variant) in enumerate(configs):
        name = artifact_name(model, dtype, batch, variant)
        ready.append(({"name": name, "model": model, "dtype": dtype, "batch": batch,
                       "variant": variant}, None))  # fmt: skip
        peer_ms = 2e3 * macs[model] * batch / (0.3 * peak["fp16" if dtype == "float16" else
                                                            "fp32"] * 1e12)  # fmt: skip
        factor = [None, 0.9, 1.1, 1.3][i % 4]
        artifacts[name] = {"ok": i % 7 != 6, **({"ms": peer_ms * factor} if factor else {})}
        timings[artifact_name(model, dtype, batch)] = {
            "peers": {"eager channels_last": 1.5 * peer_ms, "cuda graph": peer_ms,
                      **({"compile max-autotune": 1.05 * peer_ms} if i % 2 else {})}
        }  # fmt: skip
    return ready, artifacts, timings


def check_report(args: argparse.Namespace, state: dict) -> str:
    import resdsl

    from .report import Report, summary
    from .settings import peak_for

    gpu = "NVIDIA H100 80GB HBM3"
    configs = state.get("configs") or selected_configs(args.only)
    macs = {m: resdsl.load(SPECS[m]).macs for m in {c[0] for c in configs}}
    ready, artifacts, timings = synthetic_run(configs, macs, peak_for(gpu)[1])
    report = Report(state["out"] / "report")
    report.say(f"(made-up times on {gpu}: a check of the table, not a measurement)")
    report.data["artifacts"] = artifacts
    report.data["torch"] = timings
    expected = ["eager channels_last", "cuda graph", "compile max-autotune"]
    rows = summary(report, ready, timings, expected, gpu, args.tf32, macs)
    verdicts = {r["verdict"] for r in rows}
    known = {"met", "NOT met", "unmeasured", "parity FAIL", "build FAIL"}
    if len(rows) != len(configs) or not verdicts <= known:
        raise CheckFailedError(
            f"{len(rows)} rows for {len(configs)} configurations, verdicts {sorted(verdicts)}"
        )
    no_peak = [r["name"] for r in rows if r["ms"] and r["pct_of_peak"] is None]
    if no_peak:
        raise CheckFailedError(f"no % of peak for {no_peak}")
    return f"{len(rows)} rows, verdicts {', '.join(sorted(verdicts))}; in {report.out}"
