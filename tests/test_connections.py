"""Connection kinds: identity skips, projections (explicit and automatic), vector shortcuts,
dense blocks and concat -- shapes, exact parameter counts, graph names, and numerics against
hand-written ``torch.nn.functional`` references that read the module's own ``state_dict``."""

import textwrap

import pytest

import resdsl

torch = pytest.importorskip("torch")
F = torch.nn.functional

from .torch_helpers import randomise_batchnorm  # noqa: E402

EPS = 1e-5  # batchnorm2d's default eps


# --- helpers -------------------------------------------------------------------------------------


def load(text: str, **params) -> resdsl.Network:
    return resdsl.loads(textwrap.dedent(text), **params)


def ops(net: resdsl.Network) -> dict[str, str]:
    """Node name -> op, in graph order."""
    return {node.name: node.op for node in net.graph.nodes()}


def attrs(net: resdsl.Network, name: str) -> dict:
    return dict(net.graph.node(name).attrs)


def model(net: resdsl.Network, seed: int = 0) -> torch.nn.Module:
    """``net`` as a module in eval mode, with non-trivial batchnorm statistics.

    Fresh batchnorm layers have weight 1, bias 0, mean 0 and variance 1, which would make
    them (almost) the identity in eval mode and hide a wrong wiring; randomise all four.
    """
    return randomise_batchnorm(net.to_torch(seed=seed)).eval()


def sample(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, *shape, generator=torch.Generator().manual_seed(seed))


def bn(x: torch.Tensor, sd: dict, name: str) -> torch.Tensor:
    """Eval-mode batch norm from the state_dict entries of ``name``."""
    return F.batch_norm(
        x,
        sd[f"{name}.running_mean"],
        sd[f"{name}.running_var"],
        sd[f"{name}.weight"],
        sd[f"{name}.bias"],
        training=False,
        eps=EPS,
    )


def check_numerics(m: torch.nn.Module, ref, x: torch.Tensor) -> None:
    with torch.no_grad():
        got, want = m(x), ref(x)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


# --- identity skip -------------------------------------------------------------------------------

IDENTITY = """
network n() (x: (4, 6, 6)) {
    y = x -> conv1: conv2d(4, 3, padding=1) -> bn1: batchnorm2d -> relu
    return y + x
}
"""


def test_identity_skip_graph_and_counts():
    net = load(IDENTITY)
    assert net.output_shapes == {"output": (4, 6, 6)}
    # conv1 weights + conv1 bias + bn1 (weight, bias); the skip and the add have none
    assert net.num_params == 4 * 4 * 3 * 3 + 4 + 2 * 4
    assert ops(net) == {
        "x": "input",
        "conv1": "conv2d",
        "bn1": "batchnorm2d",
        "relu_0": "relu",
        "add_0": "add",
    }
    assert net.graph.inputs_of("add_0") == ["relu_0", "x"]


def test_identity_skip_numerics():
    m = model(load(IDENTITY))
    sd = m.state_dict()

    def ref(x):
        y = F.conv2d(x, sd["conv1.weight"], sd["conv1.bias"], padding=1)
        return F.relu(bn(y, sd, "bn1")) + x

    check_numerics(m, ref, sample(4, 6, 6))


# --- explicit projection: project(x, channels, stride=1, bn=true) --------------------------------

PROJECT = """
network n() (x: (4, 8, 8)) {
    y = x -> conv1: conv2d(8, 3, stride=2, padding=1, bias=false) -> bn1: batchnorm2d -> relu
    return y + proj: project(x, 8, stride=2)
}
"""


