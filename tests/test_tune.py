"""Tuning (``--tune-trials``, ``--tune-db``): MetaSchedule records measured in-process, kept in a
persistent database, reused by later compiles without tuning again; tuned artifacts match the
PyTorch backend; the database survives errors and interrupts.

The net has one kernel, and the search is MetaSchedule's cheapest (random traces, no cost model:
``tune.STRATEGY``/``tune.COST_MODEL`` are patched), so the file stays quick on two cores; the
default search runs the same builder, runner and database code.
"""

import contextlib
import io
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

import tvm_ffi  # noqa: E402

import resdsl  # noqa: E402
from resdsl import runtime  # noqa: E402
from resdsl.backends.tvm import BuildOptions, build, compile_network  # noqa: E402
from resdsl.backends.tvm import tune as tuning  # noqa: E402
from resdsl.cli import main  # noqa: E402
from resdsl.weights import from_module  # noqa: E402

SPEC = """
network tiny() (x: (8, 9, 9)) {
    return x -> c: conv2d(16, 3, padding=1) -> relu
}
"""
PER_KERNEL = 8  # the smallest batch: every kernel gets one
HAS_CUDA = bool(tvm.cuda(0).exist)


@contextlib.contextmanager
def cheap_search():
    """Random traces and no cost model: the fastest search MetaSchedule has."""
    saved = tuning.STRATEGY, tuning.COST_MODEL
    tuning.STRATEGY, tuning.COST_MODEL = "replay-trace", "random"
    try:
        yield
    finally:
        tuning.STRATEGY, tuning.COST_MODEL = saved


CHEAP_CLI = (
    "import sys; from resdsl.backends.tvm import tune; from resdsl.cli import main; "
    "tune.STRATEGY, tune.COST_MODEL = 'replay-trace', 'random'; sys.exit(main(sys.argv[1:]))"
)  # the CLI in a process of its own, with cheap_search's search


def tune_in_a_process(spec, db, out) -> subprocess.Popen:
    """``resdsl compile SPEC --tune-trials 800`` (CHEAP_CLI), its stderr piped as text."""
    argv = [
        "compile", str(spec), "--target", "llvm", "--tune-trials", "800",
        "--tune-db", str(db), "-o", str(out),
    ]  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-c", CHEAP_CLI, *argv], stderr=subprocess.PIPE, text=True
    )


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), cheap_search():
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def snapshot(directory) -> dict[str, bytes]:
    return {
        name: open(os.path.join(directory, name), "rb").read() for name in os.listdir(directory)
    }


def kernels(executable) -> str:
    """The LLVM IR of an executable's kernels (what tuning changes), minus heap addresses."""
    return re.sub(r"0x[0-9a-f]+", "0x", executable.mod.imports[0].inspect_source("ll"))


def kernel_tasks() -> list:
    """The kernels the build compiles (the convolution, and any layout changes around it)."""
    net, options = resdsl.loads(textwrap.dedent(SPEC)), BuildOptions("llvm")
    target = tuning.tuning_target(options.tvm_target())
    return tuning.extract_tasks(tuning._relax_module(net, options, None, 0), target)


class Tuned:
    def __init__(self, spec, db, artifact, kernels, code, out, err):
        self.spec, self.db, self.artifact, self.kernels = spec, db, artifact, kernels
        self.trials = PER_KERNEL * len(kernels)
        self.records = self.trials + len(kernels)  # and each kernel's default schedule
        self.code, self.out, self.err = code, out, err


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """``resdsl compile --tune-trials 8*kernels --tune-db DB --check``, once for the module."""
    root = tmp_path_factory.mktemp("tuned")
    spec = root / "tiny.res"
    spec.write_text(textwrap.dedent(SPEC))
    db, artifact = root / "db", root / "out"
    names = [task.task_name for task in kernel_tasks()]
    result = run_cli(
        "compile", str(spec), "--target", "llvm", "--tune-trials", str(PER_KERNEL * len(names)),
        "--tune-db", str(db), "-o", str(artifact), "--check",
    )  # fmt: skip
    return Tuned(spec, db, artifact, names, *result)


