"""The GPU check's pure-Python parts (benchmarks/gpu, benchmarks/gpu_check.sh): the
configurations, targets and verdicts, TFLOP/s and peaks, the summary table, the time
budget and the dry run's argument handling. No GPU, TVM or model weights needed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu import settings  # noqa: E402
from gpu.cli import build_parser, main  # noqa: E402
from gpu.dryrun import budget_problems, check_options, selected_configs  # noqa: E402
from gpu.report import Report, judge, summary, verdict  # noqa: E402
from gpu.settings import artifact_name, peak_for, target_for, tflops  # noqa: E402

RESNET50_MACS = 4_089_184_256  # resdsl info examples/resnet50.res


def test_configs_are_issue_20s_matrix_most_important_first():
    names = [artifact_name(*c) for c in settings.CONFIGS]
    assert len(names) == len(set(names)) == 16
    assert {(m, d, b) for m, d, b, _ in settings.CONFIGS} == {
        (m, d, b) for m in settings.MODELS for d in ("float16", "float32") for b in (1, 32)
    }
    assert set(settings.MODELS) == {"resnet50", "convnext_tiny", "efficientnet_b0", "vit_b_16"}
    # float16 before float32, batch 1 before 32 within a dtype
    assert names[:4] == [f"{m}-float16-b1" for m in settings.MODELS]
    assert names.index("vit_b_16-float16-b32") < names.index("resnet50-float32-b1")
    assert all(not v for *_, v in settings.CONFIGS)
    assert not set(settings.EXTRA_CONFIGS) & set(settings.CONFIGS)
    for m in settings.MODELS:
        assert settings.SPECS[m].is_file() and m in settings.TORCHVISION


@pytest.mark.parametrize(
    ("config", "target"),
    [
        (("resnet50", "float16", 1, ""), 1.0),
        (("vit_b_16", "float16", 32, ""), 1.2),
        (("convnext_tiny", "float32", 1, ""), 1.2),
        (("efficientnet_b0", "float32", 32, ""), 1.2),
        (("resnet50", "float16", 1, "tvm"), None),  # a variant: compared, not judged
        (("edges", "float16", 1, ""), None),
        (("resnet18", "float32", 1, ""), None),
    ],
)
def test_targets(config, target):
    assert target_for(*config) == target


def test_verdicts():
    assert verdict(1.0, 1.0, True) == "met"  # at the bound is met
    assert verdict(1.0001, 1.0, True) == "NOT met"
    assert verdict(0.5, 1.2, False) == "parity FAIL"  # fast and wrong meets nothing
    assert verdict(None, 1.2, True) == "unmeasured"
    assert verdict(None, 1.2, None) == "unmeasured"
    assert verdict(0.5, None, True) == "-"


def test_tflops_from_a_known_mac_count():
    # 2 FLOPs per MAC: resnet50 at batch 32 in 10 ms is 2 * 4.089e9 * 32 / 0.01 = 26.17 TFLOP/s
    assert tflops(RESNET50_MACS, 32, 0.010) == pytest.approx(26.171, abs=1e-3)
    assert tflops(10**12, 1, 1.0) == 2.0


@pytest.mark.parametrize(
    ("name", "row", "fp16", "fp32"),
    [
        ("NVIDIA H100 80GB HBM3", "H100", 989.5, 67.0),
        ("NVIDIA H100 PCIe", "H100 PCIe", 756.5, 51.2),
        ("NVIDIA H100 NVL", "H100 NVL", 835.5, 60.0),
        ("NVIDIA H200", "H200", 989.5, 67.0),
        ("NVIDIA H200 NVL", "H200 NVL", 835.5, 60.0),
    ],
)
def test_peaks_by_device_name(name, row, fp16, fp32):
    matched, peaks = peak_for(name)
    assert matched == row
    assert (peaks["fp16"], peaks["fp32"]) == (fp16, fp32)
    assert peaks["fp32"] < peaks["tf32"] < peaks["fp16"]


def test_unknown_devices_have_no_peak():
    assert peak_for("NVIDIA A100-SXM4-80GB") is None
    assert peak_for(None) is None


def test_judge_takes_the_best_peer_and_the_peak_that_applies():
    a = {"name": "resnet50-float16-b32", "model": "resnet50", "dtype": "float16", "batch": 32}
    peers = {"eager channels_last": 4.0, "cuda graph": 3.0}
    expected = ["eager channels_last", "cuda graph", "compile max-autotune"]
    _, peaks = peak_for("NVIDIA H100 80GB HBM3")
    row = judge(a, {"ms": 3.5, "ok": True}, peers, expected, RESNET50_MACS, peaks)
    assert row["best_peer"] == "cuda graph" and row["best_ms"] == 3.0
    assert row["ratio"] == pytest.approx(3.5 / 3.0)
    assert row["target"] == 1.2 and row["verdict"] == "met"
    assert row["tflops"] == pytest.approx(2 * RESNET50_MACS * 32 / 3.5e-3 / 1e12)
    assert row["pct_of_peak"] == pytest.approx(100 * row["tflops"] / 989.5)
    assert row["missing_peers"] == ["compile max-autotune"]
    # float32 is held against the CUDA cores' peak (resdsl has no TF32 path)
    row = judge({**a, "dtype": "float32", "batch": 1}, {"ms": 5.0, "ok": True}, peers,
                expected, RESNET50_MACS, peaks)  # fmt: skip
    assert row["peak_tflops"] == 67.0 and row["verdict"] == "NOT met"  # 5/3 > 1.2
    row = judge(a, {"ok": True}, {}, expected, RESNET50_MACS, peaks)
    assert row["ratio"] is None and row["verdict"] == "unmeasured" and row["tflops"] is None


def test_summary_marks_every_row_and_counts_the_targets(tmp_path):
    report = Report(tmp_path)
    ready, timings = [], {}
    for i, (m, d, b, v) in enumerate(settings.CONFIGS[:4]):
        name = artifact_name(m, d, b, v)
        ready.append(({"name": name, "model": m, "dtype": d, "batch": b, "variant": v}, None))
        report.data["artifacts"][name] = {"ms": [0.9, 1.1, 1.0, None][i], "ok": True}
        timings[name] = {"peers": {"cuda graph": 1.0, "eager channels_last": 2.0}}
    report.data["torch"] = timings
    macs = dict.fromkeys(settings.MODELS, RESNET50_MACS)
    broken = {"name": "vit_b_16-float32-b32", "model": "vit_b_16", "dtype": "float32",
              "batch": 32, "variant": "", "error": "AssertionError: not inlined"}  # fmt: skip
    rows = summary(report, ready, timings, ["eager channels_last", "cuda graph"],
                   "NVIDIA H200", tf32=False, macs=macs, failed_builds=[broken])  # fmt: skip
    verdicts = [r["verdict"] for r in rows]
    assert verdicts == ["met", "NOT met", "met", "unmeasured", "build FAIL"]
    assert report.data["targets"] == {"met": 2, "NOT met": 1, "unmeasured": 1,
                                      "parity FAIL": 0, "build FAIL": 1, "of": 5}  # fmt: skip
    text = (tmp_path / "gpu_results.txt").read_text()
    assert "TF32: off" in text and "989.5" in text and "NOT met" in text
    assert "FAILED to compile on the build machine: AssertionError" in text
    assert report.data["artifacts"][rows[0]["name"]]["summary"]["ratio"] == pytest.approx(0.9)


def test_time_budget():
    assert budget_problems(settings.DEADLINE, settings.TIMEOUT, settings.COMPILE_ALLOWANCE) == []
    assert settings.TIMEOUT <= 600  # one device call
    assert budget_problems(560, 570, 45)  # no room left for the summary
    assert budget_problems(500, 650, 45)  # over one call
    assert budget_problems(40, 570, 45)  # no torch.compile could start


def test_dry_run_arguments():
    parser = build_parser()
    args = parser.parse_args(["dry-run", "--only", "resnet50", "--skip", "bundle", "rebuild",
                              "--deadline", "500", "--tf32"])  # fmt: skip
    assert args.command == "dry-run" and args.skip == ["bundle", "rebuild"]
    assert args.deadline == 500 and args.tf32 and args.compile_modes == ["max-autotune"]
    assert args.timeout == float(
        __import__("os").environ.get("GPU_CHECK_TIMEOUT") or settings.TIMEOUT
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["dry-run", "--skip", "everything"])
    # the run options dry-run takes are those device takes
    dry = {a.dest for a in parser._subparsers._group_actions[0].choices["dry-run"]._actions}
    dev = {a.dest for a in parser._subparsers._group_actions[0].choices["device"]._actions}
    assert dev <= dry


def test_only_selects_configs():
    assert [c[0] for c in selected_configs(["resnet50"])] == ["resnet50"] * 4
    assert len(selected_configs(["float16-b1"])) == 4
    assert selected_configs(None) == settings.CONFIGS
    assert selected_configs(["nothing"]) == []


def test_check_options_refuses_a_deadline_past_the_timeout():
    args = build_parser().parse_args(["dry-run", "--deadline", "560", "--timeout", "570"])
    with pytest.raises(Exception, match="GPU_CHECK_TIMEOUT"):
        check_options(args, {})
    args = build_parser().parse_args(["dry-run"])
    assert "deadline" in check_options(args, {})


def test_prepare_refuses_an_unknown_only_before_building(capsys):
    assert main(["prepare", "--only", "resnet50-float16-b7"]) == 2
    assert "not among the configurations" in capsys.readouterr().out


def _shell(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})  # fmt: skip


HEAVY = ["--skip", "references", "bundle", "rebuild", "peers", "report"]


def test_shell_dry_run_exit_status(tmp_path):
    ok = _shell("--dry-run", *HEAVY, "--out", str(tmp_path))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "dry run: all in order" in ok.stdout
    same = _shell("run", "--dry-run", *HEAVY, "--out", str(tmp_path))
    assert same.returncode == 0
    late = _shell("--dry-run", *HEAVY, "--out", str(tmp_path), env={"GPU_CHECK_TIMEOUT": "540"})
    assert late.returncode == 1 and "options     FAILED" in late.stdout
    none = _shell("--dry-run", *HEAVY, "--out", str(tmp_path), "--only", "resnet99")
    assert none.returncode == 1 and "selects none" in none.stdout
    assert _shell("bogus").returncode == 2


def test_compile_plan_goes_mode_by_mode_in_the_artifacts_order():
    from gpu.device import Bench, compile_plan

    configs = [*settings.CONFIGS[:2], ("resnet50", "float16", 1, "tvm")]  # a variant: same shape
    ready = [({"model": m, "dtype": d, "batch": b}, None) for m, d, b, _ in configs]
    bench = Bench(None, {}, ready, "cpu", repeats=1, budget=0.1)
    plan = compile_plan(bench, ["max-autotune", "default"])
    first, second = settings.CONFIGS[0][:3], settings.CONFIGS[1][:3]
    assert plan == [("max-autotune", *first), ("max-autotune", *second),
                    ("default", *first), ("default", *second)]  # fmt: skip


def test_source_hash_covers_the_files_a_compile_used():
    from gpu.weights import source_sha256

    one = source_sha256(["resdsl/__init__.py"])
    assert one == source_sha256(["resdsl/__init__.py"])
    assert one != source_sha256(["resdsl/network.py"])
    assert source_sha256(["resdsl/gone.py"]) != source_sha256(["resdsl/other_gone.py"])


def test_dry_run_report_step_renders_every_configuration(tmp_path):
    from gpu.dryrun import check_report

    args = build_parser().parse_args(["dry-run", "--only", "resnet50", "efficientnet"])
    note = check_report(args, {"out": tmp_path})
    assert note.startswith("8 rows")
    text = (tmp_path / "report" / "gpu_results.txt").read_text()
    assert "H100" in text and "met" in text and "efficientnet_b0-float32-b32" in text


def test_cuda_sources_are_found_in_a_model_so_by_their_length_prefix():
    import struct

    from gpu.kernels import MARK, embedded_cuda_sources

    code = MARK + b'\nextern "C" __global__ void k(float* x) { x[0] = 1.0f; }\n'
    blob = b"\x7fELF junk" + struct.pack("<Q", len(code)) + code + b"tail" + MARK + b"no length"
    assert embedded_cuda_sources(blob) == [code.decode()]
    assert embedded_cuda_sources(b"no kernels here") == []
    # a length that runs past the end is not a source
    assert embedded_cuda_sources(struct.pack("<Q", 10**9) + code) == []
