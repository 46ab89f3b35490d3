"""The analysis report (`resdsl info --report`): per-stage counts, receptive fields, path
counts against brute force and closed forms, activation statistics at initialisation."""

import functools
import json
import math
from collections import Counter

import networkx as nx
import pytest

import resdsl
from resdsl.cli import main
from resdsl.tools.analysis import (
    WEIGHTED_OPS,
    block_outputs,
    init_stats,
    path_stats,
    receptive_fields,
    stages,
)

from .conftest import EXAMPLES


@functools.cache
def resnet18() -> resdsl.Network:
    return resdsl.load(EXAMPLES / "resnet18.res")


def brute_force_paths(graph) -> Counter:
    """Enumerate every input-to-output edge path of the NetworkX graph; count by length."""
    lengths: Counter = Counter()
    for source in graph.inputs:
        for _, target in graph.outputs:
            for path in nx.all_simple_edge_paths(graph.nx, source, target):
                nodes = [source] + [dst for _, dst, _ in path]
                lengths[sum(graph.node(n).op in WEIGHTED_OPS for n in nodes)] += 1
    return lengths


RESIDUAL_CHAIN = """
block res(convs: int) (x) {
    y = x
    for i in range(convs) {
        y = y -> "conv{i}": conv2d(x.channels, 3, padding=1) -> relu
    }
    return y + x
}
network chain(n: int = 3, convs: int = 1) (x: (4, 8, 8)) {
    for i in range(n) {
        x = x -> "b{i}": res(convs)
    }
    return x
}
"""


@pytest.mark.parametrize("n", [0, 1, 2, 5, 8])
def test_n_identity_blocks_have_2_to_the_n_paths_binomially_long(n):
    net = resdsl.loads(RESIDUAL_CHAIN, n=n)
    stats = path_stats(net.graph)
    assert stats.total == 2**n
    # A path takes the branch (one conv) or the skip in each block: k convs in C(n, k) ways.
    assert stats.histogram == {k: math.comb(n, k) for k in range(n + 1)}
    assert (stats.shortest, stats.longest, stats.mean) == (0, n, n / 2)
    if n <= 5:
        assert stats.histogram == dict(brute_force_paths(net.graph))


def test_two_conv_branches_double_the_lengths():
    stats = path_stats(resdsl.loads(RESIDUAL_CHAIN, n=4, convs=2).graph)
    assert stats.histogram == {2 * k: math.comb(4, k) for k in range(5)}


DENSE = """
block layer() (x) {
    return x -> conv: conv2d(2, 3, padding=1)
}
network dense_net(layers: int = 3) (x: (4, 8, 8)) {
    dense x for i in range(layers) {
        x = x -> "layer{i}": layer()
    }
    return x
}
"""


def test_a_dense_block_by_hand():
    # Layer i sees concat(x, h1, ..., h(i-1)); the block returns concat(x, h1, h2, h3).
    # In lengths (z = one conv): h1 = z, h2 = z(1 + z), h3 = z(1 + z + z(1 + z))
    # = z + 2z^2 + z^3, and the output 1 + h1 + h2 + h3 = 1 + 3z + 3z^2 + z^3.
    graph = resdsl.loads(DENSE).graph
    stats = path_stats(graph)
    assert stats.histogram == {0: 1, 1: 3, 2: 3, 3: 1}
    assert stats.histogram == dict(brute_force_paths(graph))


@pytest.mark.parametrize(
    "text",
    [
        # SE-style gating: x * gate(x), the gate an MLP on the pooled map
        "network se() (x: (4, 8, 8)) {\n"
        "    y = x -> c: conv2d(4, 3, padding=1)\n"
        "    s = y -> adaptive_avgpool2d(1) -> f1: conv2d(2, 1) -> relu -> f2: conv2d(4, 1)\n"
        "    return (y * sigmoid(s) + x) -> global_avgpool -> fc: linear(3)\n"
        "}\n",
        # a tensor used twice by one op: two edges, two paths
        "network twice() (x: (4,)) {\n    y = x -> fc: linear(4)\n    return y + y + x\n}\n",
        # a learned constant does not start a path
        "network pos() (x: (3, 4)) {\n    return x + p: parameter((3, 4)) -> fc: linear(2)\n}\n",
    ],
)
def test_path_counts_match_brute_force(text):
    graph = resdsl.loads(text).graph
    assert path_stats(graph).histogram == dict(brute_force_paths(graph))


