"""Grammar-aware fuzzing: any text gives a running network or a located SpecError.

The strategies and the properties live in ``tests/specgen.py`` (specs) and
``tests/artifactgen.py`` (compiled artifacts' ``model.json``, checkpoints). This file runs
the quick CI profile (``fuzz-ci``); ``RESDSL_FUZZ=fuzz-long python -m pytest
tests/test_fuzz.py`` runs the long one under pytest, and ``python benchmarks/fuzz.py`` runs
it counting every outcome. Below the property tests are regression tests for each crash the
fuzzer found, with exact positions.
"""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import resdsl

from . import artifactgen
from .specgen import (
    PATH,
    check,
    cpu_deadline,
    deep_nesting,
    grammar_sentences,
    long_literals,
    mutants,
    specs,
    unicode_digit_specs,
)

torch = pytest.importorskip("torch")

_QUIET = {"deadline": None, "suppress_health_check": list(HealthCheck)}
settings.register_profile("fuzz-ci", max_examples=100, **_QUIET)
settings.register_profile("fuzz-long", max_examples=100_000, **_QUIET)
PROFILE = settings.get_profile(os.environ.get("RESDSL_FUZZ", "fuzz-ci"))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny convolutions run faster on one intra-op thread on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@PROFILE
@given(specs(), st.integers(1, 2))
def test_generated_specs_load_and_run_with_their_inferred_shapes(text, batch):
    # the generator tracks shapes, so its specs are valid: each must load and run
    assert check(text, batch) == "ok", text


@settings(PROFILE, max_examples=PROFILE.max_examples * 2)
@given(mutants())
def test_mutated_specs_give_a_network_or_a_located_error(text):
    check(text)


