"""Search at benchmark scale: the NAS-Bench-201 space against xautodl's reference models,
`choice` over a tuple, the `zero` op, the count-only route (equal to building), and
canonical fingerprints (the benchmark's classes, the function-preserving ones)."""

import itertools
import random

import pytest

import resdsl
from resdsl.cli import main
from resdsl.search import loads_space
from resdsl.search.canonical import canonical_fingerprint
from resdsl.search.space import load_space

from .conftest import EXAMPLES

NB201 = EXAMPLES / "search" / "nas_bench_201.res"
RESNET_SPACE = EXAMPLES / "search" / "resnet_space.res"
EDGES = ("edge1_0", "edge2_0", "edge2_1", "edge3_0", "edge3_1", "edge3_2")
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
FUNCTION_CLASSES = 5643  # function-preserving: python benchmarks/search.py --no-resnet --classes


@pytest.fixture(scope="module")
def nb201():
    return load_space(NB201)


def genotype(assignment):
    """xautodl's CellStructure of an assignment of the NAS-Bench-201 space."""
    from xautodl.models.cell_searchs.genotypes import Structure

    e = [assignment[n] for n in EDGES]
    return Structure([((e[0], 0),), ((e[1], 0), (e[2], 1)), ((e[3], 0), (e[4], 1), (e[5], 2))])


# --- the space against the reference --------------------------------------------------------------


def test_nas_bench_201_has_15625_candidates(nb201):
    assert nb201.size == 5**6 == 15_625
    assert all(c.values == OPS for c in nb201.choices.values())
    assert list(nb201.choices) == list(EDGES)


