"""Resource limits: each hostile spec is a located LimitError (or CycleError) with the
default ``resdsl.Limits``, and all of them, loaded in a fresh process, take under 1 s of CPU
time each and under 200 MB of memory; each bound is configurable; the defaults admit the
real networks in examples/.

Positions are counted from the spec text here (``col``), never taken from resdsl.
"""

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial

import pytest

import resdsl
from resdsl import loader
from resdsl.syntax.parser import MAX_DEPTH

from .conftest import EXAMPLES, cpu_scale

NET = "network n() (x: (3, 8, 8)) {\n"  # line 1; note its `{` is one open bracket
PATH = "hostile.res"
# CPU-time bounds scale with the machine (tests/conftest.py: cpu_scale)
SECONDS, BYTES = 1.0 * cpu_scale(), 200 * 2**20


def col(text: str, line: int, token: str, start: int = 0) -> int:
    """1-based column of the first `token` on 1-based `line` of `text` (from `start`)."""
    return text.split("\n")[line - 1].index(token, start) + 1


@pytest.fixture(scope="module", autouse=True)
def _warm():
    """Build the parser once, so its one-time cost is not charged to the first spec."""
    resdsl.loads(NET + "    return x\n}\n")


HOSTILE: list[str] = []  # the hostile texts loaded with the default limits, in order
HOSTILE_TESTS: list[Callable[[], None]] = []  # the tests that load them (see hostile_texts)


def hostile(test: Callable[..., None]) -> Callable[..., None]:
    """Mark a test whose spec is loaded with the default limits: the memory test runs it to
    collect its text, whether or not it has run before."""
    HOSTILE_TESTS.append(test)
    return test


def rejected(text: str, cls: type = resdsl.LimitError, **limits) -> resdsl.SpecError:
    """Load ``text``: it must fail with exactly ``cls``. A spec checked with the default
    limits is also timed and measured, in a fresh process, by
    ``test_hostile_specs_take_under_1_s_and_200_mb``; here a generous bound only catches a
    hang (this process is big after other tests, which makes the garbage collector slower).
    """
    if not limits:
        HOSTILE.append(text)
    loader._CACHE.clear()
    start = time.process_time()
    with pytest.raises(cls) as info:
        resdsl.loads(text, path=PATH, limits=resdsl.Limits(**limits) if limits else None)
    assert type(info.value) is cls
    assert time.process_time() - start < 5 * SECONDS
    return info.value


def where(err: resdsl.SpecError) -> tuple[int, int]:
    assert err.path == PATH
    return err.line, err.column


# --- hostile specs, default limits -----------------------------------------------------------


@hostile
def test_repeat_ten_to_the_twelve():
    text = NET + "    repeat 10 ** 12 {\n        x = x -> relu\n    }\n    return x\n}\n"
    err = rejected(text)
    assert err.message == "loop of 1000000000000 iterations exceeds the limit of 100000"
    assert where(err) == (2, col(text, 2, "10 **"))


@hostile
def test_billion_channel_conv():
    text = NET + "    return x -> conv2d(1000000000, 3)\n}\n"
    err = rejected(text)
    assert err.message == (
        "tensor of shape (1000000000, 6, 6) exceeds 268435456 elements per sample"
    )
    assert where(err) == (2, col(text, 2, "conv2d"))


@hostile
def test_huge_weight_with_a_small_output():
    # (2,000,000,) is a fine activation, but the weight has 2,000,000 x 192 elements
    text = NET + "    return x -> flatten -> linear(2000000)\n}\n"
    err = rejected(text)
    assert err.message == ("weight `weight` of shape (2000000, 192) exceeds 268435456 elements")
    assert where(err) == (2, col(text, 2, "linear"))


