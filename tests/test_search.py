"""Search spaces: choices in the spec, exact sizes, sampling, mutation, building, fingerprints,
budgets, Optuna, parallel evaluation (process pool and Ray), `resdsl sample` / `info`, and the
example scripts."""

import importlib.util
import json
import random

import pytest

import resdsl
from resdsl.cli import main
from resdsl.search import fingerprint, load_space, loads_space
from resdsl.search.parallel import Evaluator
from resdsl.search.proxies import capacity, short_training

from .conftest import EXAMPLES

SPACE = EXAMPLES / "search" / "resnet_space.res"
RESNET50 = dict(kind="bottleneck", depth1=3, depth2=4, depth3=6, depth4=3, width=64, stem=64,
                se=False)  # fmt: skip

INDEPENDENT = """
network ind(a: int = choice(1, 2, 3), b: str = choice("x", "y"), c: bool = choice(false, true)) (
    x: 4) {
    return x -> linear(a)
}
"""

# By hand: for each a, b has a values, c has 1 value when a == 2 (choice(2, 2)) else 2, and d
# has 2 (w and w + 1 differ): a=1: 1*2*2 = 4, a=2: 2*1*2 = 4, a=3: 3*2*2 = 12; 20 in all.
DEPENDENT = """
network dep(a: int = choice(1, 2, 3), b: int = choice(range(a)), c: int = choice(a, 2),
            w: int = a * 8, d: int = choice(w, w + 1)) (x: 4) {
    return x -> linear(w + b + c + d)
}
"""

# c = 16 makes `y + x` add (16, 4, 4) to (8, 4, 4).
MISMATCH = """network bad(c: int = choice(8, 16), k: int = choice(1, 3)) (x: (8, 4, 4)) {
    y = x -> conv2d(c, k, padding=k // 2)
    return y + x
}
"""


# --- size and enumeration ----------------------------------------------------------------------


def test_size_of_independent_choices_is_the_product():
    space = loads_space(INDEPENDENT)
    assert space.size == 3 * 2 * 2
    all_ = list(space.enumerate())
    assert len(all_) == space.size
    assert len({tuple(a.items()) for a in all_}) == 12
    assert all_[0] == {"a": 1, "b": "x", "c": False}
    assert all_[-1] == {"a": 3, "b": "y", "c": True}


def test_size_of_dependent_choices_counts_each_context():
    space = loads_space(DEPENDENT)
    assert space.size == 20
    all_ = list(space.enumerate())
    assert len(all_) == 20 and len({tuple(a.items()) for a in all_}) == 20
    assert [space.assignment(i) for i in range(20)] == all_
    assert {(a["a"], a["b"]) for a in all_} == {(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)}
    choices = space.choices
    assert list(choices) == ["a", "b", "c", "d"]  # w is not a choice
    assert choices["c"].values == (1, 2, 3)
    assert choices["d"].values == (8, 9, 16, 17, 24, 25)
    assert choices["b"].depends_on == ("a",) and choices["d"].depends_on == ("w",)
    assert choices["a"].depends_on == () and choices["b"].text == "choice(range(a))"
    for a in all_:  # every assignment is a valid network of the expected width
        net = space.build(a)
        assert net.output_shapes == {"output": (a["a"] * 8 + a["b"] + a["c"] + a["d"],)}


def test_resnet_space_size_by_hand():
    # kind 2, depths 3 * 4 * 6 * 3, width 3 with stem 2 each (width // 2 or width), se 2.
    space = load_space(SPACE)
    assert space.size == 2 * (3 * 4 * 6 * 3) * (3 * 2) * 2 == 5184
    assert space.choices["stem"].values == (16, 32, 24, 48, 64)


def test_huge_space_is_exact_and_enumeration_lazy():
    text = "network big(" + ", ".join(f"c{i}: int = choice(range(1000))" for i in range(6))
    space = loads_space(text + ") (x: 4) { return x -> linear(1 + c0) }")
    assert space.size == 1000**6
    first = next(iter(space.enumerate()))
    assert first == {f"c{i}": 0 for i in range(6)}
    assert space.assignment(space.size - 1) == {f"c{i}": 999 for i in range(6)}


def test_fixing_a_choice_shrinks_the_space():
    space = loads_space(DEPENDENT, a=3)
    assert space.size == 12 and "a" not in space.choices
    with pytest.raises(resdsl.ValueRangeError, match="`a` is a choice of 1, 2, 3; got 4"):
        loads_space(DEPENDENT, a=4)


# --- sampling and mutation ---------------------------------------------------------------------