def test_project_graph_and_counts():
    net = load(PROJECT)
    assert net.output_shapes == {"output": (8, 4, 4)}
    assert net.num_params == (
        8 * 4 * 3 * 3  # conv1, no bias
        + 2 * 8  # bn1
        + 8 * 4 * 1 * 1  # proj.0: 1x1 conv, no bias
        + 2 * 8  # proj.1: batchnorm
    )
    assert ops(net) == {
        "x": "input",
        "conv1": "conv2d",
        "bn1": "batchnorm2d",
        "relu_0": "relu",
        "proj.0": "conv2d",
        "proj.1": "batchnorm2d",
        "add_0": "add",
    }
    proj = attrs(net, "proj.0")
    assert proj["out_channels"] == 8
    assert proj["kernel"] == (1, 1)
    assert proj["stride"] == (2, 2)
    assert proj["bias"] is False
    assert net.graph.inputs_of("proj.0") == ["x"]
    assert net.graph.inputs_of("proj.1") == ["proj.0"]
    assert net.graph.inputs_of("add_0") == ["relu_0", "proj.1"]
    assert net.graph.node("proj.0").scope == "proj"


def test_project_numerics():
    m = model(load(PROJECT))
    sd = m.state_dict()
    assert "proj.0.bias" not in sd

    def ref(x):
        y = F.conv2d(x, sd["conv1.weight"], stride=2, padding=1)
        y = F.relu(bn(y, sd, "bn1"))
        skip = bn(F.conv2d(x, sd["proj.0.weight"], stride=2), sd, "proj.1")
        return y + skip

    check_numerics(m, ref, sample(4, 8, 8))


def test_project_always_projects_and_bn_false_drops_the_norm():
    # Unlike `shortcut`, `project` adds a layer even when the shapes already match.
    net = load("""
        network n() (x: (4, 5, 5)) {
            return x + p: project(x, 4, bn=false)
        }
    """)
    assert ops(net) == {"x": "input", "p.0": "conv2d", "add_0": "add"}
    assert attrs(net, "p.0")["stride"] == (1, 1)
    assert net.num_params == 4 * 4 * 1 * 1
    m = model(net)
    sd = m.state_dict()
    assert list(sd) == ["p.0.weight"]
    check_numerics(m, lambda x: x + F.conv2d(x, sd["p.0.weight"]), sample(4, 5, 5))


# --- automatic projection: shortcut(x, like=y) ---------------------------------------------------

RESIDUAL = """
block res(planes: int, stride: int = 1) (x) {
    y = x -> conv1: conv2d(planes, 3, stride=stride, padding=1, bias=false)
          -> bn1: batchnorm2d -> relu
    return relu(y + down: shortcut(x, like=y))
}
network n(planes: int, stride: int, size: int = 8) (x: (8, size, size)) {
    return x -> b: res(planes, stride)
}
"""


@pytest.mark.parametrize(
    ("planes", "stride", "size", "out_size"),
    [
        (8, 1, 8, 8),  # shapes equal: identity, no node
        (16, 1, 8, 8),  # channels change: 1x1 conv, stride 1
        (8, 2, 8, 4),  # spatial change only: 1x1 conv, stride 2
        (16, 2, 8, 4),  # both change: 1x1 conv, stride 2
        (16, 2, 7, 4),  # odd size: stride still inferred as 2 (ceil(7 / 2) == 4)
    ],
)
def test_shortcut_graph_and_counts(planes, stride, size, out_size):
    net = load(RESIDUAL, planes=planes, stride=stride, size=size)
    assert net.output_shapes == {"output": (planes, out_size, out_size)}
    projected = (planes, stride) != (8, 1)
    body = planes * 8 * 3 * 3 + 2 * planes  # b.conv1 (no bias) + b.bn1
    projection = planes * 8 * 1 * 1 + 2 * planes  # b.down.0 (no bias) + b.down.1
    assert net.num_params == body + (projection if projected else 0)
    names = ops(net)
    if not projected:
        assert not any("down" in name for name in names)
        assert net.graph.inputs_of("b.add_0") == ["b.relu_0", "x"]
        return
    assert names["b.down.0"] == "conv2d"
    assert names["b.down.1"] == "batchnorm2d"
    down = attrs(net, "b.down.0")
    assert down["stride"] == (stride, stride)
    assert down["kernel"] == (1, 1)
    assert down["out_channels"] == planes
    assert down["bias"] is False
    assert net.graph.inputs_of("b.down.0") == ["x"]
    assert net.graph.inputs_of("b.add_0") == ["b.relu_0", "b.down.1"]
    assert net.graph.node("b.down.0").scope == "b.down"
    assert net.graph.node("b.down.0").block == "shortcut"


