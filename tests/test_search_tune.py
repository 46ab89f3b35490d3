"""The Ray Tune bridge (resdsl.search.tune): SpecSearcher's suggestions (deterministic, dependent
choices consistent, within the budget, no network twice, checkpointable), the flat
param_space, configs back to candidates, and examples/search/ray_tune_asha.py's tiny profile
on a local Ray instance with ASHA."""

import importlib.util
import pickle
import subprocess
import sys
import time

import pytest

from resdsl.search import load_space, loads_space
from resdsl.search.tune import assignment, build

from .conftest import EXAMPLES

# `wide` depends on `width`; `depth` is read by nothing, so two assignments build each network.
DEPENDENT = """
network tiny(
    depth: int = choice(1, 2),
    width: int = choice(4, 8),
    wide: int = choice(width, width * 2),
    num_classes: int = 3,
) (x: (3, 8, 8)) {
    y = x -> conv2d(width, 3, padding=1) -> relu -> conv2d(wide, 3, padding=1) -> relu
    return y -> global_avgpool -> linear(num_classes)
}
"""

PRODUCT = """
network flat(k: tuple = choice((1, 1), (3, 3)), c: int = choice(4, 8), act: str = choice("relu",
             "gelu")) (x: (3, 8, 8)) {
    y = x -> conv2d(c, k)
    y = if act == "relu" then relu(y) else gelu(y)
    return y -> global_avgpool -> linear(2)
}
"""


def _searcher(space, **kwargs):
    pytest.importorskip("ray.tune")
    from resdsl.search.tune import SpecSearcher

    return SpecSearcher(space, **kwargs)


def _suggest(searcher, n, start=0):
    return [searcher.suggest(f"t{i}") for i in range(start, start + n)]


# --- without Ray ----------------------------------------------------------------------------------