def test_sampling_is_deterministic_per_seed():
    a, b = load_space(SPACE), load_space(SPACE)
    assert [a.sample(s) for s in range(20)] == [b.sample(s) for s in range(20)]
    rng1, rng2 = random.Random(7), random.Random(7)
    assert [a.sample(rng1) for _ in range(10)] == [b.sample(rng2) for _ in range(10)]
    assert len({tuple(a.sample(s).items()) for s in range(20)}) > 15  # not one candidate
    np = pytest.importorskip("numpy")
    g1, g2 = np.random.default_rng(3), np.random.default_rng(3)
    assert a.sample(g1) == b.sample(g2)


def test_sampling_is_uniform_over_assignments():
    space = loads_space(DEPENDENT)  # a=3 has 12 of the 20 assignments
    rng = random.Random(0)
    share = sum(space.sample(rng)["a"] == 3 for _ in range(2000)) / 2000
    assert abs(share - 12 / 20) < 0.05


def test_mutate_changes_exactly_one_choice():
    space = load_space(SPACE)
    rng = random.Random(1)
    for seed in range(50):
        parent = space.sample(seed)
        child = space.mutate(parent, rng)
        changed = [k for k in parent if parent[k] != child[k]]
        # stem's values depend on width: it changes too only when its value is gone
        assert len(changed) == 1 or (changed[0] == "width" and changed[1:] == ["stem"])
        space.build(child)  # still a member of the space


def test_mutate_repairs_dependent_choices():
    space = loads_space(DEPENDENT)
    rng = random.Random(0)
    members = [tuple(a.items()) for a in space.enumerate()]
    for seed in range(100):
        parent = space.sample(seed)
        child = space.mutate(parent, rng)
        assert tuple(child.items()) in members and child != parent


# --- build and fingerprint ----------------------------------------------------------------------


def test_build_is_the_network_load_gives():
    space = load_space(SPACE)
    net = space.build(RESNET50)
    ref = resdsl.load(EXAMPLES / "resnet50.res")
    assert isinstance(net, resdsl.Network)
    assert (net.num_params, net.macs) == (ref.num_params, ref.macs) == (25_557_032, 4_089_184_256)
    assert net.layers == ref.layers  # names, ops, shapes and counts
    assert fingerprint(net) == fingerprint(ref) == space.fingerprint(RESNET50)


def test_build_matches_the_written_spec(tmp_path):
    """Incremental elaboration gives the graph plain elaboration gives, candidate by candidate."""
    space = load_space(SPACE)
    for seed in range(12):
        a = space.sample(seed)
        net = space.build(a)
        path = tmp_path / f"c{seed}.res"
        path.write_text(space.to_spec(a))
        ref = resdsl.load(path)
        assert net.layers == ref.layers
        assert sorted(net.graph.nx.edges(keys=True, data="port")) == sorted(
            ref.graph.nx.edges(keys=True, data="port")
        )
        assert net.graph.outputs == ref.graph.outputs
        assert fingerprint(net) == fingerprint(ref)


def test_fingerprint_equal_networks_hash_equal():
    text = """network f(unused: int = choice(1, 2), w: int = choice(8, 16)) (x: 4) {
        return x -> fc: linear(w)
    }"""
    space = loads_space(text)
    assert space.fingerprint({"unused": 1, "w": 8}) == space.fingerprint({"unused": 2, "w": 8})
    assert space.fingerprint({"w": 8}) != space.fingerprint({"w": 16})
    renamed = resdsl.loads("network g() (x: 4) { return x -> head: linear(8) }")
    assert fingerprint(renamed) == space.fingerprint({"w": 8})  # names are not hashed
    no_bias = resdsl.loads("network g() (x: 4) { return x -> linear(8, bias=false) }")
    assert fingerprint(no_bias) != space.fingerprint({"w": 8})  # attributes are
    rewired = resdsl.loads("network g() (x: 4) { y = x -> linear(4) return y + x }")
    other = resdsl.loads("network g() (x: 4) { y = x -> linear(4) return y + y }")
    assert fingerprint(rewired) != fingerprint(other)  # edges are


def test_invalid_candidate_names_its_choice_values():
    space = loads_space(MISMATCH, path="bad.res")
    assert space.build({"c": 8, "k": 3}).num_params == 8 * 8 * 9 + 8
    with pytest.raises(resdsl.ShapeError) as info:
        space.build({"c": 16, "k": 3})
    e = info.value
    assert (e.line, e.column) == (3, 12)
    assert "in the candidate c=16, k=3" in resdsl.render(e)


