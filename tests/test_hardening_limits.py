"""Hardening of resource bounds (the project's hardening issue, items 2, 3, 7, 12, 13 and
14): each hostile spec as the issue wrote it is refused with a located error, and, loaded in
a fresh process, takes under 1 s of CPU time and under 200 MB (docs/security.md, Limits);
``info --report`` on 5,000 residual blocks takes seconds and tens of MB, not 34 s and 10 GB.

Positions are counted from the spec text here, never taken from resdsl.
"""

import json
import math
import subprocess
import sys
import time

import pytest

import resdsl
from resdsl import loader
from resdsl.cli import main
from resdsl.elaborate import constant
from resdsl.syntax.parser import MAX_SPEC_SIZE, MAX_STRING
from resdsl.tools import analysis

from .conftest import EXAMPLES, cpu_scale
from .test_limits import measured

NET = "network n() (x: (16,)) {\n"
PATH = "hostile.res"
# CPU-time bounds scale with the machine (tests/conftest.py: cpu_scale)
SECONDS, BYTES = 1.0 * cpu_scale(), 200 * 2**20
REPORT_SPEC = "network n() (x: (16,)) { y = x repeat 5000 { y = y + (y -> linear(16)) } return y }"


def col(text: str, line: int, token: str) -> int:
    """1-based column of the first ``token`` on 1-based ``line`` of ``text``."""
    return text.split("\n")[line - 1].index(token) + 1


def refused(text: str, cls: type = resdsl.LimitError) -> resdsl.SpecError:
    loader._CACHE.clear()
    with pytest.raises(cls) as info:
        resdsl.loads(text, path=PATH)
    assert type(info.value) is cls
    assert info.value.path == PATH
    return info.value