def test_resnet18_paths():
    # conv1 and fc are on every path; each of the 5 identity blocks adds 0 or 2 convs, each
    # of the 3 projecting blocks 1 (the projection) or 2.
    stats = path_stats(resnet18().graph)
    assert stats.total == 2**8
    assert (stats.shortest, stats.longest) == (2 + 3, 2 + 16)


# --- receptive field --------------------------------------------------------------------------


def test_resnet18_receptive_field_is_435_at_the_last_feature_map():
    # r = 1 + sum over the layers of (k - 1) * (product of the strides before it), along the
    # longest path: the stem conv and maxpool, then the two 3x3 convs of each of 8 blocks,
    # the first conv of stages 2-4 with stride 2 (the 1x1 projections add nothing).
    layers = [(7, 2), (3, 2)]
    for stage in range(4):
        for i in range(4):
            layers.append((3, 2 if stage > 0 and i == 0 else 1))
    size, jump = 1, 1
    for k, s in layers:
        size, jump = size + (k - 1) * jump, jump * s
    assert (size, jump) == (435, 32)  # the commonly cited theoretical RF of ResNet-18
    (rf,) = receptive_fields(resnet18().graph)
    assert (rf.kind, rf.size, rf.jump) == ("field", (435, 435), (32, 32))
    assert (rf.at, rf.shape, rf.pooled) == ("layer4.1.relu_1", (512, 7, 7), True)


def test_the_maximum_over_paths_is_exact_where_strides_differ():
    # Path A: two 3x3 convs (size 5, jump 1); path B: a 1x1 conv with stride 2 (size 1,
    # jump 2). After a final 3x3 conv: A gives 5 + 2 * 1 = 7, B gives 1 + 2 * 2 = 5; the
    # maximum is 7 (taking the largest size and the largest jump separately would give 9).
    graph = resdsl.loads(
        "network fork() (x: (1, 9, 9)) {\n"
        "    a = x -> conv2d(1, 3) -> conv2d(1, 3)\n"
        "    b = x -> conv2d(1, 1, stride=2)\n"
        "    return (a + b) -> conv2d(1, 3)\n"
        "}\n"
    ).graph
    (rf,) = receptive_fields(graph)
    assert (rf.kind, rf.size, rf.pooled) == ("field", (7, 7), False)


def test_receptive_field_kinds():
    pooled_gate = resdsl.loads(
        "network se() (x: (4, 8, 8)) {\n"
        "    y = x -> conv2d(4, 3, padding=1)\n"
        "    return (y * (y -> adaptive_avgpool2d(1) -> sigmoid)) -> global_avgpool\n"
        "}\n"
    ).graph
    (rf,) = receptive_fields(pooled_gate)
    assert rf.kind == "global"  # the gate pools the whole map before the final pooling
    (rf,) = receptive_fields(resdsl.load(EXAMPLES / "long_skips.res").graph)
    assert rf.kind == "unknown"
    assert rf.reason == "reshape (up2.reshape_0)"  # the sub-pixel upsampling
    (rf,) = receptive_fields(resdsl.loads("network v() (x: (4,)) { return x -> linear(2) }").graph)
    assert rf.kind == "none"


def test_receptive_field_of_strided_pools_and_dilation():
    graph = resdsl.loads(
        "network p() (x: (1, 32, 32)) {\n"
        "    return x -> maxpool2d(2) -> conv2d(1, 3, dilation=2) -> avgpool2d(3, stride=1)\n"
        "}\n"
    ).graph
    # maxpool 2/2: 2, jump 2; dilated 3x3 (span 5): 2 + 4 * 2 = 10; avgpool 3/1: 10 + 2 * 2.
    (rf,) = receptive_fields(graph)
    assert (rf.size, rf.jump) == ((14, 14), (2, 2))


# --- stages -----------------------------------------------------------------------------------


def test_stage_params_match_torchvision_and_sum_to_the_total():
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    rows = stages(resnet18().graph)
    assert sum(s.params for s in rows) == resnet18().num_params
    reference: Counter = Counter()
    with torch.device("meta"):  # shapes only: skip initialising 11M weights
        model = torchvision.models.resnet18()
    for name, p in model.named_parameters():
        reference[name.split(".")[0]] += p.numel()
    assert {s.name: s.params for s in rows if s.params} == dict(reference)