def test_value_outside_a_choice_is_a_spec_error():
    space = loads_space(MISMATCH, path="bad.res")
    with pytest.raises(resdsl.ValueRangeError) as info:
        space.build({"c": 12})
    assert info.value.message == "`c` is a choice of 8, 16; got 12"
    assert (info.value.line, info.value.column) == (1, 22)
    with pytest.raises(resdsl.UnknownNameError, match="`kk` is not a choice of bad") as info:
        space.build({"kk": 1})
    assert info.value.hints == ["did you mean `k`?"]
    with pytest.raises(resdsl.TypeMismatchError):
        space.build({"c": "8"})


def test_plain_load_of_a_space_takes_first_values(spec):
    path = spec(MISMATCH)
    net = resdsl.load(path)
    assert net.params == {} and net.num_params == 8 * 8 * 1 + 8  # c=8, k=1
    assert resdsl.load(path, k=3).num_params == 8 * 8 * 9 + 8
    with pytest.raises(resdsl.ValueRangeError, match="`k` is a choice of 1, 3; got 2"):
        resdsl.load(path, k=2)


def test_choice_syntax_errors():
    with pytest.raises(resdsl.TypeMismatchError, match="`choice` is for network parameters") as e:
        resdsl.loads("block b(w: int = choice(1, 2)) (x) { return x }\n"
                     "network n() (x: 4) { return x -> b }")  # fmt: skip
    assert (e.value.line, e.value.column) == (1, 18)
    with pytest.raises(resdsl.ArgumentError, match="not keyword arguments"):
        resdsl.loads("network n(w: int = choice(a=1)) (x: 4) { return x }")
    with pytest.raises(resdsl.ValueRangeError, match="this choice has no values"):
        resdsl.loads("network n(w: int = choice(range(0))) (x: 4) { return x }")
    with pytest.raises(resdsl.TypeMismatchError, match="a choice is between numbers"):
        resdsl.loads(
            "block b() (x) { return x }\nnetwork n(w: int = choice(b)) (x: 4) { return x }"
        )


# --- budgets ------------------------------------------------------------------------------------

WIDTHS = "network m(w: int = choice(1, 2, 3, 4)) (x: 10) { return x -> linear(w) }"


def test_budget_rejects_candidates_and_reports_the_rate():
    space = loads_space(WIDTHS, max_macs=20)  # MACs = 10 * w: half the space fits
    picks = [space.sample(s)["w"] for s in range(200)]
    assert set(picks) == {1, 2}
    stats = space.stats
    assert stats.drawn == 200 + stats.over_budget and stats.invalid == 0
    assert 0.4 < stats.rejection_rate < 0.6
    assert "rejection rate" in str(stats)


def test_budget_counts_invalid_candidates_and_params():
    space = loads_space(MISMATCH, max_params=10_000)
    assert all(space.sample(s)["c"] == 8 for s in range(30))
    assert space.stats.invalid > 0
    for s in range(10):
        assert space.build(space.sample(s)).num_params <= 10_000


def test_impossible_budget_is_an_error():
    space = loads_space(WIDTHS, max_macs=5)
    with pytest.raises(resdsl.ValueRangeError, match="no candidate of m within the budget"):
        space.sample(0)


# --- Optuna -------------------------------------------------------------------------------------


def test_optuna_suggest_is_deterministic_and_valid():
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = loads_space(DEPENDENT)
    members = [tuple(a.items()) for a in space.enumerate()]

    def run(seed):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        out = []
        for _ in range(30):
            trial = study.ask()
            a = space.suggest(trial)
            out.append(a)
            study.tell(trial, float(space.build(a).num_params))
        return study, out

    study, first = run(0)
    assert first == run(0)[1]
    assert all(tuple(a.items()) in members for a in first)
    names = set().union(*(t.params for t in study.trials))
    assert {"a", "b[a=1]", "b[a=3]"} <= names  # b's values depend on a
    assert isinstance(study.trials[0].user_attrs["candidate"], str)


def test_optuna_tpe_drives_a_search():
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(SPACE)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5))
    study.optimize(lambda t: space.build(space.suggest(t)).num_params / 1e6, n_trials=10)
    assert len(study.trials) == 10 and study.best_value > 0


# --- parallel evaluation ------------------------------------------------------------------------


def test_process_pool_gives_the_serial_results():
    space = load_space(SPACE)
    candidates = [space.sample(s) for s in range(6)]
    serial = sorted(repr((r.assignment, r.value)) for r in Evaluator(space, capacity, workers=1)
                    .map(candidates))  # fmt: skip
    with Evaluator(space, capacity, workers=2) as ev:
        pooled = sorted(repr((r.assignment, r.value)) for r in ev.map(iter(candidates)))
    assert pooled == serial and len(serial) == 6