@pytest.mark.parametrize(("planes", "stride", "size"), [(8, 1, 8), (16, 2, 8), (16, 2, 7)])
def test_shortcut_numerics(planes, stride, size):
    net = load(RESIDUAL, planes=planes, stride=stride, size=size)
    m = model(net)
    sd = m.state_dict()
    assert any(k.startswith("b.down.") for k in sd) == ((planes, stride) != (8, 1))

    def ref(x):
        y = F.conv2d(x, sd["b.conv1.weight"], stride=stride, padding=1)
        y = F.relu(bn(y, sd, "b.bn1"))
        if (planes, stride) == (8, 1):
            skip = x
        else:
            skip = bn(F.conv2d(x, sd["b.down.0.weight"], stride=stride), sd, "b.down.1")
        return F.relu(y + skip)

    check_numerics(m, ref, sample(8, size, size))


def test_both_regimes_in_one_network():
    net = load("""
        block res(planes: int, stride: int = 1) (x) {
            y = x -> conv1: conv2d(planes, 3, stride=stride, padding=1, bias=false)
                  -> bn1: batchnorm2d -> relu
            return relu(y + down: shortcut(x, like=y))
        }
        network n() (x: (8, 8, 8)) {
            return x -> b1: res(8) -> b2: res(16, 2)
        }
    """)
    assert net.output_shapes == {"output": (16, 4, 4)}
    assert net.num_params == (
        (8 * 8 * 3 * 3 + 2 * 8)  # b1: conv1 + bn1, identity shortcut
        + (16 * 8 * 3 * 3 + 2 * 16)  # b2: conv1 + bn1
        + (16 * 8 * 1 * 1 + 2 * 16)  # b2.down.0 + b2.down.1
    )
    names = ops(net)
    assert not any(name.startswith("b1.down") for name in names)
    assert names["b2.down.0"] == "conv2d"
    assert names["b2.down.1"] == "batchnorm2d"
    assert attrs(net, "b2.down.0")["stride"] == (2, 2)
    assert net.graph.inputs_of("b1.add_0") == ["b1.relu_0", "x"]
    assert net.graph.inputs_of("b2.down.0") == ["b1.relu_1"]


def test_shortcut_without_bn():
    net = load("""
        network n() (x: (4, 6, 6)) {
            y = x -> c: conv2d(6, 3, stride=2, padding=1)
            return y + s: shortcut(x, like=y, bn=false)
        }
    """)
    assert ops(net) == {"x": "input", "c": "conv2d", "s.0": "conv2d", "add_0": "add"}
    assert attrs(net, "s.0")["stride"] == (2, 2)
    assert net.num_params == (6 * 4 * 3 * 3 + 6) + 6 * 4 * 1 * 1
    m = model(net)
    sd = m.state_dict()

    def ref(x):
        y = F.conv2d(x, sd["c.weight"], sd["c.bias"], stride=2, padding=1)
        return y + F.conv2d(x, sd["s.0.weight"], stride=2)

    check_numerics(m, ref, sample(4, 6, 6))


# --- vector (rank-1) shortcut: a bias-free linear ------------------------------------------------

VECTOR = """
network n() (x: 12) {
    y = x -> fc: linear(6) -> relu
    z = y + s: shortcut(x, like=y)
    return z + same: shortcut(z, like=y) + p: project(z, 6)
}
"""


def test_vector_shortcut_graph_and_counts():
    net = load(VECTOR)
    assert net.input_shapes == {"x": (12,)}
    assert net.output_shapes == {"output": (6,)}
    assert net.num_params == (
        (12 * 6 + 6)  # fc
        + 12 * 6  # s.0: linear, no bias, no norm
        + 6 * 6  # p.0: project on a vector is a linear, no bias, no norm
    )
    assert ops(net) == {
        "x": "input",
        "fc": "linear",
        "relu_0": "relu",
        "s.0": "linear",
        "add_0": "add",
        "p.0": "linear",
        "add_1": "add",
        "add_2": "add",
    }
    for name in ("s.0", "p.0"):
        assert attrs(net, name) == {"out_features": 6, "bias": False}
    assert net.graph.inputs_of("s.0") == ["x"]
    # `same` matched shapes: identity, so z feeds the add directly
    assert net.graph.inputs_of("add_1") == ["add_0", "add_0"]