@settings(PROFILE, max_examples=max(1, PROFILE.max_examples // 10))  # slow to draw
@given(grammar_sentences())
def test_grammar_sentences_give_a_network_or_a_located_error(text):
    check(text)


# --- hostile sizes, other scripts ------------------------------------------------------------

# Hostile input is refused within 1 s of CPU time (docs/security.md); twice that here, for a
# slower CI machine.
HOSTILE_CPU_SECONDS = 2.0


@settings(PROFILE, max_examples=max(1, PROFILE.max_examples // 4))  # texts of up to 6 MB
@given(long_literals())
def test_long_literals_give_a_network_or_a_located_error_quickly(text):
    with cpu_deadline(HOSTILE_CPU_SECONDS):
        check(text)


@settings(PROFILE, max_examples=max(1, PROFILE.max_examples // 4))
@given(deep_nesting())
def test_deep_non_bracket_nesting_gives_a_network_or_a_located_error_quickly(text):
    with cpu_deadline(HOSTILE_CPU_SECONDS):
        check(text)


@settings(PROFILE, max_examples=max(1, PROFILE.max_examples // 4))
@given(specs())
def test_a_byte_order_mark_before_a_spec_changes_nothing(text):
    assert check("\ufeff" + text) == "ok"


@settings(PROFILE, max_examples=max(1, PROFILE.max_examples // 4))
@given(unicode_digit_specs())
def test_digits_of_other_scripts_are_a_syntax_error(text):
    assert check(text) == "E0101"


# --- hostile model.json, odd checkpoints -----------------------------------------------------


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """The tiny two-conv spec compiled once (in a subprocess), with its traps."""
    pytest.importorskip("tvm")
    return artifactgen.build_artifact(tmp_path_factory.mktemp("artifact"))


@pytest.fixture(scope="module")
def checker():
    with artifactgen.ArtifactChecker(cpu=20, wall=60) as c:
        yield c


def assert_holds(result: artifactgen.Result) -> str:
    assert result.outcome is not None, result.error
    return result.outcome


def test_the_genuine_model_json_runs(artifact, checker):
    import json

    assert assert_holds(checker.check(artifact.dir, json.dumps(artifact.meta))) == "ok"


def _library_cases():
    # names that need the artifact's paths are filled in by the test
    names = ["model.so", "./model.so", "link_in.so", "link_chain.so", "sub/model.so",
             "link_out.so", "link_abs.so", "link_chain_out.so", "link_loop.so", "dirlink.so",
             "../outside/model.so", "OUTSIDE", "SELF", "sub", ".", "", "\x00", "model.so\x00",
             "fifo.so", "empty.so", "text.so", "model.json", "/dev/zero", "/proc/self/exe",
             "x" * 300 + ".so", "trunc.so"]  # fmt: skip
    return [pytest.param(n, id=repr(n[:20])) for n in names]


@pytest.mark.parametrize("library", _library_cases())
def test_every_library_name_loads_inside_the_directory_or_is_refused(artifact, checker, library):
    import json
    import os

    outside = os.path.join(os.path.dirname(artifact.dir), "outside", "model.so")
    library = {"OUTSIDE": outside, "SELF": os.path.join(artifact.dir, "model.so")}.get(
        library, library
    )
    meta = json.dumps({**artifact.meta, "library": library})
    outcome = assert_holds(checker.check(artifact.dir, meta))
    if library in ("model.so", "link_in.so", "link_chain.so"):
        assert outcome == "ok"
    else:
        assert outcome in ("ok", "E0801-load"), outcome


@settings(PROFILE, max_examples=max(1, PROFILE.max_examples * 3 // 4))
@given(st.data())
def test_hostile_model_json_runs_right_or_is_an_artifact_error(artifact, checker, data):
    libraries = [n for n in artifact.libraries if n not in artifactgen.KNOWN_CRASHES]
    text = data.draw(artifactgen.hostile_model_json(artifact.meta, libraries), label="model.json")
    assert_holds(checker.check(artifact.dir, text))


@pytest.fixture(scope="module")
def tiny_graph():
    return resdsl.loads(artifactgen.TINY_SPEC, path="tiny.res").graph


@settings(PROFILE, max_examples=PROFILE.max_examples)
@given(st.data())
def test_odd_checkpoints_give_the_weights_or_a_weights_error(tiny_graph, tmp_path_factory, data):
    case = data.draw(artifactgen.odd_weights(tiny_graph), label="checkpoint")
    artifactgen.check_weights(tiny_graph, case, tmp_path_factory.mktemp("w", numbered=True))


# --- crashes the fuzzer found ----------------------------------------------------------------

NET = "network n() (x: (3, 8, 8)) {\n"


def located(text: str, cls: type) -> resdsl.SpecError:
    with pytest.raises(cls) as info:
        resdsl.loads(text, path=PATH)
    assert type(info.value) is cls
    return info.value


def test_integer_literal_of_thousands_of_digits():
    # was: lark's VisitError around ValueError (CPython refuses int() of > 4300 digits)
    text = NET + "    a = " + "9" * 5000 + "\n    return x\n}\n"
    err = located(text, resdsl.LimitError)
    assert err.message == "integer literal of 5000 digits is too long"
    assert (err.line, err.column, err.span.end_line, err.span.end_column) == (2, 9, 2, 5009)


def test_computed_integer_of_thousands_of_digits():
    # was: ValueError from str() while writing the message of the max_int limit
    text = NET + "    a = " + "9" * 100 + " ** 256\n    return x\n}\n"
    err = located(text, resdsl.LimitError)
    assert err.message == "integer of 25600 digits is too large"  # (10**100 - 1) ** 256
    assert (err.line, err.column) == (2, 9)


@pytest.mark.parametrize("builtin", ["int", "floor", "ceil", "round"])
def test_float_literal_out_of_range(builtin):
    # was: OverflowError from int(inf): `1e400` read as an infinite float
    text = NET + f"    a = {builtin}(1e400)\n    return x\n}}\n"
    err = located(text, resdsl.LimitError)
    assert err.message == "float literal 1e400 is too large"
    column = 9 + len(builtin) + 1
    assert (err.line, err.column, err.span.end_column) == (2, column, column + 5)


@pytest.mark.parametrize("tail", ["conv2d(4, ", "conv2d(4,\t \n\n", "conv2d(4,\n"])
def test_end_of_file_span_stays_inside_the_text(tail):
    # was: after trailing blanks the span ended one column past the end of the line
    text = NET + "    return x -> " + tail
    err = located(text, resdsl.SpecSyntaxError)
    assert err.message == "unexpected end of file"
    last = text.removesuffix("\n").split("\n")  # one final newline does not start a line
    assert (err.line, err.column) == (len(last), len(last[-1]) + 1)
    assert (err.span.end_line, err.span.end_column) == (
        err.line,
        err.column,
    )  # empty: nothing is there
    assert resdsl.render(err).splitlines()[1] == f"{err.line:>4} | " + last[-1].expandtabs(1)


def test_form_feed_does_not_shift_the_rendered_line():
    # a form feed is whitespace to the parser, not a line break; the renderer agreed with
    # str.splitlines and showed the wrong line
    text = NET + "    y = x\f -> relu\n    return y -> rleu\n}\n"
    err = located(text, resdsl.UnknownNameError)
    assert (err.line, err.column) == (3, 17)
    assert resdsl.render(err).splitlines()[1] == "   3 |     return y -> rleu"


def test_range_longer_than_a_machine_integer():
    # found by the long fuzzing profile: OverflowError from len(range(10**40))
    big = "1" + "0" * 40
    text = NET + f"    for i in range({big}) {{\n        x = x -> relu\n    }}\n    return x\n}}\n"
    err = located(text, resdsl.LimitError)
    assert err.message == f"loop of {big} iterations exceeds the limit of 100000"
    assert (err.line, err.column) == (2, 14)  # `range(...)`


@pytest.mark.parametrize(("stride", "big"), [("stride=", "1" + "0" * 40), ("", "10 ** 12")])
def test_attribute_larger_than_32_bits(stride, big):
    # found by the fuzzers: the shape rule accepts a stride of 10**40 or 10**12 (the output
    # is 1 x 1), then PyTorch fails ("Overflow when unpacking long long", "value cannot be
    # converted to type int without overflow")
    text = NET + f"    return x -> maxpool2d(3, {stride}{big}, padding=1)\n}}\n"
    err = located(text, resdsl.LimitError)
    digits = 41 if "**" not in big else 13
    assert err.message == (
        f"`stride` is too large: an integer of {digits} digits (ops take at most 2**31 - 1)"
    )
    column = len("    return x -> maxpool2d(3, ") + 1
    assert (err.line, err.column) == (2, column)
    assert err.span.end_column == column + len(stride) + len(big)


def test_projection_stride_larger_than_32_bits():
    # found by the long profile: `project` passed its stride to conv2d with a malformed
    # location, so the new 32-bit check crashed while reporting it
    big = "1" + "0" * 40
    text = NET + f"    return x -> p: project(4, stride={big})\n}}\n"
    err = located(text, resdsl.LimitError)
    assert err.message == (
        "`stride` is too large: an integer of 41 digits (ops take at most 2**31 - 1)"
    )
    assert (err.line, err.column) == (2, 17)  # the `p: project(...)` call