def test_the_module_imports_without_ray():
    code = (
        "import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
        "import resdsl.search, resdsl.search.tune as t\n"
        "space = resdsl.search.loads_space(sys.argv[1])\n"
        "assert t.build({'width': 8, 'wide': 16, 'lr': 0.1}, space).num_params > 0\n"
        "try:\n"
        "    t.SpecSearcher\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, DEPENDENT], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    assert "pip install 'ray[tune]'" in out


def test_a_config_is_read_back_as_the_candidate():
    space = loads_space(PRODUCT)
    config = {"k": [3, 3], "c": 8, "act": "gelu", "lr": 0.1}  # a list: config through JSON
    assert assignment(config, space) == {"k": (3, 3), "c": 8, "act": "gelu"}
    net = build(config, space)
    assert net.num_params == space.build({"k": (3, 3), "c": 8, "act": "gelu"}).num_params


# --- SpecSearcher, without Ray actors -------------------------------------------------------------


def test_suggestions_are_deterministic_and_dependent_choices_valid():
    space = loads_space(DEPENDENT)
    first = _suggest(_searcher(space, seed=7), 4)
    assert first == _suggest(_searcher(loads_space(DEPENDENT), seed=7), 4)
    for config in first:
        assert config["wide"] in (config["width"], 2 * config["width"])
        space.build(assignment(config, space))  # elaborates
    assert _suggest(_searcher(space, seed=8), 4) != first or space.size == 4


def test_no_network_is_suggested_twice_and_the_space_runs_out():
    space = loads_space(DEPENDENT)  # 8 assignments, 4 networks (`depth` is unused)
    searcher = _searcher(space, seed=0)
    configs = _suggest(searcher, 6)
    assert configs[4:] == [searcher.FINISHED] * 2
    fingerprints = {space.fingerprint(assignment(c, space)) for c in configs[:4]}
    assert len(fingerprints) == 4 and searcher.duplicates > 0
    repeating = _searcher(space, seed=0, unique=False)
    assert all(isinstance(c, dict) for c in _suggest(repeating, 12))
    one = _searcher(loads_space(PRODUCT, k=(1, 1), c=4), seed=0)  # act: 2 networks
    assert [c["act"] for c in _suggest(one, 3)[:2]] in (["relu", "gelu"], ["gelu", "relu"])
    assert one.suggest("t3") == one.FINISHED
    one = _searcher(loads_space(PRODUCT, k=(1, 1), c=4), seed=0, unique=False)
    assert all(isinstance(c, dict) for c in _suggest(one, 5))


def test_suggestions_respect_the_budget_and_skip_invalid_candidates():
    space = load_space(EXAMPLES / "search" / "resnet_space.res", max_macs=600_000_000)
    searcher = _searcher(space, seed=1)
    for config in _suggest(searcher, 5):
        assert space.build(assignment(config, space)).macs <= 600_000_000
    assert space.stats.over_budget > 0
    bad = loads_space(
        "network bad(c: int = choice(8, 16), k: int = choice(1, 3)) (x: (8, 4, 4)) {\n"
        "    y = x -> conv2d(c, k, padding=k // 2)\n    return y + x\n}"
    )  # c = 16 does not add
    searcher = _searcher(bad, seed=0)
    assert [c["c"] for c in _suggest(searcher, 3)[:2]] == [8, 8]
    assert searcher.invalid > 0 and searcher.suggest("last") == searcher.FINISHED


def test_the_searcher_is_checkpointed_and_pickled(tmp_path):
    space = loads_space(DEPENDENT)
    searcher = _searcher(space, seed=3)
    _suggest(searcher, 2)
    searcher.on_trial_complete("t0", {"accuracy": 0.5})
    searcher.on_trial_complete("t1", error=True)
    assert searcher.results == {"t0": {"accuracy": 0.5}, "t1": None}
    copy = pickle.loads(pickle.dumps(searcher))  # as Tune keeps it with the experiment
    assert type(copy) is type(searcher) and copy.trials == searcher.trials
    restored = _searcher(space, seed=99)
    searcher.save_to_dir(str(tmp_path))  # what Tune does with the experiment state
    restored.restore_from_dir(str(tmp_path))
    assert _suggest(restored, 2, start=2) == _suggest(searcher, 2, start=2)


def test_param_space_domains_are_sampled_alongside():
    tune = pytest.importorskip("ray.tune")

    space = loads_space(DEPENDENT)
    searcher = _searcher(space, seed=0)
    config = {"lr": tune.loguniform(1e-3, 1e-1), "batch": 32}
    assert searcher.set_search_properties("accuracy", "max", config)
    assert (searcher.metric, searcher.mode) == ("accuracy", "max")
    suggested = searcher.suggest("t0")
    assert 1e-3 <= suggested["lr"] <= 1e-1 and "batch" not in suggested  # Tune merges constants
    again = _searcher(space, seed=0)
    again.set_search_properties(None, None, config)
    assert again.suggest("t0") == suggested
    with pytest.raises(ValueError, match="names choices of tiny: width"):
        _searcher(space).set_search_properties(None, None, {"width": tune.choice([4, 8])})
    with pytest.raises(ValueError, match="top-level Tune domains"):
        _searcher(space).set_search_properties(None, None, {"opt": {"lr": tune.uniform(0, 1)}})


def test_param_space_is_flat_where_the_space_is_a_product():
    pytest.importorskip("ray.tune")
    from ray.tune.search.sample import Categorical

    from resdsl.search.tune import param_space

    flat = param_space(loads_space(PRODUCT))
    assert list(flat) == ["k", "c", "act"]
    assert all(isinstance(d, Categorical) for d in flat.values())
    assert flat["k"].categories == [(1, 1), (3, 3)]
    with pytest.raises(ValueError, match=r"dependent: wide.*SpecSearcher"):
        param_space(loads_space(DEPENDENT))
    with pytest.raises(ValueError, match="budget"):
        param_space(loads_space(PRODUCT, max_params=100))


def test_ray_tunes_optuna_search_drives_dependent_choices_through_suggest():
    pytest.importorskip("optuna")
    pytest.importorskip("ray.tune.search.optuna")
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    space = loads_space(DEPENDENT)
    searcher = OptunaSearch(
        space=space.suggest, metric="accuracy", mode="max",
        sampler=optuna.samplers.TPESampler(seed=0),
    )  # fmt: skip
    for i in range(4):
        config = searcher.suggest(str(i))
        chosen = assignment(config, space)  # Optuna's `wide[width=8]` keys are left out
        assert chosen["wide"] in (chosen["width"], 2 * chosen["width"])
        space.build(chosen)
        searcher.on_trial_complete(str(i), {"accuracy": i / 4})


# --- the example on a local Ray instance ----------------------------------------------------------


def test_the_asha_example_runs_its_tiny_profile(tmp_path, capsys, monkeypatch):
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.tune")
    pytest.importorskip("torch")
    from ray import cloudpickle
    from ray.tune.schedulers import ASHAScheduler

    from resdsl.search.tune import SpecSearcher

    path = EXAMPLES / "search" / "ray_tune_asha.py"
    module_spec = importlib.util.spec_from_file_location("ray_tune_asha_example", path)
    example = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(example)
    monkeypatch.setitem(sys.modules, example.__name__, example)
    cloudpickle.register_pickle_by_value(example)  # Ray's workers cannot import it by name

    args = example.parse_args(["--tiny", "--quiet", "--storage", str(tmp_path)])
    assert (args.trials, args.epochs, args.cpus) == (4, 2, 1)
    space = example.open_space(args)
    config = example.tune_config(space, args)
    assert isinstance(config.scheduler, ASHAScheduler)
    assert isinstance(config.search_alg, SpecSearcher)

    start = time.monotonic()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        results = example.run(args, space)
    finally:
        ray.shutdown()
        cloudpickle.unregister_pickle_by_value(example)
    assert time.monotonic() - start < 120

    assert len(results) == 4 and not results.errors
    seen = set()
    for result in results:
        chosen = assignment(result.config, space)
        assert chosen.keys() == space.choices.keys()
        assert chosen["stem"] in (chosen["width"] // 2, chosen["width"])
        seen.add(space.fingerprint(chosen))  # a valid member of the space: it elaborates
        assert 1e-2 <= result.config["lr"] <= 2e-1
        history = result.metrics_dataframe
        assert list(history["training_iteration"]) == list(range(1, len(history) + 1))
        assert 1 <= len(history) <= args.epochs  # ASHA may stop it after an epoch
        assert {"accuracy", "loss", "params", "macs"} <= set(history.columns)
    assert len(seen) == 4  # four different networks
    assert max(len(r.metrics_dataframe) for r in results) == args.epochs
    assert example.report(results, space) == 0
    assert "width=" in capsys.readouterr().out