def test_tuning_reports_progress_and_keeps_records(tuned):
    assert tuned.code == 0, tuned.err
    err, k, n = tuned.err, len(tuned.kernels), tuned.trials
    assert any(re.fullmatch(r"fused_conv2d\w*_relu", name) for name in tuned.kernels)
    assert f"tuning tiny for llvm: {k} kernels, {n} trials, records in {tuned.db}" in err
    assert f"tuning: measured the default schedules of {k} of {k} kernels" in err
    progress = re.findall(
        rf"^tuning \[ *(\d+)/{n}\] task (\d+)/{k} (\w+): (\d+)/{PER_KERNEL} ok, "
        r"best ([\d.]+) ms.*, \d+ s$",
        err,
        re.MULTILINE,
    )  # one line per batch: each kernel once, in order, every candidate built and ran
    assert [(int(done), int(task), name, int(ok)) for done, task, name, ok, _ in progress] == [
        (PER_KERNEL * (i + 1), i + 1, name, PER_KERNEL) for i, name in enumerate(tuned.kernels)
    ], err
    assert all(float(best) > 0 for *_, best in progress)
    assert re.search(rf"tuning: {n} trials run in [\d.]+ s, [\d.]+/s; {k} of {k} kernels", err)
    assert f"({tuned.records} records in {tuned.db})" in err
    assert len((tuned.db / tuning.RECORD_FILE).read_text().splitlines()) == tuned.records
    assert len((tuned.db / tuning.WORKLOAD_FILE).read_text().splitlines()) == k
    assert re.search(r"^check output: max abs diff \S+ \(tolerance \S+\) ok$", tuned.out, re.M)


