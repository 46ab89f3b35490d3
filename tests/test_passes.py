"""Inference passes: batch-norm folding, no-op and dead-code removal, and their verification.

Numbers are checked against the PyTorch backend: the module (with random batch-norm
statistics) is the reference, and the rewritten graph runs on a small interpreter below.
"""

import copy
import functools

import numpy as np
import pytest

import resdsl
from resdsl.ir import TensorInfo
from resdsl.passes import (
    drop_identities,
    eliminate_dead,
    fold_batchnorm,
    infer_shapes,
    inference,
    run_inference_passes,
)
from resdsl.weights import WeightsError, from_module

from .conftest import EXAMPLES

torch = pytest.importorskip("torch")
F = torch.nn.functional


# --- a reference interpreter for graphs with NumPy weights ---------------------------------------


def _conv2d(node, xs, w):
    a = node.attrs
    bias = w(node, "bias") if a["bias"] else None
    return F.conv2d(
        xs[0], w(node, "weight"), bias, a["stride"], a["padding"], a["dilation"], a["groups"]
    )


def _batchnorm2d(node, xs, w):
    affine = node.attrs["affine"]
    return F.batch_norm(
        xs[0],
        w(node, "running_mean"),
        w(node, "running_var"),
        w(node, "weight") if affine else None,
        w(node, "bias") if affine else None,
        training=False,
        eps=node.attrs["eps"],
    )


def _maxpool2d(node, xs, w):
    a = node.attrs
    return F.max_pool2d(
        xs[0], a["kernel"], a["stride"] or a["kernel"], a["padding"], a["dilation"], a["ceil_mode"]
    )


def _linear(node, xs, w):
    return F.linear(xs[0], w(node, "weight"), w(node, "bias") if node.attrs["bias"] else None)


RUN = {
    "conv2d": _conv2d,
    "batchnorm2d": _batchnorm2d,
    "maxpool2d": _maxpool2d,
    "linear": _linear,
    "relu": lambda node, xs, w: F.relu(xs[0]),
    "identity": lambda node, xs, w: xs[0],
    "dropout": lambda node, xs, w: xs[0],
    "add": lambda node, xs, w: functools.reduce(torch.add, xs),
    "concat": lambda node, xs, w: torch.cat(xs, dim=node.attrs["axis"] + 1),
    "global_avgpool": lambda node, xs, w: xs[0].mean(dim=(2, 3)),
    "flatten": lambda node, xs, w: xs[0].flatten(node.attrs["start"] + 1),
}


def interpret(graph, weights, *inputs):
    """The graph's outputs, by name, for batched ``inputs`` given in graph-input order."""

    def w(node, key):
        return torch.from_numpy(np.asarray(weights[f"{node.name}.{key}"]))

    env = dict(zip(graph.inputs, inputs, strict=True))
    for node in graph.topological():
        if node.op != "input":
            env[node.name] = RUN[node.op](node, [env[s] for s in graph.inputs_of(node.name)], w)
    return {out: env[node] for out, node in graph.outputs}


# --- helpers -----------------------------------------------------------------------------------


def trained(net):
    """The network's module in eval mode with random batch-norm statistics, and its weights."""
    model = net.to_torch(seed=0).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen))
                m.running_var.copy_(torch.rand(c, generator=gen) * 2 + 0.1)
                if m.affine:
                    m.weight.copy_(torch.randn(c, generator=gen))
                    m.bias.copy_(torch.randn(c, generator=gen))
    return model, from_module(model)


def check_against_module(net, graph, weights, batch=2):
    """``graph`` with ``weights`` computes what the network's PyTorch module computes."""
    model, _ = trained(net)
    gen = torch.Generator().manual_seed(2)
    xs = [torch.randn(batch, *net.graph.info(n).shape, generator=gen) for n in net.graph.inputs]
    with torch.no_grad():
        ref = model(*xs)
        got = interpret(graph, weights, *xs)
    ref = ref if isinstance(ref, tuple) else (ref,)
    assert list(got) == [out for out, _ in net.graph.outputs]
    for r, g in zip(ref, got.values(), strict=True):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)


def optimise(text, **params):
    """Load a spec, run the passes on trained weights, and check the result's numbers."""
    net = resdsl.loads(text, **params)
    _, weights = trained(net)
    check_against_module(net, net.graph, weights)  # the interpreter agrees before the passes
    graph, folded = run_inference_passes(net.graph, weights)
    check_against_module(net, graph, folded)
    return net, graph, folded