def test_invalid_candidates_are_results_not_failures():
    space = loads_space(MISMATCH)
    results = list(Evaluator(space, capacity, workers=1).map([{"c": 8}, {"c": 16}]))
    assert results[0].ok and results[0].value["params"] == 8 * 8 + 8
    assert not results[1].ok and "E0301" in results[1].error


def test_ray_runs_a_small_search():
    ray = pytest.importorskip("ray")
    space = load_space(SPACE)
    candidates = [space.sample(s) for s in range(4)]
    expected = sorted(repr((a, capacity(space, a))) for a in candidates)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        with Evaluator(space, capacity, workers=1, ray="local") as ev:
            got = sorted(repr((r.assignment, r.value)) for r in ev.map(candidates))
    finally:
        ray.shutdown()
    assert got == expected


def test_short_training_proxy():
    pytest.importorskip("torch")
    space = loads_space(
        "network t(w: int = choice(4, 8)) (x: (3, 8, 8)) {\n"
        "  return x -> conv2d(w, 3) -> relu -> global_avgpool -> linear(3) }"
    )
    a = short_training(space, {"w": 4}, steps=2)
    assert a == short_training(space, {"w": 4}, steps=2)  # seeded
    assert a["params"] == 4 * 27 + 4 + 4 * 3 + 3 and a["score"] < 0


# --- command line -------------------------------------------------------------------------------


def test_cli_sample_writes_specs_that_reload_to_the_same_network(tmp_path, capsys):
    out = tmp_path / "cands"
    args = ["sample", str(SPACE), "--n", "4", "--seed", "3", "--max-macs", "1.5G", "-o", str(out)]
    assert main(args) == 0
    captured = capsys.readouterr()
    files = sorted(out.glob("*.res"))
    assert [f.name for f in files] == [f"resnet_space_{i:03d}.res" for i in range(4)]
    assert "rejection rate" in captured.err
    space = load_space(SPACE, max_macs=1_500_000_000)
    rng = random.Random(3)
    for f in files:
        assignment = space.sample(rng)  # the CLI draws the same candidates
        net = resdsl.load(f)
        assert fingerprint(net) == space.fingerprint(assignment)
        assert net.macs <= 1_500_000_000
        assert main(["check", str(f)]) == 0
    capsys.readouterr()
    assert main(["sample", str(SPACE), "--n", "2", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    assert rows[-1]["file"] is None and set(rows[-1]["choices"]) == set(space.choices)


def test_cli_sample_errors(tmp_path, capsys, spec):
    assert main(["sample", str(SPACE), "--n", "0"]) == 2
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["sample", str(SPACE), "-o", str(blocker)]) == 2
    assert main(["sample", str(tmp_path / "missing.res")]) == 2
    with pytest.raises(SystemExit) as e:
        main(["sample", str(SPACE), "--max-macs", "lots"])
    assert e.value.code == 2
    assert main(["sample", spec(WIDTHS), "--max-macs", "5"]) == 1
    assert "no candidate of m within the budget in 1000 draws" in capsys.readouterr().err
    assert main(["sample", str(SPACE), "--set", "width=40"]) == 1


def test_cli_info_reports_a_space(capsys):
    assert main(["info", str(SPACE)]) == 0
    out = capsys.readouterr().out
    assert "size     5,184 candidates" in out
    assert (
        "stem    int   choice(width // 2, width)      16, 32, 24, 48, 64  (depends on width)" in out
    )
    assert main(["info", str(SPACE), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["size"] == 5184 and data["choices"]["se"]["values"] == [False, True]
    fixed = ["--set", f"kind={RESNET50['kind']}"] + [
        x for k, v in RESNET50.items() if k != "kind" for x in ("--set", f"{k}={str(v).lower()}")
    ]
    assert main(["info", str(SPACE), *fixed]) == 0  # every choice fixed: a plain network
    assert "params   25,557,032" in capsys.readouterr().out


# --- example scripts ----------------------------------------------------------------------------


def _script(name: str):
    path = EXAMPLES / "search" / f"{name}.py"
    module_spec = importlib.util.spec_from_file_location(f"search_example_{name}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("random_search", ["--n", "6", "--max-macs", "1G", "--workers", "1"]),
        ("random_search", ["--n", "4", "--workers", "2"]),
        ("evolution", ["--n", "12", "--population", "4", "--max-macs", "1G", "--workers", "1"]),
        ("optuna_search", ["--n", "8", "--workers", "1"]),
        ("optuna_search", ["--n", "8", "--workers", "1", "--sampler", "nsga2"]),
    ],
)
def test_example_scripts(name, args, capsys):
    pytest.importorskip("tqdm")
    pytest.importorskip("optuna")
    assert _script(name).main([*args, "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "kind=" in captured.out  # the best candidates, in spec syntax
