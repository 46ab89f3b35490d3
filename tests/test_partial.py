"""Block parameters with arguments: `partial(block, key=value)` and `std.resnet.stage`
with any block (docs/language.md "Partial application")."""

import pytest

import resdsl

SE = """block se_basic(planes: int, stride: int = 1, reduction: int = 4) (x) {
    y = x -> conv1: conv2d(planes, 3, stride=stride, padding=1, bias=false) -> bn1: batchnorm2d
    g = y -> global_avgpool -> fc1: linear(planes // reduction) -> relu -> fc2: linear(planes)
    return relu(y * reshape(sigmoid(g), (planes, 1, 1)) + downsample: shortcut(x, like=y))
}
"""


def load(body: str, defs: str = SE, shape: str = "(4, 8, 8)") -> resdsl.Network:
    return resdsl.loads(f"{defs}network t() (x: {shape}) {{\n{body}\n}}\n")


def error(body: str, cls: type, defs: str = SE) -> resdsl.SpecError:
    with pytest.raises(cls) as e:
        load(body, defs)
    return e.value


def features(net: resdsl.Network, name: str) -> int:
    return net.graph.node(name).attrs["out_features"]


def test_a_partial_forwards_its_keywords():
    net = load("    se = partial(se_basic, reduction=2)\n    return x -> b: se(16, stride=2)")
    assert features(net, "b.fc1") == 8
    assert net.graph.node("b.conv1").attrs["stride"] == (2, 2)


def test_the_calls_keywords_override_the_partials():
    net = load("    se = partial(se_basic, reduction=2)\n    return x -> b: se(16, reduction=8)")
    assert features(net, "b.fc1") == 2


def test_a_later_partial_overrides_an_earlier_one():
    net = load(
        "    se = partial(partial(se_basic, reduction=2, stride=2), reduction=16)\n"
        "    return x -> b: se(16)"
    )
    assert features(net, "b.fc1") == 1
    assert net.graph.node("b.conv1").attrs["stride"] == (2, 2)


def test_a_partial_passed_to_a_block_parameter():
    defs = (
        SE
        + """block stage(kind: block, planes: int, blocks: int) (x) {
    for i in range(blocks) {
        x = x -> "{i}": kind(planes)
    }
    return x
}
"""
    )
    net = load("    return x -> layer: stage(partial(se_basic, reduction=8), 16, 2)", defs)
    assert [features(net, f"layer.{i}.fc1") for i in range(2)] == [2, 2]


def test_a_partial_of_an_inline_block_names_in_the_callers_scope():
    defs = """inline block act(slope: float = 0.0) (x) {
    return x -> "{label}": scale_shift(1 - slope)
}
"""
    net = load("    a = partial(act, slope=0.5)\n    return x -> g: a", defs, "(4,)")
    assert [n.name for n in net.graph.nodes()] == ["x", "g"]
    assert net.graph.node("g").attrs["scale"] == 0.5


def test_a_partial_is_described_in_errors():
    err = error(
        "    k = partial(se_basic, reduction=2)\n    return x + k", resdsl.TypeMismatchError
    )
    assert "block `se_basic` with reduction= bound by `partial`" in err.message


def test_a_parameter_given_by_position_and_bound_is_an_error():
    err = error(
        "    se = partial(se_basic, stride=2)\n    return x -> b: se(16, 1)", resdsl.ArgumentError
    )
    assert err.code == "E0202"
    assert err.message == (
        "parameter `stride` of `se_basic` is given by position and was bound by `partial`"
    )
    assert (err.line, err.column, err.span.end_column) == (8, 27, 28)  # the `1`
    assert (err.notes[0].message, err.notes[0].span.line, err.notes[0].span.column) == (
        "bound here", 7, 28,
    )  # fmt: skip


def test_an_unknown_keyword_is_refused_at_the_partial():
    err = error("    se = partial(se_basic, reduce=2)\n    return x", resdsl.UnknownNameError)
    assert (err.code, err.message) == ("E0201", "`se_basic` has no parameter `reduce`")
    assert (err.line, err.column, err.span.end_column) == (7, 28, 36)
    assert err.hints == ["did you mean `reduction`?"]


def test_a_wrongly_typed_keyword_is_refused_at_the_partial():
    err = error('    se = partial(se_basic, reduction="2")\n    return x', resdsl.TypeMismatchError)
    assert (err.code, err.message) == ("E0203", 'parameter `reduction` is int, got str "2"')
    assert (err.line, err.column) == (7, 28)
    assert err.notes[0].message == "declared here"


def test_a_tensor_cannot_be_bound():
    err = error("    se = partial(se_basic, planes=x)\n    return x", resdsl.TypeMismatchError)
    assert err.message == "`partial` binds parameters, not tensor inputs"
    assert (err.line, err.column) == (7, 28)