@hostile
def test_block_calling_itself_twice_per_level_is_a_cycle():
    text = (
        "block b(n: int) (x) {\n    if n == 0 {\n        return x\n    }\n"
        "    return x -> b(n - 1) -> b(n - 1)\n}\n" + NET + "    return x -> b(40)\n}\n"
    )
    err = rejected(text, resdsl.CycleError)
    assert err.message == "block `b` calls itself: b -> b"
    assert where(err) == (5, col(text, 5, "b(n - 1)"))


@hostile
def test_exponential_calls_without_recursion():
    # b40 calls b39 twice, ... : 2**40 calls of b0, whose empty loop is almost all the work,
    # so that is where the step limit is crossed
    blocks = "block b0() (x) {\n    repeat 1000 {\n    }\n    return x\n}\n"
    blocks += "".join(
        f"block b{k}() (x) {{\n    return x -> b{k - 1}() -> b{k - 1}()\n}}\n" for k in range(1, 41)
    )
    err = rejected(blocks + NET + "    return x -> b40()\n}\n")
    assert err.message == "elaboration takes more than 500000 steps"
    assert where(err) == (2, 5)


@hostile
def test_blocks_nested_too_deep():
    # d0 calls d1 ... calls d70: the network and d0..d62 fill the 64 levels
    text = "".join(f"block d{k}() (x) {{\n    return x -> d{k + 1}()\n}}\n" for k in range(70))
    text += "block d70() (x) {\n    return x\n}\n" + NET + "    return x -> d0()\n}\n"
    err = rejected(text)
    assert err.message == "blocks nested deeper than 64"
    line = 3 * 62 + 2  # d62's body, calling d63
    assert where(err) == (line, col(text, line, "d63()"))


BRACKETS = [("(", ")"), ("(1 + ", ")"), ("(", ",)"), ("[", "]")]


@pytest.mark.parametrize(("opener", "closer"), BRACKETS)
def test_deeply_nested_brackets(opener, closer):
    # 100,000 levels: refused by a scan before the parser builds anything
    text = NET + "    a = " + opener * 100_000 + "1" + closer * 100_000 + "\n    return x\n}\n"
    err = rejected(text)
    assert err.message == f"brackets nested more than {MAX_DEPTH} deep"
    # the network's `{` is open, so the 100th bracket on line 2 is the 101st level
    assert where(err) == (2, 9 + len(opener) * (MAX_DEPTH - 1))


HOSTILE_TESTS += [partial(test_deeply_nested_brackets, o, c) for o, c in BRACKETS]


@hostile
def test_deeply_nested_operators():
    text = NET + "    a = " + "not " * 1000 + "true\n    return x\n}\n"
    err = rejected(text)
    assert err.message == f"expression nested more than {MAX_DEPTH} levels deep"
    # the error is at the innermost expression more than 100 levels tall: `true` is one
    # level and each `not` one more, so the 100th `not` from the end, the 901st
    assert where(err) == (2, 9 + 4 * 900)


@hostile
def test_deep_expression_inside_a_template_label():
    # was: RecursionError (lark's VisitError): a hole's expression skipped the depth check
    text = NET + '    return x -> "a{' + "-" * 5000 + '1}": relu\n}\n'
    err = rejected(text)
    assert err.message == f"expression nested more than {MAX_DEPTH} levels deep"
    first = col(text, 2, "{-") + 1
    # `1` is one level and each `-` one more: the 100th `-` from the end is 101 levels tall
    assert where(err) == (2, first + 5000 - MAX_DEPTH)


@hostile
def test_huge_string_in_a_template_label():
    text = (
        NET + '    s = "' + "a" * 1000 + '"\n    repeat 6 {\n        s = s + s\n    }\n'
        '    return x -> "{s}": relu\n}\n'
    )
    err = rejected(text)
    assert err.message == "a name of more than 1000 characters"
    assert where(err) == (6, col(text, 6, '"{s}"'))


@hostile
def test_template_label_with_thousands_of_holes():
    text = NET + '    return x -> "' + "{1}" * 20_000 + '": relu\n}\n'
    err = rejected(text)
    assert err.message == "a template label with more than 100 holes"
    assert where(err) == (2, col(text, 2, '"'))