def test_vector_shortcut_numerics():
    m = model(load(VECTOR))
    sd = m.state_dict()
    assert sorted(sd) == ["fc.bias", "fc.weight", "p.0.weight", "s.0.weight"]

    def ref(x):
        y = F.relu(F.linear(x, sd["fc.weight"], sd["fc.bias"]))
        z = y + F.linear(x, sd["s.0.weight"])
        return z + z + F.linear(z, sd["p.0.weight"])

    check_numerics(m, ref, sample(12))


# --- dense block ---------------------------------------------------------------------------------

DENSE = """
network n() (x: (4, 6, 6)) {
    dense x for i in range(3) {
        x = x -> "bn{i}": batchnorm2d -> relu -> "conv{i}": conv2d(2, 3, padding=1, bias=false)
    }
    return x
}
"""


def test_dense_graph_and_counts():
    net = load(DENSE)
    # input channels + 3 layers * growth 2
    assert net.output_shapes == {"x": (4 + 3 * 2, 6, 6)}
    assert net.num_params == (
        (2 * 4 + 2 * 4 * 3 * 3)  # bn0 over 4 channels, conv0 4 -> 2
        + (2 * 6 + 2 * 6 * 3 * 3)  # bn1 over 4 + 2, conv1 6 -> 2
        + (2 * 8 + 2 * 8 * 3 * 3)  # bn2 over 4 + 2 + 2, conv2 8 -> 2
    )
    names = ops(net)
    assert [n for n, op in names.items() if op == "concat"] == ["concat_0", "concat_1", "concat_2"]
    g = net.graph
    # each layer sees [input, f1, ..., f_i], in that order; the result is all of them
    assert g.inputs_of("bn0") == ["x"]
    assert g.inputs_of("concat_0") == ["x", "conv0"]
    assert g.inputs_of("bn1") == ["concat_0"]
    assert g.inputs_of("concat_1") == ["x", "conv0", "conv1"]
    assert g.inputs_of("bn2") == ["concat_1"]
    assert g.inputs_of("concat_2") == ["x", "conv0", "conv1", "conv2"]
    assert g.outputs == [("x", "concat_2")]
    assert [g.info(f"concat_{i}").shape[0] for i in range(3)] == [6, 8, 10]


def test_dense_numerics():
    m = model(load(DENSE))
    sd = m.state_dict()

    def ref(x):
        features = [x]
        for i in range(3):
            seen = torch.cat(features, dim=1)
            y = F.relu(bn(seen, sd, f"bn{i}"))
            features.append(F.conv2d(y, sd[f"conv{i}.weight"], padding=1))
        return torch.cat(features, dim=1)

    x = sample(4, 6, 6)
    check_numerics(m, ref, x)
    with torch.no_grad():
        assert torch.equal(m(x)[:, :4], x)  # the input passes through untouched, first


# --- concat --------------------------------------------------------------------------------------

CONCAT = """
network n() (x: (3, 5, 5)) {
    a = x -> ca: conv2d(2, 1)
    b = x -> cb: conv2d(4, 3, padding=1)
    c = cat: concat(a, b, x)
    return c + wide: concat(x, a, b, axis=0)
}
"""


def test_concat_graph_and_counts():
    net = load(CONCAT)
    assert net.output_shapes == {"output": (2 + 4 + 3, 5, 5)}
    assert net.num_params == (2 * 3 * 1 * 1 + 2) + (4 * 3 * 3 * 3 + 4)
    assert ops(net) == {
        "x": "input",
        "ca": "conv2d",
        "cb": "conv2d",
        "cat": "concat",
        "wide": "concat",
        "add_0": "add",
    }
    assert net.graph.inputs_of("cat") == ["ca", "cb", "x"]
    assert net.graph.inputs_of("wide") == ["x", "ca", "cb"]