@pytest.mark.parametrize(
    ("call", "cls", "message", "column"),
    [
        ("partial(3, a=1)", resdsl.TypeMismatchError, "`partial` needs a block, got int 3", 17),
        ("partial(se_basic, 8)", resdsl.ArgumentError,
         "`partial` takes one block and keyword arguments, got 2 positional argument(s)", 27),
        ("partial(reduction=8)", resdsl.ArgumentError,
         "`partial` takes one block and keyword arguments, got 0 positional argument(s)", 9),
        ("p: partial(se_basic)", resdsl.ArgumentError,
         "`partial` is a function; only ops and blocks take a name", 9),
    ],
)  # fmt: skip
def test_misuse_of_partial_is_located(call, cls, message, column):
    err = error(f"    k = {call}\n    return x", cls)
    assert (err.message, err.line, err.column) == (message, 7, column)


def test_a_partial_is_not_a_tensor_op():
    err = error("    return x -> partial", resdsl.TypeMismatchError)
    assert err.message == "`partial` needs a block, got a tensor of shape (4, 8, 8)"


# --- std.resnet.stage works with any block -------------------------------------------------


def test_stage_takes_a_block_without_groups_or_base_width():
    net = load(
        "    return x -> layer1: stage(partial(se_basic, reduction=8), 16, 2, stride=2)",
        "import std.resnet\n" + SE,
    )
    assert [features(net, f"layer1.{i}.fc1") for i in range(2)] == [2, 2]
    assert net.graph.node("layer1.0.conv1").attrs["stride"] == (2, 2)
    assert net.graph.node("layer1.1.conv1").attrs["stride"] == (1, 1)


def test_stage_passes_groups_and_base_width_when_not_the_defaults():
    net = load(
        "    return x -> layer1: stage(bottleneck, 8, 1, groups=2, base_width=16)",
        "import std.resnet\n",
    )
    conv2 = net.graph.node("layer1.0.conv2")
    assert (conv2.attrs["groups"], conv2.attrs["out_channels"]) == (2, 4)  # 8 * 16 / 64 * 2


def test_stage_with_groups_and_a_block_without_them_is_located():
    err = error(
        "    return x -> layer1: stage(se_basic, 16, 1, groups=2)",
        resdsl.UnknownNameError,
        "import std.resnet\n" + SE,
    )
    assert err.message == "`se_basic` has no parameter `groups`"
    assert err.path == "std/resnet.res"
    assert err.notes[-1].message == "in `layer1`, an instance of `stage`"


def test_search_replays_tell_partials_apart(tmp_path):
    """A block instance is replayed by its arguments: a partial's bound values count."""
    from resdsl.search.space import load_space

    path = tmp_path / "space.res"
    path.write_text(
        "block se(planes: int, reduction: int = 4) (x) {\n"
        "    return x -> conv: conv2d(planes, 1) -> global_avgpool\n"
        "             -> fc: linear(planes // reduction)\n"
        "}\n"
        "block holder(kind: block) (x) { return x -> inner: kind(16) }\n"
        "network n(r: int = choice(2, 4)) (x: (4, 8, 8)) {\n"
        "    return x -> b: holder(partial(se, reduction=r))\n"
        "}\n"
    )
    space = load_space(str(path))
    widths = [space.build({"r": r}).graph.node("b.inner.fc").attrs["out_features"]
              for r in (2, 4, 2)]  # fmt: skip
    assert widths == [8, 4, 8]


def test_partial_binds_an_ops_attributes():
    net = resdsl.loads(
        "block cba(norm: block = batchnorm2d) (x) {\n"
        "    return x -> conv: conv2d(4, 3, padding=1) -> bn: norm -> relu\n"
        "}\n"
        "network n() (x: (3, 8, 8)) {\n"
        "    bn = partial(batchnorm2d, eps=0.001)\n"
        "    return x -> bn, x -> a: cba(partial(bn, momentum=0.01)), x -> b: bn(eps=0.1)\n"
        "}\n"
    )
    norms = {n.name: dict(n.attrs) for n in net.graph.nodes() if n.op == "batchnorm2d"}
    assert norms["a.bn"]["eps"] == 0.001 and norms["a.bn"]["momentum"] == 0.01
    assert norms["b"]["eps"] == 0.1  # the call's keyword wins
    assert [v["eps"] for k, v in norms.items() if k not in ("a.bn", "b")] == [0.001]


def test_partial_of_an_op_refuses_an_unknown_attribute():
    text = (
        "network n() (x: (3, 8, 8)) {\n    bn = partial(batchnorm2d, ep=0.001)\n    return x\n}\n"
    )
    with pytest.raises(resdsl.UnknownNameError) as e:
        resdsl.loads(text)
    assert e.value.message == "`batchnorm2d` has no argument `ep`"
    assert (e.value.span.line, e.value.span.column) == (2, 31)
    assert e.value.hints == ["did you mean `eps`?"]