def ops(graph):
    return {n.name: n.op for n in graph.nodes()}


# --- batch-norm folding ------------------------------------------------------------------------


@pytest.mark.parametrize("bias", ["false", "true"])
def test_conv_bn_folds(bias):
    net, g, w = optimise(f"""
        network t() (x: (3, 8, 8)) {{
            y = x -> c: conv2d(4, 3, padding=1, bias={bias}) -> b: batchnorm2d -> relu
            return y
        }}
    """)
    assert ops(g) == {"x": "input", "c": "conv2d", "relu_0": "relu"}
    assert g.inputs_of("relu_0") == ["c"]
    assert g.node("c").attrs["bias"] is True
    assert set(w) == {"c.weight", "c.bias"}
    assert w["c.weight"].dtype == w["c.bias"].dtype == np.float32
    assert net.graph.node("c").attrs["bias"] is (bias == "true")  # the caller's graph stays


def test_bn_as_graph_output_folds():
    _, g, w = optimise("""
        network t() (x: (3, 8, 8)) {
            return x -> c: conv2d(4, 3, stride=2, groups=1, dilation=2) -> b: batchnorm2d
        }
    """)
    assert ops(g) == {"x": "input", "c": "conv2d"}
    assert g.outputs == [("output", "c")]
    assert set(w) == {"c.weight", "c.bias"}


def test_grouped_conv_and_bn_options_fold():
    _, g, w = optimise("""
        network t() (x: (4, 8, 8)) {
            y = x -> c: conv2d(6, 3, padding=1, groups=2, bias=false)
                  -> b: batchnorm2d(eps=0.01, momentum=0.3)
            return y
        }
    """)
    assert ops(g) == {"x": "input", "c": "conv2d"}
    assert set(w) == {"c.weight", "c.bias"}


def test_non_affine_bn_folds():
    net, g, w = optimise("""
        network t() (x: (3, 8, 8)) {
            y = x -> c: conv2d(4, 3, padding=1, bias=false) -> b: batchnorm2d(affine=false)
            return y -> relu
        }
    """)
    assert {k for k in from_module(net.to_torch()) if k.startswith("b.")} == {
        "b.running_mean",
        "b.running_var",
        "b.num_batches_tracked",
    }
    assert ops(g) == {"x": "input", "c": "conv2d", "relu_0": "relu"}
    assert set(w) == {"c.weight", "c.bias"}


def test_bn_after_conv_with_two_users_is_not_folded():
    _, g, w = optimise("""
        network t() (x: (3, 8, 8)) {
            y = x -> c: conv2d(4, 3, padding=1)
            return (y -> b: batchnorm2d) + y
        }
    """)
    assert ops(g) == {"x": "input", "c": "conv2d", "b": "batchnorm2d", "add_0": "add"}
    assert g.node("c").attrs["bias"] is True
    assert set(w) == {
        "c.weight",
        "c.bias",
        "b.weight",
        "b.bias",
        "b.running_mean",
        "b.running_var",
        "b.num_batches_tracked",
    }


def test_bn_after_conv_that_is_an_output_is_not_folded():
    net, g, w = optimise("""
        network t() (x: (3, 8, 8)) {
            y = x -> c: conv2d(4, 3, padding=1, bias=false)
            return y, y -> b: batchnorm2d(affine=false)
        }
    """)
    assert g.outputs == [("y", "c"), ("output1", "b")]
    assert ops(g) == ops(net.graph)
    assert set(w) == {"c.weight", "b.running_mean", "b.running_var", "b.num_batches_tracked"}


@pytest.mark.parametrize(
    "body",
    [
        "x -> c: conv2d(4, 3, padding=1) -> relu -> b: batchnorm2d",  # after relu
        "(x -> c: conv2d(4, 3, padding=1)) + (x -> d: conv2d(4, 1)) -> b: batchnorm2d",
        "concat(x -> c: conv2d(4, 1), x -> d: conv2d(2, 1)) -> b: batchnorm2d",
        "x -> b: batchnorm2d",  # on a graph input
    ],
    ids=["relu", "add", "concat", "input"],
)
def test_bn_not_after_a_conv_is_not_folded(body):
    net, g, w = optimise(f"network t() (x: (4, 8, 8)) {{ return {body} }}")
    assert ops(g) == ops(net.graph)
    assert g.outputs == [("output", "b")]
    assert {k for k in w if k.startswith("b.")} == {
        "b.weight",
        "b.bias",
        "b.running_mean",
        "b.running_var",
        "b.num_batches_tracked",
    }
    assert set(w) == set(from_module(net.to_torch()))