def test_concat_numerics():
    m = model(load(CONCAT))
    sd = m.state_dict()

    def ref(x):
        a = F.conv2d(x, sd["ca.weight"], sd["ca.bias"])
        b = F.conv2d(x, sd["cb.weight"], sd["cb.bias"], padding=1)
        return torch.cat([a, b, x], dim=1) + torch.cat([x, a, b], dim=1)

    check_numerics(m, ref, sample(3, 5, 5))


def test_concat_on_a_spatial_axis():
    net = load("""
        network n() (x: (4, 3, 5)) {
            a = x -> ca: conv2d(4, 1)
            return cat: concat(a, x, axis=2)
        }
    """)
    assert net.output_shapes == {"output": (4, 3, 10)}  # axis 2 is the width
    m = model(net)
    sd = m.state_dict()

    def ref(x):
        return torch.cat([F.conv2d(x, sd["ca.weight"], sd["ca.bias"]), x], dim=3)

    check_numerics(m, ref, sample(4, 3, 5))


# --- modes, seeds, export, compile ---------------------------------------------------------------


def test_batchnorm_train_and_eval_modes_differ():
    m = model(load(IDENTITY))
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    x = sample(4, 6, 6)
    with torch.no_grad():
        evaluated = m.eval()(x)
        trained = m.train()(x)
    assert not torch.allclose(evaluated, trained, atol=1e-3)

    # train mode normalises with the batch's statistics ...
    y = F.conv2d(x, sd["conv1.weight"], sd["conv1.bias"], padding=1)
    mean, var = y.mean(dim=(0, 2, 3)), y.var(dim=(0, 2, 3), unbiased=False)

    def per_channel(t):
        return t[None, :, None, None]

    norm = (y - per_channel(mean)) / torch.sqrt(per_channel(var) + EPS)
    want = F.relu(norm * per_channel(sd["bn1.weight"]) + per_channel(sd["bn1.bias"]))
    assert torch.allclose(trained, want + x, atol=1e-5)
    # ... and updates the running statistics (momentum 0.1)
    n = y.numel() // y.shape[1]
    new = m.state_dict()
    assert torch.allclose(new["bn1.running_mean"], 0.9 * sd["bn1.running_mean"] + 0.1 * mean)
    assert torch.allclose(
        new["bn1.running_var"], 0.9 * sd["bn1.running_var"] + 0.1 * var * n / (n - 1)
    )


def test_seeded_initialisation_is_reproducible():
    net = load(RESIDUAL, planes=16, stride=2)
    rng = torch.get_rng_state()
    a, b = net.to_torch(seed=0).state_dict(), net.to_torch(seed=0).state_dict()
    c = net.to_torch(seed=1).state_dict()
    assert torch.equal(torch.get_rng_state(), rng)  # the global generator is left alone
    assert list(a) == list(b) == list(c)
    assert all(torch.equal(a[k], b[k]) for k in a)
    for k in ("b.conv1.weight", "b.down.0.weight"):
        assert not torch.equal(a[k], c[k])


@pytest.mark.parametrize("spec", [PROJECT, DENSE], ids=["project", "dense"])
def test_torch_export(spec):
    m = model(load(spec))
    x = sample(*load(spec).input_shapes["x"])
    exported = torch.export.export(m, (x,))
    with torch.no_grad():
        assert torch.allclose(exported.module()(x), m(x), atol=1e-5)
    params = {k for k, _ in m.named_parameters()}
    assert params <= set(exported.state_dict)


def test_torch_compile():
    m = model(load(RESIDUAL, planes=16, stride=2))
    x = sample(8, 8, 8)
    # The default inductor backend compiles C++ (about 20 s for this tiny model on the CI's
    # CPUs); "aot_eager" still traces the module with dynamo and AOTAutograd -- fullgraph=True
    # fails on any graph break -- but runs the traced graph eagerly.
    torch._dynamo.reset()
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        assert torch.allclose(compiled(x), m(x), atol=1e-5)