def test_stage_macs_and_activation_memory_by_hand():
    rows = {s.name: s for s in stages(resnet18().graph)}
    layer1 = rows["layer1"]
    # four 3x3 convs 64 -> 64 on 56x56 maps; 14 ops, each producing a (64, 56, 56) float32
    assert layer1.macs == 4 * (64 * 64 * 9) * 56 * 56
    assert (layer1.ops, layer1.activation_bytes) == (14, 14 * 64 * 56 * 56 * 4)
    assert rows["x"].activation_bytes == 3 * 224 * 224 * 4
    assert sum(s.macs for s in rows.values()) == resnet18().macs


# --- initialisation statistics ----------------------------------------------------------------


def test_block_outputs_of_resnet18():
    outputs = block_outputs(resnet18().graph)
    expected = [s for stage in range(1, 5) for s in (f"layer{stage}",
                f"layer{stage}.0", f"layer{stage}.1")]  # fmt: skip
    assert list(outputs) == expected  # the downsample macros are not block instances
    assert outputs["layer2.0"] == ("basic", "layer2.0.relu_1")
    assert outputs["layer2"] == ("", "layer2.1.relu_1")  # a scope with no node of its own


def test_init_stats_shape_and_values():
    torch = pytest.importorskip("torch")
    net = resdsl.loads(RESIDUAL_CHAIN, n=3)
    stats = init_stats(net, seed=0, batch=4)
    assert (stats["seed"], stats["batch"]) == (0, 4)
    assert [b["scope"] for b in stats["blocks"]] == ["b0", "b1", "b2"]
    assert all(b["block"] == "res" and b["shape"] == (4, 8, 8) for b in stats["blocks"])
    # The last block's output is the network's output: recompute it directly.
    x = torch.randn((4, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = net.to_torch(seed=0).eval()(x)
    assert stats["inputs"]["x"] == pytest.approx(float(x.std(correction=0)))
    assert stats["blocks"][-1]["std"] == pytest.approx(float(y.std(correction=0)), rel=1e-6)


def test_a_deep_unscaled_stack_grows_and_scaling_by_depth_keeps_it_flat():
    pytest.importorskip("torch")

    def block_stds(depth_scale: int) -> list[float]:
        net = resdsl.load(EXAMPLES / "scaled_residual.res", depths=(8,), widths=(8,), L=depth_scale)
        return [b["std"] for b in init_stats(net, batch=4)["blocks"] if "." in b["scope"]]

    plain, scaled = block_stds(1), block_stds(0)  # L = 1: x + f(x); L = 0: x / 8 + f(x)
    assert plain[-1] > 1.5 * plain[0]  # variance adds up over the residual branches
    assert scaled[-1] < 1.2 * scaled[0]
    assert plain[-1] > 2 * scaled[-1]


# --- the command line -------------------------------------------------------------------------


def test_cli_report_text_and_json(capsys):
    path = str(EXAMPLES / "resnet18.res")
    assert main(["info", path]) == 0
    plain = capsys.readouterr().out
    assert main(["info", path, "--report"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(plain.rstrip("\n"))  # the usual output, unchanged, comes first
    assert "435 x 435 px, jump 32 x 32 px" in text
    assert "total 256   shortest 5   longest 18   mean 11.50   median 11" in text
    assert main(["info", path, "--json"]) == 0
    assert "report" not in json.loads(capsys.readouterr().out)
    assert main(["info", path, "--report", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["num_params"] == 11_689_512
    report = data["report"]
    assert set(report) == {"stages", "activation_bytes", "receptive_field", "paths"}
    assert report["paths"]["histogram"][0] == [5, 1]
    assert report["receptive_field"][0]["size"] == [435, 435]


def test_cli_init_stats(capsys):
    pytest.importorskip("torch")
    path = str(EXAMPLES / "scaled_residual.res")
    assert main(["info", path, "--report", "--init-stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)["report"]["init_stats"]
    assert [b["scope"] for b in stats["blocks"]][:4] == [
        "layer1",
        "layer1.0",
        "layer1.1",
        "layer1.2",
    ]
    assert main(["info", path, "--init-stats"]) == 2
    assert "add --report" in capsys.readouterr().err