RESIDUAL = """
block res(planes: int, stride: int = 1) (x) {
    y = x -> conv1: conv2d(planes, 3, stride=stride, padding=1, bias=false)
          -> bn1: batchnorm2d -> relu
    return relu(y + down: shortcut(x, like=y))
}
network n() (x: (8, 8, 8)) {
    return x -> b: res(16, 2) -> global_avgpool -> fc: linear(5)
}
"""


def test_shortcut_projection_folds():
    net, g, w = optimise(RESIDUAL)
    assert ops(net.graph)["b.down.1"] == "batchnorm2d"
    assert ops(g) == {
        "x": "input",
        "b.conv1": "conv2d",
        "b.relu_0": "relu",
        "b.down.0": "conv2d",
        "b.add_0": "add",
        "b.relu_1": "relu",
        "global_avgpool_0": "global_avgpool",
        "fc": "linear",
    }
    assert g.inputs_of("b.add_0") == ["b.relu_0", "b.down.0"]
    assert g.node("b.down.0").attrs["bias"] is True
    assert g.node("b.down.0").attrs["stride"] == (2, 2)
    assert g.node("b.down.0").scope == "b.down"  # the rest of the record is kept
    assert set(w) == {
        "b.conv1.weight",
        "b.conv1.bias",
        "b.down.0.weight",
        "b.down.0.bias",
        "fc.weight",
        "fc.bias",
    }


def test_resnet18_folds_every_batchnorm():
    net = resdsl.load(EXAMPLES / "resnet18.res", num_classes=10)
    _, weights = trained(net)
    g, w = run_inference_passes(net.graph, weights)
    check_against_module(net, g, w, batch=1)
    convs = [n.name for n in g.nodes() if n.op == "conv2d"]
    assert len(convs) == 20
    assert not any(n.op == "batchnorm2d" for n in g.nodes())
    assert set(w) == {f"{c}.{k}" for c in [*convs, "fc"] for k in ("weight", "bias")}


# --- no-ops and dead code ----------------------------------------------------------------------


def test_dropout_and_identity_are_removed():
    _, g, w = optimise("""
        network t() (x: (3, 8, 8)) {
            y = x -> c: conv2d(4, 3, padding=1) -> dropout(0.5) -> relu -> identity
            z = x -> identity
            return y -> global_avgpool -> dropout(0.2) -> fc: linear(3), z + x
        }
    """)
    assert ops(g) == {
        "x": "input",
        "c": "conv2d",
        "relu_0": "relu",
        "global_avgpool_0": "global_avgpool",
        "fc": "linear",
        "add_0": "add",
    }
    assert g.inputs_of("relu_0") == ["c"]
    assert g.inputs_of("fc") == ["global_avgpool_0"]
    assert g.inputs_of("add_0") == ["x", "x"]
    assert set(w) == {"c.weight", "c.bias", "fc.weight", "fc.bias"}


def test_noop_graph_outputs_read_their_input():
    _, g, w = optimise("""
        network t() (x: (3, 8, 8)) {
            y = x -> c: conv2d(4, 1) -> r: relu -> dropout(0.1)
            return y, x -> identity -> identity, y -> identity
        }
    """)
    assert ops(g) == {"x": "input", "c": "conv2d", "r": "relu"}
    assert g.outputs == [("y", "r"), ("output1", "x"), ("output2", "r")]
    assert g.inputs == ["x"]
    assert set(w) == {"c.weight", "c.bias"}


def test_dead_branches_and_their_weights_are_removed():
    _, g, w = optimise("""
        network t() (x: (3, 8, 8), unused: 7) {
            y = x -> c: conv2d(4, 3, padding=1) -> b: batchnorm2d -> relu
            dead = x -> d: conv2d(2, 1) -> e: batchnorm2d -> maxpool2d(2)
                     -> global_avgpool -> fc: linear(3)
            also_dead = y -> f: conv2d(2, 1)
            return y
        }
    """)
    assert ops(g) == {"x": "input", "unused": "input", "c": "conv2d", "relu_0": "relu"}
    assert g.inputs == ["x", "unused"]
    assert g.info("unused").shape == (7,)
    assert set(w) == {"c.weight", "c.bias"}