def within_bounds(texts: list[str], outcome: str = "LimitError", bound: float = 1.0) -> None:
    """Each text, loaded in a fresh process, ends in ``outcome`` within ``bound`` CPU seconds
    on the reference machine (scaled to this one's speed) and 200 MB."""
    results = measured(texts)
    assert [r[2] for r in results] == [outcome] * len(texts)

    def over_bounds() -> dict[int, tuple[float, int]]:
        seconds = bound * max(SECONDS, cpu_scale())  # the machine may have slowed since
        return {i: (round(t, 2), m // 2**20) for i, (t, m, _) in enumerate(results)
                if t >= seconds or m >= BYTES}  # fmt: skip

    over = over_bounds()
    if over:  # a burst of load from another process: measure those once more, keep the best
        again = measured([texts[i] for i in over])
        for i, (t, m, _) in zip(over, again, strict=True):
            results[i] = (min(t, results[i][0]), min(m, results[i][1]), results[i][2])
        over = over_bounds()
    assert not over, f"(CPU seconds, MB) of the specs over the bounds: {over}"


# --- 2: `info --report` on 5,000 residual blocks ----------------------------------------------


CLI = "import sys\nfrom resdsl.cli import main\nsys.exit(main(sys.argv[1:]))"


def run_measured(args: list[str]) -> tuple[str, float, int]:
    """stdout, CPU seconds and peak resident bytes of ``resdsl ARGS`` in a child process."""
    code = (
        "import resource, subprocess, sys, json\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "use = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(json.dumps([done.returncode, done.stdout, done.stderr,"
        " use.ru_utime + use.ru_stime, use.ru_maxrss * 1024]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, sys.executable, "-c", CLI, *args],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    rc, out, err, cpu, peak = json.loads(done.stdout)
    assert rc == 0, err
    return out, cpu, peak


@pytest.fixture(scope="module")
def report_spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "blocks.res"
    path.write_text(REPORT_SPEC + "\n")
    return str(path)


def test_report_of_5000_residual_blocks_is_seconds_and_mb(report_spec):
    # was: 34 s and 10.2 GB (a polynomial per node, never freed)
    out, cpu, peak = run_measured(["info", report_spec, "--report"])
    assert cpu < 15 and peak < 300 * 2**20, (cpu, peak // 2**20)
    assert "total 1.412e1505   shortest 0   longest 5000   mean 2500.00   median 2500" in out
    paths = out[out.index("paths from input to output") :].splitlines()
    assert len(paths) == 2 + 1 + 24  # the summary, a header and 24 bins: bounded text
    assert paths[3].split() == ["0-208", "1.338e374", "0.0%", "#"]


def test_report_of_5000_residual_blocks_as_json(report_spec):
    out, cpu, peak = run_measured(["info", report_spec, "--report", "--json"])
    assert cpu < 15 and peak < 300 * 2**20, (cpu, peak // 2**20)
    paths = json.loads(out)["report"]["paths"]
    assert paths["total"] == 2**5000  # exact
    assert (paths["shortest"], paths["longest"], paths["median"]) == (0, 5000, 2500)
    assert paths["histogram"] is None  # 5,001 lengths: only the bins
    assert len(paths["bins"]) == 24 and sum(n for _, _, n in paths["bins"]) == 2**5000
    lo, hi, n = paths["bins"][0]
    assert (lo, hi) == (0, 208) and n == sum(math.comb(5000, k) for k in range(209))


def test_path_stats_frees_and_stays_exact():
    net = resdsl.loads(REPORT_SPEC.replace("5000", "300"))
    stats = analysis.path_stats(net.graph)
    assert stats.histogram == {k: math.comb(300, k) for k in range(301)}
    assert (stats.total, stats.mean, stats.median) == (2**300, 150, 150)


def test_histogram_past_its_budget_is_left_out(monkeypatch):
    net = resdsl.loads(REPORT_SPEC.replace("5000", "50"))
    monkeypatch.setattr(analysis, "MAX_HISTOGRAM_WORK", 100)
    stats = analysis.path_stats(net.graph)
    assert stats.histogram is None and stats.median is None
    assert (stats.total, stats.shortest, stats.longest, stats.mean) == (2**50, 0, 50, 25)
    text = analysis.render_report(analysis.report(net))
    assert "total 1,125,899,906,842,624   shortest 0   longest 50   mean 25.00\n" in text + "\n"
    assert "(no histogram: the counts by length are too large to compute)" in text


def test_counts_past_the_str_limit():
    # str() refuses ints past 4,300 digits: JSON gets an approximation, text too
    n = 2**20000
    assert analysis._scientific(n) == "3.980e6020"
    assert analysis._json_int(n) == "3.980e6020" and analysis._json_int(2**5000) == 2**5000
    assert analysis._count(10**23) == f"{10**23:,}" and analysis._count(10**24) == "1.000e24"


# --- 3: string literals and spec size ----------------------------------------------------------


def five_mb_literal() -> str:
    return NET + '    s = "' + "a" * 5_000_000 + '"\n    return x\n}\n'


def test_five_mb_string_literal_is_refused_at_the_file_start(tmp_path):
    # was: 2.1 GB (440 bytes a character), then MemoryError under an address-space limit
    text = five_mb_literal()
    err = refused(text)
    assert (err.code, err.line, err.column) == ("E0501", 1, 1)
    assert err.message == f"the spec has {len(text):,} characters, more than the limit of 65,536"
    path = tmp_path / "big.res"
    path.write_text(text)
    with pytest.raises(resdsl.LimitError) as info:  # a file: by its size, before reading it
        resdsl.load(path)
    assert (info.value.line, info.value.column) == (1, 1)
    assert info.value.message == (
        f"the spec has {len(text):,} bytes, more than the limit of {MAX_SPEC_SIZE:,}"
    )
    within_bounds([text])


def test_long_string_literal_is_refused_where_it_is_written():
    text = NET + '    s = "' + "a" * 5_000 + '"\n    return x\n}\n'
    err = refused(text)
    assert (err.code, err.line, err.column) == ("E0501", 2, col(text, 2, '"'))
    assert err.message == f"a string of 5,000 characters is longer than the limit of {MAX_STRING:,}"
    label = NET + '    return x -> "' + "a" * 5_000 + '": relu\n}\n'  # a label is a string too
    assert refused(label).message == err.message
    ok = NET + '    s = "' + "a" * MAX_STRING + '"\n    return x\n}\n'
    assert len(resdsl.loads(ok).graph) == 1


def test_lexing_a_long_string_takes_no_memory_per_character():
    # the largest spec allowed, one string: the lexer's memory does not grow per character
    text = NET + '    s = "' + "a" * (MAX_SPEC_SIZE - 100) + '"\n    return x\n}\n'
    assert refused(text).message.startswith(f"a string of {MAX_SPEC_SIZE - 100:,} characters")
    ((cpu, peak, _),) = measured([text])
    assert cpu < SECONDS and peak < 20 * 2**20, (cpu, peak // 2**20)


# --- 12: numbers are ASCII digits ---------------------------------------------------------------


def test_bengali_digit_is_a_syntax_error():
    text = NET + "    return x -> linear(\u09ea)\n}\n"  # was: 4 outputs
    err = refused(text, resdsl.SpecSyntaxError)
    assert (err.code, err.line, err.column) == ("E0101", 2, col(text, 2, "\u09ea"))
    assert err.message == "unexpected character '\u09ea'"
    assert err.hints == ["numbers are written with the ASCII digits 0-9"]


def test_fullwidth_digits_in_set_are_a_usage_error(capsys):
    with pytest.raises(ValueError, match="ASCII digits"):
        constant("\uff11\uff10")
    assert constant("10") == 10 and constant('"\u09ea"') == "\u09ea"  # a string may hold any digit
    path = str(EXAMPLES / "resnet18.res")
    assert main(["check", path, "--set", "num_classes=\uff11\uff10"]) == 2  # was: 10 classes
    err = capsys.readouterr().err.strip()
    assert err.endswith(
        "--set num_classes: cannot read '\uff11\uff10': unexpected character '\uff11' "
        "(numbers are written with the ASCII digits 0-9)"
    )


# --- 13: work per byte of input ------------------------------------------------------------------


def exponential_calls() -> str:
    # b40 calls b39 twice, ... : 2**40 calls of an empty block (2 KB); was 1.7-3.3 s
    blocks = "block b0() (x) {\n    return x\n}\n"
    blocks += "".join(
        f"block b{k}() (x) {{\n    return x -> b{k - 1}() -> b{k - 1}()\n}}\n" for k in range(1, 41)
    )
    return blocks + NET + "    return x -> b40()\n}\n"


def test_blocks_calling_blocks_twice_per_level():
    text = exponential_calls()
    assert 2_000 < len(text) < 4_000
    err = refused(text)
    assert err.message == "elaboration takes more than 500000 steps"
    assert err.line > 3 and err.column == col(text, err.line, "b")  # at a block call
    params = (  # parameters bound on every call
        "block b0(a: int = 1, b: int = 2) (x: (16,)) {\n    return x\n}\n"
        + "".join(
            f"block b{k}(a: int = 1, b: int = 2) (x: (16,)) {{\n"
            f"    return x -> b{k - 1}(a=a, b=2) -> b{k - 1}(a, b)\n}}\n"
            for k in range(1, 41)
        )
        + NET + "    return x -> b40()\n}\n"
    )  # fmt: skip
    assert 2_000 < len(params) < 4_000
    assert refused(params).message == err.message
    within_bounds([text, params])


def t0_chains() -> str:
    # 60 KB of `t[0]`: was 1.65 s, caught only after parsing
    return NET + "    t = (1,)\n    a = t" + "[0]" * 20_000 + "\n    return x\n}\n"


NESTED = {
    "t[0]": t0_chains(),
    "not": NET + "    a = " + "not " * 15_000 + "true\n    return x\n}\n",
    "unary -": NET + "    a = " + "- " * 30_000 + "1\n    return x\n}\n",
    "**": NET + "    a = " + "2 ** " * 12_000 + "1\n    return x\n}\n",
    "if then": NET + "    a = " + "if true then " * 2_500 + "1" + " else 2" * 2_500 + "\n"
    "    return x\n}\n",
    ".shape": NET + "    a = x" + ".shape" * 10_000 + "\n    return x\n}\n",
}


@pytest.mark.parametrize("kind", list(NESTED))
def test_operator_nesting_other_than_brackets(kind):
    text = NESTED[kind]
    assert 50_000 < len(text) <= MAX_SPEC_SIZE
    err = refused(text)
    assert (err.code, err.message) == ("E0501", "expression nested more than 100 levels deep")
    assert err.line in (2, 3)


def test_nesting_is_refused_while_parsing():
    # under 0.3 s each: the parse stops at the first tree taller than 100 levels (60 KB of
    # `t[0]` took 1.2 s when the depth was checked after the whole text was parsed)
    within_bounds(list(NESTED.values()), bound=0.3)


def test_the_densest_spec_of_the_largest_size():
    # the most work per byte: 32,700 tokens parsed, then 32,700 additions (about 0.8 s of CPU
    # on the reference machine, docs/security.md); the bound here leaves room for a slower one
    dense = NET + "    a = " + "+".join(["1"] * 32_700) + "\n    return x\n}\n"
    assert MAX_SPEC_SIZE - 1_000 < len(dense) <= MAX_SPEC_SIZE
    ((cpu, peak, outcome),) = measured([dense])
    seconds = max(SECONDS, cpu_scale())
    assert outcome == "ok" and cpu < 2 * seconds and peak < BYTES, (cpu, peak // 2**20)


def test_eleven_mb_spec_is_refused_at_once():
    # was: 169 s and 2.6 GB
    text = NET + "    a = 1\n" * 1_100_000 + "    return x\n}\n"
    assert len(text) > 11_000_000
    start = time.process_time()
    err = refused(text)
    assert time.process_time() - start < SECONDS
    assert (err.line, err.column) == (1, 1)
    assert err.message.startswith("the spec has 11,")


def test_examples_load_with_a_tenth_of_the_steps():
    tight = resdsl.Limits(max_steps=50_000, max_nodes=2_000)
    for path in sorted(EXAMPLES.glob("*.res")):
        assert len(resdsl.load(path, limits=tight).graph) > 0
        assert path.stat().st_size * 10 < MAX_SPEC_SIZE


# --- 7: constants that overflow ------------------------------------------------------------------


def test_division_by_a_subnormal_is_refused():
    text = NET + "    y = x / 1e-320\n    return y\n}\n"  # was: `x * inf` in generated Python
    err = refused(text, resdsl.ValueRangeError)
    assert (err.code, err.line, err.column) == ("E0302", 2, col(text, 2, "x / 1e-320"))
    assert err.message == (
        "dividing by 1e-320 scales by inf: constants in the graph must be finite numbers"
    )
    fine = NET + "    return x / 1e-300 * 1e300\n}\n"
    assert len(resdsl.loads(fine).graph) == 3
    scalar = NET + "    a = 1e300 * 1e300\n    return x\n}\n"
    assert refused(scalar, resdsl.ValueRangeError).message == "arithmetic gives inf"
    power = NET + "    return x * 2.0 ** 2000\n}\n"
    assert refused(power).message == "the result of `**` is too large"


# --- 14: an assertion's message ------------------------------------------------------------------


def test_assert_with_a_tensor_message():
    text = NET + "    assert false, x\n    return x\n}\n"  # was: TensorValue(node='x', ...)
    err = refused(text, resdsl.ValueRangeError)
    assert err.message == "assertion failed: a tensor of shape (16,)"
    assert (err.line, err.column) == (2, col(text, 2, "false"))
    numbers = NET + '    assert false, (1, true, "a")\n    return x\n}\n'
    assert refused(numbers, resdsl.ValueRangeError).message == '(1, true, "a")'