@hostile
def test_nested_loops_building_a_huge_graph():
    text = (
        NET + "    repeat 100000 {\n        repeat 100000 {\n            x = x -> relu\n"
        "        }\n    }\n    return x\n}\n"
    )
    err = rejected(text)
    assert err.message == "the network has more than 20000 ops"
    assert where(err) == (4, col(text, 4, "relu"))


@hostile
def test_nested_empty_loops():
    text = (
        NET + "    for i in range(100000) {\n        for j in range(100000) {\n        }\n"
        "    }\n    return x\n}\n"
    )
    err = rejected(text)
    assert err.message == "elaboration takes more than 500000 steps"
    assert where(err) == (3, col(text, 3, "for"))  # the inner loop's passes


@hostile
def test_long_expression_in_nested_loops():
    expr = " + ".join(["i * j"] * 300)
    text = (
        NET + "    for i in range(100000) {\n        for j in range(100000) {\n"
        f"            a = {expr}\n        }}\n    }}\n    return x\n}}\n"
    )
    err = rejected(text)
    assert err.message == "elaboration takes more than 500000 steps"
    assert err.line == 4 and col(text, 4, "i * j") <= err.column < len(text.split("\n")[3])


@hostile
def test_failing_statement_in_nested_loops():
    # error recovery goes on after a failed statement; each failure costs steps
    text = (
        NET + "    z = x -> maxpool2d(2)\n    repeat 100000 {\n        repeat 100000 {\n"
        "            y = x + z\n        }\n    }\n    return x\n}\n"
    )
    err = rejected(text)
    assert err.message == "elaboration takes more than 500000 steps"
    assert where(err) == (5, col(text, 5, "x + z"))


@hostile
def test_tuple_doubling_per_level():
    # 2**80 elements in a few bytes of shared structure: comparing or printing it would not end
    text = NET + "    t = (1,)\n    repeat 80 {\n        t = (t, t)\n    }\n    return x\n}\n"
    err = rejected(text)
    assert err.message == (
        "a value of more than 100000 elements (nested ones included) is too long"
    )
    assert where(err) == (4, col(text, 4, "(t, t)"))


@hostile
def test_comparing_long_tuples_in_nested_loops():
    text = (
        NET + "    t = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)\n    repeat 12 {\n        t = t + t\n"
        "    }\n    for i in range(100000) {\n        for j in range(100000) {\n"
        "            a = t == t\n        }\n    }\n    return x\n}\n"
    )
    err = rejected(text)  # t has 40,960 elements: a dozen comparisons use up the steps
    assert err.message == "elaboration takes more than 500000 steps"
    assert where(err) == (8, col(text, 8, "t == t"))


# --- each bound is configurable --------------------------------------------------------------

PER_SAMPLE = "exceeds 100 elements per sample"
SMALL = NET + (
    '    for i in range(2 + 2) {\n        x = x -> "c{i}": conv2d(3, 3, padding=1)\n    }\n'
    "    return x\n}\n"
)


def test_the_small_spec_loads_with_the_defaults():
    net = resdsl.loads(SMALL)
    assert len(net.graph) == 5


@pytest.mark.parametrize(
    ("limits", "message", "line", "token"),
    [
        ({"max_nodes": 3}, "the network has more than 3 ops", 3, '"c{i}"'),
        ({"max_loop": 3}, "loop of 4 iterations exceeds the limit of 3", 2, "range"),
        ({"max_steps": 20}, "elaboration takes more than 20 steps", 3, '"c{i}"'),
        ({"max_tensor_elements": 100}, f"tensor of shape (3, 8, 8) {PER_SAMPLE}", 1, "x:"),
        ({"max_name_length": 1}, "a name of more than 1 characters", 3, '"c{i}"'),
        ({"max_int": 3}, "integer of 1 digits is too large", 2, "2 + 2"),
    ],
)
def test_each_limit_is_configurable(limits, message, line, token):
    err = rejected(SMALL, **limits)
    assert err.message == message
    assert where(err) == (line, col(SMALL, line, token))