def test_winograd_kernels_are_not_tuned():
    # 10 x 10 makes the convolution Winograd's (9 x 9 in SPEC keeps it direct): its kernels
    # keep resdsl's rules (see extract_tasks), so only the layout changes are left to tune.
    net = resdsl.loads(textwrap.dedent(SPEC).replace("(8, 9, 9)", "(8, 10, 10)"))
    options = BuildOptions("llvm")
    target = tuning.tuning_target(options.tvm_target())
    tasks = tuning.extract_tasks(tuning._relax_module(net, options, None, 0), target, options)
    assert tasks and all(task.task_name.startswith("transpose") for task in tasks)
    with target:
        fused = tvm.transform.Sequential(tuning.fuse_passes(target, options))(
            tuning._relax_module(net, options, None, 0)
        )
    names = [gv.name_hint for gv, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert "winograd_gemm" in names  # ... which the build does have


def test_tuning_sees_the_micro_batch_kernels_the_build_compiles():
    net = resdsl.loads(textwrap.dedent(SPEC))
    options = BuildOptions("llvm", batch=4, micro_batch=2)
    target = tuning.tuning_target(options.tvm_target())
    tasks = tuning.extract_tasks(tuning._relax_module(net, options, None, 0), target, options)
    (conv,) = [t for t in tasks if "conv2d" in t.task_name]
    shapes = [[int(d) for d in p.ty.shape] for p in conv.dispatched[0]["main"].params]
    assert shapes[0][0] == 2  # the batch of `forward`, not main's 4
    assert {"split", "concatenate"} <= {t.task_name for t in tasks}


def test_a_crash_keeps_the_records_of_finished_batches(tuned, tmp_path):
    # SIGKILL, like a candidate kernel that faults: nothing of the process's own cleanup runs.
    # The records are put in place after every batch, so the finished batches survive.
    db, out = tmp_path / "db", tmp_path / "out"
    proc = tune_in_a_process(tuned.spec, db, out)
    first = None
    for line in proc.stderr:
        found = re.match(r"tuning \[ *\d+/800\] task 1/\d+ \w+: (\d+)/\d+ ok", line)
        if found:
            first = int(found.group(1))
        if first is not None and re.match(r"tuning \[ *\d+/800\] task 2/", line):
            proc.kill()  # task 1's batch was put in place before task 2's line was printed
            break
    proc.wait()
    assert first is not None and proc.returncode == -signal.SIGKILL
    assert not (out / "model.so").exists()
    database = tuning.open_database(str(db))
    assert database is not None
    k = len(tuned.kernels)
    assert len((db / tuning.WORKLOAD_FILE).read_text().splitlines()) == k
    assert len(database) >= k + first  # every kernel's default schedule, then task 1's batch


def test_sigterm_stops_after_the_batch_and_keeps_the_records(tuned, tmp_path):
    # `kill`, or a CI job's timeout: the records are put in place, nothing else is written,
    # and no working copy is left behind in the database directory
    db, out = tmp_path / "db", tmp_path / "out"
    proc = tune_in_a_process(tuned.spec, db, out)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if re.match(r"tuning \[ *\d+/800\] task 1/", line):
            proc.send_signal(signal.SIGTERM)
    proc.wait()
    err = "".join(lines)
    assert proc.returncode == 143, err
    assert "tuning: terminated; stopping after this batch" in err
    stopped = re.search(r"^tuning: stopped after (\d+) trials; their records are in ", err, re.M)
    assert stopped and err.endswith("terminated\n") and "Traceback" not in err, err
    assert sorted(os.listdir(db)) == sorted([tuning.RECORD_FILE, tuning.WORKLOAD_FILE])
    assert len(tuning.open_database(str(db))) == len(tuned.kernels) + int(stopped.group(1))
    assert not out.exists()


def test_tuning_measures_on_the_threads_artifacts_run_on():
    # TVM's own pool size is half the logical CPUs on x86: one of this VM's two cores. The
    # candidates were timed so while the artifacts ran on both, and the tuned build took a
    # stem convolution that was 4% faster on one thread and 2x slower on two.
    script = (  # the cores first: a started pool pins this thread to one of them
        "import tvm, resdsl.runtime; from resdsl.backends.tvm import tune; "
        "cores = resdsl.runtime.physical_cores(); "
        "print(tvm.get_global_func('runtime.NumThreads')(), cores)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == out[1]


def _children() -> set[int]:
    """This process's child processes, zombies included. Other tests may leave long-lived
    children behind (multiprocessing's resource tracker after a spawn), so the guarded
    builder is checked for adding none, not for there being none at all."""
    import psutil

    return {c.pid for c in psutil.Process().children()}


def test_guarded_drops_a_build_that_hangs_or_crashes():
    def build(i: int) -> None:
        if i == 2:
            time.sleep(600)  # a compile that never ends
        if i == 4:
            os._exit(3)  # a compiler that crashes
        if i == 5:
            raise ValueError("does not build")

    before = _children()
    start = time.monotonic()
    results = list(tuning.guarded(7, build, timeout=1.0))
    assert results == [
        (0, None), (1, None), (2, "compiling took over 1 s"), (3, None),
        (4, "the compiler crashed"), (5, "ValueError: does not build"), (6, None),
    ]  # fmt: skip
    assert time.monotonic() - start < 30
    assert _children() <= before  # every child was reaped


def test_guarded_builds_in_children_side_by_side(tmp_path):
    # each item's build runs in a child, which leaves its result in a file; two at a time
    def build(i: int) -> None:
        time.sleep(0.5)
        (tmp_path / f"{i}").write_text(f"{os.getpid()} {time.monotonic()}")

    before = _children()
    start = time.monotonic()
    results = list(tuning.guarded(6, build, timeout=30.0, workers=2))
    elapsed = time.monotonic() - start
    assert sorted(results) == [(i, None) for i in range(6)]
    pids = {int((tmp_path / f"{i}").read_text().split()[0]) for i in range(6)}
    assert len(pids) == 2 and os.getpid() not in pids  # two children, each reused
    assert elapsed < 6 * 0.5  # side by side: about 1.5 s, not 3
    assert _children() <= before


def test_guarded_leaves_what_is_not_built_by_the_deadline():
    def build(i: int) -> None:
        time.sleep(0.3 if i < 2 else 600)

    before = _children()
    start = time.monotonic()
    results = list(tuning.guarded(5, build, timeout=300.0, deadline=start + 2.0))
    assert results == [(0, None), (1, None)] + [(i, tuning.OUT_OF_TIME) for i in (2, 3, 4)]
    assert time.monotonic() - start < 10  # the hung build was stopped at the deadline
    assert _children() <= before
    # unguarded, a build is not interrupted, but none starts after the deadline
    unguarded = list(tuning.guarded(3, lambda i: None, timeout=None, deadline=start))
    assert unguarded == [(i, tuning.OUT_OF_TIME) for i in range(3)]


def test_a_candidate_that_does_not_compile_in_time_is_a_failed_build(tuned, tmp_path, monkeypatch):
    monkeypatch.setattr(tuning, "BUILD_TIMEOUT_S", 0.0)
    db, out = tmp_path / "db", tmp_path / "out"
    trials = PER_KERNEL * len(tuned.kernels)
    code, _, err = run_cli(
        "compile", str(tuned.spec), "--target", "llvm", "--tune-trials", str(trials),
        "--tune-db", str(db), "-o", str(out),
    )  # fmt: skip
    assert code == 0, err
    batches = re.findall(r"^tuning \[ *\d+/\d+\] task \d+/\d+ \w+: (\d+)/(\d+) ok", err, re.M)
    assert batches and all(ok == "0" for ok, _ in batches), err
    assert err.count("dropped (compiling took over 0 s)") == len(batches)
    k = len(tuned.kernels)
    assert f"measured the default schedules of 0 of {k} kernels" in err  # guarded too
    records = tuning.open_database(str(db)).get_all_tuning_records()
    assert len(records) == trials  # failed candidates are recorded, with MetaSchedule's 1e10 s
    assert {float(s) for r in records for s in r.run_secs} == {1e10}
    assert (out / "model.so").is_file()  # built with the default rules


def test_a_time_budget_leaves_the_candidates_it_has_not_built(tuned, tmp_path):
    # spent before anything was built: the batch ends at once and nothing is recorded
    db, out = tmp_path / "db", tmp_path / "out"
    code, _, err = run_cli(
        "compile", str(tuned.spec), "--target", "llvm", "--tune-trials", "800",
        "--tune-time", "0.001s", "--tune-db", str(db), "-o", str(out),
    )  # fmt: skip
    assert code == 0, err
    k = len(tuned.kernels)
    assert f"tuning: measured the default schedules of 0 of {k} kernels" in err
    batches = re.findall(r"^tuning \[ *\d+/800\] .*$", err, re.MULTILINE)
    assert len(batches) == 1, err  # the first batch, then stop
    assert re.search(r": 0/0 ok, \d+ not built \(the time budget is spent\), \d+ s$", batches[0])
    assert "tuning: the time budget (0 s) is spent; stopping" in err
    assert re.search(r"tuning: 0 trials run in [\d.]+ s", err), err
    assert tuning.open_database(str(db)) is None  # not tried, so not recorded as failures
    assert (out / "model.so").is_file()


@pytest.mark.parametrize(
    ("value", "message"),
    [("soon", "not a duration: 'soon'"), ("0m", "must be positive"), ("-5", "must be positive")],
)
def test_bad_tune_time(tuned, tmp_path, value, message, capsys):
    with pytest.raises(SystemExit) as info:  # argparse's own usage error
        main(["compile", str(tuned.spec), "--target", "llvm", "--tune-trials", "8",
              f"--tune-time={value}", "-o", str(tmp_path / "out")])  # fmt: skip
    assert info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_second_compile_reuses_records_without_tuning(tuned, tmp_path):
    before = snapshot(tuned.db)
    code, out, err = run_cli(
        "compile", str(tuned.spec), "--target", "llvm", "--tune-db", str(tuned.db),
        "-o", str(tmp_path / "again"), "--check",
    )  # fmt: skip
    assert code == 0, err
    k = len(tuned.kernels)
    assert "tuning: 0 trials run" in err
    assert f"{k} of {k} kernels have records ({tuned.records} records in {tuned.db})" in err
    assert "tuning [" not in err  # no progress: nothing was measured
    assert snapshot(tuned.db) == before
    assert re.search(r"^check output: .* ok$", out, re.M)


def test_default_database_is_per_target_under_the_env_dir(tuned, tmp_path, monkeypatch):
    target = tuning.tuning_target(BuildOptions().tvm_target())
    shutil.copytree(tuned.db, tmp_path / tuning.target_key(target))
    monkeypatch.setenv(tuning.ENV_DIR, str(tmp_path))
    code, _, err = run_cli(
        "compile", str(tuned.spec), "--target", "llvm", "-o", str(tmp_path / "out")
    )
    assert code == 0, err
    expected = os.path.join(str(tmp_path), tuning.target_key(target))
    k = len(tuned.kernels)
    assert f"{k} of {k} kernels have records ({tuned.records} records in {expected})" in err


def searched(database, kernel: tvm.IRModule):
    """The fastest record MetaSchedule's search measured for a kernel (not the default's).

    Default-rule schedules are traces without sampling instructions; searched ones sample.
    """
    records = [
        r for r in database.get_all_tuning_records()
        if any(i.kind.name.startswith("Sample") for i in r.trace.insts)
        and tvm_ffi.structural_equal(r.workload.mod, kernel)
    ]  # fmt: skip
    return min(records, key=lambda r: statistics.mean(float(t) for t in r.run_secs))


def test_tuned_build_applies_the_records_and_matches_torch(tuned, tmp_path):
    """A database holding a searched schedule for the convolution: the build uses it."""
    from tvm.s_tir import meta_schedule as ms

    net = resdsl.loads(textwrap.dedent(SPEC))
    module = net.to_torch(seed=0).eval()
    weights = from_module(module)
    options = BuildOptions("llvm")
    (conv,) = [t for t in kernel_tasks() if t.task_name.startswith("fused_conv2d")]
    record = searched(tuning.open_database(str(tuned.db)), conv.dispatched[0])
    (tmp_path / "db").mkdir()
    one = ms.database.JSONDatabase(work_dir=str(tmp_path / "db"))
    workload = one.commit_workload(record.workload.mod)
    one.commit_tuning_record(
        ms.database.TuningRecord(record.trace, workload, record.run_secs, record.target)
    )
    untuned = kernels(build(net, weights, options))
    first = kernels(build(net, weights, options, database=one))
    second = kernels(
        build(net, weights, options, database=tuning.open_database(str(tmp_path / "db")))
    )
    assert first == second  # the same records give the same kernels
    assert first != untuned  # and they are not the default schedule's

    compile_network(net, str(tmp_path / "out"), options, weights=module, database=one)
    x = np.random.default_rng(0).standard_normal((1, 8, 9, 9)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    actual = runtime.load(str(tmp_path / "out"))(x)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


def test_database_location():
    target = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"})
    assert tuning.target_key(target) == "llvm-skylake-avx512"
    assert tuning.target_key(tvm.target.Target({"kind": "cuda", "arch": "sm_90"})) == "cuda-sm_90"
    assert tuning.database_dir(target, "given") == "given"


def test_database_location_from_the_environment(monkeypatch, tmp_path):
    target = tvm.target.Target({"kind": "llvm", "mcpu": "znver4"})
    monkeypatch.setenv(tuning.ENV_DIR, str(tmp_path / "env"))
    assert tuning.database_dir(target) == str(tmp_path / "env" / "llvm-znver4")
    monkeypatch.delenv(tuning.ENV_DIR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    expected = tmp_path / "cache" / "resdsl" / "tuning" / "llvm-znver4"
    assert tuning.database_dir(target) == str(expected)
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / "home" / ".cache" / "resdsl" / "tuning" / "llvm-znver4"
    assert tuning.database_dir(target) == str(expected)


def _new_workload() -> tvm.IRModule:
    a = tvm.te.placeholder((4,), name="a")
    b = tvm.te.compute((4,), lambda i: a[i] * 2.0, name="b")
    return tvm.IRModule({"main": tvm.te.create_prim_func([a, b])})


def test_an_error_leaves_the_records_as_they_were_at_the_last_checkpoint(tuned, tmp_path):
    db = tmp_path / "db"
    shutil.copytree(tuned.db, db)
    before = snapshot(db)
    with pytest.raises(RuntimeError), tuning._writable_database(str(db)) as (database, _):
        database.commit_workload(_new_workload())
        raise RuntimeError("failed mid-way")
    assert snapshot(db) == before


def test_a_checkpoint_puts_the_records_so_far_in_place(tuned, tmp_path):
    db = tmp_path / "db"
    shutil.copytree(tuned.db, db)
    before = snapshot(db)
    k = len(tuned.kernels)
    with pytest.raises(RuntimeError), tuning._writable_database(str(db)) as (database, checkpoint):
        database.commit_workload(_new_workload())
        checkpoint()
        assert len((db / tuning.WORKLOAD_FILE).read_text().splitlines()) == k + 1
        raise RuntimeError("failed after the checkpoint")
    after = snapshot(db)
    assert set(after) == set(before)  # no temporary files left behind
    assert len(after[tuning.WORKLOAD_FILE].decode().splitlines()) == k + 1
    assert after[tuning.RECORD_FILE] == before[tuning.RECORD_FILE]


def test_an_interrupt_keeps_the_records_measured_so_far(tuned, tmp_path):
    db = tmp_path / "db"
    shutil.copytree(tuned.db, db)
    before = snapshot(db)
    with pytest.raises(KeyboardInterrupt), tuning._writable_database(str(db)) as (database, _):
        database.commit_workload(_new_workload())
        raise KeyboardInterrupt
    after = snapshot(db)
    assert set(after) == set(before)  # no temporary files left behind
    workloads = after[tuning.WORKLOAD_FILE].decode().splitlines()
    assert len(workloads) == len(tuned.kernels) + 1
    assert after[tuning.RECORD_FILE] == before[tuning.RECORD_FILE]
    assert len(tuning.open_database(str(db))) == tuned.records


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--target", "llvm", "--tune-trials", "-1"], "--tune-trials must be 0 or more, got -1"),
        (["--target", "torch", "--tune-trials", "4"], "apply to --target llvm or cuda"),
        (["--target", "onnx", "--tune-db", "db"], "apply to --target llvm or cuda"),
        (["--target", "llvm", "--tune-time", "5m"], "give --tune-trials N too"),
    ],
)
def test_tuning_usage_errors(tuned, tmp_path, argv, message):
    code, _, err = run_cli("compile", str(tuned.spec), *argv, "-o", str(tmp_path / "out"))
    assert code == 2 and message in err
    assert not (tmp_path / "out").exists()


def test_unreadable_records_are_an_error(tuned, tmp_path):
    db = tmp_path / "db"
    db.mkdir()
    (db / tuning.WORKLOAD_FILE).write_text("not json\n")
    (db / tuning.RECORD_FILE).write_text("[0, \n")
    out = tmp_path / "out"
    code, _, err = run_cli("compile", str(tuned.spec), "--target", "llvm", "--tune-db", str(db),
                           "-o", str(out))  # fmt: skip
    assert code == 1
    assert f"error[E0702]: cannot read the tuning records in {db}" in err
    assert not out.exists()


def test_records_for_another_kind_of_target_are_refused(tuned, tmp_path):
    """A record measured on llvm for a kernel the cuda build also has: not applied, an error."""
    from tvm.s_tir import meta_schedule as ms

    net, options = resdsl.loads(textwrap.dedent(SPEC)), BuildOptions("cuda")
    target = tuning.tuning_target(options.tvm_target())
    task = tuning.extract_tasks(tuning._relax_module(net, options, None, 0), target)[0]
    db = tmp_path / "db"
    db.mkdir()
    database = ms.database.JSONDatabase(work_dir=str(db))
    workload = database.commit_workload(task.dispatched[0])
    schedule = tvm.s_tir.Schedule(task.dispatched[0])
    schedule.get_loops(schedule.get_output_blocks("root")[0])  # a record needs an instruction
    trace = schedule.trace
    llvm = tvm.target.Target({"kind": "llvm"})
    database.commit_tuning_record(ms.database.TuningRecord(trace, workload, [1e-3], llvm))
    out = tmp_path / "out"
    code, _, err = run_cli("compile", str(tuned.spec), "--target", "cuda", "--tune-db", str(db),
                           "-o", str(out))  # fmt: skip
    assert code == 1
    assert f"error[E0702]: the tuning records in {db} are for llvm, not cuda" in err
    assert not out.exists()


def test_cuda_tuning_needs_a_gpu(tuned, tmp_path):
    if HAS_CUDA:
        pytest.skip("this machine has a CUDA device: tuning for it is possible")
    out = tmp_path / "out"
    code, _, err = run_cli("compile", str(tuned.spec), "--target", "cuda", "--tune-trials", "4",
                           "--tune-db", str(tmp_path / "db"), "-o", str(out))  # fmt: skip
    assert code == 1
    assert "error[E0702]: tuning for cuda measures kernels on the device" in err
    assert not out.exists() and not (tmp_path / "db").exists()


def test_cuda_build_applies_records_before_the_default_gpu_schedules(tmp_path):
    """A CUDA record (here: dlight's fallback at 64 threads a block) replaces the default."""
    from tvm.s_tir import dlight
    from tvm.s_tir import meta_schedule as ms

    net, options = resdsl.loads(textwrap.dedent(SPEC)), BuildOptions("cuda")
    target = tuning.tuning_target(options.tvm_target())
    task = tuning.extract_tasks(tuning._relax_module(net, options, None, 0), target)[0]
    small = tvm.target.Target({"kind": "cuda", "arch": "sm_80", "max_num_threads": 64})
    schedule = dlight.gpu.Fallback().apply(task.dispatched[0]["main"], small, False)
    database = ms.database.JSONDatabase(work_dir=str(tmp_path))
    workload = database.commit_workload(task.dispatched[0])
    database.commit_tuning_record(
        ms.database.TuningRecord(schedule.trace, workload, [1e-3], target)
    )

    def launch_bounds(executable) -> set[str]:
        (cuda,) = [m for m in executable.mod.imports[0].imports if m.kind == "cuda"]
        return set(re.findall(r"__launch_bounds__\((\d+)\)", cuda.inspect_source()))

    weights = from_module(net.to_torch(seed=0))
    assert "64" not in launch_bounds(build(net, weights, options))
    tuned = build(net, weights, options, database=tuning.open_database(str(tmp_path)))
    assert launch_bounds(tuned) == {"64"}