def test_nas_bench_201_matches_xautodl():
    """Seeded candidates against `TinyNetwork(C=16, N=5, genotype, 10)`: parameters, a
    strict load of its state_dict, outputs with every tensor perturbed, MACs."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("xautodl")
    from torch.utils.flop_counter import FlopCounterMode
    from xautodl.models.cell_infers.tiny_network import TinyNetwork

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: threads only contend
    try:
        _check_against_xautodl(torch, FlopCounterMode, TinyNetwork)
    finally:
        torch.set_num_threads(threads)


def _check_against_xautodl(torch, FlopCounterMode, TinyNetwork):  # noqa: N803 - classes
    space = load_space(NB201)
    rng = random.Random(2026)
    for seed in range(6):
        a = space.sample(rng)
        net = space.build(a)
        ref = TinyNetwork(16, 5, genotype(a), 10).eval()
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, t in ref.state_dict().items():
                if t.is_floating_point():  # BN statistics too: no default hides a mistake
                    t.copy_(torch.rand(t.shape, generator=gen) + 0.5 if name.endswith(
                        "running_var") else torch.randn(t.shape, generator=gen) * 0.5)  # fmt: skip
        model = net.to_torch().eval()
        model.load_state_dict(ref.state_dict(), strict=True)
        x = torch.randn(2, 3, 32, 32, generator=gen)
        with torch.no_grad():
            torch.testing.assert_close(model(x), ref(x)[1], rtol=1e-5, atol=1e-5)
        assert net.num_params == sum(p.numel() for p in ref.parameters()), a
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            ref(torch.randn(1, 3, 32, 32))
        assert net.macs == counter.get_total_flops() // 2, a


# --- choice over a tuple, and the zero op ---------------------------------------------------------


def test_choice_spreads_a_tuple_for_a_non_tuple_parameter():
    space = loads_space(
        'network n(ops: tuple = ("a", "b", "c"), e: str = choice(ops), w: int = choice((1, 2)),'
        " t: tuple = choice((1, 2), (3, 4))) (x: 4) { return x }"
    )
    assert space.choices["e"].values == ("a", "b", "c")
    assert space.choices["w"].values == (1, 2)
    assert space.choices["t"].values == ((1, 2), (3, 4))  # a tuple parameter: tuples whole
    assert space.size == 3 * 2 * 2
    text = 'network n(ops: tuple = ("a", "b"), e: str = choice(ops)) (x: 4) { return x }'
    assert resdsl.loads(text, e="b").params["e"] == "b"
    with pytest.raises(resdsl.SpecError, match=r"`e` is a choice of \"a\", \"b\"; got \"c\""):
        resdsl.loads(text, e="c")


def test_zero_is_zeros_even_of_inf_and_nan():
    torch = pytest.importorskip("torch")
    net = resdsl.loads("network z() (x: (2, 3)) { return x -> relu -> zero }")
    assert [n.op for n in net.graph.nodes()] == ["input", "relu", "zero"]
    assert net.num_params == 0 and net.macs == 0
    x = torch.tensor([[[float("inf"), float("nan"), 1.0], [-float("inf"), 0.0, 2.0]]])
    out = net.to_torch()(x)
    assert torch.equal(out, torch.zeros_like(x))  # `x * 0` would be nan here


# --- the count-only route -------------------------------------------------------------------------


DEPENDENT = """
network dep(a: int = choice(1, 2, 3), b: int = choice(range(a)), c: int = choice(a, 2),
            w: int = a * 8, d: int = choice(w, w + 1)) (x: (3, 8, 8)) {
    y = x -> stem: conv2d(w, 3, padding=1) -> relu
    for i in range(a) {
        y = y -> "blocks.{i}": unit(d, b)
    }
    return y -> global_avgpool -> fc: linear(c)
}
block unit(c: int, k: int) (x) {
    y = x -> conv2d(c, 2 * k + 1, padding=k) -> relu
    return y + shortcut(x, like=y)
}
"""

CELLS = """
block conv(op: str) (x) {
    if op == "conv" {
        return x -> conv2d(x.channels, 3, padding=1, bias=false) -> batchnorm2d
    }
    return if op == "skip" then x else zero(x)
}
block cell(e: tuple) (x) {
    a = x -> "a": conv(e[0])
    return "b": conv(x, e[1]) + "c": conv(a, e[2])
}
network cells(ops: tuple = ("zero", "skip", "conv"), e0: str = choice(ops),
              e1: str = choice(ops), e2: str = choice(ops), w: int = choice(4, 8)) (x: (3, 8, 8)) {
    genotype = (e0, e1, e2)
    y = x -> stem: conv2d(w, 3, padding=1)
    for i in range(3) {
        y = y -> "cells.{i}": cell(genotype)
    }
    return y -> global_avgpool -> fc: linear(10)
}
"""


@pytest.mark.parametrize("text", [DEPENDENT, CELLS], ids=["dependent", "cells"])
def test_counts_equal_the_build_for_every_candidate(text):
    space = loads_space(text)
    for a in space.enumerate():
        counts, net = space.counts(a), space.build(a)
        assert (counts.params, counts.macs) == (net.num_params, net.macs), a
        assert counts.outputs == tuple((n, net.graph.info(node).shape)
                                       for n, node in net.graph.outputs)  # fmt: skip


def test_counts_replay_the_network_body_of_a_cell_space():
    assert loads_space(CELLS)._plan is None  # `w` reaches an op: the body is run each time
    space = loads_space(CELLS, w=4)
    assert space._plan is not None  # the choices reach only `cell(genotype)`
    for a in space.enumerate():
        net = space.build(a)
        assert (space.counts(a).params, space.counts(a).macs) == (net.num_params, net.macs)
    assert space._replay is not None and space._instances.replays


@pytest.mark.parametrize("path", [NB201, RESNET_SPACE], ids=["nas_bench_201", "resnet"])
def test_counts_equal_the_build_on_the_example_spaces(path):
    space = load_space(path)
    rng = random.Random(7)
    sample = [space.sample(rng) for _ in range(12)]
    counts = [space.counts(a) for a in sample]  # first: the memos are filled as a search does
    for a, c in zip(sample, counts, strict=True):
        net = space.build(a)
        assert (c.params, c.macs) == (net.num_params, net.macs), a


def test_counts_of_an_invalid_candidate_raise_as_the_build_does():
    space = loads_space("""network bad(c: int = choice(8, 16)) (x: (8, 4, 4)) {
        return (x -> conv2d(c, 3, padding=1)) + x
    }""")
    assert space.counts({"c": 8}).params == 8 * 8 * 9 + 8
    with pytest.raises(resdsl.ShapeError) as e:
        space.counts({"c": 16})
    assert "in the candidate c=16" in resdsl.render(e.value)


# --- fingerprints ---------------------------------------------------------------------------------


def test_fingerprint_reuses_the_build_of_the_same_candidate(nb201, monkeypatch):
    a = nb201.sample(3)
    net = nb201.build(a)
    from resdsl.search import space as space_module

    def no_build(*args, **kwargs):
        raise AssertionError("built again")

    monkeypatch.setattr(space_module, "IncrementalElaborator", no_build)
    assert nb201.fingerprint(a) == resdsl.search.fingerprint(net)


def _partition(keys):
    classes: dict = {}
    for i, k in enumerate(keys):
        classes.setdefault(k, []).append(i)
    return sorted(classes.values())


@pytest.mark.parametrize("prune", [True, False], ids=["zeros-pruned", "zeros-kept"])
def test_benchmark_convention_gives_nas_bench_201_classes_on_a_subset(nb201, prune):
    """Every cell over none/skip/conv3x3 (729): the classes of the benchmark's own
    `to_unique_str(consider_zero)`, class for class."""
    pytest.importorskip("xautodl")
    three = ("none", "skip_connect", "nor_conv_3x3")
    cells = [dict(zip(EDGES, e, strict=True)) for e in itertools.product(three, repeat=6)]
    ours = [nb201.fingerprint(a, True, convention="benchmark", prune_zeros=prune) for a in cells]
    theirs = [genotype(a).to_unique_str(prune) for a in cells]
    assert _partition(ours) == _partition(theirs)
    assert len(set(ours)) == (127 if prune else 496)


def test_function_preserving_classes(nb201):
    fp = lambda **e: nb201.fingerprint({**dict.fromkeys(EDGES, "none"), **e}, True)  # noqa: E731
    # node 1 feeds only a zero edge: dead, whatever it computes
    assert fp(edge1_0="nor_conv_3x3", edge3_0="skip_connect") == fp(edge3_0="skip_connect")
    # a sum of the same terms in another order: node 2 and node 1 swap roles
    skips = dict(edge3_1="skip_connect", edge3_2="skip_connect")
    one = fp(edge1_0="nor_conv_1x1", edge2_0="avg_pool_3x3", **skips)
    assert one == fp(edge1_0="avg_pool_3x3", edge2_0="nor_conv_1x1", **skips)
    # node 1 is zero: pooling it is zero; ReLU-conv-BN of it is BN's shift, not zero
    assert fp(edge2_1="avg_pool_3x3", edge3_2="skip_connect") == fp()
    assert fp(edge2_1="nor_conv_3x3", edge3_2="skip_connect") != fp()
    assert fp(edge3_0="skip_connect") != fp(edge3_0="avg_pool_3x3")


def test_canonical_fingerprint_of_the_space_equals_the_graphs(nb201):
    rng = random.Random(3)
    for a in [nb201.sample(rng) for _ in range(8)]:
        assert nb201.fingerprint(a, True) == canonical_fingerprint(nb201.build(a)), a


def test_weight_names_do_not_count():
    one = resdsl.loads("network n() (x: 4) { return x -> a: linear(3) -> relu }")
    two = resdsl.loads("network n() (x: 4) { return x -> b: linear(3) -> relu }")
    assert canonical_fingerprint(one) == canonical_fingerprint(two)


def test_unique_yields_one_assignment_per_class():
    space = loads_space(CELLS)
    reps = list(space.unique())
    fps = [space.fingerprint(a, True) for a in reps]
    assert len(set(fps)) == len(reps) < space.size
    every = {space.fingerprint(a, True) for a in space.enumerate()}
    assert set(fps) == every


def test_sample_unique_cli(tmp_path, capsys):
    path = tmp_path / "cells.res"
    path.write_text(CELLS)
    assert main(["sample", str(path), "--n", "5", "--unique", "--seed", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5
    space = loads_space(CELLS)
    picked = [dict(p.split("=") for p in line.split("  ")[-1].split(", ")) for line in lines]
    fps = {space.fingerprint({k: v.strip('"') if not v.isdigit() else int(v)
                              for k, v in p.items()}, True) for p in picked}  # fmt: skip
    assert len(fps) == 5


@pytest.mark.slow
def test_nas_bench_201_classes_over_the_whole_space(nb201):
    """6,466 classes with zeros pruned and 12,751 without under the benchmark's convention
    (its own counts, class for class), and the function-preserving count beside them."""
    pytest.importorskip("xautodl")
    cells = list(nb201.enumerate())
    for prune, count in ((True, 6466), (False, 12751)):
        ours = [
            nb201.fingerprint(a, True, convention="benchmark", prune_zeros=prune) for a in cells
        ]
        assert len(set(ours)) == count
        assert _partition(ours) == _partition([genotype(a).to_unique_str(prune) for a in cells])
    function = {nb201.fingerprint(a, True) for a in cells}
    assert len(function) == FUNCTION_CLASSES