def test_call_depth_is_configurable():
    text = (
        "block a() (x) {\n    return x -> b()\n}\nblock b() (x) {\n    return x -> relu\n}\n"
        + NET
        + "    return x -> a()\n}\n"
    )
    assert len(resdsl.loads(text).graph) == 2
    err = rejected(text, max_call_depth=2)
    assert err.message == "blocks nested deeper than 2"
    assert where(err) == (2, col(text, 2, "b()"))


# --- the defaults admit real networks --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "ops"), [("resnet152", 515), ("vit_b_16", 107), ("densenet121", 427)]
)
def test_defaults_admit_the_examples(name, ops):
    net = resdsl.load(EXAMPLES / f"{name}.res", limits=resdsl.Limits())
    assert len(net.graph) == ops
    # with ten times less of every budget they still fit: the defaults are not tight
    tight = resdsl.Limits(max_nodes=2_000, max_steps=50_000, max_tensor_elements=2**24)
    assert len(resdsl.load(EXAMPLES / f"{name}.res", limits=tight).graph) == ops


# --- memory ----------------------------------------------------------------------------------

MEASURE = """
import json, sys, time
import resdsl

def kib(key):  # Linux: VmRSS now, VmHWM the peak since the last reset
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))

resdsl.loads("network n() (x: 4) {\\n    return x\\n}\\n")  # imports and the parser
results = []
for text in json.load(sys.stdin):
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak to the current resident size
    rss, start = kib("VmRSS:"), time.process_time()
    try:
        resdsl.loads(text, path="hostile.res")
        outcome = "ok"
    except resdsl.SpecError as e:
        outcome = type(e).__name__
    results.append((time.process_time() - start, (kib("VmHWM:") - rss) * 1024, outcome))
print(json.dumps(results))
"""


def measured(texts: list[str]) -> list[tuple[float, int, str]]:
    """(CPU seconds, peak-RSS rise in bytes, outcome) of loading each text in a fresh process
    (the text is built there from JSON, which costs its size again: bounded by the size
    limit)."""
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux's /proc/self/clear_refs to measure each spec's peak")
    done = subprocess.run(
        [sys.executable, "-c", MEASURE], input=json.dumps(texts), capture_output=True,
        text=True, timeout=300, check=True,
    )  # fmt: skip
    return [tuple(r) for r in json.loads(done.stdout)]


def hostile_texts() -> list[str]:
    """The texts of every test marked ``@hostile`` (and each bracket pair), collected by
    running those tests now (each still checks its own error)."""
    HOSTILE.clear()
    for test in HOSTILE_TESTS:
        test()
    return list(HOSTILE)


def test_hostile_specs_take_under_1_s_and_200_mb():
    """Every hostile spec above, one after the other in a fresh process, as the command line
    would load it: each takes under 1 s of CPU time (CPU, not wall time: the machine is
    shared), and the process's peak resident size rises by less than 200 MB while loading
    it (Linux: the peak is reset before each spec). The texts are collected by running the
    hostile tests here (hostile_texts), so this test does not depend on which ran before."""
    texts = hostile_texts()
    assert len(texts) == len(HOSTILE_TESTS) >= 15  # one spec per test
    results = measured(texts)
    assert len(results) == len(texts)
    seconds = max(SECONDS, cpu_scale())  # the machine may have slowed since the import
    over = {i: (round(t, 2), m // 2**20) for i, (t, m, _) in enumerate(results)
            if t >= seconds or m >= BYTES}  # fmt: skip
    assert not over, f"(CPU seconds, MB) of the specs over the bounds: {over}"
    # the measurement sees real allocations: building 20,000 nodes takes some MB
    assert max(m for _, m, _ in results) > 10 * 2**20