def test_passes_report_whether_they_changed_anything():
    net = resdsl.loads("""
        network t() (x: (3, 8, 8)) {
            y = x -> c: conv2d(4, 3, padding=1) -> b: batchnorm2d -> dropout(0.5)
            dead = x -> relu
            return y
        }
    """)
    _, weights = trained(net)
    g, w = net.graph.copy(), dict(weights)
    for fn in (drop_identities, fold_batchnorm, eliminate_dead):
        assert fn(g, w) is True
        assert fn(g, w) is False  # idempotent
    assert ops(g) == {"x": "input", "c": "conv2d"}
    assert set(w) == {"c.weight", "c.bias"}


def test_nothing_to_do_keeps_everything():
    net, g, w = optimise("""
        network t() (x: 6) {
            return x -> a: linear(4) -> relu -> b: linear(2, bias=false)
        }
    """)
    assert ops(g) == ops(net.graph)
    assert g.outputs == net.graph.outputs
    assert set(w) == {"a.weight", "a.bias", "b.weight"}


# --- the pass manager --------------------------------------------------------------------------

MIXED = """
network t() (x: (3, 8, 8)) {
    y = x -> c: conv2d(4, 3, padding=1) -> b: batchnorm2d -> relu -> dropout(0.5)
    dead = y -> d: conv2d(2, 1)
    return y -> identity
}
"""


def snapshot(graph):
    return (
        [(n, copy.copy(dict(graph.node(n).attrs)), graph.info(n)) for n in graph.nx.nodes],
        sorted((s, d, k["port"]) for s, d, k in graph.nx.edges(data=True)),
        list(graph.inputs),
        list(graph.outputs),
    )


def test_callers_graph_and_weights_are_unchanged():
    net = resdsl.loads(MIXED)
    _, weights = trained(net)
    before_graph = snapshot(net.graph)
    before_weights = {k: v.copy() for k, v in weights.items()}
    g, w = run_inference_passes(net.graph, weights)
    assert ops(g) == {"x": "input", "c": "conv2d", "relu_0": "relu"}
    assert snapshot(net.graph) == before_graph
    assert list(weights) == list(before_weights)
    for k, v in before_weights.items():
        assert weights[k].dtype == v.dtype
        np.testing.assert_array_equal(weights[k], v)
    assert g is not net.graph and w is not weights


def test_mismatched_weights_are_a_user_error():
    net = resdsl.loads(MIXED)
    _, weights = trained(net)
    del weights["c.bias"]
    with pytest.raises(WeightsError, match=r"`c\.bias`"):
        run_inference_passes(net.graph, weights)


def _broken(fn, corrupt):
    @functools.wraps(fn)
    def wrapper(graph, weights):
        changed = fn(graph, weights)
        corrupt(graph, weights)
        return changed

    return wrapper


def _stale_shape(graph, weights):
    graph.set_info("c", TensorInfo((5, 8, 8)))


def _wrong_attrs(graph, weights):
    node = graph.node("c")
    graph.replace_node("c", type(node)("conv2d", {**node.attrs, "out_channels": 5}, "c", None))


def _lost_weight(graph, weights):
    del weights["c.bias"]


def _extra_weight(graph, weights):
    weights["ghost.weight"] = np.zeros(3, np.float32)


def _cut_edge(graph, weights):
    graph.nx.remove_edge("c", "relu_0")


def _output_shape(graph, weights):
    node = graph.node("c")
    graph.replace_node("c", type(node)("conv2d", {**node.attrs, "padding": (0, 0)}, "c", None))
    infer_shapes(graph)  # consistent, but the output is now (4, 6, 6)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_stale_shape, "node `c` records shape \\(5, 8, 8\\)"),
        (_wrong_attrs, "node `c` records shape \\(4, 8, 8\\) \\(float32\\) but infers shape \\(5"),
        (_lost_weight, "weight `c.bias` is missing"),
        (_extra_weight, "weight `ghost.weight` belongs to no node"),
        (_cut_edge, "`relu_0` \\(relu\\) has 0 inputs"),
        (_output_shape, "inputs and outputs changed"),
    ],
)
def test_a_broken_pass_is_named(monkeypatch, corrupt, message):
    net = resdsl.loads(MIXED)
    _, weights = trained(net)
    # The second pass corrupts the graph after doing its work.
    passes = [_broken(p, corrupt) if p is fold_batchnorm else p for p in inference.PASSES]
    monkeypatch.setattr(inference, "PASSES", tuple(passes))
    with pytest.raises(RuntimeError, match=r"^pass fold_batchnorm broke the graph: ") as info:
        run_inference_passes(net.graph, weights)
    assert info.match(message)
    run_inference_passes(net.graph, weights, verify=False)  # unchecked: no error
